//! The operator end to end: `coffer controller` runs as the non-admin user bound to the
//! chart's RBAC (`deploy/coffer.yaml`), against the real control plane (the Job controller and the
//! process kubelet run the worker Pods), real Redis, PostgreSQL and an S3 server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use coffer::api::{Backup, BackupPhase, BackupSchedule, RestorePhase, RestoreRequest};
use coffer_testenv::{PostgresServer, RedisServer};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

mod support;
use support::operator::{Operator, admin, eventually, plane, prepare};
use support::resources::{
    BUCKET, RUN, create, deployment, events_of, finished_backup, finished_restore, jobs,
    redis_source, replicas, s3_secret, s3_with_bucket, secret, setup, storage, stored_keys,
    times_said,
};

fn pg_source(pg: &PostgresServer, secret: &str) -> Value {
    json!({"postgres": {"host": "127.0.0.1", "port": pg.port(), "user": pg.user(), "databases": ["shop"],
        "globals": false, "passwordSecretRef": {"name": secret, "key": "password"}}})
}

fn ready(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> (String, String, String) {
    let c = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// Asserts that `Ready` is False with `reason`; returns its message.
fn assert_not_ready(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    reason: &str,
) -> String {
    let (ok, got, message) = ready(conditions);
    assert_eq!((ok.as_str(), got.as_str()), ("False", reason), "{message}");
    message
}

/// Waits until the object's `Ready` condition has `reason`, and returns the object.
async fn until_ready_reason<K>(api: &Api<K>, name: &str, reason: &str) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    eventually(RUN, &format!("{name}'s {reason}"), || async {
        let object = api.get(name).await.unwrap();
        let value = serde_json::to_value(&object).unwrap();
        let conditions = value["status"]["conditions"].as_array()?;
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["reason"] == reason)
            .then_some(object)
    })
    .await
}

#[tokio::test]
async fn every_minute_schedules_back_up_redis_postgres_and_a_volume() {
    let ns = plane().namespace("schedules").await.unwrap();
    let ns = ns.name().to_owned();
    prepare(&ns).await;
    // The API server's PodSecurity admission judges the worker Pods: under `restricted` a
    // Pod that asks for too much is never created, and no backup would succeed.
    let label =
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin().await)
        .patch(
            &ns,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&label),
        )
        .await
        .unwrap();
    let s3 = s3_with_bucket().await;
    s3_secret(&ns, &s3).await;
    let redis = RedisServer::start_with_password("redis-pw").unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::set_numbered(&mut con, "key:", "", 100).await;
    secret(&ns, "redis-auth", &[("password", "redis-pw")]).await;
    let pg = PostgresServer::start().unwrap();
    support::pg_data::create(
        &pg,
        "shop",
        "CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 500);",
    )
    .await;
    secret(&ns, "pg-auth", &[("password", pg.password())]).await;
    create::<PersistentVolumeClaim>(
        &ns,
        json!({"metadata": {"name": "app-data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    let data = plane().claim_dir(&ns, "app-data").unwrap();
    std::fs::create_dir_all(data.join("uploads")).unwrap();
    std::fs::write(data.join("uploads/a.txt"), "hello").unwrap();
    std::fs::write(data.join("config.json"), "{}").unwrap();

    let _operator = Operator::start(&ns, "solo");
    for (name, source) in [
        ("redis", redis_source(&redis, "redis-auth")),
        ("postgres", pg_source(&pg, "pg-auth")),
        ("volume", json!({"volume": {"claimName": "app-data"}})),
    ] {
        create::<BackupSchedule>(&ns, json!({"metadata": {"name": name}, "spec": {
            "schedule": "* * * * *", "timeZone": "Asia/Manila", "source": source, "storage": storage(&s3)}}))
        .await;
    }
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    let schedules: Api<BackupSchedule> = Api::namespaced(admin().await, &ns);
    for (schedule, stat) in [("redis", "keys"), ("postgres", "rows"), ("volume", "files")] {
        let name = eventually(RUN, &format!("a Backup of schedule {schedule}"), || async {
            let list = backups
                .list(&ListParams::default().labels(&format!("coffer.dev/schedule={schedule}")))
                .await
                .unwrap();
            list.items.first().map(|b| b.name_any())
        })
        .await;
        let re = regex::Regex::new(&format!(r"^{schedule}-\d{{8}}-\d{{6}}$")).unwrap();
        assert!(re.is_match(&name), "{name}");
        let backup = finished_backup(&ns, &name).await;
        let status = backup.status.clone().unwrap();
        assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
        let location = status.location.clone().unwrap();
        assert!(
            location.starts_with(&format!("s3://{BUCKET}/ci/{ns}/{schedule}/")),
            "{location}"
        );
        assert!(status.stored_bytes.unwrap() > 0 && status.raw_bytes.unwrap() > 0);
        assert_eq!(status.manifest_sha256.as_ref().map(String::len), Some(64));
        let stats = serde_json::to_value(status.stats.unwrap()).unwrap();
        let expected = match schedule {
            "redis" => 100,
            "postgres" => 500,
            _ => 3, // two files and one directory
        };
        assert_eq!(stats[stat], json!(expected), "{schedule}: {stats}");
        let folder = location.trim_start_matches(&format!("s3://{BUCKET}/"));
        let keys = stored_keys(&s3, folder).await;
        assert!(keys.contains(&format!("{folder}manifest.json")), "{keys:?}");
        assert!(
            events_of(&ns, &name)
                .await
                .iter()
                .any(|(t, r, _)| t == "Normal" && r == "Succeeded")
        );

        let schedule_status = eventually(RUN, "the schedule's status", || async {
            let s = schedules.get(schedule).await.unwrap().status?;
            (s.last_successful_backup.as_deref() == Some(name.as_str())).then_some(s)
        })
        .await;
        assert_eq!(ready(&schedule_status.conditions).0, "True");
        assert!(schedule_status.next_schedule_time.is_some());
        assert!(schedule_status.last_schedule_time.is_some());
    }
    // The worker Jobs are locked down.
    for job in jobs(&ns).await {
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("coffer-worker"));
        let env = serde_json::to_string(&pod.containers[0].env).unwrap();
        assert!(
            !env.contains("redis-pw") && !env.contains(s3.secret_key()),
            "{env}"
        );
    }
    let metrics = _operator.get("/metrics").await;
    for schedule in ["redis", "postgres", "volume"] {
        assert!(
            metrics.contains(&format!(r#"coffer_backups_total{{namespace="{ns}",schedule="{schedule}",source_kind="{schedule}",result="succeeded"}}"#)),
            "{metrics}"
        );
        // What the alerts read: the interval, the last success, and that the run did not fail.
        let series =
            format!(r#"{{namespace="{ns}",schedule="{schedule}",source_kind="{schedule}"}}"#);
        assert!(
            metrics.contains(&format!("coffer_schedule_interval_seconds{series} 60")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "coffer_schedule_last_success_timestamp_seconds{series} "
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("coffer_schedule_last_run_failed{series} 0")),
            "{metrics}"
        );
    }
    assert!(_operator.get("/readyz").await.ends_with("ok"));
}

/// A scheduled-looking Backup of `schedule` due at `due`.
fn history_backup(
    name: &str,
    schedule: &str,
    due: chrono::DateTime<Utc>,
    source: &Value,
    storage: &Value,
    policy: &str,
) -> Value {
    let time = due.to_rfc3339();
    json!({"metadata": {"name": name, "labels": {"coffer.dev/schedule": schedule},
        "annotations": {"coffer.dev/scheduled-time": time}},
        "spec": {"scheduleRef": {"name": schedule}, "source": source, "storage": storage, "deletionPolicy": policy}})
}

#[tokio::test]
async fn retention_deletes_old_backups_and_their_data_and_a_restore_brings_redis_back() {
    let (_namespace, ns, s3) = setup("retention").await;
    let redis = RedisServer::start_with_password("redis-pw").unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::set_numbered(&mut con, "user:", "v", 50).await;
    secret(&ns, "redis-auth", &[("password", "redis-pw")]).await;
    let source = redis_source(&redis, "redis-auth");
    let storage = storage(&s3);
    let _operator = Operator::start(&ns, "solo");
    // A schedule that does not fire during the test; its history is made by hand.
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "bot"}, "spec": {
        "schedule": "0 0 1 1 *", "source": source, "storage": storage,
        "retention": {"keepLast": 1}}}),
    )
    .await;
    // One clock reading for the history and for the folders it is stored in (no hour may
    // turn between the two).
    let base = Utc::now();
    let due = |hours: i64| base - chrono::Duration::hours(hours);
    for (name, hours, policy) in [
        ("bot-old", 3, "Retain"),
        ("bot-mid", 2, "Delete"),
        ("bot-new", 1, "Delete"),
    ] {
        create::<Backup>(
            &ns,
            history_backup(name, "bot", due(hours), &source, &storage, policy),
        )
        .await;
    }
    let new = finished_backup(&ns, "bot-new").await;
    assert_eq!(
        new.status.as_ref().unwrap().phase,
        Some(BackupPhase::Succeeded)
    );
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    eventually(RUN, "retention to delete bot-old and bot-mid", || async {
        let names: Vec<String> = backups
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|b| b.name_any())
            .collect();
        (names == ["bot-new"]).then_some(())
    })
    .await;
    // bot-mid's data went with it (manifest first); bot-old was Retain, so its data stays.
    let folder_of = |hours: i64| format!("ci/{ns}/bot/{}", due(hours).format("%Y%m%dT%H"));
    let old_keys = stored_keys(&s3, &folder_of(3)).await;
    assert!(
        old_keys.iter().any(|k| k.ends_with("/manifest.json")),
        "{old_keys:?}"
    );
    assert!(stored_keys(&s3, &folder_of(2)).await.is_empty());
    let schedule_events = events_of(&ns, "bot").await;
    assert!(
        schedule_events
            .iter()
            .any(|(_, r, n)| r == "RetentionDeleted" && n.contains("bot-mid")),
        "{schedule_events:?}"
    );

    // A backup right now, with everything taken from the schedule.
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "before-deploy"}, "spec": {"scheduleRef": {"name": "bot"}}}),
    )
    .await;
    let now = finished_backup(&ns, "before-deploy").await;
    let status = now.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
    assert!(status.location.unwrap().contains(&format!("/ci/{ns}/bot/")));
    assert_eq!(status.stats.unwrap().keys, Some(50));

    // Restore it into the flushed server.
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "undo"}, "spec": {"backupRef": {"name": "before-deploy"}}}),
    )
    .await;
    let restores: Api<RestoreRequest> = Api::namespaced(admin().await, &ns);
    let restored = eventually(RUN, "the restore", || async {
        let r = restores.get("undo").await.unwrap();
        matches!(
            r.status.as_ref()?.phase?,
            RestorePhase::Succeeded | RestorePhase::Failed
        )
        .then_some(r)
    })
    .await;
    let status = restored.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    assert_eq!(status.stats.unwrap().restored, Some(50));
    let value: String = redis::cmd("GET")
        .arg("user:7")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(value, "v7");
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, 50);

    // Disaster recovery: no Backup object, only the store; the newest complete backup of the
    // schedule's folder is found and restored.
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "from-storage"}, "spec": {
        "from": {"storage": storage, "location": format!("{ns}/bot/"), "latest": true},
        "target": source, "redis": {"database": 0}}}),
    )
    .await;
    let status = finished_restore(&ns, "from-storage").await.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    let newest = backups
        .get("before-deploy")
        .await
        .unwrap()
        .status
        .unwrap()
        .location;
    assert_eq!(status.location, newest, "the newest backup in the folder");
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, 50);
}

