//! `coffer controller`: runs the operator.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::controller::context::Settings;
use crate::controller::job::WorkerSettings;
use crate::controller::leader::LeaseSettings;
use crate::controller::{self, Options};

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, value_name = "NAMESPACE", env = "COFFER_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// The image of the worker Jobs: Coffer's own image, of the same version as the
    /// controller.
    #[arg(long, value_name = "IMAGE", env = "COFFER_WORKER_IMAGE", default_value = concat!("ghcr.io/coffer-dev/coffer:", env!("CARGO_PKG_VERSION")))]
    pub worker_image: String,
    /// The ServiceAccount worker Pods run as (made in each namespace if missing, with no
    /// permissions and no token mounted).
    #[arg(long, value_name = "NAME", default_value = "coffer-worker")]
    pub worker_service_account: String,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// Run without leader election (only safe with a single replica).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Namespace of the leader Lease (default: POD_NAMESPACE, else --namespace, else
    /// coffer-system).
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, value_name = "NAME", default_value = "coffer-controller")]
    pub lease_name: String,
    /// This replica's name in the Lease (default: POD_NAME, else host name and process id).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Lease holds without renewal.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub lease_duration: u64,
    /// Seconds a deleted Backup may spend trying to delete its stored data (the deletion Job
    /// failing, stuck, or refused) before the data is left in storage with a DataNotDeleted
    /// Event naming it, and the Backup goes. Deletion gives up at once when the namespace is
    /// being deleted or the store's credentials Secret is gone.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub deletion_timeout: u64,
    /// MiB a Redis or PostgreSQL restore Job may download into its temporary volume to check
    /// the backup before restoring it (its emptyDir gets this size limit, plus 64 MiB).
    /// Larger backups are checked in the store and read again for the restore. 0: never.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub restore_spool_mib: u64,
    /// Times a notification is tried when its sink certainly did not take it (connection
    /// refused, HTTP 429 or 5xx, SMTP 4xx) before it is given up with a NotificationFailed
    /// condition and Event.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=20))]
    pub notify_attempts: i32,
    /// Seconds before a refused notification is tried again; doubled after each attempt.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub notify_backoff: u64,
    /// Seconds before a failed copy of a backup (spec.copies) is tried again; doubled after
    /// each failure, up to an hour. Copies are retried until they succeed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub copy_backoff: u64,
}

pub async fn run(args: ControllerArgs) -> Result<(), CliError> {
    if args.lease_duration < 3 {
        return Err(CliError::usage(
            "--lease-duration must be at least 3 seconds",
        ));
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "coffer".to_owned());
        format!("{host}-{}", std::process::id())
    });
    let lease = (!args.no_leader_election).then(|| LeaseSettings {
        namespace: args
            .lease_namespace
            .clone()
            .or(args.namespace.clone())
            .unwrap_or_else(|| "coffer-system".to_owned()),
        name: args.lease_name.clone(),
        identity,
        duration: Duration::from_secs(args.lease_duration),
        renew_every: Duration::from_secs((args.lease_duration / 3).max(1)),
    });
    let options = Options {
        settings: Settings {
            worker: WorkerSettings {
                image: args.worker_image,
                service_account: args.worker_service_account,
                restore_spool_bytes: args.restore_spool_mib.saturating_mul(1 << 20),
            },
            namespace: args.namespace,
            deletion_timeout: Duration::from_secs(args.deletion_timeout),
            notify_retry: crate::controller::notify::RetryPolicy {
                attempts: args.notify_attempts,
                backoff: Duration::from_secs(args.notify_backoff),
            },
            copy_backoff: Duration::from_secs(args.copy_backoff),
        },
        metrics_address: args.metrics_address,
        lease,
    };
    controller::run(options)
        .await
        .map_err(CliError::from_display)
}
