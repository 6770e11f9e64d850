//! No run ever adopts, repeats or deletes another run's work, and deletions always finish:
//! each test reproduces one way this went wrong, against the real control plane (the Job and
//! garbage-collector controllers, the process kubelet), Redis and the S3 server, with the
//! operator running as the chart's RBAC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coffer::api::{Backup, BackupPhase, BackupSchedule, RestorePhase, RestoreRequest};
use coffer_testenv::{RedisServer, S3Server};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use serde_json::{Value, json};

mod support;
use support::operator::{Operator, admin, eventually, plane, prepare};
use support::resources::{
    BUCKET, RUN, create, events_of, finished_backup, finished_restore, jobs, redis_source, secret,
    storage, stored_keys, times_said,
};

/// A namespace with the operator's RBAC, an S3 server and a Redis server with 20 keys.
async fn setup(prefix: &str) -> (coffer_testenv::TestNamespace, String, S3Server, RedisServer) {
    support::resources::redis_namespace(prefix, 20).await
}

fn backup_doc(name: &str, redis: &RedisServer, s3: &S3Server, secret: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {
        "source": redis_source(redis, secret), "storage": storage(s3)}})
}

/// The reason of the `Ready` condition.
fn ready_reason(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> &str {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map_or("", |c| c.reason.as_str())
}

/// The folder of a Backup's location, relative to the bucket.
fn folder(backup: &Backup) -> String {
    let location = backup.status.as_ref().unwrap().location.clone().unwrap();
    location
        .trim_start_matches(&format!("s3://{BUCKET}/"))
        .to_owned()
}

async fn delete<K>(ns: &str, name: &str, propagation: PropagationPolicy)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let params = DeleteParams {
        propagation_policy: Some(propagation),
        ..DeleteParams::default()
    };
    Api::<K>::namespaced(admin().await, ns)
        .delete(name, &params)
        .await
        .unwrap();
}

async fn gone<K>(ns: &str, name: &str, timeout: Duration)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(admin().await, ns);
    eventually(timeout, &format!("{name} to be gone"), || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

async fn keys(redis: &RedisServer) -> usize {
    let mut con = support::redis_data::connect(&redis.url()).await;
    let n: usize = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    n
}

#[tokio::test]
async fn two_backups_of_one_schedule_in_the_same_second_never_share_a_folder() {
    let (_namespace, ns, s3, redis) = setup("samesecond").await;
    let _operator = Operator::start(&ns, "solo");
    // Two on-demand runs of one schedule, carrying the same scheduled time (two CI jobs in
    // the same second, or a copied object): they used to share a folder.
    for name in ["ci-a", "ci-b"] {
        let mut doc = backup_doc(name, &redis, &s3, "redis-auth");
        doc["metadata"]["annotations"] =
            json!({"coffer.dev/scheduled-time": "2026-12-01T16:00:00Z"});
        doc["spec"]["scheduleRef"] = json!({"name": "shop"});
        create::<Backup>(&ns, doc).await;
    }
    let a = finished_backup(&ns, "ci-a").await;
    let b = finished_backup(&ns, "ci-b").await;
    for backup in [&a, &b] {
        let status = backup.status.as_ref().unwrap();
        assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
        // The run's settings are recorded, with its folder.
        let resolved = status.resolved.as_ref().unwrap();
        assert_eq!(format!("ci/{}", resolved.folder), folder(backup));
    }
    let (folder_a, folder_b) = (folder(&a), folder(&b));
    assert_ne!(folder_a, folder_b);
    assert!(folder_a.starts_with(&format!("ci/{ns}/shop/20261201T160000Z-")));
    // The manifest names the Backup it was written for.
    let manifest = s3_client_get(&s3, &format!("{folder_b}manifest.json")).await;
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["owner"]["uid"], json!(b.uid().unwrap()));
    assert_eq!(manifest["owner"]["name"], json!("ci-b"));

    // Deleting one deletes its data, and never the other's.
    delete::<Backup>(&ns, "ci-a", PropagationPolicy::Background).await;
    gone::<Backup>(&ns, "ci-a", RUN).await;
    assert!(stored_keys(&s3, &folder_a).await.is_empty());
    let left = stored_keys(&s3, &folder_b).await;
    assert!(
        left.contains(&format!("{folder_b}manifest.json")),
        "{left:?}"
    );
}

