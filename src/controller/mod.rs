//! The operator: four reconcilers (BackupSchedule, Backup, RestoreRequest, Notifier) run by
//! kube-runtime controllers, behind a leader Lease, with health and metrics endpoints.
//! Pure parts (what is due, retention, the worker Job, locations) have no I/O and are
//! unit-tested on their own.

pub mod backup;
pub mod context;
pub mod copies;
pub mod deletion;
pub mod drill;
pub mod drill_schedule;
pub mod due;
pub mod error;
pub mod finalizers;
pub mod fresh;
pub mod job;
pub mod leader;
pub mod location;
pub mod lock;
pub mod metrics;
pub mod notifier;
pub mod notify;
pub mod preflight;
pub mod references;
pub mod relock;
pub mod restore;
pub mod retention;
pub mod safety;
pub mod schedule;
pub mod server;
pub mod state_metrics;
pub mod status;
pub mod sweep;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::api::{Backup, BackupSchedule, Notifier, RestoreRequest};
use context::{Context, Settings};
use error::Error;
use leader::LeaseSettings;
use location::SCHEDULE_LABEL;
use metrics::Metrics;

/// Everything `coffer controller` is told on its command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub settings: Settings,
    pub metrics_address: SocketAddr,
    /// `None`: no leader election (a single replica).
    pub lease: Option<LeaseSettings>,
}

