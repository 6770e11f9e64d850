//! Coffer's API and the test harness against a real kube-apiserver (RBAC on) and the real
//! Job controller, with Pods run by the process kubelet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use coffer::api::{Backup, BackupSchedule, RestoreRequest};
use coffer_testenv::{ControlPlane, TestNamespace};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

mod support;
use support::operator::install_crds;

fn plane() -> &'static ControlPlane {
    ControlPlane::global().unwrap()
}

async fn admin() -> kube::Client {
    plane().admin_client().await.unwrap()
}

fn resource_of(kind: &str) -> ApiResource {
    match kind {
        "BackupSchedule" => ApiResource::erase::<BackupSchedule>(&()),
        "Backup" => ApiResource::erase::<Backup>(&()),
        "RestoreRequest" => ApiResource::erase::<RestoreRequest>(&()),
        other => panic!("unexpected kind {other}"),
    }
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "coffer.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn kubectl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(coffer_testenv::k8s_bin_dir().unwrap().join("kubectl"))
        .arg(format!("--kubeconfig={}", plane().kubeconfig().display()))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn crds_apply_become_established_and_are_explained() {
    let client = admin().await;
    let names = install_crds(&client).await;
    assert_eq!(
        names,
        [
            "backupschedules.coffer.dev",
            "backups.coffer.dev",
            "restorerequests.coffer.dev",
            "notifiers.coffer.dev"
        ]
    );
    let out = kubectl(&["get", "coffer", "--all-namespaces"]);
    assert!(out.status.success(), "kubectl get coffer: {out:?}");
    // Doc comments are what `kubectl explain` shows (once the API server has published the
    // new OpenAPI, which can lag a moment behind Established).
    let mut out = kubectl(&["explain", "backupschedule.spec.timeZone"]);
    for _ in 0..50 {
        if String::from_utf8_lossy(&out.stdout).contains("IANA time zone the schedule is read in") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        out = kubectl(&["explain", "backupschedule.spec.timeZone"]);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("IANA time zone the schedule is read in"),
        "{out:?}"
    );
    let out = kubectl(&["version", "--output=json"]);
    let version: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.34.4",
        "{version}"
    );
}

#[tokio::test]
async fn every_example_is_accepted_by_server_side_apply() {
    let client = admin().await;
    install_crds(&client).await;
    let ns = plane().namespace("examples").await.unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let mut applied = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mut doc: DynamicObject =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        doc.metadata.namespace = Some(ns.name().to_owned());
        let kind = doc.types.as_ref().unwrap().kind.clone();
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns.name(), &resource_of(&kind));
        let name = doc.metadata.name.clone().unwrap();
        let stored = api
            .patch(
                &name,
                &PatchParams::apply("coffer-tests"),
                &Patch::Apply(&doc),
            )
            .await
            .unwrap_or_else(|e| panic!("{} was refused: {e}", path.display()));
        assert!(stored.metadata.uid.is_some());
        applied += 1;
    }
    assert_eq!(applied, 7);
    // The API server applied the schema's defaults.
    let schedules: Api<BackupSchedule> = Api::namespaced(client, ns.name());
    let redis = schedules.get("shop-redis").await.unwrap();
    assert_eq!(
        redis.spec.concurrency_policy,
        coffer::api::ConcurrencyPolicy::Forbid
    );
    assert!(!redis.spec.suspend);
    let volume = schedules.get("functions-data").await.unwrap();
    assert_eq!(volume.spec.time_zone, "UTC");
}