async fn s3_client_get(s3: &S3Server, key: &str) -> Vec<u8> {
    support::s3_client(s3)
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_backup_created_again_under_the_same_name_runs_and_deletes_its_own_data() {
    let (_namespace, ns, s3, redis) = setup("samename").await;
    secret(&ns, "wrong-auth", &[("password", "wrong")]).await;
    let _operator = Operator::start(&ns, "solo");
    // The first `nightly` fails (a wrong password); deleting it with Orphan keeps its Job.
    create::<Backup>(&ns, backup_doc("nightly", &redis, &s3, "wrong-auth")).await;
    let first = finished_backup(&ns, "nightly").await;
    assert_eq!(
        first.status.as_ref().unwrap().phase,
        Some(BackupPhase::Failed)
    );
    delete::<Backup>(&ns, "nightly", PropagationPolicy::Orphan).await;
    gone::<Backup>(&ns, "nightly", RUN).await;
    let old_jobs: Vec<String> = jobs(&ns).await.iter().map(|j| j.name_any()).collect();
    assert!(
        old_jobs.contains(&"nightly-backup".to_owned()),
        "{old_jobs:?}"
    );
    assert!(
        old_jobs.contains(&"nightly-delete".to_owned()),
        "{old_jobs:?}"
    );

    // The second `nightly` must not take the first one's failed Job as its result.
    let second = create::<Backup>(&ns, backup_doc("nightly", &redis, &s3, "redis-auth")).await;
    let done = finished_backup(&ns, "nightly").await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
    let job = Api::<Job>::namespaced(admin().await, &ns)
        .get("nightly-backup")
        .await
        .unwrap();
    assert_eq!(
        job.labels().get("coffer.dev/owner-uid"),
        second.uid().as_ref()
    );
    let data = folder(&done);
    assert!(!stored_keys(&s3, &data).await.is_empty());

    // Nor the first one's finished deletion Job as the deletion of its own data.
    delete::<Backup>(&ns, "nightly", PropagationPolicy::Background).await;
    gone::<Backup>(&ns, "nightly", RUN).await;
    assert_eq!(stored_keys(&s3, &data).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_restore_request_created_again_under_the_same_name_restores_again() {
    let (_namespace, ns, s3, redis) = setup("restoreagain").await;
    let _operator = Operator::start(&ns, "solo");
    create::<Backup>(&ns, backup_doc("base", &redis, &s3, "redis-auth")).await;
    assert_eq!(
        finished_backup(&ns, "base").await.status.unwrap().phase,
        Some(BackupPhase::Succeeded)
    );
    let restore = json!({"metadata": {"name": "again"}, "spec": {
        "backupRef": {"name": "base"}, "redis": {"conflict": "Overwrite"}}});
    create::<RestoreRequest>(&ns, restore.clone()).await;
    let first = finished_restore(&ns, "again").await;
    assert_eq!(first.status.unwrap().phase, Some(RestorePhase::Succeeded));
    delete::<RestoreRequest>(&ns, "again", PropagationPolicy::Orphan).await;
    gone::<RestoreRequest>(&ns, "again", RUN).await;
    assert!(
        jobs(&ns)
            .await
            .iter()
            .any(|j| j.name_any() == "again-restore")
    );
    let mut con = support::redis_data::connect(&redis.url()).await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut con)
        .await
        .unwrap();

    // The old Job's success is not this request's: it runs its own restore.
    create::<RestoreRequest>(&ns, restore).await;
    let second = finished_restore(&ns, "again").await;
    let status = second.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    assert_eq!(keys(&redis).await, 20);
}

/// Waits until the object's status names its worker Job.
async fn job_started<K>(ns: &str, name: &str) -> String
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(admin().await, ns);
    eventually(RUN, &format!("{name}'s Job to start"), || async {
        let value = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
        value["status"]["jobName"].as_str().map(str::to_owned)
    })
    .await
}

#[tokio::test]
async fn a_restore_whose_job_vanished_fails_and_never_runs_again() {
    let (_namespace, ns, s3, redis) = setup("vanishrestore").await;
    let _operator = Operator::start(&ns, "solo");
    create::<Backup>(&ns, backup_doc("base", &redis, &s3, "redis-auth")).await;
    finished_backup(&ns, "base").await;
    let target = RedisServer::start_with_password("target-pw").unwrap();
    // The target's Secret lacks the key: the worker waits (CreateContainerConfigError).
    secret(&ns, "target-auth", &[("other", "x")]).await;
    // (No safety backup: nothing backs this target up, and the test is about the restore's
    // own Job.)
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "lost"}, "spec": {
        "backupRef": {"name": "base"}, "redis": {"conflict": "Flush"},
        "target": redis_source(&target, "target-auth"), "safetyBackup": false}}),
    )
    .await;
    let job = job_started::<RestoreRequest>(&ns, "lost").await;
    delete::<Job>(&ns, &job, PropagationPolicy::Background).await;
    let done = finished_restore(&ns, "lost").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Failed));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "WorkerVanished", "{}", ready.message);
    assert!(ready.message.contains("not run again"), "{}", ready.message);
    // With the key in place now, nothing runs the restore again.
    let patch = json!({"stringData": {"password": "target-pw"}});
    Api::<Secret>::namespaced(admin().await, &ns)
        .patch(
            "target-auth",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!jobs(&ns).await.iter().any(|j| j.name_any() == job));
    assert_eq!(keys(&target).await, 0);
}