#[tokio::test]
async fn a_postgres_restore_quiesces_the_app_and_scales_it_back_even_when_it_fails() {
    let (_namespace, ns, s3) = setup("pg-restore").await;
    let pg = PostgresServer::start().unwrap();
    support::pg_data::create(&pg, "shop", "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 1000) g;").await;
    secret(&ns, "pg-auth", &[("password", pg.password())]).await;
    let refused = support::distinctive_secret("pg-pw");
    secret(&ns, "bad-auth", &[("password", &refused)]).await;
    let _operator = Operator::start(&ns, "solo");
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "shop-now"}, "spec": {
        "source": pg_source(&pg, "pg-auth"), "storage": storage(&s3)}}),
    )
    .await;
    let backup = finished_backup(&ns, "shop-now").await;
    assert_eq!(
        backup.status.as_ref().unwrap().phase,
        Some(BackupPhase::Succeeded),
        "{:?}",
        backup.status
    );

    deployment(&ns, "web", 2).await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin().await, &ns);
    eventually(RUN, "two web Pods", || async {
        let n = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .len();
        (n == 2).then_some(())
    })
    .await;
    let shop = support::pg_data::connect(&pg, "shop").await;
    shop.batch_execute("DELETE FROM orders WHERE id > 10")
        .await
        .unwrap();

    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "rollback"}, "spec": {
        "backupRef": {"name": "shop-now"}, "postgres": {"clean": true},
        "quiesce": [{"kind": "Deployment", "name": "web"}]}}),
    )
    .await;
    // While it runs, the app is stopped.
    let restores: Api<RestoreRequest> = Api::namespaced(admin().await, &ns);
    eventually(RUN, "web to be scaled to 0", || async {
        let r = restores.get("rollback").await.unwrap();
        let quiesced = r.status?.quiesced;
        (quiesced.len() == 1 && quiesced[0].replicas == 2 && replicas(&ns, "web").await == 0)
            .then_some(())
    })
    .await;
    let done = finished_restore(&ns, "rollback").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    assert_eq!(status.stats.unwrap().rows_verified, Some(1000));
    let rows: i64 = shop
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1000);
    assert_eq!(replicas(&ns, "web").await, 2);
    assert!(
        events_of(&ns, "rollback")
            .await
            .iter()
            .any(|(_, r, _)| r == "Succeeded")
    );

    // The same with a password the server refuses: Failed, with the reason, and web is back.
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "refused"}, "spec": {
        "backupRef": {"name": "shop-now"}, "target": pg_source(&pg, "bad-auth"),
        "quiesce": [{"kind": "Deployment", "name": "web"}]}}),
    )
    .await;
    let failed = finished_restore(&ns, "refused").await;
    let status = failed.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Failed));
    let message = assert_not_ready(&status.conditions, "AuthenticationFailed");
    assert!(!message.contains(&refused), "{message}");
    assert!(message.contains("scaled back web to 2"), "{message}");
    assert_eq!(replicas(&ns, "web").await, 2);

    // What the restore alert reads: the failed RestoreRequest, and not the one that worked;
    // each run counted by its result.
    let metrics = _operator.get("/metrics").await;
    for (series, present) in [
        (
            format!(r#"coffer_restore_failed{{namespace="{ns}",restore_request="refused"}} 1"#),
            true,
        ),
        (
            format!(r#"coffer_restore_failed{{namespace="{ns}",restore_request="rollback"}}"#),
            false,
        ),
        (
            format!(
                r#"coffer_restores_total{{namespace="{ns}",schedule="",source_kind="postgres",result="succeeded"}} 1"#
            ),
            true,
        ),
        (
            format!(
                r#"coffer_restores_total{{namespace="{ns}",schedule="",source_kind="postgres",result="AuthenticationFailed"}} 1"#
            ),
            true,
        ),
    ] {
        assert_eq!(metrics.contains(&series), present, "{series} in {metrics}");
    }
}

#[tokio::test]
async fn a_wrong_password_fails_the_backup_and_a_missing_secret_makes_no_job() {
    let (_namespace, ns, s3) = setup("failures").await;
    let redis = RedisServer::start_with_password("right").unwrap();
    let wrong = support::distinctive_secret("redis-pw");
    secret(&ns, "wrong-auth", &[("password", &wrong)]).await;
    let _operator = Operator::start(&ns, "solo");
    create::<BackupSchedule>(&ns, json!({"metadata": {"name": "cache"}, "spec": {
        "schedule": "0 0 1 1 *", "source": redis_source(&redis, "wrong-auth"), "storage": storage(&s3)}})).await;
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "cache-now"}, "spec": {"scheduleRef": {"name": "cache"}}}),
    )
    .await;
    let backup = finished_backup(&ns, "cache-now").await;
    let status = backup.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    // The failure alert's metric names it; the schedule (never succeeded) has an interval and
    // a creation time for the missing-backup alert, and no last success.
    // The gauges come from the operator's cache of Backups, which its watch updates a moment
    // after the status this test read (under load, after the first scrape).
    let failed = format!(r#"coffer_backup_failed{{namespace="{ns}",backup="cache-now"}} 1"#);
    let metrics = eventually(Duration::from_secs(30), "the failed backup's gauge", || {
        let operator = &_operator;
        let failed = &failed;
        async move {
            let metrics = operator.get("/metrics").await;
            metrics.contains(failed.as_str()).then_some(metrics)
        }
    })
    .await;
    let series = format!(r#"{{namespace="{ns}",schedule="cache",source_kind="redis"}}"#);
    assert!(metrics.contains(&format!("coffer_schedule_interval_seconds{series} 31")));
    assert!(metrics.contains(&format!(
        "coffer_schedule_backup_due_timestamp_seconds{series} "
    )));
    assert!(metrics.contains(&format!(
        "coffer_schedule_created_timestamp_seconds{series} "
    )));
    assert!(!metrics.contains(&format!(
        "coffer_schedule_last_success_timestamp_seconds{series}"
    )));
    let message = assert_not_ready(&status.conditions, "AuthenticationFailed");
    assert!(!message.contains(&wrong), "{message}");
    let events = events_of(&ns, "cache-now").await;
    assert!(
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "Failed" && n.contains("AuthenticationFailed")),
        "{events:?}"
    );
    assert!(
        stored_keys(&s3, &format!("ci/{ns}/cache/"))
            .await
            .is_empty(),
        "a failed backup leaves nothing"
    );
    let schedules: Api<BackupSchedule> = Api::namespaced(admin().await, &ns);
    let schedule = eventually(RUN, "the schedule's status", || async {
        schedules.get("cache").await.unwrap().status
    })
    .await;
    assert_eq!(
        ready(&schedule.conditions).0,
        "True",
        "a failed run does not make the schedule unready"
    );

    // A Secret that does not exist: a condition that names it, and no Job.
    let mut source = redis_source(&redis, "nope");
    source["redis"]["passwordSecretRef"]["name"] = json!("nope");
    create::<Backup>(&ns, json!({"metadata": {"name": "orphan"}, "spec": {"source": source, "storage": storage(&s3)}})).await;
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    let status = until_ready_reason(&backups, "orphan", "SecretNotFound")
        .await
        .status
        .unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Pending));
    assert!(
        ready(&status.conditions)
            .2
            .contains(&format!("Secret {ns}/nope does not exist"))
    );
    assert!(
        !jobs(&ns)
            .await
            .iter()
            .any(|j| j.name_any().starts_with("orphan"))
    );
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "lost"}, "spec": {
        "schedule": "* * * * *", "source": source, "storage": storage(&s3)}}),
    )
    .await;
    let schedule = until_ready_reason(&schedules, "lost", "SecretNotFound")
        .await
        .status
        .unwrap();
    assert_eq!(ready(&schedule.conditions).0, "False");
    // An invalid time zone is named too.
    create::<BackupSchedule>(&ns, json!({"metadata": {"name": "mars"}, "spec": {
        "schedule": "0 3 * * *", "timeZone": "Mars/Olympus", "source": source, "storage": storage(&s3)}})).await;
    until_ready_reason(&schedules, "mars", "UnknownTimeZone").await;
    // It takes no backups, and will turn stale: judged with a daily schedule's limit.
    let (_, message) = fresh_of(&schedules, "mars", "Fresh", RUN).await;
    assert!(message.contains("(maxAge 2d)"), "{message}");
}

