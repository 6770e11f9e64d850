//! The API server restarted (stopped for a random while, then started again on the same
//! etcd, as in a control-plane upgrade) at random points of backups, of a restore with
//! quiesce and of a schedule's life, against this test binary's own control plane (the
//! restart would disturb other tests sharing one), the S3 server and Redis. The seed is
//! printed; `COFFER_FAULT_SEED` replays it.
//!
//! The operator (with a 15-second Lease) rides out short outages; when one outlasts its
//! Lease it exits, as it should, and the test starts it again, as its Deployment would. After the restarts: every Backup is
//! `Succeeded` and verifies, each ran one worker Pod, no manifest exists that no `Succeeded`
//! Backup names, the restore ran once and the app is scaled back, and the schedule's next
//! run succeeds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use coffer::api::{Backup, BackupPhase, BackupSchedule, RestorePhase, RestoreRequest};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;

mod support;
use support::cli::ok;
use support::operator::{Operator, admin, eventually, plane};
use support::random::Random;
use support::resources::{
    RUN, create, deployment, finished_backup, finished_restore, redis_source, replicas, storage,
    stored_keys,
};

const RUNS: usize = 5;

/// The operator with a 15-second Lease: it outlives short outages and exits on long ones.
fn start_operator(ns: &str) -> Operator {
    Operator::start_with(ns, "a", &["--lease-duration", "15"])
}

/// Restarts the API server after a random delay, down for a random while.
async fn restart_api_server(random: &mut Random, what: &str) {
    let delay = random.between(Duration::ZERO, Duration::from_secs(4));
    tokio::time::sleep(delay).await;
    let down = random.between(Duration::from_millis(200), Duration::from_secs(12));
    tokio::task::spawn_blocking(move || plane().restart_apiserver(down))
        .await
        .unwrap()
        .unwrap();
    eprintln!("{what}: API server restarted after {delay:?}, down {down:?}");
}

/// Starts the operator again whenever it exits (as its Deployment would), for as long as
/// the returned task runs, and counts how often.
fn supervise(ns: &str) -> (tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
    let restarts = Arc::new(AtomicUsize::new(0));
    let counted = restarts.clone();
    let ns = ns.to_owned();
    let task = tokio::spawn(async move {
        let mut operator = start_operator(&ns);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if operator.exited() {
                counted.fetch_add(1, Ordering::Relaxed);
                eprintln!("the operator exited (its Lease lost); started again");
                operator = start_operator(&ns);
            }
        }
    });
    (task, restarts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_restarted_mid_run_loses_repeats_or_misreports_nothing() {
    let mut random = Random::new("apiserver-restart");
    let (_namespace, ns, s3, redis) = support::resources::redis_namespace("apirestart", 0).await;
    support::redis_data::fill_blobs(&redis.url(), 1500).await;
    deployment(&ns, "app", 1).await;
    let (supervisor, restarts) = supervise(&ns);
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "minutely"}, "spec": {"schedule": "* * * * *",
        "source": redis_source(&redis, "redis-auth"), "storage": storage(&s3)}}),
    )
    .await;

    let mut names = Vec::new();
    for run in 0..RUNS {
        let name = format!("run-{run}");
        create::<Backup>(
            &ns,
            json!({"metadata": {"name": name}, "spec": {
            "source": redis_source(&redis, "redis-auth"), "storage": storage(&s3)}}),
        )
        .await;
        restart_api_server(&mut random, &name).await;
        names.push(name);
    }
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "restore"}, "spec": {
        "backupRef": {"name": "run-0"}, "redis": {"conflict": "Overwrite"},
        "quiesce": [{"kind": "Deployment", "name": "app"}]}}),
    )
    .await;
    restart_api_server(&mut random, "restore").await;
    let restarted = Utc::now();

    let env = s3.env();
    let pods = || async {
        Api::<Pod>::namespaced(admin().await, &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    };
    for name in &names {
        let status = finished_backup(&ns, name).await.status.unwrap();
        assert_eq!(
            status.phase,
            Some(BackupPhase::Succeeded),
            "{name}: {status:?}"
        );
        ok(&["verify", &status.location.unwrap()], &env);
    }
    let done = finished_restore(&ns, "restore").await.status.unwrap();
    assert_eq!(done.phase, Some(RestorePhase::Succeeded), "{done:?}");
    assert_eq!(replicas(&ns, "app").await, 1);
    let all = pods().await;
    for job in names
        .iter()
        .map(|n| format!("{n}-backup"))
        .chain(["restore-restore".to_owned()])
    {
        let count = all
            .iter()
            .filter(|p| p.labels().get("batch.kubernetes.io/job-name") == Some(&job))
            .count();
        assert_eq!(count, 1, "{job}: worker Pods");
    }

    // The schedule's next run after the restarts succeeds.
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    eventually(RUN, "a scheduled Backup after the restarts", || async {
        backups
            .list(&ListParams::default().labels("coffer.dev/schedule=minutely"))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|b| {
                b.creation_timestamp()
                    .is_some_and(|t| t.0.as_second() > restarted.timestamp())
                    && b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Succeeded)
            })
    })
    .await;

    // Every manifest belongs to a Succeeded Backup (scheduled ones included).
    let succeeded: Vec<String> = backups
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|b| {
            let status = b.status?;
            (status.phase == Some(BackupPhase::Succeeded)).then_some(status.location?)
        })
        .collect();
    for key in stored_keys(&s3, &format!("ci/{ns}/")).await {
        if let Some(folder) = key.strip_suffix("manifest.json") {
            assert!(
                succeeded.iter().any(|l| l.ends_with(folder)),
                "{key} belongs to no Succeeded Backup"
            );
        }
    }
    eprintln!(
        "the operator was started again {} time(s)",
        restarts.load(Ordering::Relaxed)
    );
    supervisor.abort();
}
