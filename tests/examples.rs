//! Every file in `deploy/examples/` deserialises into the Rust types, uses no field the types
//! do not know, passes the CRDs' CEL rules, and says what its comment says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use coffer::api::{
    Backup, BackupSchedule, DeletionPolicy, QuiesceTarget, RedisConflict, RestoreRequest,
    restore_request::WorkloadKind,
};
use coffer::schedule::CronSchedule;
use kube::CustomResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

mod support;
use support::cel_errors;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples")
}

/// Reads one example (a single YAML document) as JSON.
fn read(name: &str) -> Value {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not valid YAML: {e}"))
}

/// Deserialises `doc` into `K`, and checks that every field of the document survives a
/// round trip through `K` (a misspelt or unknown field would be silently dropped).
fn typed<K: DeserializeOwned + Serialize + CustomResourceExt>(name: &str, doc: &Value) -> K {
    let object: K = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{name} does not deserialise into {}: {e}", K::crd_name()));
    let back = serde_json::to_value(&object).unwrap();
    assert_subset(name, "", doc, &back);
    let errors = cel_errors(&K::crd(), doc, None);
    assert!(errors.is_empty(), "{name} breaks a CEL rule: {errors:?}");
    object
}

fn assert_subset(file: &str, path: &str, original: &Value, round_tripped: &Value) {
    match (original, round_tripped) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let inner = format!("{path}.{key}");
                let other = b
                    .get(key)
                    .unwrap_or_else(|| panic!("{file}: field {inner} is not known to the types"));
                assert_subset(file, &inner, value, other);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{file}: {path} changed length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_subset(file, &format!("{path}[{i}]"), x, y);
            }
        }
        (a, b) => assert_eq!(a, b, "{file}: {path} changed in a round trip"),
    }
}

#[test]
fn every_example_file_is_checked_here() {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "backup-now.yaml",
            "mysql-schedule.yaml",
            "postgres-schedule.yaml",
            "redis-schedule.yaml",
            "restore-from-storage.yaml",
            "restore.yaml",
            "volume-schedule.yaml",
        ],
        "a new example needs a test in tests/examples.rs"
    );
}

#[test]
fn redis_schedule_runs_at_midnight_in_manila_and_keeps_seven() {
    let s: BackupSchedule = typed("redis-schedule.yaml", &read("redis-schedule.yaml"));
    assert_eq!(s.spec.time_zone, "Asia/Manila");
    assert_eq!(s.spec.retention.as_ref().unwrap().keep_last, Some(7));
    let redis = s.spec.source.redis.as_ref().unwrap();
    assert_eq!(
        redis.password_secret_ref.as_ref().unwrap().name,
        "redis-auth"
    );
    let cron = CronSchedule::parse(&s.spec.schedule, &s.spec.time_zone).unwrap();
    let after = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    assert_eq!(
        cron.next_after(after),
        Some(Utc.with_ymd_and_hms(2026, 12, 1, 16, 0, 0).unwrap())
    );
}

#[test]
fn postgres_schedule_has_two_databases_and_daily_weekly_monthly_retention() {
    let s: BackupSchedule = typed("postgres-schedule.yaml", &read("postgres-schedule.yaml"));
    let pg = s.spec.source.postgres.as_ref().unwrap();
    assert_eq!(pg.databases, ["app", "functions"]);
    let r = s.spec.retention.as_ref().unwrap();
    assert_eq!(
        (r.keep_daily, r.keep_weekly, r.keep_monthly),
        (Some(7), Some(4), Some(6))
    );
    assert!(s.spec.storage.s3.as_ref().unwrap().force_path_style);
    CronSchedule::parse(&s.spec.schedule, &s.spec.time_zone).unwrap();
}