/// The `Fresh` condition of a schedule, as (status, reason, message).
async fn fresh_of(
    schedules: &Api<BackupSchedule>,
    name: &str,
    reason: &str,
    within: Duration,
) -> (String, String) {
    eventually(within, &format!("{name}'s Fresh {reason}"), || async {
        let schedule = schedules.get(name).await.unwrap();
        let c = schedule
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Fresh" && c.reason == reason)?;
        Some((c.status, c.message))
    })
    .await
}

#[tokio::test]
async fn a_schedule_without_a_recent_success_turns_stale_once_and_fresh_again() {
    let (_namespace, ns, s3) = setup("fresh").await;
    let redis = RedisServer::start_with_password("pw").unwrap();
    secret(&ns, "auth", &[("password", "pw")]).await;
    let operator = Operator::start(&ns, "solo");
    let schedules: Api<BackupSchedule> = Api::namespaced(admin().await, &ns);
    // A yearly schedule: its default maxAge is twice its longest gap (366 days when a leap
    // year is ahead).
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "yearly"}, "spec": {
        "schedule": "0 0 1 1 *", "source": redis_source(&redis, "auth"), "storage": storage(&s3)}}),
    )
    .await;
    let cron = coffer::schedule::CronSchedule::parse("0 0 1 1 *", "UTC").unwrap();
    let default = coffer::freshness::default_max_age(&cron, Utc::now()).unwrap();
    let (status, message) = fresh_of(&schedules, "yearly", "Fresh", RUN).await;
    assert_eq!(status, "True");
    assert!(message.contains("no backup has succeeded yet"), "{message}");
    let limit = coffer::freshness::limit(default);
    assert!(message.contains(&format!("(maxAge {limit})")), "{message}");
    // A yearly schedule allowed one minute: nothing wakes it but the time it turns stale
    // (its next run is a year away; without that wake it would be seen after 5 minutes).
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "yearly-strict"}, "spec": {
        "schedule": "0 0 1 1 *", "freshness": {"maxAge": "1m"},
        "source": redis_source(&redis, "auth"), "storage": storage(&s3)}}),
    )
    .await;

    // Every run fails (a wrong password) and two minutes is all it may wait.
    secret(&ns, "wrong", &[("password", "not-pw")]).await;
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "strict"}, "spec": {
        "schedule": "* * * * *", "freshness": {"maxAge": "2m"},
        "source": redis_source(&redis, "wrong"), "storage": storage(&s3)}}),
    )
    .await;
    let (status, _) = fresh_of(&schedules, "yearly-strict", "Stale", RUN).await;
    assert_eq!(status, "False");
    let (status, message) = fresh_of(&schedules, "strict", "Stale", Duration::from_secs(240)).await;
    assert_eq!(status, "False");
    assert!(
        message.contains("since the schedule was created, longer than maxAge 2m")
            && message.contains(&format!(
                "kubectl -n {ns} get backups -l coffer.dev/schedule=strict"
            )),
        "{message}"
    );
    let series = format!(r#"{{namespace="{ns}",schedule="strict",source_kind="redis"}}"#);
    eventually(Duration::from_secs(30), "the stale gauge", || async {
        let metrics = operator.get("/metrics").await;
        metrics
            .contains(&format!("coffer_schedule_stale{series} 1"))
            .then_some(())
    })
    .await;
    // One more failed run while stale says nothing new.
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    eventually(RUN, "a third failed run", || async {
        let failed = backups
            .list(&ListParams::default().labels("coffer.dev/schedule=strict"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Failed))
            .count();
        (failed >= 3).then_some(())
    })
    .await;
    assert_eq!(times_said(&ns, "strict", "Stale").await, 1);
    // The password fixed: the next run succeeds and the schedule is fresh again, said once.
    let fixed = json!({"spec": {"source": redis_source(&redis, "auth")}});
    schedules
        .patch("strict", &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .unwrap();
    let (status, message) = fresh_of(&schedules, "strict", "Fresh", RUN).await;
    assert_eq!(status, "True");
    assert!(
        message.contains("the newest successful backup completed at"),
        "{message}"
    );
    eventually(Duration::from_secs(30), "the gauge back to 0", || async {
        let metrics = operator.get("/metrics").await;
        metrics
            .contains(&format!("coffer_schedule_stale{series} 0"))
            .then_some(())
    })
    .await;
    assert_eq!(times_said(&ns, "strict", "Stale").await, 1);
    assert_eq!(times_said(&ns, "strict", "Fresh").await, 1);
    assert_eq!(times_said(&ns, "yearly", "Stale").await, 0);
    assert_eq!(times_said(&ns, "yearly-strict", "Stale").await, 1);
}

/// A leader cut off from the API server (a network partition, its requests unanswered)
/// stops before its Lease could expire: it exits before the standby, which reaches the API
/// server, takes over. Observed every 20 ms, not assumed from the Lease arithmetic.
#[tokio::test]
async fn a_leader_that_cannot_renew_exits_before_another_takes_over() {
    let ns = plane().namespace("partition").await.unwrap();
    let ns = ns.name().to_owned();
    prepare(&ns).await;
    let api: std::net::SocketAddr = plane()
        .server()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let partition = support::partition::Partition::start(api).await;
    let mut cut_off = Operator::start_via(&ns, "cut-off", partition.addr());
    eventually(RUN, "cut-off to lead", || async {
        cut_off.log().contains("leading").then_some(())
    })
    .await;
    let standby = Operator::start(&ns, "standby");
    eventually(RUN, "the standby to stand by", || async {
        standby.log().contains("standing by").then_some(())
    })
    .await;
    partition.cut();
    let cut = std::time::Instant::now();
    // Its last renewal, as the API server has it (nothing reaches the server any more).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin().await, &ns)
        .get("coffer-controller")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("cut-off"));
    let renewed = chrono::DateTime::parse_from_rfc3339(
        serde_json::to_value(lease.renew_time.unwrap())
            .unwrap()
            .as_str()
            .unwrap(),
    )
    .unwrap()
    .with_timezone(&Utc);
    let expires =
        renewed + chrono::Duration::seconds(i64::from(lease.lease_duration_seconds.unwrap()));
    let (mut exited, mut took_over) = (None, None);
    let mut exited_at = None;
    while exited.is_none() || took_over.is_none() {
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "exited {exited:?}, took over {took_over:?}: {}",
            cut_off.log()
        );
        if exited.is_none() && cut_off.exited() {
            exited = Some(cut.elapsed());
            exited_at = Some(Utc::now());
        }
        if took_over.is_none() && standby.log().contains("leading") {
            took_over = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        exited < took_over,
        "the cut-off leader exited {exited:?} after the cut, the standby led {took_over:?} after it"
    );
    assert!(
        cut_off.log().contains("could not be renewed"),
        "{}",
        cut_off.log()
    );
    // And by the Lease: it stopped with time to spare before the Lease it last renewed could
    // expire (the earliest moment another replica may take over), not at that moment.
    let margin = chrono::Duration::milliseconds(300);
    assert!(
        exited_at.unwrap() + margin < expires,
        "exited at {exited_at:?}, its Lease expired at {expires}"
    );
    eprintln!(
        "the cut-off leader exited {} ms before its Lease expired",
        (expires - exited_at.unwrap()).num_milliseconds()
    );
}

