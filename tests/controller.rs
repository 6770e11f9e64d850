//! The operator end to end: `coffer controller` runs as the non-admin user bound to
//! `deploy/operator/rbac.yaml`, against the real control plane (the Job controller and the
//! process kubelet run the worker Pods), real Redis, PostgreSQL and an S3 server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use coffer::api::{Backup, BackupPhase, BackupSchedule, RestorePhase, RestoreRequest};
use coffer_testenv::{PostgresServer, RedisServer, S3Server};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

mod support;
use support::operator::{Operator, admin, eventually, plane, prepare};
use support::s3_client;

const RUN: Duration = Duration::from_secs(150);
const BUCKET: &str = "backups";

async fn s3_with_bucket() -> S3Server {
    let s3 = S3Server::start().unwrap();
    s3_client(&s3)
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    s3
}

fn storage(s3: &S3Server) -> Value {
    json!({"s3": {
        "bucket": BUCKET, "prefix": "ci/", "endpoint": s3.endpoint(), "region": s3.region(),
        "forcePathStyle": true, "credentialsSecretRef": {"name": "s3-creds"},
    }})
}

async fn secret(ns: &str, name: &str, data: &[(&str, &str)]) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin().await, ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

async fn s3_secret(ns: &str, s3: &S3Server) {
    secret(
        ns,
        "s3-creds",
        &[
            ("AWS_ACCESS_KEY_ID", s3.access_key()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key()),
        ],
    )
    .await;
}

async fn create<K>(ns: &str, doc: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(doc).unwrap();
    Api::<K>::namespaced(admin().await, ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap()
}

fn redis_source(redis: &RedisServer, secret: &str) -> Value {
    json!({"redis": {"host": "127.0.0.1", "port": redis.port(), "passwordSecretRef": {"name": secret, "key": "password"}}})
}

fn pg_source(pg: &PostgresServer, secret: &str) -> Value {
    json!({"postgres": {"host": "127.0.0.1", "port": pg.port(), "user": pg.user(), "databases": ["shop"],
        "globals": false, "passwordSecretRef": {"name": secret, "key": "password"}}})
}

/// Waits until the Backup has finished, and returns it.
async fn finished_backup(ns: &str, name: &str) -> Backup {
    let api: Api<Backup> = Api::namespaced(admin().await, ns);
    eventually(RUN, &format!("Backup {name} to finish"), || async {
        let b = api.get_opt(name).await.unwrap()?;
        matches!(
            b.status.as_ref()?.phase?,
            BackupPhase::Succeeded | BackupPhase::Failed
        )
        .then_some(b)
    })
    .await
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

async fn events_of(ns: &str, name: &str) -> Vec<(String, String, String)> {
    Api::<Event>::namespaced(admin().await, ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

async fn stored_keys(s3: &S3Server, prefix: &str) -> Vec<String> {
    s3_client(s3)
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(prefix)
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

async fn jobs(ns: &str) -> Vec<Job> {
    Api::<Job>::namespaced(admin().await, ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn every_minute_schedules_back_up_redis_postgres_and_a_volume() {
    let ns = plane().namespace("schedules").await.unwrap();
    let ns = ns.name().to_owned();
    prepare(&ns).await;
    let s3 = s3_with_bucket().await;
    s3_secret(&ns, &s3).await;
    let redis = RedisServer::start_with_password("redis-pw").unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    for i in 0..100 {
        redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .query_async::<()>(&mut con)
            .await
            .unwrap();
    }
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
    }
    assert!(_operator.get("/readyz").await.ends_with("ok"));
}