#[tokio::test]
async fn a_backup_whose_job_vanished_is_judged_by_what_is_in_storage() {
    let (_namespace, ns, s3, redis) = setup("vanishbackup").await;
    let mut operator = Operator::start(&ns, "solo");
    // A run that completed while the operator was down, and whose Job was gone (its TTL ran
    // out, or someone deleted it) before the operator came back.
    create::<Backup>(&ns, backup_doc("complete", &redis, &s3, "redis-auth")).await;
    create::<Backup>(&ns, backup_doc("podless", &redis, &s3, "redis-auth")).await;
    let job = job_started::<Backup>(&ns, "complete").await;
    let podless_job = job_started::<Backup>(&ns, "podless").await;
    operator.kill();
    let job_api = Api::<Job>::namespaced(admin().await, &ns);
    eventually(RUN, "the backup Job to complete", || async {
        let job = job_api.get(&job).await.unwrap();
        coffer::controller::workers::finished(&job).map(|_| ())
    })
    .await;
    delete::<Job>(&ns, &job, PropagationPolicy::Background).await;
    gone::<Job>(&ns, &job, RUN).await;
    // Of `podless`, only the Pod (with the result in its status) goes; the Job stays.
    eventually(RUN, "podless's Job to complete", || async {
        let job = job_api.get(&podless_job).await.unwrap();
        coffer::controller::workers::finished(&job).map(|_| ())
    })
    .await;
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin().await, &ns);
    pods.delete_collection(
        &DeleteParams::default(),
        &kube::api::ListParams::default()
            .labels(&format!("batch.kubernetes.io/job-name={podless_job}")),
    )
    .await
    .unwrap();
    eventually(RUN, "podless's Pod to be gone", || async {
        pods.list(
            &kube::api::ListParams::default()
                .labels(&format!("batch.kubernetes.io/job-name={podless_job}")),
        )
        .await
        .unwrap()
        .items
        .is_empty()
        .then_some(())
    })
    .await;
    // A run whose worker never started, and whose Job vanished.
    secret(&ns, "no-key", &[("other", "x")]).await;
    let _operator = Operator::start(&ns, "solo");
    create::<Backup>(&ns, backup_doc("never", &redis, &s3, "no-key")).await;
    let never_job = job_started::<Backup>(&ns, "never").await;
    delete::<Job>(&ns, &never_job, PropagationPolicy::Background).await;

    let complete = finished_backup(&ns, "complete").await;
    let status = complete.status.clone().unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
    assert_eq!(status.manifest_sha256.as_ref().map(String::len), Some(64));
    assert_eq!(status.stats.as_ref().and_then(|s| s.keys), Some(20));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(ready.message.contains("was lost"), "{}", ready.message);

    let podless = finished_backup(&ns, "podless").await;
    let status = podless.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
    assert_eq!(status.stats.as_ref().and_then(|s| s.keys), Some(20));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(ready.message.contains("Pod is gone"), "{}", ready.message);

    let never = finished_backup(&ns, "never").await;
    let status = never.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "WorkerVanished", "{}", ready.message);
    assert!(ready.message.contains("manifest"), "{}", ready.message);
}

