//! Benchmark, not a test (ignored; `scripts/bench-controller` runs it): 1,000 every-minute
//! BackupSchedules on the local control plane. Reports the controller's time to reconcile them
//! all from a cold start, how late the runs of the next minute start after their due time
//! (p50/p99, from the Scheduled Events' microsecond timestamps), and the controller's peak RSS.
//! Pods are not run (no kubelet for this namespace), so every run stays Running and later
//! minutes are skipped under `concurrencyPolicy: Forbid`, as they would be in a real cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use coffer::api::BackupSchedule;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

mod support;
use support::operator::{Operator, admin, eventually, prepare};

fn schedules() -> usize {
    std::env::var("BENCH_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test]
#[ignore = "a benchmark: run scripts/bench-controller"]
async fn thousand_schedules() {
    let n = schedules();
    let client = admin().await;
    let ns = format!("bench-{}", std::process::id());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    prepare(&ns).await;
    let api: Api<BackupSchedule> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                let schedule: BackupSchedule = serde_json::from_value(json!({
                    "metadata": {"name": format!("s-{i:04}")},
                    "spec": {"schedule": "* * * * *", "timeZone": "Europe/Berlin",
                        "source": {"redis": {"host": "127.0.0.1", "port": 6379}},
                        "storage": {"s3": {"bucket": "backups", "endpoint": "http://127.0.0.1:9"}},
                        "retention": {"keepLast": 3}}}))
                .unwrap();
                api.create(&PostParams::default(), &schedule).await.unwrap();
            }
        })
        .await;
    eprintln!(
        "created {n} schedules in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Cold start: every schedule reconciled (its next run time in status).
    let binary = std::env::var_os("COFFER_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_coffer").into());
    let started = Instant::now();
    let operator = Operator::start_binary(&binary, &ns, "bench");
    let reconciled = eventually(
        Duration::from_secs(300),
        "every schedule to be reconciled",
        || async {
            let list = api.list(&ListParams::default()).await.unwrap();
            let done = list
                .items
                .iter()
                .filter(|s| {
                    s.status
                        .as_ref()
                        .is_some_and(|s| s.next_schedule_time.is_some())
                })
                .count();
            (done == n).then(|| started.elapsed())
        },
    )
    .await;
    let steady_from = Utc::now();
    eprintln!(
        "reconciled {n} schedules from a cold start in {:.1} s",
        reconciled.as_secs_f64()
    );

    // The first minute boundary after every schedule was reconciled, and 30 s for its runs.
    let next_minute = steady_from
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap()
        + chrono::Duration::minutes(1);
    let wait = (next_minute - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(30);
    tokio::time::sleep(wait).await;

    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut late: Vec<f64> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Scheduled"))
        .filter_map(|e| {
            let backup = e.related.as_ref()?.name.as_deref()?;
            let stamp = backup.rsplitn(3, '-').take(2).collect::<Vec<_>>();
            let due =
                NaiveDateTime::parse_from_str(&format!("{}{}", stamp[1], stamp[0]), "%Y%m%d%H%M%S")
                    .ok()?
                    .and_utc();
            let at: DateTime<Utc> =
                DateTime::from_timestamp_micros(e.event_time.as_ref()?.0.as_microsecond())?;
            (due == next_minute).then(|| (at - due).num_microseconds().unwrap_or(0) as f64 / 1e6)
        })
        .collect();
    late.sort_by(f64::total_cmp);
    let rss = std::fs::read_to_string(format!("/proc/{}/status", operator.pid().unwrap()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        !late.is_empty(),
        "no Scheduled events for the run due at {next_minute}"
    );
    println!("| schedules | {n} |");
    println!(
        "| reconcile all from a cold start | {:.1} s |",
        reconciled.as_secs_f64()
    );
    println!("| runs started for {next_minute} | {} of {n} |", late.len());
    println!("| lateness p50 | {:.3} s |", percentile(&late, 0.5));
    println!("| lateness p99 | {:.3} s |", percentile(&late, 0.99));
    println!("| lateness max | {:.3} s |", late[late.len() - 1]);
    println!("| controller peak RSS | {:.1} MiB |", rss as f64 / 1024.0);
}
