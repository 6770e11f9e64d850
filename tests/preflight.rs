//! The operator's pre-flight check of a schedule, against the real control plane (worker
//! Pods run as processes), Redis and an S3 server: a wrong password, an unreachable host
//! and a missing bucket each turn into their condition with a message that names the fix,
//! before the first backup is due; fixing the Secret (or the bucket) turns them green again
//! without recreating the schedule; a failing check notifies once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use coffer::api::{BackupSchedule, Notifier};
use coffer_testenv::RedisServer;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use support::operator::{Operator, admin, eventually, free_port};
use support::resources::{BUCKET, create, secret, setup, storage, times_said};

/// (status, reason, message) of the schedule's condition `type_`, once it is set.
async fn condition(ns: &str, name: &str, type_: &str) -> Option<(String, String, String)> {
    let schedule = Api::<BackupSchedule>::namespaced(admin().await, ns)
        .get(name)
        .await
        .unwrap();
    let c = schedule
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

async fn until(ns: &str, name: &str, type_: &str, status: &str) -> (String, String) {
    eventually(
        Duration::from_secs(120),
        &format!("{type_}={status} on {name}"),
        || async {
            let (s, reason, message) = condition(ns, name, type_).await?;
            (s == status).then_some((reason, message))
        },
    )
    .await
}

/// A schedule that is not due during the test.
fn schedule(
    name: &str,
    source: serde_json::Value,
    storage: serde_json::Value,
) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {"schedule": "0 0 1 1 *", "source": source,
        "storage": storage, "notify": [{"name": "ops"}]}})
}

