//! Objects the operator's end-to-end tests make: Secrets, sources, storage, and waiting for
//! Backups and RestoreRequests to finish.

use std::collections::BTreeMap;
use std::time::Duration;

use coffer::api::{Backup, BackupPhase, RestorePhase, RestoreRequest};
use coffer_testenv::{RedisServer, S3Server};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::operator::{admin, eventually};
use super::s3_client;

/// How long a backup or restore may take in these tests.
pub const RUN: Duration = Duration::from_secs(150);
/// The bucket [`s3_with_bucket`] makes.
pub const BUCKET: &str = "backups";

pub async fn s3_with_bucket() -> S3Server {
    let s3 = S3Server::start().unwrap();
    s3_client(&s3)
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    s3
}

pub fn storage(s3: &S3Server) -> Value {
    json!({"s3": {
        "bucket": BUCKET, "prefix": "ci/", "endpoint": s3.endpoint(), "region": s3.region(),
        "forcePathStyle": true, "credentialsSecretRef": {"name": "s3-creds"},
    }})
}

pub async fn secret(ns: &str, name: &str, data: &[(&str, &str)]) {
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

pub async fn s3_secret(ns: &str, s3: &S3Server) {
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

/// A Secret `name` with the second S3 server's (versitygw's) keys.
pub async fn versity_secret(ns: &str, name: &str, server: &coffer_testenv::VersityServer) {
    secret(
        ns,
        name,
        &[
            ("AWS_ACCESS_KEY_ID", server.access_key()),
            ("AWS_SECRET_ACCESS_KEY", server.secret_key()),
        ],
    )
    .await;
}

pub async fn create<K>(ns: &str, doc: Value) -> K
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

pub fn redis_source(redis: &RedisServer, secret: &str) -> Value {
    json!({"redis": {"host": "127.0.0.1", "port": redis.port(), "passwordSecretRef": {"name": secret, "key": "password"}}})
}

/// Waits until the Backup has finished, and returns it.
pub async fn finished_backup(ns: &str, name: &str) -> Backup {
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

pub async fn finished_restore(ns: &str, name: &str) -> RestoreRequest {
    let restores: Api<RestoreRequest> = Api::namespaced(admin().await, ns);
    eventually(RUN, &format!("RestoreRequest {name}"), || async {
        let r = restores.get(name).await.unwrap();
        matches!(
            r.status.as_ref()?.phase?,
            RestorePhase::Succeeded | RestorePhase::Failed
        )
        .then_some(r)
    })
    .await
}

/// The Event objects about the object `name`.
async fn events_about(ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(admin().await, ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// The Events about the object `name`: (type, reason, note).
pub async fn events_of(ns: &str, name: &str) -> Vec<(String, String, String)> {
    events_about(ns, name)
        .await
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// How many times Events with `reason` were recorded about `name`: one per Event object, or
/// its `series.count` when the recorder folded repeats into one object (as kube's does for
/// the same reason, object and reporter within minutes).
pub async fn times_said(ns: &str, name: &str, reason: &str) -> i32 {
    events_about(ns, name)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.map_or(1, |s| s.count))
        .sum()
}

/// The keys under `prefix` in the test bucket.
pub async fn stored_keys(s3: &S3Server, prefix: &str) -> Vec<String> {
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

/// Every Job in the namespace.
pub async fn jobs(ns: &str) -> Vec<Job> {
    Api::<Job>::namespaced(admin().await, ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// A Deployment of `replicas` sleeping busybox Pods labelled `app: <name>`.
pub async fn deployment(ns: &str, name: &str, replicas: i32) {
    create::<Deployment>(
        ns,
        json!({"metadata": {"name": name}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
            {"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}}}}),
    )
    .await;
}

/// The Deployment's replicas.
pub async fn replicas(ns: &str, name: &str) -> i32 {
    Api::<Deployment>::namespaced(admin().await, ns)
        .get(name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas
        .unwrap()
}

/// A namespace of its own with the operator's RBAC, an S3 server with the bucket and its
/// credentials in `s3-creds`, and a Redis server (password `pw`, in Secret `redis-auth`)
/// holding `keys` numbered keys. Keep the namespace handle: dropping it deletes the
/// namespace.
pub async fn redis_namespace(
    prefix: &str,
    keys: usize,
) -> (coffer_testenv::TestNamespace, String, S3Server, RedisServer) {
    let namespace = super::operator::plane().namespace(prefix).await.unwrap();
    let ns = namespace.name().to_owned();
    super::operator::prepare(&ns).await;
    let s3 = s3_with_bucket().await;
    s3_secret(&ns, &s3).await;
    let redis = RedisServer::start_with_password("pw").unwrap();
    let mut con = super::redis_data::connect(&redis.url()).await;
    super::redis_data::set_numbered(&mut con, "key:", "", keys).await;
    secret(&ns, "redis-auth", &[("password", "pw")]).await;
    (namespace, ns, s3, redis)
}

/// A namespace of its own for a test, the operator's RBAC, an S3 server with the bucket, and
/// its credentials in the Secret `s3-creds`. Keep the namespace handle: dropping it deletes
/// the namespace.
pub async fn setup(prefix: &str) -> (coffer_testenv::TestNamespace, String, S3Server) {
    let namespace = super::operator::plane().namespace(prefix).await.unwrap();
    let ns = namespace.name().to_owned();
    super::operator::prepare(&ns).await;
    let s3 = s3_with_bucket().await;
    s3_secret(&ns, &s3).await;
    (namespace, ns, s3)
}