/// After a long downtime a schedule makes one catch-up run (the newest it missed), not one
/// per missed time; with `startingDeadlineSeconds` a run that is too late is skipped and said
/// so. The downtime is recorded in the schedules' status before the operator starts (a
/// yearly schedule last run in 2020), so no clock boundary is waited for.
#[tokio::test]
async fn a_schedule_catches_up_once_and_skips_a_run_past_its_deadline() {
    let (_namespace, ns, s3) = setup("catch-up").await;
    let closed = support::operator::free_port();
    for (name, deadline) in [("yearly", None), ("strict", Some(3600))] {
        let mut spec = json!({
            "schedule": "0 0 1 1 *", "timeZone": "UTC",
            "source": {"redis": {"host": "127.0.0.1", "port": closed}}, "storage": storage(&s3)});
        if let Some(seconds) = deadline {
            spec["startingDeadlineSeconds"] = json!(seconds);
        }
        create::<BackupSchedule>(&ns, json!({"metadata": {"name": name}, "spec": spec})).await;
    }
    let schedules: Api<BackupSchedule> = Api::namespaced(admin().await, &ns);
    for name in ["yearly", "strict"] {
        schedules
            .patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"status": {"lastScheduleTime": "2020-01-01T00:00:00Z"}}),
                ),
            )
            .await
            .unwrap();
    }
    // The newest 1 January 00:00 UTC that has passed: the one run to catch up.
    let now = Utc::now();
    let year = if now.format("%m%d%H%M").to_string() == "01010000" {
        now.format("%Y").to_string().parse::<i32>().unwrap() - 1
    } else {
        now.format("%Y").to_string().parse::<i32>().unwrap()
    };
    let due = format!("{year}-01-01T00:00:00Z");
    let _operator = Operator::start(&ns, "solo");
    for name in ["yearly", "strict"] {
        eventually(
            RUN,
            &format!("{name} to record its newest due time"),
            || async {
                let status = schedules.get(name).await.unwrap().status?;
                (serde_json::to_value(status.last_schedule_time?).unwrap() == json!(due))
                    .then_some(())
            },
        )
        .await;
    }
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    let of = |schedule: &'static str| {
        let backups = backups.clone();
        async move {
            backups
                .list(&ListParams::default().labels(&format!("coffer.dev/schedule={schedule}")))
                .await
                .unwrap()
                .items
        }
    };
    let caught_up = of("yearly").await;
    assert_eq!(caught_up.len(), 1, "one catch-up run, not six");
    let scheduled = caught_up[0].annotations()["coffer.dev/scheduled-time"].clone();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&scheduled).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&due).unwrap(),
        "the newest missed time"
    );
    assert!(of("strict").await.is_empty(), "too late to start: skipped");
    let events = events_of(&ns, "strict").await;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "MissedSchedule"),
        "{events:?}"
    );
}

/// A Redis server whose snapshots take minutes (10 s per key, written to disk first while
/// the replica is kept waiting with newlines): a backup of it runs until the server stops.
async fn stalling_redis() -> RedisServer {
    let redis = RedisServer::start_with(None, &[("repl-diskless-sync", "no")]).unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::set_numbered(&mut con, "k", "", 30).await;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(10_000_000)
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    redis
}

/// A scheduled run in progress when its controller dies: the standby takes over, reconciles
/// the schedule (its `observedGeneration` says so) and the run's Backup, and neither makes a
/// second Backup or Job for the same scheduled time.
#[tokio::test]
async fn a_restarted_or_second_controller_never_duplicates_a_run() {
    let (_namespace, ns, s3) = setup("leader").await;
    let stalling = stalling_redis().await;
    let port = stalling.port();
    // A yearly schedule whose last run was long ago: one catch-up run, due at once.
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "nightly"}, "spec": {
        "schedule": "0 0 1 1 *", "timeZone": "UTC",
        "source": {"redis": {"host": "127.0.0.1", "port": port}}, "storage": storage(&s3)}}),
    )
    .await;
    let schedules: Api<BackupSchedule> = Api::namespaced(admin().await, &ns);
    schedules
        .patch_status(
            "nightly",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"status": {"lastScheduleTime": "2020-01-01T00:00:00Z"}}),
            ),
        )
        .await
        .unwrap();
    let mut operators = [Operator::start(&ns, "a"), Operator::start(&ns, "b")];
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    let runs = ListParams::default().labels("coffer.dev/schedule=nightly");
    let run = eventually(RUN, "the scheduled run to be running", || async {
        let list = backups.list(&runs).await.unwrap().items;
        let run = list.first()?;
        (run.status.as_ref()?.phase? == BackupPhase::Running).then(|| run.name_any())
    })
    .await;
    let [first, second] = &mut operators;
    let (leader, standby) = if first.log().contains("leading") {
        (first, second)
    } else {
        (second, first)
    };
    assert!(leader.log().contains("leading"), "{}", leader.log());
    assert!(standby.log().contains("standing by"), "{}", standby.log());
    assert!(!standby.log().contains("leading"), "only one leads");
    // The leader dies without a word; the standby takes over once the Lease runs out.
    leader.kill();
    eventually(RUN, "the standby to lead", || async {
        standby.log().contains("leading").then_some(())
    })
    .await;
    // A change to the schedule that only a reconcile records: once its observedGeneration
    // is the new one, the new leader has looked at the schedule and its running run.
    let changed = schedules
        .patch(
            "nightly",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"compression": "gzip"}})),
        )
        .await
        .unwrap();
    let generation = changed.metadata.generation;
    eventually(RUN, "the new leader to reconcile the schedule", || async {
        (schedules
            .get("nightly")
            .await
            .unwrap()
            .status?
            .observed_generation
            == generation)
            .then_some(())
    })
    .await;
    let names: Vec<String> = backups
        .list(&runs)
        .await
        .unwrap()
        .items
        .iter()
        .map(|b| b.name_any())
        .collect();
    assert_eq!(
        names,
        std::slice::from_ref(&run),
        "one Backup for the scheduled time"
    );
    // The run's Jobs: not the schedule's own (its pre-flight check `nightly-check`, its
    // daily sweep `nightly-sweep`), one name each whoever leads.
    let run_jobs = || async {
        jobs(&ns)
            .await
            .iter()
            .map(|j| j.name_any())
            .filter(|n| n.starts_with(&format!("{run}-")))
            .collect::<Vec<String>>()
    };
    let stuck = run_jobs().await;
    assert_eq!(
        stuck,
        [format!("{run}-backup")],
        "one Job, not one per controller"
    );
    assert_eq!(
        backups.get(&run).await.unwrap().status.unwrap().phase,
        Some(BackupPhase::Running)
    );
    // The source goes away: the worker fails, and the new leader records it.
    drop(stalling);
    let done = finished_backup(&ns, &run).await;
    assert_eq!(done.status.unwrap().phase, Some(BackupPhase::Failed));
    assert_eq!(run_jobs().await.len(), 1);
    assert_eq!(backups.list(&runs).await.unwrap().items.len(), 1);
    // Deleting a Backup whose data never got written still goes through the finalizer.
    backups.delete(&run, &Default::default()).await.unwrap();
    eventually(RUN, "the run to be gone", || async {
        backups.get_opt(&run).await.unwrap().is_none().then_some(())
    })
    .await;
    // SIGTERM: a clean exit that gives the Lease up at once.
    assert_eq!(standby.terminate(Duration::from_secs(20)), Some(0));
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin().await, &ns)
        .get("coffer-controller")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "released on shutdown"
    );
}