/// (what is wrong, kind, spec, fragments the API server's message must contain)
fn invalid_objects() -> Vec<(&'static str, &'static str, Value, Vec<&'static str>)> {
    let redis = json!({"redis": {"host": "redis"}});
    let s3 = json!({"s3": {"bucket": "backups"}});
    let schedule = |patch: Value| {
        let mut spec = json!({"schedule": "@daily", "source": redis, "storage": s3});
        merge(&mut spec, patch);
        spec
    };
    vec![
        (
            "two source kinds",
            "BackupSchedule",
            schedule(json!({"source": {"redis": {"host": "r"}, "volume": {"claimName": "d"}}})),
            vec![
                "spec.source",
                "exactly one of redis, postgres, mysql or volume",
            ],
        ),
        (
            "no source kind",
            "BackupSchedule",
            schedule(json!({"source": {}})),
            vec![
                "spec.source",
                "exactly one of redis, postgres, mysql or volume",
            ],
        ),
        (
            "unknown compression",
            "BackupSchedule",
            schedule(json!({"compression": "lz4"})),
            vec!["spec.compression", "Unsupported value: \"lz4\""],
        ),
        (
            "unknown redis mode",
            "BackupSchedule",
            schedule(json!({"source": {"redis": {"host": "r", "mode": "Fast"}}})),
            vec!["spec.source.redis.mode", "Unsupported value: \"Fast\""],
        ),
        (
            "unknown concurrency policy",
            "BackupSchedule",
            schedule(json!({"concurrencyPolicy": "Sometimes"})),
            vec!["spec.concurrencyPolicy", "Unsupported value"],
        ),
        (
            "missing storage",
            "BackupSchedule",
            json!({"schedule": "@daily", "source": redis}),
            vec!["spec.storage", "Required value"],
        ),
        (
            "missing schedule",
            "BackupSchedule",
            json!({"source": redis, "storage": s3}),
            vec!["spec.schedule", "Required value"],
        ),
        (
            "negative keepLast",
            "BackupSchedule",
            schedule(json!({"retention": {"keepLast": -1}})),
            vec!["spec.retention.keepLast", "greater than or equal to 0"],
        ),
        (
            "port 0",
            "BackupSchedule",
            schedule(json!({"source": {"redis": {"host": "r", "port": 0}}})),
            vec!["spec.source.redis.port", "greater than or equal to 1"],
        ),
        (
            "port 70000",
            "BackupSchedule",
            schedule(json!({"source": {"postgres": {"host": "p", "port": 70000}}})),
            vec!["spec.source.postgres.port", "less than or equal to 65535"],
        ),
        (
            "six-field cron",
            "BackupSchedule",
            schedule(json!({"schedule": "0 0 0 * * *"})),
            vec!["spec.schedule", "should match"],
        ),
        (
            "bad maxAge",
            "BackupSchedule",
            schedule(json!({"retention": {"maxAge": "3 months"}})),
            vec!["spec.retention.maxAge", "should match"],
        ),
        (
            "two storage kinds",
            "BackupSchedule",
            schedule(
                json!({"storage": {"s3": {"bucket": "backups"}, "filesystem": {"claimName": "c"}}}),
            ),
            vec!["spec.storage", "exactly one of s3 or filesystem"],
        ),
        (
            "upper-case bucket",
            "BackupSchedule",
            schedule(json!({"storage": {"s3": {"bucket": "Backups"}}})),
            vec!["spec.storage.s3.bucket", "should match"],
        ),
        (
            "backup without schedule or source",
            "Backup",
            json!({"deletionPolicy": "Retain"}),
            vec!["spec", "set scheduleRef"],
        ),
        (
            "backup source without storage",
            "Backup",
            json!({"source": redis}),
            vec!["spec", "source and storage go together"],
        ),
        (
            "unknown deletion policy",
            "Backup",
            json!({"scheduleRef": {"name": "s"}, "deletionPolicy": "Keep"}),
            vec!["spec.deletionPolicy", "Unsupported value"],
        ),
        (
            "both backupRef and from",
            "RestoreRequest",
            json!({"backupRef": {"name": "b"}, "from": {"storage": s3, "location": "x/"}}),
            vec!["spec", "exactly one of backupRef or from"],
        ),
        (
            "neither backupRef nor from",
            "RestoreRequest",
            json!({"quiesce": []}),
            vec!["spec", "exactly one of backupRef or from"],
        ),
        (
            "unknown conflict mode",
            "RestoreRequest",
            json!({"backupRef": {"name": "b"}, "redis": {"conflict": "Merge"}}),
            vec!["spec.redis.conflict", "Unsupported value"],
        ),
        (
            "unknown quiesce kind",
            "RestoreRequest",
            json!({"backupRef": {"name": "b"}, "quiesce": [{"kind": "DaemonSet", "name": "x"}]}),
            vec!["spec.quiesce[0].kind", "Unsupported value"],
        ),
    ]
}