#[tokio::test]
async fn deleting_a_namespace_finishes_and_says_where_the_data_was_left() {
    let (namespace, ns, s3, redis) = setup("nsdelete").await;
    // Its Lease must not live in the namespace that goes away.
    let operator = Operator::start_with(&ns, "solo", &["--no-leader-election"]);
    create::<Backup>(&ns, backup_doc("kept", &redis, &s3, "redis-auth")).await;
    let done = finished_backup(&ns, "kept").await;
    let data = folder(&done);
    Api::<Namespace>::all(admin().await)
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    let namespaces = Api::<Namespace>::all(admin().await);
    eventually(
        Duration::from_secs(120),
        "the namespace to be gone",
        || async {
            namespaces
                .get_opt(&ns)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    drop(namespace);
    // The data stays, and the operator says where and how to delete it.
    assert!(
        stored_keys(&s3, &data)
            .await
            .contains(&format!("{data}manifest.json"))
    );
    let log = operator.log();
    let line = log
        .lines()
        .find(|l| l.contains("DataNotDeleted"))
        .unwrap_or_else(|| panic!("no DataNotDeleted in the log:\n{log}"));
    assert!(
        line.contains(&data) && line.contains("coffer delete"),
        "{line}"
    );
}

#[tokio::test]
async fn deletion_gives_up_when_the_credentials_are_gone_and_coffer_delete_finishes_the_job() {
    let (_namespace, ns, s3, redis) = setup("credsgone").await;
    let _operator = Operator::start_with(&ns, "solo", &["--deletion-timeout", "15"]);
    create::<Backup>(&ns, backup_doc("orphan", &redis, &s3, "redis-auth")).await;
    create::<Backup>(&ns, backup_doc("stuck", &redis, &s3, "redis-auth")).await;
    let orphan = finished_backup(&ns, "orphan").await;
    let stuck = finished_backup(&ns, "stuck").await;

    // The deletion Job of `stuck` cannot start (its credentials lack a key): it waits, says
    // so with the way out, and gives up after --deletion-timeout.
    let patch = json!({"data": {"AWS_SECRET_ACCESS_KEY": null}});
    let secrets = Api::<Secret>::namespaced(admin().await, &ns);
    secrets
        .patch("s3-creds", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    delete::<Backup>(&ns, "stuck", PropagationPolicy::Background).await;
    gone::<Backup>(&ns, "stuck", Duration::from_secs(90)).await;
    let events = events_of(&ns, "stuck").await;
    let waiting = events.iter().find(|e| e.1 == "DeletionWaiting");
    assert!(
        waiting.is_some_and(|e| e.2.contains("deletionPolicy: Retain")),
        "{events:?}"
    );
    let left = events
        .iter()
        .find(|e| e.1 == "DataNotDeleted")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(left.2.contains(&folder(&stuck)), "{left:?}");

    // With the Secret gone, deletion gives up at once.
    secrets
        .delete("s3-creds", &DeleteParams::default())
        .await
        .unwrap();
    delete::<Backup>(&ns, "orphan", PropagationPolicy::Background).await;
    gone::<Backup>(&ns, "orphan", Duration::from_secs(30)).await;
    let events = events_of(&ns, "orphan").await;
    let left = events
        .iter()
        .find(|e| e.1 == "DataNotDeleted")
        .unwrap_or_else(|| panic!("{events:?}"));
    let data = folder(&orphan);
    assert!(left.2.contains(&data), "{left:?}");
    assert!(!stored_keys(&s3, &data).await.is_empty());

    // The command the Event names deletes it.
    let command = left.2.split('`').nth(1).unwrap();
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(&args)
        .envs(s3.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stored_keys(&s3, &data).await.is_empty());
}

#[tokio::test]
async fn a_backup_is_not_deleted_while_a_restore_reads_it() {
    let (_namespace, ns, s3, redis) = setup("inuse").await;
    let _operator = Operator::start(&ns, "solo");
    create::<Backup>(&ns, backup_doc("base", &redis, &s3, "redis-auth")).await;
    let base = finished_backup(&ns, "base").await;
    let data = folder(&base);
    let target = RedisServer::start_with_password("target-pw").unwrap();
    secret(&ns, "target-auth", &[("other", "x")]).await;
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "reader"}, "spec": {
        "backupRef": {"name": "base"}, "target": redis_source(&target, "target-auth")}}),
    )
    .await;
    job_started::<RestoreRequest>(&ns, "reader").await;
    delete::<Backup>(&ns, "base", PropagationPolicy::Background).await;
    let backups = Api::<Backup>::namespaced(admin().await, &ns);
    eventually(RUN, "base to say it is in use", || async {
        let b = backups.get("base").await.unwrap();
        let deleting = b
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Deleting")?;
        (deleting.reason == "InUse").then_some(())
    })
    .await;
    assert!(!stored_keys(&s3, &data).await.is_empty());
    // The restore can run now, and finishes; then the Backup and its data go.
    let patch = json!({"stringData": {"password": "target-pw"}});
    Api::<Secret>::namespaced(admin().await, &ns)
        .patch(
            "target-auth",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let restored = finished_restore(&ns, "reader").await;
    assert_eq!(
        restored.status.unwrap().phase,
        Some(RestorePhase::Succeeded)
    );
    assert_eq!(keys(&target).await, 20);
    gone::<Backup>(&ns, "base", RUN).await;
    assert!(stored_keys(&s3, &data).await.is_empty());
}

#[tokio::test]
async fn a_restore_from_a_location_outside_the_prefix_is_refused() {
    let (_namespace, ns, s3, redis) = setup("escape").await;
    let _operator = Operator::start(&ns, "solo");
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "escape"}, "spec": {
        "from": {"storage": storage(&s3), "location": "../other-team/"},
        "target": redis_source(&redis, "redis-auth")}}),
    )
    .await;
    let done = finished_restore(&ns, "escape").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Failed));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "InvalidLocation", "{}", ready.message);
    assert!(
        !jobs(&ns)
            .await
            .iter()
            .any(|j| j.name_any() == "escape-restore")
    );
    assert_eq!(keys(&redis).await, 20);
}