#[tokio::test]
async fn a_failing_check_names_the_fix_and_turns_green_once_the_secret_is_fixed() {
    let (_namespace, ns, s3) = setup("preflight").await;
    let redis = RedisServer::start_with_password("right-pw").unwrap();
    secret(&ns, "redis-auth", &[("password", "wrong-pw-2718")]).await;
    let hooks = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = hooks.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = received.clone();
    let app = axum::Router::new().fallback(move |body: String| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(body);
            "ok"
        }
    });
    let server = tokio::spawn(async move { axum::serve(hooks, app).await });
    secret(
        &ns,
        "hook",
        &[("url", &format!("http://127.0.0.1:{hook_port}/ops"))],
    )
    .await;
    create::<Notifier>(
        &ns,
        json!({"metadata": {"name": "ops"}, "spec": {"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}}),
    )
    .await;
    let _operator = Operator::start(&ns, "solo");
    let source = json!({"redis": {"host": "127.0.0.1", "port": redis.port(),
        "passwordSecretRef": {"name": "redis-auth", "key": "password"}}});
    create::<BackupSchedule>(&ns, schedule("shop", source, storage(&s3))).await;

    // A wrong password: the source's condition says so, Ready says the backups would fail.
    let (reason, message) = until(&ns, "shop", "SourceReachable", "False").await;
    assert_eq!(reason, "SourceCheckFailed");
    assert!(message.contains("password"), "{message}");
    assert!(!message.contains("wrong-pw-2718"), "{message}");
    let (writable, _, _) = condition(&ns, "shop", "StorageWritable").await.unwrap();
    assert_eq!(writable, "True");
    let (ready, reason, _) = condition(&ns, "shop", "Ready").await.unwrap();
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "PreflightFailed")
    );
    let notified = eventually(
        Duration::from_secs(60),
        "the preflightFailed notification",
        || async {
            let got = received.lock().unwrap().clone();
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(&notified[0]).unwrap();
    assert_eq!(doc["event"], "preflightFailed");
    assert_eq!(doc["kind"], "BackupSchedule");
    assert_eq!(doc["reason"], "SourceCheckFailed");

    // Checked again (the same failure): Ready stays as it was since it turned False (no
    // write at every reconcile), nothing is said again, and the next check waits longer.
    let schedules = Api::<BackupSchedule>::namespaced(admin().await, &ns);
    let ready_since = |s: &BackupSchedule| {
        s.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.last_transition_time.clone())
    };
    let first = ready_since(&schedules.get("shop").await.unwrap());
    let again = eventually(
        Duration::from_secs(120),
        "a second check of the same failure",
        || async {
            let s = schedules.get("shop").await.unwrap();
            (s.status.as_ref()?.preflight.as_ref()?.failures >= 2).then_some(s)
        },
    )
    .await;
    assert_eq!(ready_since(&again), first);
    let message = again
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("checked again at "), "{message}");
    assert_eq!(times_said(&ns, "shop", "PreflightFailed").await, 1);
    assert_eq!(received.lock().unwrap().len(), 1);

    // The Secret is fixed: the schedule checks again at once and turns green.
    Api::<Secret>::namespaced(admin().await, &ns)
        .patch(
            "redis-auth",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "right-pw"}})),
        )
        .await
        .unwrap();
    let (reason, message) = until(&ns, "shop", "SourceReachable", "True").await;
    assert_eq!(reason, "Reachable");
    assert!(message.starts_with("Redis "), "{message}");
    let (ready, reason, _) = condition(&ns, "shop", "Ready").await.unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Scheduled"));
    assert_eq!(times_said(&ns, "shop", "PreflightFailed").await, 1);
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "one notification for one failure"
    );

    // An unreachable host and a missing bucket, each named.
    let nowhere = json!({"redis": {"host": "127.0.0.1", "port": free_port()}});
    let mut missing_bucket = storage(&s3);
    missing_bucket["s3"]["bucket"] = json!("no-such-bucket");
    create::<BackupSchedule>(&ns, schedule("cache", nowhere, missing_bucket)).await;
    let (_, message) = until(&ns, "cache", "SourceReachable", "False").await;
    assert!(
        message.contains("cannot connect to Redis at 127.0.0.1:"),
        "{message}"
    );
    let (reason, message) = until(&ns, "cache", "StorageWritable", "False").await;
    assert_eq!(reason, "StorageCheckFailed");
    assert!(message.contains("no-such-bucket"), "{message}");
    // The bucket appears: the next check (within half a minute) finds it.
    support::s3_client(&s3)
        .create_bucket()
        .bucket("no-such-bucket")
        .send()
        .await
        .unwrap();
    until(&ns, "cache", "StorageWritable", "True").await;
    assert_ne!(BUCKET, "no-such-bucket");

    // Keys that may only read (a bucket policy without PutObject): named before any run.
    let (read_only, read_only_secret) = s3.read_only_keys();
    secret(
        &ns,
        "s3-read-only",
        &[
            ("AWS_ACCESS_KEY_ID", read_only),
            ("AWS_SECRET_ACCESS_KEY", read_only_secret),
        ],
    )
    .await;
    let mut read_only_store = storage(&s3);
    read_only_store["s3"]["credentialsSecretRef"] = json!({"name": "s3-read-only"});
    let good = json!({"redis": {"host": "127.0.0.1", "port": redis.port(),
        "passwordSecretRef": {"name": "redis-auth", "key": "password"}}});
    create::<BackupSchedule>(&ns, schedule("reports", good, read_only_store)).await;
    let (reason, message) = until(&ns, "reports", "StorageWritable", "False").await;
    assert_eq!(reason, "StorageCheckFailed");
    assert!(
        message.contains("cannot write") && message.contains("need write access"),
        "{message}"
    );
    assert!(!message.contains(read_only_secret), "{message}");
    let (reachable, _, _) = condition(&ns, "reports", "SourceReachable").await.unwrap();
    assert_eq!(reachable, "True");

    // Recipients in a ConfigMap that does not exist yet: backups could not be encrypted,
    // said before any run; the retry finds the ConfigMap once it is made.
    let good = json!({"redis": {"host": "127.0.0.1", "port": redis.port(),
        "passwordSecretRef": {"name": "redis-auth", "key": "password"}}});
    let mut sealed = schedule("sealed", good, storage(&s3));
    sealed["spec"]["encryption"] =
        json!({"recipientsFrom": [{"configMapKeyRef": {"name": "team-keys", "key": "age"}}]});
    create::<BackupSchedule>(&ns, sealed).await;
    let (reason, message) = until(&ns, "sealed", "StorageWritable", "False").await;
    assert_eq!(reason, "StorageCheckFailed");
    assert!(
        message.contains("backups cannot be encrypted") && message.contains("ConfigMap team-keys"),
        "{message}"
    );
    let out = support::cli::coffer(&["keygen"], &[]);
    let public = support::cli::stderr(&out)
        .trim()
        .strip_prefix("Public key: ")
        .unwrap()
        .to_owned();
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin().await, &ns)
        .create(
            &Default::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "team-keys"}, "data": {"age": public}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    until(&ns, "sealed", "StorageWritable", "True").await;
    server.abort();
}
