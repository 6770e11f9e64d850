//! Restore drills through the operator (`BackupSchedule.spec.drill`), with the process
//! kubelet: the drill's worker starts its scratch `redis-server` from the host's binaries.
//! A good backup is Verified with its restore time; a failing user check and a data object
//! changed after it was stored are VerificationFailed, naming what differed; the production
//! server is never touched, and the drill's Job carries none of its credentials; each failed
//! drill is told to the schedule's Notifiers once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer::api::{Backup, BackupPhase, BackupSchedule, VerificationPhase};
use coffer_testenv::RedisServer;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

mod support;
use support::operator::{Operator, admin, eventually};
use support::resources::{
    RUN, create, events_of, finished_backup, jobs, secret, setup, storage, times_said,
};

/// Every key of every database (type, content, expiry) and the function libraries.
async fn contents(redis: &RedisServer) -> impl PartialEq + std::fmt::Debug {
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::state(&mut con).await
}

/// Takes a Backup of the schedule `bot`.
async fn backed_up(ns: &str, name: &str) {
    create::<Backup>(
        ns,
        json!({"metadata": {"name": name, "labels": {"coffer.dev/schedule": "bot"}},
            "spec": {"scheduleRef": {"name": "bot"}}}),
    )
    .await;
    let done = finished_backup(ns, name).await;
    assert_eq!(
        done.status.as_ref().unwrap().phase,
        Some(BackupPhase::Succeeded),
        "{:?}",
        done.status
    );
}

/// Waits for the drill of Backup `name` to finish.
async fn drill_of(ns: &str, name: &str) -> Backup {
    let backups: Api<Backup> = Api::namespaced(admin().await, ns);
    eventually(RUN, &format!("{name}'s drill"), || async {
        let b = backups.get(name).await.unwrap();
        let v = b.status.as_ref()?.verification.as_ref()?;
        (v.phase != VerificationPhase::Running).then_some(b)
    })
    .await
}