/// Forbid, Replace and Allow with runs that stall, and beside them (this test crosses a minute
/// boundary anyway): a suspended schedule, which takes no backup and says so, and a
/// schedule whose runs fail, whose metric says that its last run failed.
#[tokio::test]
async fn forbid_skips_replace_stops_a_run_that_is_still_going_and_suspend_takes_none() {
    let (_namespace, ns, s3) = setup("concurrency").await;
    let stalling = stalling_redis().await;
    let port = stalling.port();
    let _operator = Operator::start(&ns, "solo");
    let closed = support::operator::free_port();
    for (name, suspend, port) in [("paused", true, port), ("broken", false, closed)] {
        create::<BackupSchedule>(
            &ns,
            json!({"metadata": {"name": name}, "spec": {
            "schedule": "* * * * *", "suspend": suspend,
            "source": {"redis": {"host": "127.0.0.1", "port": port}}, "storage": storage(&s3)}}),
        )
        .await;
    }
    let schedules: Api<BackupSchedule> = Api::namespaced(admin().await, &ns);
    let status = eventually(RUN, "paused's status", || async {
        schedules.get("paused").await.unwrap().status
    })
    .await;
    assert_eq!(ready(&status.conditions).1, "Suspended");
    assert_eq!(status.next_schedule_time, None);
    // The run each policy's schedule made at the last minute boundary (as if before this
    // test), still running when the next one comes: one boundary shows every policy.
    let previous = {
        use chrono::DurationRound;
        Utc::now()
            .duration_trunc(chrono::TimeDelta::minutes(1))
            .unwrap()
    };
    let stalled = json!({"redis": {"host": "127.0.0.1", "port": port}});
    for name in ["forbid", "replace", "allow"] {
        let run = coffer::controller::due::backup_name(name, previous);
        create::<Backup>(
            &ns,
            history_backup(&run, name, previous, &stalled, &storage(&s3), "Delete"),
        )
        .await;
    }
    for (name, policy) in [
        ("forbid", "Forbid"),
        ("replace", "Replace"),
        ("allow", "Allow"),
    ] {
        create::<BackupSchedule>(
            &ns,
            json!({"metadata": {"name": name}, "spec": {
            "schedule": "* * * * *", "concurrencyPolicy": policy,
            "source": {"redis": {"host": "127.0.0.1", "port": port}}, "storage": storage(&s3)}}),
        )
        .await;
    }
    let next_boundary = Duration::from_secs(140);
    let skipped = eventually(next_boundary, "Forbid to skip the second run", || async {
        let events = events_of(&ns, "forbid").await;
        events
            .into_iter()
            .find(|(_, r, _)| r == "SkippedStillRunning")
    })
    .await;
    assert!(
        skipped
            .2
            .contains("is still running (concurrencyPolicy: Forbid)"),
        "{skipped:?}"
    );
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    let of = |schedule: &'static str| {
        let backups = backups.clone();
        async move {
            let mut names: Vec<String> = backups
                .list(&ListParams::default().labels(&format!("coffer.dev/schedule={schedule}")))
                .await
                .unwrap()
                .items
                .iter()
                .filter(|b| b.metadata.deletion_timestamp.is_none())
                .map(|b| b.name_any())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(of("forbid").await.len(), 1, "the first run goes on alone");
    let replaced = eventually(next_boundary, "Replace to stop the first run", || async {
        events_of(&ns, "replace")
            .await
            .into_iter()
            .find(|(_, r, _)| r == "Replaced")
    })
    .await;
    let first = replaced.2.split_whitespace().next().unwrap().to_owned();
    eventually(RUN, "the replaced run to be gone", || async {
        backups
            .get_opt(&first)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let runs = of("replace").await;
    assert!(!runs.contains(&first), "{runs:?}");
    assert!(
        runs.iter().any(|r| *r > first),
        "a newer run replaced {first}: {runs:?}"
    );

    // Allow: the second run starts while the first still runs.
    eventually(RUN, "two allow runs at once", || async {
        let running = backups
            .list(&ListParams::default().labels("coffer.dev/schedule=allow"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Running))
            .count();
        (running >= 2).then_some(())
    })
    .await;

    // A minute boundary later: the suspended schedule took nothing, the broken one ran
    // and failed, and the alert's metric says so (for it only).
    assert!(
        of("paused").await.is_empty(),
        "a suspended schedule runs nothing"
    );
    let broken = of("broken").await;
    assert!(!broken.is_empty(), "the broken schedule ran");
    let failed = finished_backup(&ns, &broken[0]).await;
    assert_eq!(failed.status.unwrap().phase, Some(BackupPhase::Failed));
    let series = |schedule: &str| {
        format!(r#"{{namespace="{ns}",schedule="{schedule}",source_kind="redis"}}"#)
    };
    let metrics = eventually(RUN, "the broken schedule's failure in /metrics", || async {
        let metrics = _operator.get("/metrics").await;
        metrics
            .contains(&format!(
                "coffer_schedule_last_run_failed{} 1",
                series("broken")
            ))
            .then_some(metrics)
    })
    .await;
    assert!(
        !metrics.contains(&format!(
            "coffer_schedule_last_run_failed{}",
            series("paused")
        )),
        "{metrics}"
    );
}

/// The app's Pods stop slowly, as real ones do: on SIGTERM they take 3 s to exit.
const SLOW_TO_STOP: &str = "trap 'sleep 3; exit 0' TERM; sleep 300 & wait";

/// Replicas values by `kind/name`, in the order they were seen.
type History = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<i32>>>>;

/// Every value a Deployment's or StatefulSet's `spec.replicas` took, in order, from now
/// until the returned switch is dropped: `kind/name` → values.
fn replicas_history(ns: &str) -> (History, tokio::task::JoinHandle<()>) {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    let history = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        Vec<i32>,
    >::new()));
    let (ns, record) = (ns.to_owned(), history.clone());
    let task = tokio::spawn(async move {
        let client = admin().await;
        let push = |key: String, replicas: Option<i32>| {
            let mut all = record.lock().unwrap();
            let values = all.entry(key).or_default();
            if let Some(n) = replicas
                && values.last() != Some(&n)
            {
                values.push(n);
            }
        };
        let deployments = replicas_changes(
            Api::<Deployment>::namespaced(client.clone(), &ns),
            "Deployment",
            |d| d.spec.and_then(|s| s.replicas),
        );
        let sets = replicas_changes(
            Api::<StatefulSet>::namespaced(client, &ns),
            "StatefulSet",
            |s| s.spec.and_then(|s| s.replicas),
        );
        let mut both = std::pin::pin!(futures::stream::select(deployments, sets));
        while let Some((key, replicas)) = both.next().await {
            push(key, replicas);
        }
    });
    (history, task)
}

/// `kind/name` and the replicas `replicas` reads, for every change to the objects `api`
/// lists (watch errors skipped: the watch retries with backoff).
fn replicas_changes<K>(
    api: Api<K>,
    kind: &'static str,
    replicas: fn(K) -> Option<i32>,
) -> impl futures::Stream<Item = (String, Option<i32>)> + Send
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(move |object| {
            std::future::ready(
                object
                    .ok()
                    .map(|o| (format!("{kind}/{}", o.name_any()), replicas(o))),
            )
        })
}

/// The restore's worker starts only once every quiesced Pod has stopped (they take their
/// time, as real ones do), a StatefulSet is quiesced beside a Deployment, and the restore
/// carries on across two operator restarts (one while the app is stopping, one while the
/// worker runs): each workload goes to zero once and comes back once, to its own replicas.
#[tokio::test]
async fn a_restore_waits_for_the_quiesced_pods_to_stop_and_scales_back_once_across_restarts() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Pod;
    let (_namespace, ns, s3, redis) = support::resources::redis_namespace("quiesce", 200).await;
    let mut operator = Operator::start(&ns, "a");
    base_backup(&ns, &s3, &redis).await;

    slow_web(&ns).await;
    let pod_spec = json!({"terminationGracePeriodSeconds": 30, "containers": [
        {"name": "app", "image": "busybox", "command": ["sh", "-c", SLOW_TO_STOP]}]});
    create::<StatefulSet>(
        &ns,
        json!({"metadata": {"name": "db"}, "spec": {
        "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": pod_spec}}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(admin().await, &ns);
    let app = ListParams::default().labels("app in (web,db)");
    let running = |list: Vec<Pod>| {
        list.into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect::<Vec<_>>()
    };
    eventually(RUN, "three app Pods running", || async {
        (running(pods.list(&app).await.unwrap().items).len() == 3).then_some(())
    })
    .await;
    let (history, watching) = replicas_history(&ns);
    eventually(RUN, "the watch's first values", || async {
        (history.lock().unwrap().len() == 2).then_some(())
    })
    .await;

    let mut con = support::redis_data::connect(&redis.url()).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "back"}, "spec": {
        "backupRef": {"name": "base"}, "redis": {"conflict": "Overwrite"},
        "quiesce": [{"kind": "Deployment", "name": "web"}, {"kind": "StatefulSet", "name": "db"}]}}),
    )
    .await;
    let job_api: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(admin().await, &ns);
    let (mut saw_stopping, mut restarted_while_stopping) = (false, false);
    let deadline = std::time::Instant::now() + RUN;
    loop {
        assert!(std::time::Instant::now() < deadline, "no restore Job");
        let job = job_api.get_opt("back-restore").await.unwrap();
        let still = running(pods.list(&app).await.unwrap().items);
        if job.is_some() {
            // The Job exists: every app Pod had stopped before it was made.
            assert!(
                still.is_empty(),
                "the restore Job runs beside {} app Pod(s)",
                still.len()
            );
            break;
        }
        if !still.is_empty()
            && still
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_some())
        {
            saw_stopping = true;
            if !restarted_while_stopping {
                operator.kill();
                operator = Operator::start(&ns, "a");
                restarted_while_stopping = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_stopping,
        "the app's Pods were never seen stopping: the order was not tested"
    );
    // The worker runs: the operator goes away and comes back.
    operator.kill();
    let _operator = Operator::start(&ns, "a");
    let done = finished_restore(&ns, "back").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, 200);
    eventually(RUN, "three app Pods running again", || async {
        (running(pods.list(&app).await.unwrap().items).len() == 3).then_some(())
    })
    .await;
    // The watch has seen each workload come back (it may lag behind the Pods).
    let history = eventually(RUN, "the watch to see both workloads back", || async {
        let seen = history.lock().unwrap().clone();
        let back = |key: &str| seen.get(key).is_some_and(|values| values.len() >= 3);
        (back("Deployment/web") && back("StatefulSet/db")).then_some(seen)
    })
    .await;
    watching.abort();
    assert_eq!(history["Deployment/web"], [2, 0, 2], "{history:?}");
    assert_eq!(history["StatefulSet/db"], [1, 0, 1], "{history:?}");
    let made = jobs(&ns)
        .await
        .iter()
        .filter(|j| j.metadata.name.as_deref() == Some("back-restore"))
        .count();
    assert_eq!(made, 1);
}