#[test]
fn mysql_schedule_runs_at_two_in_new_york_and_keeps_30_days_and_12_months() {
    use coffer::controller::retention::{KeptBy, Outcome, Run, select};
    let s: BackupSchedule = typed("mysql-schedule.yaml", &read("mysql-schedule.yaml"));
    let my = s.spec.source.mysql.as_ref().unwrap();
    assert_eq!(
        (my.port, my.user.as_str(), my.users),
        (3306, "backup", true)
    );
    assert_eq!(my.databases, ["laravel"]);
    let cron = CronSchedule::parse(&s.spec.schedule, &s.spec.time_zone).unwrap();
    // 02:00 in New York: 07:00 UTC in winter, 06:00 UTC in summer.
    let winter = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    assert_eq!(
        cron.next_after(winter),
        Some(Utc.with_ymd_and_hms(2026, 12, 1, 7, 0, 0).unwrap())
    );
    let summer = Utc.with_ymd_and_hms(2027, 7, 1, 0, 0, 0).unwrap();
    assert_eq!(
        cron.next_after(summer),
        Some(Utc.with_ymd_and_hms(2027, 7, 1, 6, 0, 0).unwrap())
    );
    // Two years of nightly backups: every one of the last 30 days, plus one a month for
    // the 12 most recent months.
    let mut runs = Vec::new();
    let mut at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    while let Some(next) = cron.next_after(at) {
        if next > Utc.with_ymd_and_hms(2026, 12, 31, 12, 0, 0).unwrap() {
            break;
        }
        runs.push(Run {
            name: next.to_rfc3339(),
            time: next,
            outcome: Outcome::Succeeded,
        });
        at = next;
    }
    let now = Utc.with_ymd_and_hms(2026, 12, 31, 12, 0, 0).unwrap();
    let policy = s.spec.retention.as_ref().unwrap();
    let selection = select(&runs, policy, cron.time_zone(), now).unwrap();
    let newest_30: Vec<&String> = runs.iter().rev().take(30).map(|r| &r.name).collect();
    for name in &newest_30 {
        assert!(selection.keep.iter().any(|(k, _)| k == *name), "{name}");
    }
    let monthly = selection
        .keep
        .iter()
        .filter(|(_, by)| by.contains(&KeptBy::Monthly))
        .count();
    assert_eq!(monthly, 12);
    let oldest_kept = selection.keep.last().unwrap().0.clone();
    assert!(oldest_kept.starts_with("2026-01-31"), "{oldest_kept}");
    assert_eq!(
        selection.keep.len(),
        30 + 11,
        "the newest month's is among the 30 days"
    );
}

#[test]
fn volume_schedule_backs_up_a_claim_into_a_claim() {
    let s: BackupSchedule = typed("volume-schedule.yaml", &read("volume-schedule.yaml"));
    assert_eq!(
        s.spec.source.volume.as_ref().unwrap().claim_name,
        "functions-data"
    );
    assert_eq!(
        s.spec.storage.filesystem.as_ref().unwrap().claim_name,
        "backup-store"
    );
    assert_eq!(s.spec.time_zone, "UTC", "the default time zone");
    CronSchedule::parse(&s.spec.schedule, &s.spec.time_zone).unwrap();
}

#[test]
fn on_demand_backup_takes_everything_from_its_schedule() {
    let b: Backup = typed("backup-now.yaml", &read("backup-now.yaml"));
    assert_eq!(b.spec.schedule_ref.as_ref().unwrap().name, "shop-redis");
    assert!(b.spec.source.is_none() && b.spec.storage.is_none());
    assert_eq!(b.spec.deletion_policy, DeletionPolicy::Retain);
}

#[test]
fn restore_quiesces_the_backend_deployment() {
    let r: RestoreRequest = typed("restore.yaml", &read("restore.yaml"));
    assert_eq!(
        r.spec.quiesce,
        [QuiesceTarget {
            kind: WorkloadKind::Deployment,
            name: "shop-backend".into()
        }]
    );
    assert_eq!(
        r.spec.redis.as_ref().unwrap().conflict,
        RedisConflict::Overwrite
    );
    assert!(r.spec.from.is_none());
}

#[test]
fn disaster_recovery_restore_reads_the_latest_backup_from_storage() {
    let r: RestoreRequest = typed(
        "restore-from-storage.yaml",
        &read("restore-from-storage.yaml"),
    );
    let from = r.spec.from.as_ref().unwrap();
    assert!(from.latest);
    assert_eq!(from.location, "shop/shop-postgres/");
    assert!(r.spec.backup_ref.is_none());
    let pg = r.spec.postgres.as_ref().unwrap();
    assert!(pg.clean && pg.create && pg.globals);
}