/// Makes the API server refuse every creation of `resource` (`jobs` in `batch`, or
/// `backups` in `coffer.dev`) in `ns`, as an admission policy of the cluster's would; waits
/// until it is enforced. [`allow`] lifts it.
async fn refuse(ns: &str, group: &str, resource: &str) {
    let name = format!("refuse-{resource}-{ns}");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [group], "apiVersions": ["*"],
                "operations": ["CREATE"], "resources": [resource]}]},
            "validations": [{"expression": "false", "message": "frozen by the test's policy"}]}}))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": ns}}}}}))
    .unwrap();
    let client = admin().await;
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&Default::default(), &policy)
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&Default::default(), &binding)
        .await
        .unwrap();
    // Enforced once a dry-run creation is refused.
    let probe: Value = if resource == "jobs" {
        json!({"metadata": {"name": "probe"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}})
    } else {
        json!({"metadata": {"name": "probe"}, "spec": {"scheduleRef": {"name": "x"}}})
    };
    let dry = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(RUN, "the test's policy to be enforced", || async {
        let refused = if resource == "jobs" {
            let job: Job = serde_json::from_value(probe.clone()).unwrap();
            Api::<Job>::namespaced(client.clone(), ns)
                .create(&dry, &job)
                .await
                .is_err()
        } else {
            let backup: Backup = serde_json::from_value(probe.clone()).unwrap();
            Api::<Backup>::namespaced(client.clone(), ns)
                .create(&dry, &backup)
                .await
                .is_err()
        };
        refused.then_some(())
    })
    .await;
}

/// Lifts [`refuse`].
async fn allow(ns: &str, resource: &str) {
    let name = format!("refuse-{resource}-{ns}");
    let client = admin().await;
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(client)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

/// Waits for three attempts the operator logs as `attempt`, asserts they were spread out
/// (retried every 30 s, not in a loop), and that the Event `reason` about `name` was
/// recorded once, not once per retry.
async fn retried_calmly_and_said_once(
    operator: &Operator,
    attempt: &str,
    (ns, name, reason): (&str, &str, &str),
    timeout: Duration,
) {
    // Counted from the next attempt on: those before may have followed other changes (the
    // schedule's pre-flight check finishing, for example), each of which is looked at.
    let seen = operator.log().matches(attempt).count();
    let first = eventually(timeout, "a first attempt", || async {
        (operator.log().matches(attempt).count() > seen).then(std::time::Instant::now)
    })
    .await;
    eventually(timeout, "two retries", || async {
        (operator.log().matches(attempt).count() >= seen + 3).then_some(())
    })
    .await;
    assert!(
        first.elapsed() >= Duration::from_secs(15),
        "{:?}",
        first.elapsed()
    );
    assert_eq!(
        times_said(ns, name, reason).await,
        1,
        "one Event, not one per retry"
    );
}

#[tokio::test]
async fn a_refused_run_is_said_once_and_retried_calmly_until_it_can_run() {
    let (_namespace, ns, s3, redis) = setup("refused").await;
    // No Jobs allowed in the namespace (an admission policy refuses them).
    refuse(&ns, "batch", "jobs").await;
    let operator = Operator::start(&ns, "solo");
    create::<Backup>(&ns, backup_doc("blocked", &redis, &s3, "redis-auth")).await;
    let backups = Api::<Backup>::namespaced(admin().await, &ns);
    eventually(RUN, "blocked to say JobRefused", || async {
        let b = backups.get("blocked").await.unwrap();
        let ready = b
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.reason == "JobRefused" && ready.message.contains("frozen by the test's policy"))
            .then_some(())
    })
    .await;
    // Two retries (the operator logs every attempt), and still one Event.
    retried_calmly_and_said_once(
        &operator,
        "refused the worker Job; tried again later",
        (&ns, "blocked", "JobRefused"),
        RUN,
    )
    .await;
    // Once the cause is gone, the run happens.
    allow(&ns, "jobs").await;
    let done = finished_backup(&ns, "blocked").await;
    assert_eq!(done.status.unwrap().phase, Some(BackupPhase::Succeeded));
}

#[tokio::test]
async fn a_schedule_whose_backups_are_refused_says_so_once_and_runs_when_it_can() {
    let (_namespace, ns, s3, redis) = setup("schedrefused").await;
    refuse(&ns, "coffer.dev", "backups").await;
    let operator = Operator::start(&ns, "solo");
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "minutely"}, "spec": {
        "schedule": "* * * * *", "source": redis_source(&redis, "redis-auth"),
        "storage": storage(&s3)}}),
    )
    .await;
    let schedules = Api::<BackupSchedule>::namespaced(admin().await, &ns);
    // Refused, and its pre-flight check done (its result wakes the schedule once more).
    eventually(Duration::from_secs(120), "BackupRefused", || async {
        let s = schedules.get("minutely").await.unwrap();
        let status = s.status?;
        status.preflight.as_ref()?;
        let ready = status.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (ready.reason == "BackupRefused").then_some(())
    })
    .await;
    retried_calmly_and_said_once(
        &operator,
        "refused a scheduled Backup; tried again later",
        (&ns, "minutely", "BackupRefused"),
        Duration::from_secs(120),
    )
    .await;
    allow(&ns, "backups").await;
    let backups = Api::<Backup>::namespaced(admin().await, &ns);
    let name = eventually(Duration::from_secs(120), "a Backup of minutely", || async {
        backups
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .first()
            .map(|b| b.name_any())
    })
    .await;
    let done = finished_backup(&ns, &name).await;
    assert_eq!(done.status.unwrap().phase, Some(BackupPhase::Succeeded));
}