/// A reconcile that reads a RestoreRequest as it was earlier (a watch lagging behind the
/// restore's later writes) changes nothing: read while its app was being stopped, it does
/// not stop the app again (it was given back, and nothing would scale it back twice); read
/// as it was created, it does not start the finished restore again.
#[tokio::test]
async fn a_stale_read_of_a_quiescing_restore_never_stops_the_app_again() {
    let (_namespace, ns, s3, redis) = support::resources::redis_namespace("stale", 20).await;
    let _operator = Operator::start(&ns, "solo");
    base_backup(&ns, &s3, &redis).await;
    slow_web(&ns).await;
    let created: RestoreRequest = create(
        &ns,
        json!({"metadata": {"name": "back"}, "spec": {
        "backupRef": {"name": "base"}, "redis": {"conflict": "Overwrite"},
        "quiesce": [{"kind": "Deployment", "name": "web"}]}}),
    )
    .await;
    // The app's Pods take 3 s to stop: the request is seen while Quiescing.
    let restores: Api<RestoreRequest> = Api::namespaced(admin().await, &ns);
    let stale = eventually(RUN, "the restore to be quiescing", || async {
        let r = restores.get("back").await.unwrap();
        (r.status.as_ref()?.phase? == RestorePhase::Quiescing).then_some(r)
    })
    .await;
    let done = finished_restore(&ns, "back").await;
    let phase = done.status.as_ref().unwrap().phase;
    assert_eq!(phase, Some(RestorePhase::Succeeded));
    assert_eq!(replicas(&ns, "web").await, 2);
    // Its workloads given back, nothing holds the request any more.
    let done = eventually(
        RUN,
        "the finished restore to lose its finalizer",
        || async {
            let r = restores.get("back").await.unwrap();
            r.finalizers().is_empty().then_some(r)
        },
    )
    .await;

    let (store, _writer) = kube::runtime::reflector::store::<Backup>();
    let settings = coffer::controller::context::Settings {
        worker: coffer::controller::job::WorkerSettings {
            image: "coffer".to_owned(),
            service_account: "coffer-worker".to_owned(),
            restore_spool_bytes: 0,
        },
        namespace: Some(ns.clone()),
        deletion_timeout: Duration::from_secs(60),
        notify_retry: Default::default(),
        copy_backoff: Duration::from_secs(60),
    };
    let ctx = coffer::controller::context::Context::new(
        admin().await,
        settings,
        std::sync::Arc::default(),
        "stale-reader".to_owned(),
        store,
    );
    let ctx = std::sync::Arc::new(ctx);
    // Read while Quiescing: the app is not stopped again.
    let outcome =
        coffer::controller::restore::reconcile(std::sync::Arc::new(stale), ctx.clone()).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(replicas(&ns, "web").await, 2, "the app was stopped again");
    // Read as it was created, before any status: the restore does not start again.
    let outcome = coffer::controller::restore::reconcile(std::sync::Arc::new(created), ctx).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(replicas(&ns, "web").await, 2, "the app was stopped again");
    let now = restores.get("back").await.unwrap();
    assert_eq!(
        now.status, done.status,
        "the finished restore's status was rewritten"
    );
}

/// A Backup `base` of the Redis server, finished.
async fn base_backup(ns: &str, s3: &coffer_testenv::S3Server, redis: &RedisServer) {
    create::<Backup>(
        ns,
        json!({"metadata": {"name": "base"}, "spec": {
        "source": redis_source(redis, "redis-auth"), "storage": storage(s3)}}),
    )
    .await;
    let done = finished_backup(ns, "base").await;
    assert_eq!(done.status.unwrap().phase, Some(BackupPhase::Succeeded));
}

/// The app's Deployment `web`, two replicas of Pods that take 3 s to stop.
async fn slow_web(ns: &str) {
    let pod_spec = json!({"terminationGracePeriodSeconds": 30, "containers": [
        {"name": "app", "image": "busybox", "command": ["sh", "-c", SLOW_TO_STOP]}]});
    create::<k8s_openapi::api::apps::v1::Deployment>(
        ns,
        json!({"metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}}}),
    )
    .await;
}

/// A RestoreRequest `name` of Backup `base` that quiesces `web`, once it is in `phase`.
async fn restore_reaching(ns: &str, name: &str, phase: RestorePhase) -> Api<RestoreRequest> {
    create::<RestoreRequest>(
        ns,
        json!({"metadata": {"name": name}, "spec": {
        "backupRef": {"name": "base"}, "redis": {"conflict": "Overwrite"},
        "quiesce": [{"kind": "Deployment", "name": "web"}]}}),
    )
    .await;
    let restores: Api<RestoreRequest> = Api::namespaced(admin().await, ns);
    eventually(RUN, &format!("{name} to be {phase:?}"), || async {
        let r = restores.get(name).await.unwrap();
        (r.status.as_ref()?.phase? == phase).then_some(())
    })
    .await;
    restores
}

/// Deleting a RestoreRequest before it ends never leaves the app stopped: deleted while its
/// app's Pods stop, it goes only once the app is scaled back; deleted while its worker reads
/// the backup (the store holds its answer), the worker is stopped and its Pod gone before
/// the app is scaled back. Each says so in an Event.
#[tokio::test]
async fn a_restore_deleted_before_it_ends_scales_the_app_back_before_it_goes() {
    use kube::api::DeleteParams;
    let (_namespace, ns, s3, redis) = support::resources::redis_namespace("withdrawn", 50).await;
    let _operator = Operator::start(&ns, "solo");
    base_backup(&ns, &s3, &redis).await;
    slow_web(&ns).await;

    // Deleted while the app's Pods stop (they take 3 s).
    let restores = restore_reaching(&ns, "early", RestorePhase::Quiescing).await;
    eventually(RUN, "the app to be stopped", || async {
        (replicas(&ns, "web").await == 0).then_some(())
    })
    .await;
    restores
        .delete("early", &DeleteParams::default())
        .await
        .unwrap();
    eventually(RUN, "the deleted request to go", || async {
        restores
            .get_opt("early")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(replicas(&ns, "web").await, 2, "the app was left stopped");
    let said = events_of(&ns, "early").await;
    assert!(
        said.iter().any(|e| e.1 == "Withdrawn"
            && e.2
                .contains("before the restore began: nothing was restored")
            && e.2.contains("scaled back web to 2")),
        "{said:?}"
    );
    assert!(
        jobs(&ns)
            .await
            .iter()
            .all(|j| j.metadata.name.as_deref() != Some("early-restore")),
        "a restore Job was made for a request deleted before it began"
    );

    // Deleted while its worker waits for the backup's data.
    let held = s3.hold_read("redis.rdb.zst");
    let restores = restore_reaching(&ns, "late", RestorePhase::Running).await;
    tokio::time::timeout(RUN, held.stored())
        .await
        .expect("the worker never asked for the backup's data");
    assert_eq!(replicas(&ns, "web").await, 0);
    restores
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin().await, &ns);
    let worker = ListParams::default().labels("batch.kubernetes.io/job-name=late-restore");
    eventually(RUN, "the app to be scaled back", || async {
        if replicas(&ns, "web").await != 2 {
            return None;
        }
        // Scaled back: the worker had stopped before (a Pod that ended stays, until
        // collected, and runs nothing).
        let running: Vec<_> = pods
            .list(&worker)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .map(|p| p.name_any())
            .collect();
        assert!(
            running.is_empty(),
            "the app came back beside the worker {running:?}"
        );
        Some(())
    })
    .await;
    eventually(RUN, "the deleted request to go", || async {
        restores
            .get_opt("late")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    drop(held);
    let said = events_of(&ns, "late").await;
    assert!(
        said.iter().any(|e| e.1 == "Withdrawn"
            && e.2
                .contains("its worker was stopped, so the target may hold part of the backup")
            && e.2.contains("scaled back web to 2")),
        "{said:?}"
    );
}

/// A namespace being deleted with a restore that stopped its app finishes deleting: the
/// request's finalizer neither waits for nor scales anything there.
#[tokio::test]
async fn deleting_a_namespace_during_a_quiescing_restore_finishes() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::DeleteParams;
    let (namespace, ns, s3, redis) = support::resources::redis_namespace("withdrawnns", 10).await;
    // Its Lease must not live in the namespace that goes away.
    let _operator = Operator::start_with(&ns, "solo", &["--no-leader-election"]);
    base_backup(&ns, &s3, &redis).await;
    slow_web(&ns).await;
    let restores = restore_reaching(&ns, "back", RestorePhase::Quiescing).await;
    let held = restores.get("back").await.unwrap();
    assert!(
        held.finalizers()
            .iter()
            .any(|f| f == "coffer.dev/resume-workloads"),
        "{:?}",
        held.finalizers()
    );
    let namespaces = Api::<Namespace>::all(admin().await);
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    eventually(RUN, "the namespace to be gone", || async {
        namespaces
            .get_opt(&ns)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    drop(namespace);
}

/// A key pair made with `coffer keygen`: (public key, identity file text).
fn key_pair() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key.txt");
    let out = support::cli::coffer(&["keygen", "-o", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{out:?}");
    (
        support::cli::stdout(&out).trim().to_owned(),
        std::fs::read_to_string(&file).unwrap(),
    )
}

#[tokio::test]
async fn an_encrypted_schedule_gives_workers_public_keys_only_and_restores_with_the_identity_secret()
 {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (_namespace, ns, s3) = setup("encrypt").await;
    let redis = RedisServer::start_with_password("redis-pw").unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::set_numbered(&mut con, "user:", "MARKER-c0ffee-", 40).await;
    secret(&ns, "redis-auth", &[("password", "redis-pw")]).await;
    let (ops_public, _) = key_pair();
    let (team_public, team_identity) = key_pair();
    Api::<ConfigMap>::namespaced(admin().await, &ns)
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-keys"},
                "data": {"recipients": format!("# the team\n{team_public}\n")}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let source = redis_source(&redis, "redis-auth");
    let _operator = Operator::start(&ns, "solo");
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "bot"}, "spec": {
        "schedule": "0 0 1 1 *", "source": source, "storage": storage(&s3), "compression": "none",
        "encryption": {"recipients": [ops_public],
            "recipientsFrom": [{"configMapKeyRef": {"name": "team-keys", "key": "recipients"}}]}}}),
    )
    .await;
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "bot-now"}, "spec": {"scheduleRef": {"name": "bot"}}}),
    )
    .await;
    let status = finished_backup(&ns, "bot-now").await.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
    assert!(status.resolved.unwrap().encryption.is_some());
    assert_eq!(status.encrypted, Some(true));
    // The bucket holds no plaintext, and the manifest names both recipients.
    let folder = status.location.unwrap();
    let folder = folder
        .split_once(&format!("/{BUCKET}/"))
        .map_or(folder.as_str(), |(_, f)| f);
    let manifest = support::s3_client(&s3)
        .get_object()
        .bucket(BUCKET)
        .key(format!("{folder}manifest.json"))
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        manifest["encryption"]["recipients"],
        json!([ops_public, team_public])
    );
    let mut stack = vec![s3.root().to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(14).any(|w| w == b"MARKER-c0ffee-"),
                    "plaintext in {path:?}"
                );
            }
        }
    }

    // Without the identity: Failed before the target is touched, naming the recipients.
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    redis::cmd("SET")
        .arg("sentinel")
        .arg("kept")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    // The app is not stopped for a restore that cannot open the backup.
    deployment(&ns, "bot-app", 2).await;
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "no-key"}, "spec": {"backupRef": {"name": "bot-now"},
            "quiesce": [{"kind": "Deployment", "name": "bot-app"}]}}),
    )
    .await;
    let status = finished_restore(&ns, "no-key").await.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Failed), "{status:?}");
    let message = assert_not_ready(&status.conditions, "EncryptionKeyError");
    assert!(
        message.contains("is encrypted to")
            && message.contains(&ops_public)
            && message.contains("ConfigMap team-keys"),
        "{message}"
    );
    assert!(status.quiesced.is_empty(), "{status:?}");
    assert_eq!(replicas(&ns, "bot-app").await, 2);
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, 1, "the target was touched");
    // A wrong key, given in the Secret: the worker fails before touching the target.
    let (_, stranger) = key_pair();
    secret(&ns, "wrong-key", &[("identity", &stranger)]).await;
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "wrong-key"}, "spec": {"backupRef": {"name": "bot-now"},
            "decryption": {"identitySecretRef": {"name": "wrong-key", "key": "identity"}}}}),
    )
    .await;
    let status = finished_restore(&ns, "wrong-key").await.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Failed), "{status:?}");
    let message = assert_not_ready(&status.conditions, "EncryptionKeyError");
    assert!(
        message.contains("none of the given private keys opens") && message.contains(&team_public),
        "{message}"
    );
    assert!(!message.contains("AGE-SECRET-KEY"), "{message}");
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, 1, "the target was touched");

    // With the team's identity in a Secret: restored; no Job or Pod spec carries a key.
    secret(&ns, "restore-key", &[("identity", &team_identity)]).await;
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "with-key"}, "spec": {"backupRef": {"name": "bot-now"},
            "decryption": {"identitySecretRef": {"name": "restore-key", "key": "identity"}}}}),
    )
    .await;
    let status = finished_restore(&ns, "with-key").await.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    let value: String = redis::cmd("GET")
        .arg("user:7")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(value, "MARKER-c0ffee-7");
    for job in jobs(&ns).await {
        let spec = serde_json::to_string(&job.spec).unwrap();
        assert!(!spec.contains("AGE-SECRET-KEY"), "{spec}");
    }

    // A key given for a backup that is not encrypted: refused before anything is touched.
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "plain"}, "spec": {"source": source, "storage": storage(&s3)}}),
    )
    .await;
    let status = finished_backup(&ns, "plain").await.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
    assert_eq!(status.encrypted, Some(false));
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "key-for-plain"}, "spec": {"backupRef": {"name": "plain"},
            "decryption": {"identitySecretRef": {"name": "restore-key", "key": "identity"}},
            "quiesce": [{"kind": "Deployment", "name": "bot-app"}]}}),
    )
    .await;
    let status = finished_restore(&ns, "key-for-plain").await.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Failed), "{status:?}");
    let message = assert_not_ready(&status.conditions, "EncryptionKeyError");
    assert!(message.contains("is not encrypted"), "{message}");
    assert!(status.quiesced.is_empty(), "{status:?}");

    // A ConfigMap that does not exist: the backup fails at once, naming it.
    create::<Backup>(&ns, json!({"metadata": {"name": "lost-keys"}, "spec": {"source": source,
        "storage": storage(&s3), "encryption": {"recipientsFrom": [{"configMapKeyRef": {"name": "gone", "key": "k"}}]}}})).await;
    let status = finished_backup(&ns, "lost-keys").await.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Failed), "{status:?}");
    let message = assert_not_ready(&status.conditions, "EncryptionKeyError");
    assert!(message.contains("ConfigMap gone"), "{message}");
}

