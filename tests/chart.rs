//! The Helm chart and the kustomize base, against the real control plane: lint, the
//! generated `deploy/` kept in step, value sets dry-run by the API server, an install under
//! the `restricted` Pod Security Standard whose operator (run by the process kubelet as its
//! own ServiceAccount) backs Redis up and restores it, then upgrade and uninstall.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coffer::api::{Backup, BackupPhase, RestorePhase};
use coffer_testenv::RedisServer;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

mod support;
use support::operator::{admin, eventually, free_port, http_get, install_crds, plane};
use support::resources::{
    RUN, create, finished_backup, finished_restore, redis_source, s3_secret, s3_with_bucket,
    secret, storage,
};

const CHART: &str = "charts/coffer";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn bin(tool: &str) -> PathBuf {
    coffer_testenv::k8s_bin_dir().unwrap().join(tool)
}

/// Runs helm or kubectl (as the admin of the test cluster) in the repository's root.
fn run(tool: &str, args: &[&str]) -> Output {
    Command::new(bin(tool))
        .args(args)
        .current_dir(root())
        .env("KUBECONFIG", plane().kubeconfig())
        .env("HELM_CACHE_HOME", plane().dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", plane().dir().join("helm/config"))
        .env("HELM_DATA_HOME", plane().dir().join("helm/data"))
        .output()
        .unwrap()
}

/// Like [`run`], and panics with its output unless it succeeds; returns stdout.
fn ok(tool: &str, args: &[&str]) -> String {
    let out = run(tool, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{tool} {}: {}\n{stdout}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Pipes `input` into `kubectl apply --dry-run=server -f -` and returns what it printed.
fn server_dry_run(input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(bin("kubectl"))
        .args(["apply", "--server-side", "--dry-run=server", "-f", "-"])
        .env("KUBECONFIG", plane().kubeconfig())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the API server refused the rendered chart: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn label_restricted(ns: &str) {
    Api::<Namespace>::all(admin().await)
        .patch(
            ns,
            &PatchParams::apply("coffer-tests"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest"}}})),
        )
        .await
        .unwrap();
}

#[test]
fn deploy_is_the_chart_rendered() {
    let out = Command::new(root().join("scripts/regen-deploy"))
        .arg("--check")
        .env("COFFER_K8S_BIN", coffer_testenv::k8s_bin_dir().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn helm_lint_passes_for_the_default_and_the_test_value_sets() {
    for values in [
        None,
        Some("charts/coffer/ci/namespaced-values.yaml"),
        Some("charts/coffer/ci/monitoring-values.yaml"),
    ] {
        let mut args = vec!["lint", CHART, "--strict", "--kube-version", "1.34.0"];
        args.extend(values.iter().flat_map(|v| ["--values", v]));
        let out = ok("helm", &args);
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn bad_values_are_refused_with_a_message_that_names_them() {
    for (set, says) in [
        ("replicaCount=-1", "replicaCount"),
        (
            "fullnameOverride=a-name-longer-than-thirty-six-characters",
            "fullnameOverride",
        ),
        ("logFormat=yaml", "logFormat"),
        (
            "retention=3",
            "additional properties 'retention' not allowed",
        ),
        (
            "leaderElection.enabled=false",
            "leaderElection.enabled must be true when replicaCount is more than 1",
        ),
    ] {
        let out = run(
            "helm",
            &[
                "template",
                "x",
                CHART,
                "--kube-version",
                "1.34.0",
                "--set",
                set,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(stderr.contains(says), "--set {set}: {stderr}");
    }
}

#[tokio::test]
async fn three_value_sets_and_the_kustomize_base_pass_a_server_side_dry_run() {
    let client = admin().await;
    install_crds(&client).await;
    ok(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "-f",
            "tests/fixtures/prometheus-operator-crds.yaml",
        ],
    );
    ok(
        "kubectl",
        &[
            "wait",
            "--for=condition=Established",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ],
    );
    let release = plane().namespace("dry-run").await.unwrap();
    let watched = plane().namespace("dry-watched").await.unwrap();
    let watch = format!("watchNamespace={}", watched.name());
    let workers = format!("worker.serviceAccount.namespaces={{{}}}", watched.name());
    let sets: [(&str, Vec<&str>, &[&str]); 3] = [
        (
            "default",
            vec![],
            &[
                "deployment.apps/coffer-controller",
                "clusterrole.rbac.authorization.k8s.io/coffer-controller",
                "lease.coordination.k8s.io/coffer-controller",
                "service/coffer-controller-metrics",
                "poddisruptionbudget.policy/coffer-controller",
            ],
        ),
        (
            "namespaced",
            vec![
                "--values",
                "charts/coffer/ci/namespaced-values.yaml",
                "--set",
                &watch,
                "--set",
                &workers,
            ],
            &[
                "deployment.apps/backups-controller",
                "role.rbac.authorization.k8s.io/backups-controller",
                "rolebinding.rbac.authorization.k8s.io/backups-controller",
                "serviceaccount/coffer-worker",
            ],
        ),
        (
            "monitoring",
            vec!["--values", "charts/coffer/ci/monitoring-values.yaml"],
            &[
                "servicemonitor.monitoring.coreos.com/coffer-controller",
                "prometheusrule.monitoring.coreos.com/coffer-controller",
                "networkpolicy.networking.k8s.io/coffer-controller",
                "poddisruptionbudget.policy/coffer-controller",
            ],
        ),
    ];
    for (name, values, expected) in sets {
        let mut args = vec![
            "template",
            "coffer",
            CHART,
            "--namespace",
            release.name(),
            "--kube-version",
            "1.34.0",
        ];
        args.extend(values);
        let rendered = ok("helm", &args);
        if name == "namespaced" {
            assert!(!rendered.contains("kind: ClusterRole"), "{rendered}");
            assert!(rendered.contains("--no-leader-election"), "{rendered}");
            // Without a Lease, an upgrade must not run two controllers at once.
            assert!(rendered.contains("type: Recreate"), "{rendered}");
        }
        let applied = server_dry_run(&rendered);
        for object in expected {
            assert!(
                applied.contains(&format!("{object} serverside-applied (server dry run)")),
                "{name}: {object} missing from\n{applied}"
            );
        }
    }

    // The kustomize base, as `kubectl apply -k deploy/` (its namespace must exist first for
    // a dry run of the objects in it; it is made for real).
    let kustomized = ok("kubectl", &["kustomize", "deploy/"]);
    let namespace_doc = kustomized
        .split("\n---\n")
        .find(|d| d.contains("kind: Namespace"))
        .unwrap();
    assert!(
        namespace_doc.contains("pod-security.kubernetes.io/enforce: restricted"),
        "{namespace_doc}"
    );
    ok(
        "kubectl",
        &["apply", "--server-side", "-f", "deploy/namespace.yaml"],
    );
    let applied = server_dry_run(&kustomized);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/backups.coffer.dev",
        "deployment.apps/coffer-controller",
        "clusterrolebinding.rbac.authorization.k8s.io/coffer-controller",
    ] {
        assert!(applied.contains(object), "{object} missing from\n{applied}");
    }
}

/// The Pod of the Deployment `name` once it runs (its process started by the kubelet).
async fn running_pod(ns: &str, selector: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(admin().await, ns);
    eventually(RUN, "the controller's Pod to run", || async {
        pods.list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await
}

fn can_i(account: &str, verb: &str, resource: &str, ns: &str) -> bool {
    let out = run(
        "kubectl",
        &["auth", "can-i", verb, resource, "-n", ns, "--as", account],
    );
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test]
async fn the_chart_installs_under_restricted_and_its_operator_backs_up_and_restores_redis() {
    let client = admin().await;
    install_crds(&client).await;
    let system = plane().namespace("coffer-system").await.unwrap();
    let sys = system.name().to_owned();
    label_restricted(&sys).await;
    let app_ns = plane().namespace("chart-app").await.unwrap();
    let app = app_ns.name().to_owned();
    label_restricted(&app).await;

    let port = free_port();
    let port_value = format!("metrics.port={port}");
    ok(
        "helm",
        &[
            "install",
            "backups",
            CHART,
            "--namespace",
            &sys,
            "--set",
            "replicaCount=1",
            "--set",
            &port_value,
            "--set",
            "logFormat=text",
            "--set",
            "logLevel=debug",
        ],
    );

    // PodSecurity admission let the ReplicaSet make the Pod, and the kubelet runs it.
    let pod = running_pod(&sys, "app.kubernetes.io/instance=backups").await;
    let pod_name = pod.name_any();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("backups-coffer-controller")
    );
    // It leads through the chart's Lease, so it reached the API server as its ServiceAccount.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &sys);
    eventually(RUN, "the controller to hold the Lease", || async {
        let lease = leases.get("backups-coffer-controller").await.unwrap();
        (lease.spec?.holder_identity? == pod_name).then_some(())
    })
    .await;
    let account = format!("system:serviceaccount:{sys}:backups-coffer-controller");
    assert!(can_i(&account, "get", "secrets", &app));
    assert!(
        !can_i(&account, "list", "secrets", &app),
        "no listing Secrets"
    );
    assert!(
        !can_i(&account, "create", "pods", &app),
        "no Pods of its own"
    );
    assert!(!can_i(&account, "update", "leases", "default"));
    // RBAC lets it create Jobs; the chart's admission policy admits only its own kind. The
    // API server takes a moment to load a new policy, and a server-side dry run goes through
    // admission without making anything.
    let stderr = eventually(
        RUN,
        "the admission policy to refuse a foreign Job",
        || async {
            let out = run(
                "kubectl",
                &[
                    "create",
                    "job",
                    "miner",
                    "--image=busybox:1.36",
                    "--dry-run=server",
                    "-n",
                    &app,
                    "--as",
                    &account,
                ],
            );
            (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
        },
    )
    .await;
    assert!(
        stderr.contains("the controller's Jobs run only Coffer's own image"),
        "{stderr}"
    );
    // Coffer's own image, as the worker account with no token, told to run a shell instead
    // of the worker: refused too.
    let shell = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "shell", "namespace": app},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never", "serviceAccountName": "coffer-worker",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "worker",
                "image": format!("ghcr.io/coffer-dev/coffer:{}", env!("CARGO_PKG_VERSION")),
                "command": ["sh", "-c", "id"],
                "securityContext": {"allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}}}]}}}});
    let file = plane().dir().join(format!("{app}-shell-job.json"));
    std::fs::write(&file, shell.to_string()).unwrap();
    let file = file.display().to_string();
    let out = run(
        "kubectl",
        &["create", "-f", &file, "--dry-run=server", "--as", &account],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("run only `coffer worker`"), "{stderr}");
    // The Jobs the controller builds for copies (another store on a claim, its flags) and
    // lock extensions pass the policy.
    for (name, job) in own_jobs(&app) {
        let file = plane().dir().join(format!("{app}-{name}-job.json"));
        std::fs::write(&file, serde_json::to_string(&job).unwrap()).unwrap();
        let out = run(
            "kubectl",
            &[
                "create",
                "-f",
                &file.display().to_string(),
                "--dry-run=server",
                "--as",
                &account,
            ],
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // One Redis backup and its restore, through the installed operator.
    let s3 = s3_with_bucket().await;
    s3_secret(&app, &s3).await;
    let redis = RedisServer::start_with_password("chart-pw").unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::set_numbered(&mut con, "order:", "paid ", 20).await;
    secret(&app, "redis-auth", &[("password", "chart-pw")]).await;
    create::<Backup>(
        &app,
        json!({"metadata": {"name": "orders"}, "spec": {
            "source": redis_source(&redis, "redis-auth"), "storage": storage(&s3)}}),
    )
    .await;
    let backup = finished_backup(&app, "orders").await;
    let status = backup.status.clone().unwrap();
    assert_eq!(
        status.phase,
        Some(BackupPhase::Succeeded),
        "{:?}\ncontroller log:\n{}",
        status.conditions,
        plane().pod_log(&sys, &pod_name).unwrap_or_default()
    );
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    create::<coffer::api::RestoreRequest>(
        &app,
        json!({"metadata": {"name": "orders-back"}, "spec": {"backupRef": {"name": "orders"}}}),
    )
    .await;
    let restore = finished_restore(&app, "orders-back").await;
    assert_eq!(
        restore.status.as_ref().unwrap().phase,
        Some(RestorePhase::Succeeded),
        "{:?}",
        restore.status
    );
    let value: String = redis::cmd("GET")
        .arg("order:7")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(value, "paid 7");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("order:*")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(keys.len(), 20);
    // Workers get no token: no projected volume in their Pods.
    let worker_pods = Api::<Pod>::namespaced(client.clone(), &app)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(!worker_pods.is_empty());
    for p in &worker_pods {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert!(
            spec.volumes.iter().flatten().all(|v| v.projected.is_none()),
            "{}",
            p.name_any()
        );
    }
    let metrics = http_get(&format!("127.0.0.1:{port}"), "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "coffer_backups_total{{namespace=\"{app}\",schedule=\"\",source_kind=\"redis\",result=\"succeeded\"}} 1"
        )),
        "{metrics}"
    );

    // An upgrade that drops the metrics Service removes it and keeps the running controller.
    ok(
        "helm",
        &[
            "upgrade",
            "backups",
            CHART,
            "--namespace",
            &sys,
            "--reuse-values",
            "--set",
            "metrics.service.enabled=false",
        ],
    );
    let services: Api<Service> = Api::namespaced(client.clone(), &sys);
    assert!(
        services
            .get_opt("backups-coffer-controller-metrics")
            .await
            .unwrap()
            .is_none()
    );
    let still = running_pod(&sys, "app.kubernetes.io/instance=backups").await;
    assert_eq!(still.uid(), pod.uid(), "the upgrade did not restart it");

    // Uninstall: nothing of the release is left; the CRDs and the Backup (and its data) stay.
    // Everything the release created, as Helm recorded it, is looked up again afterwards.
    let manifest = ok("helm", &["get", "manifest", "backups", "--namespace", &sys]);
    let created = plane().dir().join(format!("{sys}-release.yaml"));
    std::fs::write(&created, &manifest).unwrap();
    let created = created.display().to_string();
    let listed = ok(
        "kubectl",
        &["get", "-f", &created, "--namespace", &sys, "-o", "name"],
    );
    assert!(
        listed.contains("deployment.apps/backups-coffer-controller")
            && listed.contains("clusterrole.rbac.authorization.k8s.io/")
            && listed.lines().count() >= 8,
        "the release's objects before the uninstall: {listed}"
    );
    ok(
        "helm",
        &["uninstall", "backups", "--namespace", &sys, "--wait"],
    );
    let left = ok(
        "kubectl",
        &[
            "get",
            "-f",
            &created,
            "--namespace",
            &sys,
            "--ignore-not-found",
            "-o",
            "name",
        ],
    );
    assert!(left.trim().is_empty(), "left after the uninstall: {left}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &sys);
    eventually(RUN, "the controller's Pod to go", || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    let instance = ListParams::default().labels("app.kubernetes.io/instance=backups");
    macro_rules! none_left {
        ($kind:ty, $api:expr) => {{
            let api: Api<$kind> = $api;
            let left: Vec<String> = api
                .list(&instance)
                .await
                .unwrap()
                .items
                .iter()
                .map(|o| o.name_any())
                .collect();
            assert!(left.is_empty(), "{} left: {left:?}", stringify!($kind));
        }};
    }
    none_left!(Deployment, Api::namespaced(client.clone(), &sys));
    none_left!(ReplicaSet, Api::namespaced(client.clone(), &sys));
    none_left!(Service, Api::namespaced(client.clone(), &sys));
    none_left!(ServiceAccount, Api::all(client.clone()));
    none_left!(Role, Api::all(client.clone()));
    none_left!(RoleBinding, Api::all(client.clone()));
    none_left!(Lease, Api::namespaced(client.clone(), &sys));
    none_left!(PodDisruptionBudget, Api::namespaced(client.clone(), &sys));
    none_left!(ClusterRole, Api::all(client.clone()));
    none_left!(ClusterRoleBinding, Api::all(client.clone()));
    none_left!(ValidatingAdmissionPolicy, Api::all(client.clone()));
    none_left!(ValidatingAdmissionPolicyBinding, Api::all(client.clone()));
    let leases_left = leases.list(&ListParams::default()).await.unwrap().items;
    assert!(leases_left.is_empty(), "{leases_left:?}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(crds.get_opt("backups.coffer.dev").await.unwrap().is_some());
    let kept = Api::<Backup>::namespaced(client.clone(), &app)
        .get("orders")
        .await
        .unwrap();
    assert_eq!(
        kept.status.unwrap().phase,
        Some(BackupPhase::Succeeded),
        "the Backup stays"
    );
}

/// Every metric the controller can export: the registered families and the scrape-time
/// gauges.
fn exported_metrics() -> Vec<String> {
    use coffer::controller::metrics::{ErrorLabels, Metrics, RunLabels, ScheduleLabels};
    // A family is encoded only once it has a series: give each one.
    let metrics = Metrics::default();
    let run = RunLabels {
        namespace: "ns".into(),
        schedule: "s".into(),
        source_kind: "redis".into(),
        result: "succeeded".into(),
    };
    let schedule = ScheduleLabels {
        namespace: "ns".into(),
        schedule: "s".into(),
        source_kind: "redis".into(),
    };
    metrics.backups.get_or_create(&run).inc();
    metrics.restores.get_or_create(&run).inc();
    metrics
        .backup_duration
        .get_or_create(&schedule)
        .observe(1.0);
    metrics.backup_stored_bytes.get_or_create(&schedule).inc();
    metrics.last_success.get_or_create(&schedule).set(1.0);
    metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "backup".into(),
            category: "kube".into(),
        })
        .inc();
    let encoded = metrics.encode();
    let mut names: Vec<String> = encoded
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .flat_map(|n| {
            // Counters are exported with _total, histograms with _bucket/_sum/_count.
            ["", "_total", "_bucket", "_sum", "_count"].map(|s| format!("{n}{s}"))
        })
        .collect();
    names.extend(
        coffer::controller::state_metrics::GAUGES
            .iter()
            .map(|g| format!("coffer_{g}")),
    );
    names
}

#[test]
fn the_alerts_are_valid_promql_over_metrics_the_controller_exports() {
    let rendered = ok(
        "helm",
        &[
            "template",
            "coffer",
            CHART,
            "--kube-version",
            "1.34.0",
            "--values",
            "charts/coffer/ci/monitoring-values.yaml",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
    );
    let rule: serde_json::Value = serde_saphyr::from_str(&rendered).unwrap();
    let exported = exported_metrics();
    let mut alerts = vec![];
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap().to_owned();
            let expr = r["expr"].as_str().unwrap();
            if let Err(e) = promql_parser::parser::parse(expr) {
                panic!("{name}: {e}\n{expr}");
            }
            for metric in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("coffer_"))
            {
                assert!(
                    exported.iter().any(|e| e == metric),
                    "{name} uses {metric}, which the controller does not export: {exported:?}"
                );
            }
            alerts.push(name);
        }
    }
    assert_eq!(
        alerts,
        [
            "CofferBackupFailed",
            "CofferBackupFailed",
            "CofferBackupStale",
            "CofferRestoreFailed",
            "CofferControllerDown",
            "CofferBackupsSlow"
        ]
    );
}

#[test]
fn every_key_of_values_yaml_has_a_comment() {
    // Keys under these are Kubernetes' own fields, documented by the comment on the parent.
    const FREE_FORM: [&str; 3] = [
        "podSecurityContext",
        "containerSecurityContext",
        "resources",
    ];
    let values = std::fs::read_to_string(root().join("charts/coffer/values.yaml")).unwrap();
    let mut previous = "";
    let mut top = "";
    let mut missing = vec![];
    for line in values.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            previous = "";
            continue;
        }
        let is_key = !trimmed.starts_with('#')
            && !trimmed.starts_with('-')
            && trimmed.split_once(':').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if is_key {
            let key = trimmed.split(':').next().unwrap_or_default();
            if line.len() == trimmed.len() {
                top = key;
            }
            let documented = previous.trim_start().starts_with('#')
                || (line.len() != trimmed.len() && FREE_FORM.contains(&top));
            if !documented {
                missing.push(line.to_owned());
            }
        }
        previous = line;
    }
    assert!(missing.is_empty(), "keys without a comment: {missing:#?}");
}

#[test]
fn the_readme_kustomize_overlay_sets_the_controller_and_worker_images() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../coffer/deploy]")
        .expect("the overlay in the README's Install section");
    let overlay = &readme[start..start + readme[start..].find("```").unwrap()];
    // kustomize takes relative paths only: the overlay goes two levels below the repository.
    let dir = root().join("target/chart-test-overlay");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        overlay.replace("../coffer/deploy", "../../deploy"),
    )
    .unwrap();
    let rendered = ok("kubectl", &["kustomize", "target/chart-test-overlay"]);
    assert!(
        !rendered.contains("ghcr.io/coffer-dev/coffer"),
        "{rendered}"
    );
    let deployment = rendered
        .split("\n---\n")
        .find(|d| d.contains("kind: Deployment"))
        .unwrap();
    assert_eq!(
        deployment
            .matches("registry.example.com/coffer:0.1.0")
            .count(),
        2,
        "the controller's image and COFFER_WORKER_IMAGE: {deployment}"
    );
    let policy = rendered
        .split("\n---\n")
        .find(|d| d.contains("kind: ValidatingAdmissionPolicy\n"))
        .unwrap();
    assert!(
        policy.contains("c.image == \"registry.example.com/coffer:0.1.0\""),
        "{policy}"
    );
}

/// Jobs the controller builds for a copy to a claim and a lock extension, as it builds them.
fn own_jobs(namespace: &str) -> Vec<(&'static str, k8s_openapi::api::batch::v1::Job)> {
    use coffer::api::{BackupStorage, FilesystemStorage, LockRecord, ObjectLockMode, S3Storage};
    use coffer::controller::job::{JobRequest, WorkerSettings, build};
    use coffer::worker::Plan;
    use coffer::worker::plan::{CopyPlan, CopyStore, LockPlan};
    let s3 = BackupStorage {
        s3: Some(S3Storage {
            bucket: "backups".into(),
            prefix: String::new(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: "us-east-1".into(),
            force_path_style: true,
            credentials_secret_ref: None,
            object_lock: None,
        }),
        filesystem: None,
    };
    let claim = BackupStorage {
        s3: None,
        filesystem: Some(FilesystemStorage {
            claim_name: "vault".into(),
        }),
    };
    let plans = [
        (
            "copy",
            Plan::Copy(CopyPlan {
                storage: s3.clone(),
                folder: "ns/s/20261201T000000Z-a/".into(),
                to: CopyStore {
                    name: "vault".into(),
                    storage: claim,
                },
                manifest_sha256: None,
                retention: None,
                group: "ns/s/".into(),
                time_zone: "UTC".into(),
                lock: None,
            }),
        ),
        (
            "lock",
            Plan::Lock(LockPlan {
                storage: s3,
                folder: "ns/s/20261201T000000Z-a/".into(),
                lock: LockRecord {
                    mode: ObjectLockMode::Governance,
                    retain_until: coffer::controller::status::time(chrono::Utc::now()),
                },
            }),
        ),
    ];
    let settings = WorkerSettings {
        image: format!("ghcr.io/coffer-dev/coffer:{}", env!("CARGO_PKG_VERSION")),
        service_account: "coffer-worker".into(),
        restore_spool_bytes: 0,
    };
    plans
        .into_iter()
        .map(|(name, plan)| {
            let job = build(
                &JobRequest {
                    name: format!("check-{name}"),
                    namespace,
                    owner: None,
                    owner_name: "check".into(),
                    owner_uid: "check".into(),
                    plan: &plan,
                    template: None,
                },
                &settings,
            )
            .unwrap();
            (name, job)
        })
        .collect()
}