#[tokio::test]
async fn a_volume_restores_through_the_operator_from_a_claim_store_with_its_owners_under_baseline()
{
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let namespace = plane().namespace("volrestore").await.unwrap();
    let ns = namespace.name().to_owned();
    prepare(&ns).await;
    // Giving owners back needs root and four capabilities: `baseline`, not `restricted`.
    let label = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}});
    Api::<Namespace>::all(admin().await)
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    for claim in ["app-data", "store"] {
        create::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(
            &ns,
            json!({"metadata": {"name": claim}, "spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .await;
    }
    let data = plane().claim_dir(&ns, "app-data").unwrap();
    std::fs::create_dir_all(data.join("ro/inner")).unwrap();
    std::fs::write(data.join("ro/inner/b.txt"), "b").unwrap();
    std::fs::write(data.join("owned.txt"), "mine").unwrap();
    std::os::unix::fs::chown(data.join("owned.txt"), Some(1234), Some(5678)).unwrap();
    for dir in ["ro/inner", "ro"] {
        std::fs::set_permissions(data.join(dir), std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let _operator = Operator::start(&ns, "solo");
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "files"}, "spec": {
        "source": {"volume": {"claimName": "app-data"}},
        "storage": {"filesystem": {"claimName": "store"}}}}),
    )
    .await;
    let done = finished_backup(&ns, "files").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
    let location = status.location.unwrap();
    assert!(
        location.starts_with(&format!("pvc://store/{ns}/files/")),
        "{location}"
    );
    // Every engine's manifest names the Backup it was written for.
    let manifest = plane()
        .claim_dir(&ns, "store")
        .unwrap()
        .join(location.trim_start_matches("pvc://store/"))
        .join("manifest.json");
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    assert_eq!(manifest["owner"]["name"], json!("files"));

    // The data is lost; the restore brings it back, owners and the read-only directory too.
    for dir in ["ro", "ro/inner"] {
        std::fs::set_permissions(data.join(dir), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::remove_dir_all(data.join("ro")).unwrap();
    std::fs::write(data.join("owned.txt"), "overwritten").unwrap();
    std::fs::write(data.join("stray.txt"), "not in the backup").unwrap();
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "back"}, "spec": {
        "backupRef": {"name": "files"}, "volume": {"clean": true, "restoreOwners": true}}}),
    )
    .await;
    let restored = finished_restore(&ns, "back").await;
    let status = restored.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    assert_eq!(
        std::fs::read_to_string(data.join("owned.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("ro/inner/b.txt")).unwrap(),
        "b"
    );
    assert!(!data.join("stray.txt").exists());
    let owned = std::fs::metadata(data.join("owned.txt")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    let ro = std::fs::metadata(data.join("ro")).unwrap();
    assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
    // The restore ran as root with only the capabilities it needs.
    let job = Api::<Job>::namespaced(admin().await, &ns)
        .get("back-restore")
        .await
        .unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_user, Some(0));
    let caps = pod.containers[0]
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .clone()
        .unwrap();
    assert_eq!(
        caps.add.unwrap(),
        ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"].map(str::to_owned)
    );
    assert_eq!(pod.security_context.unwrap().fs_group, None);
}

#[tokio::test]
async fn a_restore_refuses_a_manifest_replaced_since_the_backup() {
    let (_namespace, ns, s3, redis) = setup("tampered").await;
    let _operator = Operator::start(&ns, "solo");
    create::<Backup>(&ns, backup_doc("base", &redis, &s3, "redis-auth")).await;
    let base = finished_backup(&ns, "base").await;
    // Someone who can write the bucket replaces the manifest with one that still parses and
    // still matches the data (only its name differs).
    let key = format!("{}manifest.json", folder(&base));
    let mut manifest: Value = serde_json::from_slice(&s3_client_get(&s3, &key).await).unwrap();
    manifest["name"] = json!("someone-else");
    support::s3_client(&s3)
        .put_object()
        .bucket(BUCKET)
        .key(&key)
        .body(serde_json::to_vec_pretty(&manifest).unwrap().into())
        .send()
        .await
        .unwrap();
    let target = RedisServer::start_with_password("pw").unwrap();
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "tampered"}, "spec": {
        "backupRef": {"name": "base"}, "target": redis_source(&target, "redis-auth")}}),
    )
    .await;
    let done = finished_restore(&ns, "tampered").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Failed));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "IntegrityCheckFailed", "{}", ready.message);
    assert!(
        ready.message.contains("changed or replaced"),
        "{}",
        ready.message
    );
    assert_eq!(keys(&target).await, 0);
}