/// PostgreSQL through the operator: a `clean` restore's dry run says what it would do
/// (a safety backup first, each table's rows now and after, what is left alone) and changes
/// nothing; the restore takes the safety backup, and restoring that gives back exactly
/// what was there.
#[tokio::test]
async fn a_postgres_clean_restore_is_previewed_then_undone_by_its_safety_backup() {
    let (_namespace, ns, s3) = setup("pg-safety").await;
    let pg = PostgresServer::start().unwrap();
    support::pg_data::create(
        &pg,
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, note text); \
         INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 100) g;",
    )
    .await;
    secret(&ns, "pg-auth", &[("password", pg.password())]).await;
    let _operator = Operator::start(&ns, "solo");
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "monday"}, "spec": {
        "source": pg_source(&pg, "pg-auth"), "storage": storage(&s3)}}),
    )
    .await;
    let monday = finished_backup(&ns, "monday").await.status.unwrap();
    assert_eq!(monday.phase, Some(BackupPhase::Succeeded), "{monday:?}");
    // Since Monday: orders deleted and added, and a table the backup does not hold.
    let shop = support::pg_data::connect(&pg, "shop").await;
    shop.batch_execute(
        "DELETE FROM orders WHERE id > 40; \
         INSERT INTO orders SELECT g, 'new' || g FROM generate_series(1000, 1009) g; \
         CREATE TABLE notes (id int); INSERT INTO notes VALUES (1), (2);",
    )
    .await
    .unwrap();
    let tuesday = support::pg_data::fingerprint(&shop).await;

    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "look"}, "spec": {
        "backupRef": {"name": "monday"}, "postgres": {"clean": true}, "dryRun": true}}),
    )
    .await;
    let looked = finished_restore(&ns, "look").await.status.unwrap();
    assert_eq!(looked.phase, Some(RestorePhase::Succeeded), "{looked:?}");
    assert_eq!(looked.safety_backup, None, "{looked:?}");
    assert_eq!(
        looked.preview,
        [
            "would take a safety backup of the target first (postgres.clean drops objects before re-creating them)",
            "database \"shop\": exists: the backup's objects are dropped and created again (clean)",
            "  public.orders: 50 rows now, 100 rows after",
            "  left alone (not in the backup): public.notes",
        ],
        "{looked:?}"
    );
    assert_eq!(support::pg_data::fingerprint(&shop).await, tuesday);
    assert_eq!(backups_now(&ns).await, ["monday"], "no safety backup");

    // The restore: Monday's orders back, the notes left alone, Tuesday in a safety backup.
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "back-to-monday"}, "spec": {
        "backupRef": {"name": "monday"}, "postgres": {"clean": true}}}),
    )
    .await;
    let status = finished_restore(&ns, "back-to-monday")
        .await
        .status
        .unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    assert_eq!(status.stats.as_ref().unwrap().rows_verified, Some(100));
    let safety = status.safety_backup.clone().expect("a safety backup");
    let orders: i64 = shop
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 100);

    // Undone: the safety backup, restored the same way, gives Tuesday back exactly.
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "undo"}, "spec": {
        "backupRef": {"name": safety}, "postgres": {"clean": true}, "safetyBackup": false}}),
    )
    .await;
    let undone = finished_restore(&ns, "undo").await.status.unwrap();
    assert_eq!(undone.phase, Some(RestorePhase::Succeeded), "{undone:?}");
    assert_eq!(undone.safety_backup, None);
    let shop = support::pg_data::connect(&pg, "shop").await;
    assert_eq!(support::pg_data::fingerprint(&shop).await, tuesday);
}