fn merge(base: &mut Value, patch: Value) {
    if let (Value::Object(base), Value::Object(patch)) = (base, patch) {
        for (k, v) in patch {
            base.insert(k, v);
        }
    }
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_a_message_naming_the_field() {
    let client = admin().await;
    install_crds(&client).await;
    let ns = plane().namespace("invalid").await.unwrap();
    let cases = invalid_objects();
    assert!(cases.len() >= 10);
    let mut failures = vec![];
    for (i, (what, kind, spec, fragments)) in cases.into_iter().enumerate() {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns.name(), &resource_of(kind));
        let result = api
            .create(
                &PostParams::default(),
                &object(kind, &format!("bad-{i}"), spec),
            )
            .await;
        match result {
            Err(kube::Error::Api(status)) if status.code == 422 => {
                let missing: Vec<_> = fragments
                    .iter()
                    .filter(|f| !status.message.contains(*f))
                    .collect();
                if !missing.is_empty() {
                    failures.push(format!(
                        "{what}: message {:?} lacks {missing:?}",
                        status.message
                    ));
                }
            }
            other => failures.push(format!("{what}: expected a 422 rejection, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn immutable_fields_cannot_be_changed_after_creation() {
    let client = admin().await;
    install_crds(&client).await;
    let ns = plane().namespace("immutable").await.unwrap();
    let backups: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns.name(), &resource_of("Backup"));
    let spec =
        json!({"source": {"redis": {"host": "redis"}}, "storage": {"s3": {"bucket": "backups"}}});
    backups
        .create(&PostParams::default(), &object("Backup", "one", spec))
        .await
        .unwrap();

    let retain = json!({"spec": {"deletionPolicy": "Retain"}});
    backups
        .patch("one", &PatchParams::default(), &Patch::Merge(&retain))
        .await
        .unwrap();
    let moved = json!({"spec": {"source": {"redis": {"host": "elsewhere"}}}});
    let err = backups
        .patch("one", &PatchParams::default(), &Patch::Merge(&moved))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("source cannot change"), "{err}");

    let restores: Api<DynamicObject> =
        Api::namespaced_with(client, ns.name(), &resource_of("RestoreRequest"));
    restores
        .create(
            &PostParams::default(),
            &object("RestoreRequest", "r", json!({"backupRef": {"name": "one"}})),
        )
        .await
        .unwrap();
    let other = json!({"spec": {"backupRef": {"name": "two"}}});
    let err = restores
        .patch("r", &PatchParams::default(), &Patch::Merge(&other))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("runs once"), "{err}");
}

#[tokio::test]
async fn rbac_is_enforced_for_non_admin_users() {
    let ns = plane().namespace("rbac").await.unwrap();
    let user = plane().user_client("coffer-user").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(user.clone(), ns.name());
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("a user without a role must be refused, got {other:?}"),
    }
    let admin = admin().await;
    let role: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        ns.name(),
        &ApiResource::erase::<k8s_openapi::api::rbac::v1::Role>(&()),
    );
    let grant = |kind: &str, body: Value| -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": {"name": "read-pods"}}),
        )
        .map(|mut o: DynamicObject| {
            o.data = body;
            o
        })
        .unwrap()
    };
    role.create(
        &PostParams::default(),
        &grant(
            "Role",
            json!({"rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}),
        ),
    )
    .await
    .unwrap();
    let binding: Api<DynamicObject> = Api::namespaced_with(
        admin,
        ns.name(),
        &ApiResource::erase::<k8s_openapi::api::rbac::v1::RoleBinding>(&()),
    );
    binding
        .create(&PostParams::default(), &grant("RoleBinding", json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-pods"},
            "subjects": [{"kind": "User", "name": "coffer-user", "apiGroup": "rbac.authorization.k8s.io"}]})))
        .await
        .unwrap();
    let mut allowed = false;
    for _ in 0..50 {
        if pods.list(&ListParams::default()).await.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(allowed, "the RoleBinding should let coffer-user list pods");
    // ServiceAccount tokens from the TokenRequest API authenticate too (and have no rights).
    let sa = plane()
        .service_account_client(ns.name(), "robot")
        .await
        .unwrap();
    let err = Api::<Pod>::namespaced(sa, ns.name())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("system:serviceaccount:"), "{err}");
}