#[tokio::test]
async fn a_schedule_sweeps_what_failed_runs_left_in_its_folder_and_nothing_else() {
    let namespace = plane().namespace("sweep").await.unwrap();
    let ns = namespace.name().to_owned();
    prepare(&ns).await;
    for claim in ["app-data", "store"] {
        create::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(
            &ns,
            json!({"metadata": {"name": claim}, "spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .await;
    }
    let store = plane().claim_dir(&ns, "store").unwrap();
    let days_ago =
        filetime::FileTime::from_unix_time(chrono::Utc::now().timestamp() - 3 * 86_400, 0);
    let put = |folder: &str, file: &str, old: bool| {
        let dir = store.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), "bytes").unwrap();
        if old {
            filetime::set_file_mtime(dir.join(file), days_ago).unwrap();
        }
        dir
    };
    // A failed run's data, days old: swept. The rest stays: a leftover too young (it could
    // be a run still going), a complete backup, and another schedule's folder.
    let stale = put(
        &format!("{ns}/nightly/20250101T000000Z-deadbeef/"),
        "volume.tar.gz",
        true,
    );
    let young = put(
        &format!("{ns}/nightly/20261129T000000Z-cafe0000/"),
        "volume.tar.gz",
        false,
    );
    let complete = put(
        &format!("{ns}/nightly/20250102T000000Z-0000aaaa/"),
        "manifest.json",
        true,
    );
    let other = put(
        &format!("{ns}/other/20250101T000000Z-deadbeef/"),
        "volume.tar.gz",
        true,
    );
    let _operator = Operator::start(&ns, "solo");
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "nightly"}, "spec": {
        "schedule": "0 0 1 1 *", "source": {"volume": {"claimName": "app-data"}},
        "storage": {"filesystem": {"claimName": "store"}}}}),
    )
    .await;
    let schedules = Api::<BackupSchedule>::namespaced(admin().await, &ns);
    let sweep = eventually(RUN, "the schedule's first sweep", || async {
        schedules.get("nightly").await.unwrap().status?.last_sweep
    })
    .await;
    assert_eq!(sweep.removed, 1, "{}", sweep.message);
    assert!(
        sweep.message.contains("20250101T000000Z-deadbeef"),
        "{}",
        sweep.message
    );
    assert!(!stale.join("volume.tar.gz").exists());
    assert!(young.join("volume.tar.gz").exists());
    assert!(complete.join("manifest.json").exists());
    assert!(other.join("volume.tar.gz").exists());
    let events = events_of(&ns, "nightly").await;
    assert!(events.iter().any(|e| e.1 == "Swept"), "{events:?}");
    // Daily: the next look does not sweep again.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let again = schedules
        .get("nightly")
        .await
        .unwrap()
        .status
        .unwrap()
        .last_sweep
        .unwrap();
    assert_eq!(again.time, sweep.time);
}

/// A Backup made by a version before `status.resolved` (its folder had no UID in it): a
/// restore and the deletion find its data where `status.location` says, not where a Backup
/// of this version would have put it.
#[tokio::test]
async fn a_backup_made_by_an_earlier_version_is_restored_and_deleted_where_it_was_written() {
    let (_namespace, ns, s3, redis) = setup("legacy").await;
    let env = s3.env();
    // The data, where an earlier version wrote it (no UID in the folder), and a neighbour.
    let (location, _) = support::cli::ok(
        &[
            "backup",
            &redis.url(),
            "--to",
            &format!("s3://{BUCKET}/ci/{ns}/legacy/"),
        ],
        &env,
    );
    let location = location.trim().to_owned();
    let (neighbour, _) = support::cli::ok(
        &[
            "backup",
            &redis.url(),
            "--to",
            &format!("s3://{BUCKET}/ci/{ns}/neighbour/"),
        ],
        &env,
    );
    // The Backup as that version left it: Succeeded, a location, no record of its run.
    let mut doc = backup_doc("legacy", &redis, &s3, "redis-auth");
    doc["metadata"]["finalizers"] = json!(["coffer.dev/delete-data"]);
    create::<Backup>(&ns, doc).await;
    let api: Api<Backup> = Api::namespaced(admin().await, &ns);
    let status = json!({"status": {"phase": "Succeeded", "location": location,
        "jobName": "legacy-backup"}});
    api.patch_status("legacy", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let _operator = Operator::start(&ns, "solo");

    let mut con = support::redis_data::connect(&redis.url()).await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "back"}, "spec": {"backupRef": {"name": "legacy"}}}),
    )
    .await;
    let done = finished_restore(&ns, "back").await.status.unwrap();
    assert_eq!(done.phase, Some(RestorePhase::Succeeded), "{done:?}");
    assert_eq!(done.location.as_deref(), Some(location.as_str()));
    assert_eq!(keys(&redis).await, 20);

    delete::<Backup>(&ns, "legacy", PropagationPolicy::Background).await;
    gone::<Backup>(&ns, "legacy", RUN).await;
    let folder = location.trim_start_matches(&format!("s3://{BUCKET}/"));
    assert_eq!(stored_keys(&s3, folder).await, Vec::<String>::new());
    support::cli::ok(&["verify", neighbour.trim()], &env);
}