/// The names of the Backups in `ns`, sorted.
async fn backups_now(ns: &str) -> Vec<String> {
    let mut names: Vec<String> = Api::<Backup>::namespaced(admin().await, ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

/// A restore that flushes its target first takes a safety backup of it (after the app is
/// stopped, before anything is written); restoring that backup gives back exactly what was
/// there. A safety backup that fails stops the restore before it writes. `safetyBackup:
/// false` takes none. Its dry run first says what it would do and does none of it.
#[tokio::test]
async fn a_flush_restore_of_the_wrong_backup_is_undone_by_its_safety_backup() {
    let (_namespace, ns, s3) = setup("safety").await;
    let prod = RedisServer::start_with_password("prod-pw").unwrap();
    let mut con = support::redis_data::connect(&prod.url()).await;
    support::redis_data::populate(&mut con).await;
    let (original, original_functions) = support::redis_data::state(&mut con).await;
    let other = RedisServer::start_with_password("other-pw").unwrap();
    let mut other_con = support::redis_data::connect(&other.url()).await;
    support::redis_data::set_numbered(&mut other_con, "wrong:", "w", 20).await;
    secret(&ns, "prod-auth", &[("password", "prod-pw")]).await;
    secret(&ns, "other-auth", &[("password", "other-pw")]).await;
    let storage = storage(&s3);
    let _operator = Operator::start(&ns, "solo");
    // Production is backed up by a schedule (that does not fire during the test): its
    // settings are what a safety backup of production is taken with.
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "prod"}, "spec": {
        "schedule": "0 0 1 1 *", "source": redis_source(&prod, "prod-auth"), "storage": storage,
        "compression": "gzip"}}),
    )
    .await;
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "wrong"}, "spec": {
        "source": redis_source(&other, "other-auth"), "storage": storage}}),
    )
    .await;
    let wrong = finished_backup(&ns, "wrong").await;
    assert_eq!(wrong.status.unwrap().phase, Some(BackupPhase::Succeeded));

    // A dry run of the mistake says what it would do (a safety backup first, production's
    // keys flushed, the wrong ones added) and does none of it: no safety backup, production
    // unchanged, nothing quiesced. A workload to quiesce that does not exist fails it, as it
    // would fail the restore.
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "look-nowhere"}, "spec": {
        "backupRef": {"name": "wrong"}, "target": redis_source(&prod, "prod-auth"),
        "redis": {"conflict": "Flush"}, "dryRun": true,
        "quiesce": [{"kind": "Deployment", "name": "not-here"}]}}),
    )
    .await;
    let nowhere = finished_restore(&ns, "look-nowhere").await.status.unwrap();
    assert_eq!(nowhere.phase, Some(RestorePhase::Failed), "{nowhere:?}");
    assert!(
        nowhere
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "WorkloadNotFound"),
        "{nowhere:?}"
    );
    let in_db0: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "look-first"}, "spec": {
        "backupRef": {"name": "wrong"}, "target": redis_source(&prod, "prod-auth"),
        "redis": {"conflict": "Flush"}, "dryRun": true}}),
    )
    .await;
    let looked = finished_restore(&ns, "look-first").await.status.unwrap();
    assert_eq!(looked.phase, Some(RestorePhase::Succeeded), "{looked:?}");
    let reason = |status: &coffer::api::RestoreRequestStatus, kind: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    assert_eq!(
        reason(&looked, "Ready"),
        Some(("True".to_owned(), "DryRun".to_owned()))
    );
    assert_eq!(
        reason(&looked, "Restored"),
        Some(("False".to_owned(), "DryRun".to_owned()))
    );
    assert_eq!(looked.safety_backup, None, "{looked:?}");
    assert!(looked.quiesced.is_empty(), "{looked:?}");
    let preview = looked.preview.clone();
    assert_eq!(
        preview[0],
        "would take a safety backup of the target first (redis.conflict Flush empties the restored databases)",
        "{preview:?}"
    );
    assert!(
        preview[1].starts_with(&format!("flushed first: {in_db0} keys (for example ")),
        "{preview:?}"
    );
    assert!(
        preview[2].starts_with("added: 20 keys (for example \"wrong:"),
        "{preview:?}"
    );
    assert!(
        preview.contains(&"overwritten: 0 keys".to_owned()),
        "{preview:?}"
    );
    let (unchanged, _) = support::redis_data::state(&mut con).await;
    support::redis_data::assert_same(&original, &unchanged);
    let listed = backups_now(&ns).await;
    assert_eq!(listed, ["wrong"], "the dry run took no safety backup");

    // The mistake: the wrong backup, flushed into production.
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "oops"}, "spec": {
        "backupRef": {"name": "wrong"}, "target": redis_source(&prod, "prod-auth"),
        "redis": {"conflict": "Flush"}}}),
    )
    .await;
    let oops = finished_restore(&ns, "oops").await;
    let status = oops.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    let safety_name = status
        .safety_backup
        .clone()
        .expect("status names the safety backup");
    assert!(safety_name.starts_with("oops-safety-"), "{safety_name}");
    let said = events_of(&ns, "oops").await;
    for reason in ["SafetyBackupStarted", "SafetyBackupTaken"] {
        assert!(
            said.iter()
                .any(|(_, r, note)| r == reason && note.contains(&safety_name)),
            "{reason} naming {safety_name}: {said:?}"
        );
    }
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    let safety = backups.get(&safety_name).await.unwrap();
    assert_eq!(safety.spec.ttl.as_deref(), Some("7d"));
    assert_eq!(
        safety.metadata.owner_references, None,
        "outlives the RestoreRequest"
    );
    assert_eq!(
        safety.spec.compression,
        Some(coffer::api::Compression::Gzip),
        "taken with the settings of the schedule that backs production up"
    );
    let safety_status = safety.status.clone().unwrap();
    assert_eq!(safety_status.phase, Some(BackupPhase::Succeeded));
    assert_eq!(
        safety_status.stats.as_ref().unwrap().keys,
        Some(original.len() as i64),
        "the safety backup holds what production held"
    );
    // It finished before the restore's worker was created.
    let restore_job = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(admin().await, &ns)
        .get("oops-restore")
        .await
        .unwrap();
    assert!(
        safety_status.completion_time.unwrap().0
            <= restore_job.metadata.creation_timestamp.unwrap().0,
        "the safety backup was complete before the restore started"
    );
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(
        size, 20,
        "production now holds the wrong data, as the dry run said"
    );

    // Undo: restore the safety backup (no second safety backup asked for).
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "undo"}, "spec": {
        "backupRef": {"name": safety_name}, "redis": {"conflict": "Flush"},
        "safetyBackup": false}}),
    )
    .await;
    let undo = finished_restore(&ns, "undo").await;
    let status = undo.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    assert_eq!(status.safety_backup, None, "safetyBackup: false takes none");
    let (restored, functions) = support::redis_data::state(&mut con).await;
    support::redis_data::assert_same(&original, &restored);
    assert_eq!(functions, original_functions);
    let made_for_undo: Vec<Backup> = backups
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|b| b.annotations().get("coffer.dev/safety-backup-for") == Some(&"undo".to_owned()))
        .collect();
    assert!(made_for_undo.is_empty(), "{made_for_undo:?}");

    // A restore of the newest backup under a folder means the newest when it was asked for:
    // never its own safety backup, taken into the same folder after it started.
    let _: () = redis::cmd("SET")
        .arg("after-undo")
        .arg("1")
        .query_async(&mut con)
        .await
        .unwrap();
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "newest"}, "spec": {
        "from": {"storage": storage, "location": format!("{ns}/"), "latest": true},
        "target": redis_source(&prod, "prod-auth"), "redis": {"conflict": "Flush"}}}),
    )
    .await;
    let status = finished_restore(&ns, "newest").await.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    let own = status.safety_backup.clone().expect("a safety backup");
    let own_location = backups.get(&own).await.unwrap().status.unwrap().location;
    assert_ne!(status.location, own_location, "not its own safety backup");
    assert_eq!(
        status.location, safety_status.location,
        "the newest backup when it was asked for: the first safety backup"
    );
    let (restored, _) = support::redis_data::state(&mut con).await;
    support::redis_data::assert_same(&original, &restored);

    // A target nothing backs up has no store a safety backup of it may go to (never one the
    // request could name): refused before anything is touched.
    let stray = RedisServer::start().unwrap();
    let mut stray_con = support::redis_data::connect(&stray.url()).await;
    support::redis_data::set_numbered(&mut stray_con, "keep:", "k", 5).await;
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "unbacked"}, "spec": {
        "backupRef": {"name": "wrong"},
        "target": {"redis": {"host": "127.0.0.1", "port": stray.port()}},
        "redis": {"conflict": "Flush"}}}),
    )
    .await;
    let status = finished_restore(&ns, "unbacked").await.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Failed), "{status:?}");
    let message = assert_not_ready(&status.conditions, "SafetyBackupImpossible");
    assert!(message.contains("nothing was touched"), "{message}");
    assert_eq!(status.safety_backup, None);
    let size: i64 = redis::cmd("DBSIZE")
        .query_async(&mut stray_con)
        .await
        .unwrap();
    assert_eq!(size, 5, "the target was not touched");

    // A safety backup that cannot be taken (this user may not SYNC) stops the restore before
    // it writes anything; the app's data stays as it is.
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "nosync",
                "on",
                ">nosync-pw",
                "~*",
                "&*",
                "+@all",
                "-sync",
                "-psync",
            ][..],
        )
        .query_async(&mut con)
        .await
        .unwrap();
    secret(&ns, "nosync-auth", &[("password", "nosync-pw")]).await;
    let mut limited = redis_source(&prod, "nosync-auth");
    limited["redis"]["username"] = json!("nosync");
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "prod-as-nosync"}, "spec": {
        "schedule": "0 0 1 1 *", "source": limited, "storage": storage}}),
    )
    .await;
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "blocked"}, "spec": {
        "backupRef": {"name": "wrong"}, "target": limited, "redis": {"conflict": "Flush"}}}),
    )
    .await;
    let blocked = finished_restore(&ns, "blocked").await;
    let status = blocked.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Failed), "{status:?}");
    let message = assert_not_ready(&status.conditions, "SafetyBackupFailed");
    assert!(
        message.contains("nothing was restored") && message.contains("safetyBackup: false"),
        "{message}"
    );
    let (after, _) = support::redis_data::state(&mut con).await;
    support::redis_data::assert_same(&original, &after);
    assert!(
        Api::<k8s_openapi::api::batch::v1::Job>::namespaced(admin().await, &ns)
            .get_opt("blocked-restore")
            .await
            .unwrap()
            .is_none(),
        "no restore Job was made"
    );
}