/// Creates a Job with one container and waits until it is Complete or Failed.
async fn run_job(ns: &TestNamespace, name: &str, container: Value, pod_spec: Value) -> (Job, Pod) {
    let client = admin().await;
    let mut template_spec = json!({"restartPolicy": "Never", "containers": [container]});
    merge(&mut template_spec, pod_spec);
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": template_spec}},
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns.name());
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let finished = |job: Option<&Job>| {
        job.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            })
    };
    tokio::time::timeout(TIMEOUT, await_condition(jobs.clone(), name, finished))
        .await
        .unwrap_or_else(|_| panic!("Job {name} did not finish"))
        .unwrap();
    let job = jobs.get(name).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, ns.name());
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "one pod for Job {name}");
    (job, list.items.into_iter().next().unwrap())
}

fn condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn terminated(pod: &Pod) -> (i32, String, String) {
    let state = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    (
        state.exit_code,
        state.reason.unwrap_or_default(),
        state.message.unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_job_that_exits_0_completes_through_the_real_job_controller() {
    let ns = plane().namespace("job-ok").await.unwrap();
    let container = json!({"name": "main", "image": "busybox:1.36",
    "command": ["sh", "-c", "echo hello from $(POD_NAME) in $POD_NAMESPACE"],
    "env": [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]});
    let (job, pod) = run_job(&ns, "ok", container, json!({})).await;
    assert!(condition(&job, "Complete"), "{:?}", job.status);
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(terminated(&pod).0, 0);
    let pod_name = pod.metadata.name.unwrap();
    let log = plane().pod_log(ns.name(), &pod_name).unwrap();
    assert_eq!(log, format!("hello from {pod_name} in {}\n", ns.name()));
}

#[tokio::test]
async fn a_job_that_exits_3_fails_with_its_exit_code_and_termination_message() {
    let ns = plane().namespace("job-fail").await.unwrap();
    let container = json!({"name": "main", "image": "busybox:1.36",
        "command": ["sh", "-c", "printf 'backup failed: disk full' > \"$MSG\"; exit 3"],
        "env": [{"name": "MSG", "value": "/dev/termination-log"}]});
    let (job, pod) = run_job(&ns, "fail", container, json!({})).await;
    assert!(condition(&job, "Failed"), "{:?}", job.status);
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    assert_eq!(
        terminated(&pod),
        (3, "Error".to_owned(), "backup failed: disk full".to_owned())
    );
}

#[tokio::test]
async fn pods_get_secrets_claims_deadlines_and_the_built_coffer_binary() {
    let client = admin().await;
    let ns = plane().namespace("kubelet").await.unwrap();
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "creds"},
        "stringData": {"password": "s3cret value"}}))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client, ns.name())
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();

    // A secretKeyRef reaches the environment; a claim is a host directory.
    let container = json!({"name": "main", "image": "busybox:1.36",
        "command": ["sh", "-c", "printf '%s' \"$PASSWORD\" > \"$DIR/out.txt\""],
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "DIR", "value": "/data"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}]});
    let volumes =
        json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]});
    let (job, _) = run_job(&ns, "secret", container, volumes).await;
    assert!(condition(&job, "Complete"));
    let written = plane()
        .claim_dir(ns.name(), "data")
        .unwrap()
        .join("out.txt");
    assert_eq!(std::fs::read_to_string(written).unwrap(), "s3cret value");

    // activeDeadlineSeconds stops a process that runs too long.
    let container = json!({"name": "main", "image": "busybox:1.36", "command": ["sleep", "60"]});
    let (job, pod) = run_job(&ns, "slow", container, json!({"activeDeadlineSeconds": 1})).await;
    assert!(condition(&job, "Failed"));
    assert_eq!(terminated(&pod).1, "DeadlineExceeded");

    // Coffer's own image runs the freshly built binary.
    let container = json!({"name": "main", "image": "ghcr.io/coffer-dev/coffer:0.1.0",
        "command": ["coffer", "version"]});
    let (job, pod) = run_job(&ns, "coffer", container, json!({})).await;
    assert!(condition(&job, "Complete"));
    let log = plane()
        .pod_log(ns.name(), &pod.metadata.name.unwrap())
        .unwrap();
    assert_eq!(log, format!("coffer {}\n", env!("CARGO_PKG_VERSION")));
}