/// Secrets are never shown: a distinctive random password (refused by the servers, so that
/// it is in every error path) and the S3 secret key appear in no operator log, worker log,
/// status, Event, Job or Pod (termination messages included), for a failed backup and a
/// failed restore of Redis and of PostgreSQL.
#[tokio::test]
async fn secrets_appear_nowhere_the_operator_and_its_workers_write() {
    let (_namespace, ns, s3, redis) = setup("secrets").await;
    let password = support::distinctive_secret("pw");
    secret(&ns, "wrong-auth", &[("password", &password)]).await;
    let operator = Operator::start(&ns, "solo");
    // The same password refused by PostgreSQL, whose tools take it another way (PGPASSFILE).
    let pg = coffer_testenv::PostgresServer::start().unwrap();
    support::pg_data::create(
        &pg,
        "shop",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1);",
    )
    .await;
    secret(&ns, "pg-auth", &[("password", pg.password())]).await;
    let pg_source = |secret: &str| {
        json!({"postgres": {"host": "127.0.0.1", "port": pg.port(), "user": pg.user(),
            "databases": ["shop"], "globals": false,
            "passwordSecretRef": {"name": secret, "key": "password"}}})
    };
    for (name, source) in [
        ("refused", redis_source(&redis, "wrong-auth")),
        ("good", redis_source(&redis, "redis-auth")),
        ("pg-refused", pg_source("wrong-auth")),
        ("pg-good", pg_source("pg-auth")),
    ] {
        create::<Backup>(
            &ns,
            json!({"metadata": {"name": name}, "spec": {"source": source, "storage": storage(&s3)}}),
        )
        .await;
    }
    for (name, phase) in [
        ("refused", BackupPhase::Failed),
        ("good", BackupPhase::Succeeded),
        ("pg-refused", BackupPhase::Failed),
        ("pg-good", BackupPhase::Succeeded),
    ] {
        let status = finished_backup(&ns, name).await.status.unwrap();
        assert_eq!(status.phase, Some(phase), "{name}: {status:?}");
        // The refused ones reached their server with the password, and were refused for it.
        if phase == BackupPhase::Failed {
            assert_eq!(
                ready_reason(&status.conditions),
                "AuthenticationFailed",
                "{name}"
            );
        }
    }
    for (name, backup, target) in [
        (
            "refused-restore",
            "good",
            redis_source(&redis, "wrong-auth"),
        ),
        ("pg-refused-restore", "pg-good", pg_source("wrong-auth")),
    ] {
        create::<RestoreRequest>(
            &ns,
            json!({"metadata": {"name": name}, "spec": {
                "backupRef": {"name": backup}, "target": target}}),
        )
        .await;
        let restore = finished_restore(&ns, name).await;
        let status = restore.status.unwrap();
        assert_eq!(
            status.phase,
            Some(RestorePhase::Failed),
            "{name}: {status:?}"
        );
        assert_eq!(
            ready_reason(&status.conditions),
            "AuthenticationFailed",
            "{name}"
        );
    }

    let client = admin().await;
    let mut written = vec![("the operator's log", operator.log())];
    written.push((
        "Backups",
        serde_json::to_string(
            &Api::<Backup>::namespaced(client.clone(), &ns)
                .list(&Default::default())
                .await
                .unwrap(),
        )
        .unwrap(),
    ));
    written.push((
        "RestoreRequests",
        serde_json::to_string(
            &Api::<RestoreRequest>::namespaced(client.clone(), &ns)
                .list(&Default::default())
                .await
                .unwrap(),
        )
        .unwrap(),
    ));
    written.push((
        "Events",
        serde_json::to_string(
            &Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
                .list(&Default::default())
                .await
                .unwrap(),
        )
        .unwrap(),
    ));
    written.push(("Jobs", serde_json::to_string(&jobs(&ns).await).unwrap()));
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        pods.items.len() >= 6,
        "the workers' Pods are kept: {}",
        pods.items.len()
    );
    written.push(("Pods", serde_json::to_string(&pods).unwrap()));
    for pod in &pods.items {
        let log = plane().pod_log(&ns, &pod.name_any()).unwrap_or_default();
        assert!(!log.is_empty(), "{} logged nothing", pod.name_any());
        written.push(("a worker's log", log));
    }
    for (what, text) in &written {
        assert!(!text.contains(&password), "the password is in {what}");
        assert!(
            !text.contains(s3.secret_key()),
            "the S3 secret key is in {what}"
        );
    }
}