/// Takes a Backup of the schedule `bot` and waits for its drill to finish.
async fn drilled(ns: &str, name: &str) -> Backup {
    backed_up(ns, name).await;
    drill_of(ns, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_drills_its_backups_records_the_proof_and_never_touches_production() {
    let (_namespace, ns, s3) = setup("drills").await;
    let redis = RedisServer::start_with_password("redis-pw").unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::set_numbered(&mut con, "order:", "v", 40).await;
    secret(&ns, "redis-auth", &[("password", "redis-pw")]).await;
    // A Notifier with the default events, which include drillFailed.
    let (hook, told) = support::webhook::receiver().await;
    secret(&ns, "hook", &[("url", &hook)]).await;
    create::<coffer::api::Notifier>(
        &ns,
        json!({"metadata": {"name": "ops"}, "spec": {"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}}),
    )
    .await;
    let operator = Operator::start(&ns, "solo");
    let source = json!({"redis": {"host": "127.0.0.1", "port": redis.port(), "mode": "Keys",
        "passwordSecretRef": {"name": "redis-auth", "key": "password"}}});
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "bot"}, "spec": {
            "schedule": "0 0 1 1 *", "source": source, "storage": storage(&s3),
            "compression": "gzip", "notify": [{"name": "ops"}]}}),
    )
    .await;
    let schedules: Api<BackupSchedule> = Api::namespaced(admin().await, &ns);

    // A good backup, then production moves on (a changed value, one more key), then drills
    // are turned on: the backup is Verified with its restore time, and the checks (which
    // hold for the backup, not for production as it is now) passed in the scratch server.
    backed_up(&ns, "first").await;
    redis::cmd("SET")
        .arg("order:7")
        .arg("changed")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    redis::cmd("SET")
        .arg("after:first")
        .arg("1")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    let before = contents(&redis).await;
    schedules
        .patch(
            "bot",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"drill": {"every": 1,
                "checks": {"redis": ["GET order:7 => v7", "DBSIZE => 40"]}}}})),
        )
        .await
        .unwrap();
    let first = drill_of(&ns, "first").await;
    let v = first.status.unwrap().verification.unwrap();
    assert_eq!(v.phase, VerificationPhase::Verified, "{v:?}");
    assert!(v.restore_seconds.is_some_and(|s| s > 0.0), "{v:?}");
    assert!(v.bytes.is_some_and(|b| b > 0), "{v:?}");
    // The built-in checks (keys, keys with a TTL, ...) and the two of the spec.
    assert!(v.checks_passed >= 4 && v.checks_failed == 0, "{v:?}");
    assert!(v.message.starts_with("verified"), "{v:?}");
    let reasons: Vec<String> = events_of(&ns, "first")
        .await
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "Verified"), "{reasons:?}");
    let last = eventually(RUN, "the schedule's lastDrill", || async {
        let s = schedules.get("bot").await.unwrap();
        s.status?.last_drill.filter(|d| d.backup == "first")
    })
    .await;
    assert_eq!(last.verification.phase, VerificationPhase::Verified);
    assert_eq!(last.verification.restore_seconds, v.restore_seconds);

    // A failing user check fails the drill, naming the check and what it got.
    schedules
        .patch(
            "bot",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"drill": {"checks": {"redis": ["GET order:7 => v8"]}}}})),
        )
        .await
        .unwrap();
    let second = drilled(&ns, "second").await;
    let v = second.status.unwrap().verification.unwrap();
    assert_eq!(v.phase, VerificationPhase::VerificationFailed, "{v:?}");
    // What it returned is restored data: in the worker's log, never in status or Events.
    assert!(
        v.message.contains("GET order:7 => v8") && v.message.contains("did not hold"),
        "{v:?}"
    );
    assert!(!v.message.contains("v7"), "{v:?}");
    assert_eq!(v.checks_failed, 1, "{v:?}");

    // A data object changed after it was stored (its manifest left alone): the drill's
    // restore reads it changed and fails.
    schedules
        .patch(
            "bot",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"drill": {"checks": {"redis": []}}}})),
        )
        .await
        .unwrap();
    // The first read of the next backup's data object (the others were read already).
    s3.tamper("/redis.keys.gz", 1);
    let third = drilled(&ns, "third").await;
    assert_eq!(s3.tampered(), 1);
    let v = third.status.unwrap().verification.unwrap();
    assert_eq!(v.phase, VerificationPhase::VerificationFailed, "{v:?}");
    assert!(v.message.starts_with("restore"), "{v:?}");

    // Each failed drill was told once, with its verdict and message (and no restored data
    // or credentials); the good one was not.
    let bodies = eventually(RUN, "two drillFailed notifications", || async {
        let bodies = told.lock().unwrap().clone();
        (bodies.len() >= 2).then_some(bodies)
    })
    .await;
    let mut notices: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    notices.sort_by_key(|n| n["name"].as_str().unwrap().to_owned());
    let about: Vec<(&str, &str, &str)> = notices
        .iter()
        .map(|n| {
            (
                n["event"].as_str().unwrap(),
                n["name"].as_str().unwrap(),
                n["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        about,
        [
            ("drillFailed", "second", "VerificationFailed"),
            ("drillFailed", "third", "VerificationFailed")
        ],
        "{bodies:?}"
    );
    assert!(
        notices[0]["message"]
            .as_str()
            .unwrap()
            .contains("GET order:7 => v8"),
        "{bodies:?}"
    );
    for body in &bodies {
        assert!(!body.contains("v7") && !body.contains("redis-pw"), "{body}");
    }

    // Production holds what it held after it moved on, not the backup's data (the drill's
    // Job names no source and gets none of its credentials: see the Job builder's tests);
    // each backup was drilled once, and no drill Job is left.
    assert_eq!(contents(&redis).await, before);
    assert_eq!(times_said(&ns, "bot", "DrillRequested").await, 3);
    assert_eq!(told.lock().unwrap().len(), 2, "told more than once");
    for job in jobs(&ns).await {
        let name = job.metadata.name.unwrap_or_default();
        assert!(!name.ends_with("-drill"), "drill Job {name} is left");
    }

    // The store failing while the drill reads the data is no verdict on the backup: Error
    // (`StorageError`), told as a drill that could not run. The next backup is compressed
    // otherwise, so that its object's name is its own.
    schedules
        .patch(
            "bot",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"compression": "zstd"}})),
        )
        .await
        .unwrap();
    for read in 1..=3 {
        s3.cut_midway("/redis.keys.zst", read);
    }
    let fourth = drilled(&ns, "fourth").await;
    assert!(
        s3.reads("/redis.keys.zst") >= 1,
        "the object was never read"
    );
    let v = fourth.status.unwrap().verification.unwrap();
    assert_eq!(v.phase, VerificationPhase::Error, "{v:?}");
    assert!(
        v.message.contains(
            "the drill could not run to its end: the restore into the scratch instance stopped"
        ) && v.message.contains("redis.keys.zst")
            && v.message.contains("nothing was verified"),
        "{v:?}"
    );
    let metrics = operator.get("/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("coffer_drills_total{")
            && l.contains("result=\"StorageError\"")),
        "{metrics}"
    );
    let bodies = eventually(RUN, "a third drillFailed notification", || async {
        let bodies = told.lock().unwrap().clone();
        (bodies.len() >= 3).then_some(bodies)
    })
    .await;
    assert!(
        bodies.iter().any(|b| {
            let n: serde_json::Value = serde_json::from_str(b).unwrap();
            n["name"] == "fourth" && n["reason"] == "DrillNotRun"
        }),
        "{bodies:?}"
    );
}
