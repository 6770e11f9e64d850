//! `coffer worker`: the entry point of the Jobs the controller creates.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::worker::plan::{
    IDENTITY_ENV, PASSWORD_ENV, PLAN_ENV, RECIPIENTS_ENV_PREFIX, SOURCE_MOUNT, STORE_MOUNT,
    TERMINATION_LOG, copy_credential_env,
};
use crate::worker::{self, Environment, Failure, Plan, Summary};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Where to write the JSON summary the controller reads from the Pod's status.
    #[arg(long, value_name = "PATH", default_value = TERMINATION_LOG)]
    pub termination_log: PathBuf,
    /// Where the claim of a volume source or target is mounted.
    #[arg(long, value_name = "DIR", default_value = SOURCE_MOUNT)]
    pub source_dir: PathBuf,
    /// Where the claim of a filesystem store is mounted.
    #[arg(long, value_name = "DIR", default_value = STORE_MOUNT)]
    pub store_dir: PathBuf,
    /// Where the claims of copy stores are mounted, in the order of their numbers (given
    /// once per copy store).
    #[arg(long, value_name = "DIR")]
    pub copy_dir: Vec<PathBuf>,
}

/// The S3 credentials of copy stores that have them, by number.
fn copy_credentials_from_env() -> std::collections::BTreeMap<usize, (String, String)> {
    (0..16)
        .filter_map(|n| {
            let get = |key| {
                std::env::var(copy_credential_env(n, key))
                    .ok()
                    .filter(|v| !v.is_empty())
            };
            Some((
                n,
                (get("AWS_ACCESS_KEY_ID")?, get("AWS_SECRET_ACCESS_KEY")?),
            ))
        })
        .collect()
}

/// The recipients from `spec.encryption.recipientsFrom` that are set, by their index.
fn recipients_from_env() -> std::collections::BTreeMap<usize, String> {
    (0..64)
        .filter_map(|n| {
            std::env::var(format!("{RECIPIENTS_ENV_PREFIX}{n}"))
                .ok()
                .map(|text| (n, text))
        })
        .collect()
}

/// Runs the plan in `COFFER_PLAN`; the summary goes to the termination log and stdout.
pub async fn run(args: WorkerArgs) -> Result<(), CliError> {
    let summary = match std::env::var(PLAN_ENV) {
        Ok(json) => match Plan::from_json(&json) {
            Ok(plan) => {
                let env = Environment {
                    source_dir: args.source_dir.clone(),
                    store_dir: args.store_dir.clone(),
                    password: std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
                    recipients: recipients_from_env(),
                    identity: std::env::var(IDENTITY_ENV)
                        .ok()
                        .filter(|i| !i.trim().is_empty()),
                    copy_dirs: args.copy_dir.clone(),
                    copy_credentials: copy_credentials_from_env(),
                };
                tracing::info!(operation = plan.operation(), "worker started");
                until_terminated(worker::run(&plan, &env)).await
            }
            Err(e) => Summary::failed(
                Failure::InvalidPlan,
                format!(
                    "{PLAN_ENV} is not a plan this worker understands ({e}): run the worker image of the controller's version"
                ),
            ),
        },
        Err(_) => Summary::failed(
            Failure::InvalidPlan,
            format!(
                "{PLAN_ENV} is not set: the worker runs inside Jobs made by `coffer controller`"
            ),
        ),
    };
    worker::write_termination_message(&args.termination_log, &summary);
    println!("{}", summary.to_termination_message());
    match summary.failure {
        None => {
            eprintln!("{}", summary.message);
            Ok(())
        }
        Some(failure) => Err(CliError::failed(format!(
            "{}: {}",
            failure.as_str(),
            summary.message
        ))),
    }
}

/// Runs the work until it ends or the Pod is told to stop (SIGTERM: a deleted Job, an
/// `activeDeadlineSeconds` that ran out, a drained node). On SIGTERM the work is dropped at
/// once, so nothing more is written (no manifest: the backup does not exist; a streamed
/// object is abandoned), and the summary says it was interrupted.
async fn until_terminated(work: impl std::future::Future<Output = Summary>) -> Summary {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!("cannot handle SIGTERM ({e}); it will end the worker abruptly");
            return work.await;
        }
    };
    tokio::select! {
        summary = work => summary,
        _ = term.recv() => {
            tracing::warn!("SIGTERM: stopping without finishing");
            crate::storage::s3::finish_cleanup(std::time::Duration::from_secs(5)).await;
            Summary::failed(
                Failure::Interrupted,
                "the worker was stopped (SIGTERM) before it finished; it wrote nothing more (a backup without its manifest does not exist; a restore may have been applied in part)",
            )
        }
    }
}