/// Why the controller stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "cannot reach the Kubernetes API server (check KUBECONFIG or the in-cluster service account): {0}"
    )]
    Client(#[source] kube::Error),
    #[error("cannot serve metrics on {0}: {1}")]
    Serve(SocketAddr, std::io::Error),
    #[error("stopped leading: {0}; exiting so that a restart rejoins the election")]
    LeaseLost(#[from] leader::LeaseLost),
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: ResourceExt,
{
    move |object, error, ctx| {
        ctx.metrics.reconcile_failed(controller, error.category());
        tracing::warn!(
            controller,
            object = %object.name_any(),
            category = error.category(),
            "reconcile failed, retrying: {error}"
        );
        Action::requeue(Duration::from_secs(5))
    }
}

/// Runs the operator until SIGTERM or Ctrl-C (a clean exit) or until it loses its Lease.
pub async fn run(options: Options) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));

    let server = tokio::spawn(server::serve(
        options.metrics_address,
        metrics.clone(),
        ready.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    // The API server must answer before anything else; it also makes the process ready.
    client.apiserver_version().await.map_err(RunError::Client)?;
    ready.store(true, Ordering::Relaxed);

    if let Some(lease) = &options.lease {
        tokio::select! {
            () = leader::acquire(&client, lease) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
    let identity = options
        .lease
        .as_ref()
        .map_or_else(|| "coffer-controller".to_owned(), |l| l.identity.clone());
    let (scheduled_backups, writer) = reflector::store_shared(4096);
    let ctx = Arc::new(Context::new(
        client.clone(),
        options.settings.clone(),
        metrics,
        identity,
        scheduled_backups,
    ));
    let controllers = tokio::spawn(controllers(client.clone(), ctx, writer, shutdown.clone()));

    let outcome = match &options.lease {
        Some(lease) => tokio::select! {
            lost = leader::hold(&client, lease) => Err(RunError::LeaseLost(lost)),
            () = shutdown.cancelled() => Ok(()),
        },
        None => {
            shutdown.cancelled().await;
            Ok(())
        }
    };
    shutdown.cancel();
    if outcome.is_ok() {
        // Let running reconciles finish before giving the Lease away.
        let _ = controllers.await;
        if let Some(lease) = &options.lease {
            leader::release(&client, lease).await;
        }
    }
    if let Ok(Err(e)) = server.await {
        return Err(RunError::Serve(options.metrics_address, e));
    }
    outcome
}

async fn signals(shutdown: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

/// Drops what the controller never reads from watched objects (their managed fields), so
/// that thousands of them cost little memory.
fn slim<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// A watch of `api` through a store, with managed fields dropped.
fn watched<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, config)
        .default_backoff()
        .modify(slim::<K>)
        .reflect(writer)
        .touched_objects()
}

/// Reconciles at once, per controller. Schedules get the most: when a thousand are due in the
/// same second, creating their Backups comes before running them. The limits bound the
/// requests (and memory) in flight.
const SCHEDULE_CONCURRENCY: u16 = 128;
const BACKUP_CONCURRENCY: u16 = 16;
const RESTORE_CONCURRENCY: u16 = 8;
const NOTIFIER_CONCURRENCY: u16 = 4;

/// The three controllers, until `shutdown`.
async fn controllers(
    client: Client,
    ctx: Arc<Context>,
    scheduled_writer: reflector::store::Writer<Backup>,
    shutdown: CancellationToken,
) {
    let ns = ctx.settings.namespace.clone();
    let ns = ns.as_deref();
    let workers = watcher::Config::default().labels("app.kubernetes.io/managed-by=coffer");
    let scheduled = watcher::Config::default().labels(SCHEDULE_LABEL);
    let config = |n| kube::runtime::controller::Config::default().concurrency(n);

    // The schedules' history: one watch drives a shared store (read by reconciles) and
    // wakes a schedule when one of its Backups changes. It runs on its own, so a busy
    // controller never stalls it, and schedules start once it has listed everything.
    let Some(scheduled_changes) = scheduled_writer.subscribe() else {
        tracing::error!("the scheduled Backups' store cannot be shared; schedules are not run");
        return;
    };
    let history = watcher(api::<Backup>(&client, ns), scheduled)
        .default_backoff()
        .modify(slim::<Backup>)
        .reflect_shared(scheduled_writer)
        .for_each(|_| async {});
    let history_stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = history => {}
            () = history_stop.cancelled() => {}
        }
    });
    tokio::select! {
        ready = ctx.scheduled_backups.wait_until_ready() => if ready.is_err() { return },
        () = shutdown.cancelled() => return,
    }
    let (schedule_store, schedule_writer) = reflector::store();
    let schedule_stream = watched(
        api::<BackupSchedule>(&client, ns),
        watcher::Config::default(),
        schedule_writer,
    );
    let schedules_seen = schedule_store.clone();
    let schedules = Controller::for_stream(schedule_stream, schedule_store)
        .with_config(config(SCHEDULE_CONCURRENCY))
        .watches_shared_stream(scheduled_changes, |backup: Arc<Backup>| {
            let schedule = backup.labels().get(SCHEDULE_LABEL)?.clone();
            Some(ObjectRef::<BackupSchedule>::new(&schedule).within(&backup.namespace()?))
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(schedule::reconcile, error_policy("schedule"), ctx.clone())
        .for_each(|_| async {});

    let (backup_store, backup_writer) = reflector::store();
    let backup_stream = watched(
        api::<Backup>(&client, ns),
        watcher::Config::default(),
        backup_writer,
    );
    let backups_seen = backup_store.clone();
    let backups = Controller::for_stream(backup_stream, backup_store)
        .with_config(config(BACKUP_CONCURRENCY))
        .owns(api::<Job>(&client, ns), workers.clone())
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(backup::reconcile, error_policy("backup"), ctx.clone())
        .for_each(|_| async {});

    let restores = Controller::new(
        api::<RestoreRequest>(&client, ns),
        watcher::Config::default(),
    );
    let _ = ctx.metrics.state.stores.set(state_metrics::Stores {
        schedules: schedules_seen,
        backups: backups_seen,
        restores: restores.store(),
    });
    let restores = restores
        .with_config(config(RESTORE_CONCURRENCY))
        .owns(api::<Job>(&client, ns), workers)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(restore::reconcile, error_policy("restore"), ctx.clone())
        .for_each(|_| async {});
    let notifiers = Controller::new(api::<Notifier>(&client, ns), watcher::Config::default())
        .with_config(config(NOTIFIER_CONCURRENCY))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(notifier::reconcile, error_policy("notifier"), ctx)
        .for_each(|_| async {});
    tokio::join!(schedules, backups, restores, notifiers);
}
