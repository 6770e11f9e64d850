//! The end-to-end suite on a real node: containerd and runc run the Coffer image built from
//! the repository's Dockerfile (`tools/images/build`), the kubelet enforces security
//! contexts, probes and grace periods, kube-proxy and CoreDNS give Services and cluster DNS.
//! The chart is installed with `helm install` as a user would; the sources and the S3 server
//! run as Pods; the examples back up by service DNS name.
//!
//! Needs root (containers, mounts, a bridge, iptables); `scripts/test` runs it. Only one real
//! node runs on a machine at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use coffer_testenv::{ControlPlane, RealNode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

mod support;

fn plane() -> &'static ControlPlane {
    ControlPlane::real_node_global().unwrap()
}

/// The operator the tests share, installed once with `helm install` as a user would (only
/// the image's repository and pull policy set) into `coffer-system`, under the restricted
/// Pod Security Standard.
fn operator() -> &'static str {
    static INSTALLED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let system = namespace("coffer-system");
        install_chart("coffer", &system);
        system
    })
}

/// `helm install` of the chart as a user would, only the image's repository (the image built
/// here) and pull policy set; returns the image's tag.
fn install_chart(release: &str, ns: &str) -> String {
    let coffer = image("coffer");
    let (repository, tag) = coffer.rsplit_once(':').unwrap();
    run(
        "helm",
        &[
            "install",
            release,
            "charts/coffer",
            "--namespace",
            ns,
            "--set",
            &format!("image.repository={repository}"),
            "--set",
            "image.pullPolicy=Never",
            "--wait",
            "--timeout=180s",
        ],
        "",
    );
    tag.to_owned()
}

fn node() -> &'static RealNode {
    plane().real_node().unwrap()
}

fn image(short: &str) -> String {
    node().image(short).unwrap().to_owned()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn bin(tool: &str) -> PathBuf {
    coffer_testenv::k8s_bin_dir().unwrap().join(tool)
}

/// Runs kubectl or helm as the cluster's admin in the repository's root, with `input` on
/// stdin; panics with the output unless it succeeds, returns stdout.
fn run(tool: &str, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let helm = plane().dir().join("helm");
    let mut child = Command::new(bin(tool))
        .args(args)
        .current_dir(root())
        .env("KUBECONFIG", plane().kubeconfig())
        .env("HELM_CACHE_HOME", helm.join("cache"))
        .env("HELM_CONFIG_HOME", helm.join("config"))
        .env("HELM_DATA_HOME", helm.join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
        "{tool} {}: {}\n{stdout}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn kubectl(args: &[&str]) -> String {
    run("kubectl", args, "")
}

fn apply(yaml: &str) {
    run("kubectl", &["apply", "-f", "-"], yaml);
}

/// A namespace of its own for a test, where the `restricted` Pod Security Standard is
/// enforced (every Pod of the suite must pass it).
fn namespace(name: &str) -> String {
    namespace_under(name, "restricted")
}

/// A namespace of its own under the Pod Security Standard `level`.
fn namespace_under(name: &str, level: &str) -> String {
    let _ = Command::new(bin("kubectl"))
        .args([
            "delete",
            "namespace",
            name,
            "--ignore-not-found",
            "--wait=true",
        ])
        .env("KUBECONFIG", plane().kubeconfig())
        .output();
    apply(&format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {name}
  labels:
    pod-security.kubernetes.io/enforce: {level}
    pod-security.kubernetes.io/enforce-version: latest
"
    ));
    name.to_owned()
}

/// Waits until `what` holds, polling every half second, or panics after `timeout`.
async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The restricted Pod Security Standard's container settings, as YAML lines at `indent`.
fn restricted(indent: usize) -> String {
    let pad = " ".repeat(indent);
    [
        "securityContext:",
        "  allowPrivilegeEscalation: false",
        "  readOnlyRootFilesystem: true",
        "  capabilities: {drop: [ALL]}",
    ]
    .iter()
    .map(|l| format!("{pad}{l}\n"))
    .collect()
}

/// The Pod-level part of the restricted settings, running as `uid`, volumes group-owned by
/// it. `OnRootMismatch`: with the default (`Always`) the kubelet makes every directory of a
/// volume group-writable at each start, and PostgreSQL refuses to start on a data directory
/// that is (found here: a restarted database did not come up).
fn restricted_pod(indent: usize, uid: u32) -> String {
    let pad = " ".repeat(indent);
    format!(
        "{pad}securityContext:\n{pad}  runAsNonRoot: true\n{pad}  runAsUser: {uid}\n{pad}  runAsGroup: {uid}\n{pad}  fsGroup: {uid}\n{pad}  fsGroupChangePolicy: OnRootMismatch\n{pad}  seccompProfile: {{type: RuntimeDefault}}\n"
    )
}

async fn finished_pod_log(ns: &str, pod: &str) -> String {
    let client = plane().admin_client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, ns);
    eventually(
        Duration::from_secs(120),
        &format!("pod {pod} to finish"),
        || {
            let pods = pods.clone();
            async move {
                let phase = pods.get(pod).await.ok()?.status?.phase?;
                matches!(phase.as_str(), "Succeeded" | "Failed").then_some(())
            }
        },
    )
    .await;
    kubectl(&["logs", "-n", ns, pod])
}

#[tokio::test]
async fn pods_run_in_containers_with_cluster_dns_and_no_way_out() {
    if !support::needs_root("Pods in containers") {
        return;
    }
    let ns = namespace("e2e-node");
    // Bash's /dev/tcp connects like any client would; nothing here is special to the test.
    let script = r#"
echo "uid: $(id -u)"
touch /written 2>/dev/null && echo "root filesystem: writable" || echo "root filesystem: read-only"
getent hosts kubernetes.default.svc.cluster.local >/dev/null && echo "cluster name: resolved" || echo "cluster name: not resolved"
getent hosts deb.debian.org >/dev/null && echo "outside name: resolved" || echo "outside name: not resolved"
timeout 5 bash -c 'exec 3<>/dev/tcp/kubernetes.default.svc/443' && echo "api service: reached" || echo "api service: not reached"
timeout 5 bash -c 'exec 3<>/dev/tcp/192.0.2.1/80' 2>/dev/null && echo "outside address: REACHED" || echo "outside address: unreachable"
timeout 5 bash -c "exec 3<>/dev/tcp/10.233.0.1/$API_PORT" && echo "api on the node: reached" || echo "api on the node: not reached"
timeout 3 bash -c "exec 3<>/dev/tcp/10.233.0.1/$KUBELET_PORT" 2>/dev/null && echo "kubelet port: REACHED" || echo "kubelet port: blocked"
grep -q '^00000000' /proc/net/route && echo "default route: yes" || echo "default route: none"
"#;
    let services = image("services");
    // Ports this host listens on at the node's address: the API server's (Pods may reach
    // it) and the kubelet's (they may not).
    let api_port = plane().server().rsplit(':').next().unwrap().to_owned();
    let kubelet_port = kubectl(&[
        "get",
        "node",
        coffer_testenv::node_config::NODE_NAME,
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: probe, namespace: {ns}}}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
{pod_security}  containers:
  - name: probe
    image: {services}
    imagePullPolicy: Never
    command: [bash, -c, {script:?}]
    env: [{{name: API_PORT, value: '{api_port}'}}, {{name: KUBELET_PORT, value: '{kubelet_port}'}}]
{security}",
        pod_security = restricted_pod(2, 65532),
        security = restricted(4),
    ));
    let log = finished_pod_log(&ns, "probe").await;
    for line in [
        "uid: 65532",
        "root filesystem: read-only",
        "cluster name: resolved",
        "outside name: not resolved",
        "api service: reached",
        "outside address: unreachable",
        "api on the node: reached",
        "kubelet port: blocked",
        "default route: none",
    ] {
        assert!(
            log.contains(line),
            "expected {line:?} in the probe's log:\n{log}"
        );
    }
}

#[tokio::test]
async fn the_chart_runs_two_replicas_and_hands_the_lease_over_when_the_leader_goes() {
    if !support::needs_root("the chart on a real node") {
        return;
    }
    let ns = namespace("e2e-chart");
    let tag = install_chart("handover", &ns);
    assert_eq!(
        tag,
        env!("CARGO_PKG_VERSION"),
        "the chart's appVersion is the image's tag"
    );
    let client = plane().admin_client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let selector = ListParams::default().labels("app.kubernetes.io/instance=handover");
    let ready = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let running = pods.list(&selector).await.unwrap().items;
    assert_eq!(
        running.iter().filter(|p| ready(p)).count(),
        2,
        "both replicas Ready (probes pass)"
    );
    for pod in &running {
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
    }

    let holder = |lease: Lease| lease.spec?.holder_identity.filter(|h| !h.is_empty());
    let leader = eventually(Duration::from_secs(60), "a leader", || {
        let leases = leases.clone();
        async move { holder(leases.get("handover-coffer-controller").await.ok()?) }
    })
    .await;
    assert!(
        running.iter().any(|p| p.name_any() == leader),
        "the Lease is held by one of the replicas: {leader}"
    );
    pods.delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let next = eventually(
        Duration::from_secs(90),
        "another replica to take the Lease",
        || {
            let leases = leases.clone();
            let leader = leader.clone();
            async move {
                holder(leases.get("handover-coffer-controller").await.ok()?)
                    .filter(|h| *h != leader)
            }
        },
    )
    .await;
    // Another replica took over: the standby, or the deleted leader's replacement if it
    // was quicker to ask (both are fine; the deleted one must not hold it).
    let current: Vec<String> = pods
        .list(&selector)
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    assert!(
        current.contains(&next),
        "{next} holds the Lease but is not a replica: {current:?}"
    );
    // The deleted leader's replacement comes up and stands by, Ready.
    eventually(Duration::from_secs(120), "two Ready replicas again", || {
        let pods = pods.clone();
        let selector = selector.clone();
        async move {
            let items = pods.list(&selector).await.ok()?.items;
            (items
                .iter()
                .filter(|p| ready(p) && p.metadata.deletion_timestamp.is_none())
                .count()
                == 2)
                .then_some(())
        }
    })
    .await;
    // Uninstalled: the other tests share one operator (two would both act).
    run(
        "helm",
        &["uninstall", "handover", "--namespace", &ns, "--wait"],
        "",
    );
}

// ---- The examples, end to end ------------------------------------------------------------

/// The keys of the S3 servers the tests deploy (Secret `s3-creds`).
const S3_KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKE2EREALNODE"),
    ("AWS_SECRET_ACCESS_KEY", "e2e-real-node-secret-key"),
];

/// The tests' S3 server (bucket `backups`) as the Deployment and Service `minio` of `ns`,
/// with its keys in the Secret `s3-creds` there; returns once it is ready.
fn deploy_s3(ns: &str) {
    secret(ns, "s3-creds", &S3_KEYS);
    apply(&format!(
        "apiVersion: v1
kind: Service
metadata: {{name: minio, namespace: {ns}}}
spec:
  selector: {{app: minio}}
  ports: [{{port: 9000}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: minio, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: minio}}}}
  template:
    metadata: {{labels: {{app: minio}}}}
    spec:
      automountServiceAccountToken: false
{pod_security}      containers:
      - name: s3
        image: {image}
        imagePullPolicy: Never
        command: [coffer-s3-server, backups]
        env:
        - {{name: COFFER_S3_LISTEN, value: '0.0.0.0:9000'}}
        - {{name: COFFER_S3_ROOT, value: /data}}
        envFrom: [{{secretRef: {{name: s3-creds}}}}]
        readinessProbe: {{tcpSocket: {{port: 9000}}, periodSeconds: 1}}
        volumeMounts: [{{name: data, mountPath: /data}}]
{security}      volumes: [{{name: data, emptyDir: {{}}}}]
",
        image = image("services"),
        pod_security = restricted_pod(6, 65532),
        security = restricted(8),
    ));
    rollout(ns, "deployment/minio");
}

/// The verification of Backup `name`'s drill, once the drill has ended.
async fn drill_verdict(
    backups: &Api<coffer::api::Backup>,
    name: &str,
) -> coffer::api::Verification {
    eventually(
        Duration::from_secs(300),
        &format!("the drill of {name}"),
        || async {
            let v = backups.get(name).await.ok()?.status?.verification?;
            (v.phase != coffer::api::VerificationPhase::Running).then_some(v)
        },
    )
    .await
}

/// Merges `patch` into BackupSchedule `schedule` of `ns`.
fn patch_schedule(ns: &str, schedule: &str, patch: &str) {
    kubectl(&[
        "patch",
        "backupschedule",
        schedule,
        "-n",
        ns,
        "--type=merge",
        "-p",
        patch,
    ]);
}

/// Once the operator has seen the newest spec of BackupSchedule `schedule` of `ns`.
async fn observed(ns: &str, schedule: &str) {
    let client = plane().admin_client().await.unwrap();
    let schedules: Api<coffer::api::BackupSchedule> = Api::namespaced(client, ns);
    eventually(
        Duration::from_secs(60),
        &format!("the operator to see {schedule}'s spec"),
        || async {
            let s = schedules.get(schedule).await.ok()?;
            (s.status?.observed_generation >= s.metadata.generation).then_some(())
        },
    )
    .await;
}

/// A Backup `name` of `schedule` in `ns` now, as the backup-now example makes one,
/// labelled as the schedule's own run.
fn take_backup(ns: &str, name: &str, schedule: &str) {
    let mut now = example("backup-now.yaml", &[]);
    now["metadata"]["name"] = name.into();
    now["metadata"]["namespace"] = ns.into();
    now["metadata"]["labels"] = serde_json::json!({"coffer.dev/schedule": schedule});
    now["spec"]["scheduleRef"]["name"] = schedule.into();
    apply_json(&now);
}

/// Where a test's backups are stored: its S3 server, or the host directory of a
/// filesystem store's claim.
#[derive(Clone, Copy)]
enum Store<'a> {
    S3(&'a aws_sdk_s3::Client),
    Dir(&'a Path),
}

/// The objects of one stored backup, read and replaced behind Coffer's back.
struct Stored<'a> {
    store: Store<'a>,
    /// `bucket/folder/` in S3, `folder/` under a directory.
    folder: String,
}

impl<'a> Stored<'a> {
    /// Where `backup` is stored in `store`, from its `status.location`
    /// (`s3://bucket/folder/` or `pvc://claim/folder/`).
    fn of(store: Store<'a>, backup: &coffer::api::Backup) -> Self {
        let location = backup.status.as_ref().unwrap().location.clone().unwrap();
        let folder = match store {
            Store::S3(_) => location.strip_prefix("s3://").unwrap().to_owned(),
            Store::Dir(_) => {
                let path = location.strip_prefix("pvc://").unwrap();
                path.split_once('/').unwrap().1.to_owned()
            }
        };
        Self { store, folder }
    }

    async fn get(&self, name: &str) -> Vec<u8> {
        match self.store {
            Store::S3(s3) => {
                let (bucket, folder) = self.folder.split_once('/').unwrap();
                let object = s3
                    .get_object()
                    .bucket(bucket)
                    .key(format!("{folder}{name}"))
                    .send()
                    .await
                    .unwrap();
                object.body.collect().await.unwrap().into_bytes().to_vec()
            }
            Store::Dir(root) => std::fs::read(root.join(&self.folder).join(name)).unwrap(),
        }
    }

    async fn put(&self, name: &str, bytes: Vec<u8>) {
        match self.store {
            Store::S3(s3) => {
                let (bucket, folder) = self.folder.split_once('/').unwrap();
                s3.put_object()
                    .bucket(bucket)
                    .key(format!("{folder}{name}"))
                    .body(bytes.into())
                    .send()
                    .await
                    .unwrap();
            }
            Store::Dir(root) => std::fs::write(root.join(&self.folder).join(name), bytes).unwrap(),
        }
    }

    /// The name of the backup's first data object (not accounts, not globals), from its
    /// manifest.
    async fn data_object(&self) -> String {
        let manifest: serde_json::Value =
            serde_json::from_slice(&self.get("manifest.json").await).unwrap();
        manifest["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_owned())
            .find(|name| !name.starts_with("mysql/users") && !name.contains("/globals."))
            .unwrap()
    }
}

/// Makes a manifest count one row more in `table` of `database` than the `rows` it counted.
fn one_row_more(manifest: &mut serde_json::Value, database: &str, table: &str, rows: u64) {
    let counted = manifest["stats"]["tableRows"][database]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["table"] == table)
        .unwrap();
    assert_eq!(counted["rows"], rows);
    counted["rows"] = (rows + 1).into();
}

/// Drills of a schedule's runs that must fail (see [`drills_that_must_fail`]).
struct MustFail<'a, F> {
    ns: &'a str,
    schedule: &'a str,
    store: Store<'a>,
    /// The schedule's drill (JSON) with checks that hold.
    drill: &'a str,
    /// The schedule's drill with one check of the user's that does not hold, and that
    /// check's name.
    failing_check: (&'a str, &'a str),
    /// Raises a count in a manifest; returns what the message of a drill that finds less
    /// must hold.
    count_more: F,
}

/// Three more runs of the schedule whose drills must fail, each VerificationFailed with a
/// message naming what differed. The drill is turned off while a run is taken and changed,
/// then on to drill it; it is left on (`drill`).
///
/// 1. A check of the user's that does not hold: only that check fails, named.
/// 2. A worker that counted more than its data holds (built here: `count_more` raises a
///    count in the stored manifest, and the Backup records that manifest's SHA-256, as such
///    a worker's report would): the data restores, and the counts catch it, as
///    `count_more` says.
/// 3. A data object changed after it was stored, its manifest left alone: integrity catches
///    it before the scratch instance is loaded.
async fn drills_that_must_fail(case: MustFail<'_, impl Fn(&mut serde_json::Value) -> Vec<String>>) {
    let MustFail {
        ns,
        schedule,
        store,
        drill,
        failing_check: (failing, check),
        count_more,
    } = case;
    let client = plane().admin_client().await.unwrap();
    let backups: Api<coffer::api::Backup> = Api::namespaced(client, ns);
    // The drill set, and seen by the operator before the next run (a run that ends while
    // it still sees the old drill would be drilled, or not, by that one).
    let set_drill = |drill: &str| {
        patch_schedule(ns, schedule, &format!(r#"{{"spec":{{"drill":{drill}}}}}"#));
        observed(ns, schedule)
    };
    let failed_drill = |name: String| {
        let backups = backups.clone();
        async move {
            let v = drill_verdict(&backups, &name).await;
            assert_eq!(
                v.phase,
                coffer::api::VerificationPhase::VerificationFailed,
                "{name}: {v:?}\nworker logs: {}",
                kubectl(&[
                    "logs",
                    "-n",
                    ns,
                    "-l",
                    "coffer.dev/operation=drill",
                    "--tail=50"
                ])
            );
            v
        }
    };
    // A run of the schedule, taken with its drill off and stored.
    let stored_run = |name: String| async move {
        set_drill("null").await;
        take_backup(ns, &name, schedule);
        let backup: coffer::api::Backup = finished(ns, &name).await;
        assert_eq!(phase(&backup).as_deref(), Some("Succeeded"), "{name}");
        Stored::of(store, &backup)
    };

    let name = format!("{schedule}-check-fails");
    set_drill(failing).await;
    take_backup(ns, &name, schedule);
    let v = failed_drill(name).await;
    assert!(v.message.contains(check) && v.checks_failed == 1, "{v:?}");

    let name = format!("{schedule}-counted-more");
    let stored = stored_run(name.clone()).await;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&stored.get("manifest.json").await).unwrap();
    let named = count_more(&mut manifest);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    stored.put("manifest.json", manifest.clone()).await;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&manifest));
    kubectl(&[
        "patch",
        "backup",
        &name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(r#"{{"status":{{"manifestSha256":"{sha}"}}}}"#),
    ]);
    set_drill(drill).await;
    let v = failed_drill(name).await;
    assert!(
        named.iter().all(|n| v.message.contains(n)),
        "{named:?}: {v:?}"
    );

    let name = format!("{schedule}-changed-later");
    let stored = stored_run(name.clone()).await;
    let object = stored.data_object().await;
    let mut bytes = stored.get(&object).await;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    stored.put(&object, bytes).await;
    set_drill(drill).await;
    let v = failed_drill(name).await;
    assert!(v.message.contains("SHA-256"), "{v:?}");
}

/// A client of the S3 server of `ns`, through its Service's ClusterIP.
fn s3_client(ns: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let credentials = Credentials::new(S3_KEYS[0].1, S3_KEYS[1].1, None, None, "test");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(format!("http://{}:9000", cluster_ip(ns, "minio")))
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A `local` PersistentVolume on the node for the claim `ns/claim`, bound to it ahead of time
/// (static provisioning), in a new directory of the node's.
fn volume_for(ns: &str, claim: &str) -> String {
    let dir = node()
        .state_dir()
        .join("volumes")
        .join(format!("{ns}-{claim}"));
    std::fs::create_dir_all(&dir).unwrap();
    format!(
        "apiVersion: v1
kind: PersistentVolume
metadata: {{name: {ns}-{claim}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: ''
  claimRef: {{namespace: {ns}, name: {claim}}}
  local: {{path: {path}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{node}]}}]
",
        path = dir.display(),
        node = coffer_testenv::node_config::NODE_NAME,
    )
}

/// A one-replica StatefulSet of the services image running `command` as `uid`, with a
/// claim `data` at `/data`, an emptyDir at `/tmp`, and a Service of the same name on `port`.
fn stateful(ns: &str, name: &str, uid: u32, port: u16, command: &str, env: &str) -> String {
    format!(
        "{volume}---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: {port}}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  serviceName: {name}
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 10
{pod_security}      containers:
      - name: {name}
        image: {image}
        imagePullPolicy: Never
        command: {command}
        env: {env}
        ports: [{{containerPort: {port}}}]
        readinessProbe: {{tcpSocket: {{port: {port}}}, periodSeconds: 1}}
        volumeMounts: [{{name: data, mountPath: /data}}, {{name: tmp, mountPath: /tmp}}]
{security}      volumes: [{{name: tmp, emptyDir: {{}}}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: ''
      resources: {{requests: {{storage: 1Gi}}}}
",
        volume = volume_for(ns, &format!("data-{name}-0")),
        image = image("services"),
        pod_security = restricted_pod(6, uid),
        security = restricted(8),
    )
}

fn secret(ns: &str, name: &str, data: &[(&str, &str)]) {
    let data: String = data
        .iter()
        .map(|(k, v)| format!("  {k}: {v:?}\n"))
        .collect();
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\nstringData:\n{data}"
    ));
}

/// The ClusterIP of a Service (this host reaches it through kube-proxy's rules, as Pods do).
fn cluster_ip(ns: &str, service: &str) -> String {
    kubectl(&[
        "get",
        "service",
        "-n",
        ns,
        service,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

fn rollout(ns: &str, what: &str) {
    let out = Command::new(bin("kubectl"))
        .args(["rollout", "status", "-n", ns, what, "--timeout=180s"])
        .env("KUBECONFIG", plane().kubeconfig())
        .output()
        .unwrap();
    if !out.status.success() {
        // What kept it from becoming ready: its Pods, their events and their logs.
        let name = what.rsplit('/').next().unwrap_or(what);
        let look = |args: &[&str]| {
            Command::new(bin("kubectl"))
                .args(args)
                .env("KUBECONFIG", plane().kubeconfig())
                .output()
                .map(|o| {
                    format!(
                        "$ kubectl {}\n{}{}",
                        args.join(" "),
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default()
        };
        let selector = format!("app={name}");
        panic!(
            "kubectl rollout status -n {ns} {what}: {}\n{}\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            look(&["get", "pods,pvc,pv", "-n", ns, "-o", "wide"]),
            look(&["describe", "pods", "-n", ns, "-l", &selector]),
            look(&[
                "logs",
                "-n",
                ns,
                "-l",
                &selector,
                "--tail=40",
                "--all-containers",
                "--previous=false"
            ]),
            look(&["get", "events", "-n", ns, "--sort-by=.lastTimestamp"]),
        );
    }
}

/// An example file as JSON, with the S3 endpoint of its storage (at `storage_path`) set to
/// the S3 server in the cluster: the one change the examples need here.
fn example(name: &str, storage_path: &[&str]) -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("deploy/examples").join(name)).unwrap();
    let mut doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    if !storage_path.is_empty() {
        let mut s3 = &mut doc;
        for key in storage_path {
            s3 = &mut s3[*key];
        }
        s3["endpoint"] = "http://minio.storage.svc:9000".into();
        s3["forcePathStyle"] = true.into();
    }
    doc
}

fn apply_json(doc: &serde_json::Value) {
    run("kubectl", &["apply", "-f", "-"], &doc.to_string());
}

/// A Backup or RestoreRequest once it finished (Succeeded or Failed).
async fn finished<K>(ns: &str, name: &str) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let client = plane().admin_client().await.unwrap();
    let api: Api<K> = Api::namespaced(client, ns);
    eventually(
        Duration::from_secs(300),
        &format!("{name} to finish"),
        || {
            let api = api.clone();
            async move {
                let object = api.get(name).await.ok()?;
                matches!(phase(&object).as_deref(), Some("Succeeded" | "Failed")).then_some(object)
            }
        },
    )
    .await
}

fn phase(object: &impl serde::Serialize) -> Option<String> {
    serde_json::to_value(object).ok()?["status"]["phase"]
        .as_str()
        .map(str::to_owned)
}

/// A connection through a Service, tried for a while: kube-proxy programs a new Service's
/// rules within a second or two of its creation.
async fn pg_connect(conninfo: &str) -> tokio_postgres::Client {
    for _ in 0..60 {
        if let Ok((client, connection)) =
            tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            return client;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    support::pg_data::connect_to(conninfo).await
}

#[tokio::test]
async fn the_examples_back_up_by_service_name_and_restore_with_the_app_stopped() {
    if !support::needs_root("the examples on a real node") {
        return;
    }
    let storage = namespace("storage");
    let shop = namespace("shop");
    operator();

    // The store: the tests' S3 server in a Deployment of namespace `storage`.
    deploy_s3(&storage);
    secret(&shop, "s3-creds", &S3_KEYS);

    // Redis and PostgreSQL as StatefulSets on volumes, and the app that uses them.
    let redis_password = "e2e-redis-password";
    secret(&shop, "redis-auth", &[("password", redis_password)]);
    apply(&stateful(
        &shop,
        "redis",
        998,
        6379,
        "[redis-server, --dir, /data, --bind, 0.0.0.0, --requirepass, $(REDIS_PASSWORD)]",
        "[{name: REDIS_PASSWORD, valueFrom: {secretKeyRef: {name: redis-auth, key: password}}}]",
    ));
    let (pg_admin, backup_password, new_admin) = ("e2e-pg-admin", "e2e-backup-pw", "e2e-pg-new");
    secret(&shop, "pg-admin", &[("password", pg_admin)]);
    secret(&shop, "pg-auth", &[("password", backup_password)]);
    secret(&shop, "pg-new-auth", &[("password", new_admin)]);
    let pg_env = |secret: &str| {
        format!(
            "[{{name: PGDATA, value: /data/pgdata}}, {{name: POSTGRES_PASSWORD, valueFrom: {{secretKeyRef: {{name: {secret}, key: password}}}}}}]"
        )
    };
    apply(&stateful(
        &shop,
        "pg",
        999,
        5432,
        "[postgres-entrypoint]",
        &pg_env("pg-admin"),
    ));
    apply(&stateful(
        &shop,
        "pg-new",
        999,
        5432,
        "[postgres-entrypoint]",
        &pg_env("pg-new-auth"),
    ));
    apply(&format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: shop-backend, namespace: {shop}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: shop-backend}}}}
  template:
    metadata: {{labels: {{app: shop-backend}}}}
    spec:
      automountServiceAccountToken: false
{pod_security}      containers:
      - name: app
        image: {image}
        imagePullPolicy: Never
        command: [bash, -c, 'trap \"exit 0\" TERM; while :; do sleep 0.2; done']
{security}",
        image = image("services"),
        pod_security = restricted_pod(6, 65532),
        security = restricted(8),
    ));
    for what in [
        "statefulset/redis",
        "statefulset/pg",
        "statefulset/pg-new",
        "deployment/shop-backend",
    ] {
        rollout(&shop, what);
    }

    // Data, written from here through the Services' ClusterIPs.
    let redis_url = format!(
        "redis://:{redis_password}@{}:6379/",
        cluster_ip(&shop, "redis")
    );
    let mut redis = support::redis_data::connect(&redis_url).await;
    support::redis_data::populate(&mut redis).await;
    let (redis_before, _) = support::redis_data::state(&mut redis).await;
    let pg_ip = cluster_ip(&shop, "pg");
    let conninfo = |ip: &str, user: &str, password: &str, db: &str| {
        format!("host={ip} port=5432 user={user} password={password} dbname={db}")
    };
    let admin = pg_connect(&conninfo(&pg_ip, "postgres", pg_admin, "postgres")).await;
    for sql in [
        format!("CREATE ROLE backup LOGIN SUPERUSER PASSWORD '{backup_password}'"),
        "CREATE DATABASE app".to_owned(),
        "CREATE DATABASE functions".to_owned(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    for (db, sql) in [
        (
            "app",
            "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL, cents int); \
                 INSERT INTO orders (item, cents) SELECT 'item ' || i, i * 7 FROM generate_series(1, 5000) i;",
        ),
        (
            "functions",
            "CREATE TABLE runs (name text PRIMARY KEY, payload jsonb); \
                 INSERT INTO runs SELECT 'run-' || i, jsonb_build_object('n', i) FROM generate_series(1, 300) i; \
                 CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2';",
        ),
    ] {
        pg_connect(&conninfo(&pg_ip, "postgres", pg_admin, db))
            .await
            .batch_execute(sql)
            .await
            .unwrap();
    }

    // The examples, as written but for the store's endpoint.
    apply_json(&example("redis-schedule.yaml", &["spec", "storage", "s3"]));
    apply_json(&example(
        "postgres-schedule.yaml",
        &["spec", "storage", "s3"],
    ));
    apply_json(&example("backup-now.yaml", &[]));
    let mut postgres_now = example("backup-now.yaml", &[]);
    postgres_now["metadata"]["name"] = "before-deploy-postgres".into();
    postgres_now["spec"]["scheduleRef"]["name"] = "shop-postgres".into();
    apply_json(&postgres_now);
    // Each schedule's pre-flight check ran in a real container, through the Services' DNS
    // names and the worker's NetworkPolicy, and found the source and the store usable.
    let client = plane().admin_client().await.unwrap();
    let schedules: Api<coffer::api::BackupSchedule> = Api::namespaced(client, &shop);
    for name in ["shop-redis", "shop-postgres"] {
        eventually(
            Duration::from_secs(180),
            &format!("{name}'s pre-flight check to pass"),
            || {
                let schedules = schedules.clone();
                async move {
                    let status = schedules.get(name).await.ok()?.status?;
                    let ok = |t: &str| {
                        status
                            .conditions
                            .iter()
                            .any(|c| c.type_ == t && c.status == "True")
                    };
                    (ok("SourceReachable") && ok("StorageWritable")).then_some(())
                }
            },
        )
        .await;
    }
    for name in ["before-deploy", "before-deploy-postgres"] {
        let backup: coffer::api::Backup = finished(&shop, name).await;
        assert_eq!(
            phase(&backup).as_deref(),
            Some("Succeeded"),
            "{name}: {:?}\nworker logs: {}",
            backup.status,
            kubectl(&[
                "logs",
                "-n",
                &shop,
                "-l",
                "app.kubernetes.io/managed-by=coffer",
                "--tail=50"
            ])
        );
    }

    // The app's data changes after the backup; the restore example (pointed at that backup)
    // stops the app, puts every key back, and starts the app again.
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("string")
        .arg("changed")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut restore = example("restore.yaml", &[]);
    restore["spec"]["backupRef"]["name"] = "before-deploy".into();
    let client = plane().admin_client().await.unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &shop);
    let watch = {
        let deployments = deployments.clone();
        tokio::spawn(async move {
            let mut seen: Vec<i32> = vec![];
            for _ in 0..3000 {
                if let Ok(d) = deployments.get("shop-backend").await {
                    let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(1);
                    if seen.last() != Some(&replicas) {
                        seen.push(replicas);
                    }
                    if seen.len() >= 3 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    };
    apply_json(&restore);
    let restored: coffer::api::RestoreRequest = finished(&shop, "restore-yesterday").await;
    assert_eq!(
        phase(&restored).as_deref(),
        Some("Succeeded"),
        "{:?}",
        restored.status
    );
    assert_eq!(
        watch.await.unwrap(),
        [1, 0, 1],
        "the app went to 0 replicas and back to 1"
    );
    rollout(&shop, "deployment/shop-backend");
    let (redis_after, _) = support::redis_data::state(&mut redis).await;
    support::redis_data::assert_same(&redis_before, &redis_after);
    // `conflict: Overwrite` replaces keys: the data as it was before (one changed key) was
    // backed up first, in a container like every worker, and kept.
    let safety = restored
        .status
        .as_ref()
        .and_then(|s| s.safety_backup.clone())
        .expect("the restore took a safety backup");
    let safety: coffer::api::Backup = finished(&shop, &safety).await;
    assert_eq!(
        phase(&safety).as_deref(),
        Some("Succeeded"),
        "{:?}",
        safety.status
    );
    let keys = safety
        .status
        .as_ref()
        .and_then(|s| s.stats.as_ref())
        .and_then(|s| s.keys);
    assert!(
        keys.is_some_and(|k| k >= 1 && (k as usize) < redis_before.len()),
        "it holds what the server had before the restore (the changed key), not the backup: {keys:?}"
    );

    // Disaster recovery into the other PostgreSQL server, from the bucket alone.
    apply_json(&example(
        "restore-from-storage.yaml",
        &["spec", "from", "storage", "s3"],
    ));
    let recovered: coffer::api::RestoreRequest = finished(&shop, "recover-shop-postgres").await;
    assert_eq!(
        phase(&recovered).as_deref(),
        Some("Succeeded"),
        "{:?}",
        recovered.status
    );
    let new_ip = cluster_ip(&shop, "pg-new");
    for db in ["app", "functions"] {
        let original = pg_connect(&conninfo(&pg_ip, "postgres", pg_admin, db)).await;
        let copy = pg_connect(&conninfo(&new_ip, "postgres", new_admin, db)).await;
        assert_eq!(
            support::pg_data::fingerprint(&copy).await,
            support::pg_data::fingerprint(&original).await,
            "database {db}: every row restored"
        );
    }
    // The roles came along (globals: true): the backup user can log in to the new server.
    pg_connect(&conninfo(&new_ip, "backup", backup_password, "app")).await;

    // Restore drills of both schedules' newest backups, side by side, in the Coffer image: a
    // scratch redis-server and a scratch PostgreSQL started inside the workers' containers
    // (restricted Pod Security Standard, read-only root filesystem), checked by the
    // manifests' counts and a check of the user's each; production untouched. Drills take
    // the schedules' own runs: the label makes the Backups made by hand theirs.
    let redis_now = support::redis_data::state(&mut redis).await;
    let app_now = support::pg_data::fingerprint(
        &pg_connect(&conninfo(&pg_ip, "postgres", pg_admin, "app")).await,
    )
    .await;
    for (backup, schedule, drill) in [
        (
            "before-deploy",
            "shop-redis",
            r#"{"spec":{"drill":{"every":1,"checks":{"redis":["EXISTS string => 1"]}}}}"#,
        ),
        (
            "before-deploy-postgres",
            "shop-postgres",
            // As a UID the image does not list (OpenShift gives random ones): the drill
            // gives initdb, which refuses a user without a passwd entry, one of its own. The
            // second check shows the scratch server ran as that UID.
            r#"{"spec":{"jobTemplate":{"runAsUser":4242,"runAsGroup":4242},
                "drill":{"every":1,"checks":{"sql":["app: SELECT count(*) = 5000 FROM orders",
                    "app: SELECT pg_read_file('/proc/self/status') ~ 'Uid:\\s+4242\\s'"]}}}}"#,
        ),
    ] {
        kubectl(&[
            "label",
            "backup",
            backup,
            "-n",
            &shop,
            &format!("coffer.dev/schedule={schedule}"),
        ]);
        patch_schedule(&shop, schedule, drill);
    }
    for schedule in ["shop-redis", "shop-postgres"] {
        let last = eventually(
            Duration::from_secs(300),
            &format!("{schedule}'s drill"),
            || {
                let schedules = schedules.clone();
                async move {
                    let d = schedules.get(schedule).await.ok()?.status?.last_drill?;
                    (d.verification.phase != coffer::api::VerificationPhase::Running).then_some(d)
                }
            },
        )
        .await;
        let v = &last.verification;
        assert_eq!(
            v.phase,
            coffer::api::VerificationPhase::Verified,
            "{schedule}: {last:?}\nworker logs: {}",
            kubectl(&[
                "logs",
                "-n",
                &shop,
                "-l",
                "coffer.dev/operation=drill",
                "--tail=50"
            ])
        );
        assert!(
            v.restore_seconds.is_some() && v.checks_passed >= 3 && v.checks_failed == 0,
            "{schedule}: {last:?}"
        );
    }
    // Backups whose user check does not hold, backups that restore but lack what their
    // manifests count, and backups changed after they were stored fail their drills, naming
    // what differed; both engines side by side.
    let s3 = s3_client(&storage);
    tokio::join!(
        drills_that_must_fail(MustFail {
            ns: &shop,
            schedule: "shop-redis",
            store: Store::S3(&s3),
            drill: r#"{"every":1}"#,
            failing_check: (
                r#"{"every":1,"checks":{"redis":["EXISTS no-such-key => 1"]}}"#,
                "redis EXISTS no-such-key => 1",
            ),
            count_more: |manifest: &mut serde_json::Value| {
                let lists = &mut manifest["stats"]["keysPerType"]["list"];
                let n = lists.as_u64().unwrap();
                *lists = (n + 1).into();
                vec![format!("list keys: {n}, the backup {}", n + 1)]
            },
        }),
        drills_that_must_fail(MustFail {
            ns: &shop,
            schedule: "shop-postgres",
            store: Store::S3(&s3),
            drill: r#"{"every":1}"#,
            failing_check: (
                r#"{"every":1,"checks":{"sql":["app: SELECT count(*) = 1 FROM orders"]}}"#,
                "sql app: SELECT count(*) = 1 FROM orders",
            ),
            count_more: |manifest: &mut serde_json::Value| {
                one_row_more(manifest, "app", "orders", 5000);
                vec![
                    "public.orders".to_owned(),
                    "has 5000 rows; the backup counted 5001".to_owned(),
                ]
            },
        }),
    );
    assert!(
        support::redis_data::state(&mut redis).await == redis_now,
        "Redis untouched"
    );
    assert_eq!(
        support::pg_data::fingerprint(
            &pg_connect(&conninfo(&pg_ip, "postgres", pg_admin, "app")).await
        )
        .await,
        app_now,
        "PostgreSQL untouched"
    );
}

/// A MySQL connection through a Service, tried for a while (kube-proxy's rules for a new
/// Service, and the server's first start, take a moment).
async fn mysql_connect(ip: &str, user: &str, password: &str) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(ip.to_owned())
        .tcp_port(3306)
        .user(Some(user.to_owned()))
        .pass(Some(password.to_owned()))
        .prefer_socket(false);
    for _ in 0..120 {
        if let Ok(conn) = mysql_async::Conn::new(opts.clone()).await {
            return conn;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    mysql_async::Conn::new(opts).await.unwrap()
}

/// Every row of the Laravel-like tables, in order.
/// The columns of `laravel.orders`, in order.
async fn order_columns(conn: &mut mysql_async::Conn) -> Vec<String> {
    use mysql_async::prelude::Queryable;
    conn.query(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = 'laravel' AND TABLE_NAME = 'orders' ORDER BY ORDINAL_POSITION",
    )
    .await
    .unwrap()
}

async fn laravel_rows(conn: &mut mysql_async::Conn) -> Vec<(i64, String, String)> {
    use mysql_async::prelude::Queryable;
    conn.query("SELECT id, email, CAST(total AS CHAR) FROM laravel.orders ORDER BY id")
        .await
        .unwrap()
}

#[tokio::test]
async fn the_mysql_example_backs_up_mariadb_and_restores_it_with_the_app_stopped() {
    use mysql_async::prelude::Queryable;
    if !support::needs_root("MariaDB on a real node") {
        return;
    }
    // It runs after the other examples' test with the same operator, in namespaces of the
    // same names made again: the operator must make its worker account again too (it once
    // remembered it per namespace name, and this Backup's Job never got a Pod).
    let storage = namespace("storage");
    let shop = namespace("shop");
    operator();
    deploy_s3(&storage);
    secret(&shop, "s3-creds", &S3_KEYS);

    // MariaDB as a StatefulSet of the services image (Service `mysql`, as the example names
    // it), and the Laravel app that uses it.
    let (root_password, backup_password) = ("e2e-mariadb-root", "e2e-mysql-backup");
    secret(&shop, "mariadb-root", &[("password", root_password)]);
    secret(&shop, "mysql-auth", &[("password", backup_password)]);
    apply(&stateful(
        &shop,
        "mysql",
        997,
        3306,
        "[mariadb-entrypoint]",
        "[{name: DATADIR, value: /data/db}, {name: MARIADB_DATABASE, value: laravel}, \
          {name: MARIADB_ROOT_PASSWORD, valueFrom: {secretKeyRef: {name: mariadb-root, key: password}}}]",
    ));
    apply(&format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: laravel, namespace: {shop}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: laravel}}}}
  template:
    metadata: {{labels: {{app: laravel}}}}
    spec:
      automountServiceAccountToken: false
{pod_security}      containers:
      - name: app
        image: {image}
        imagePullPolicy: Never
        command: [bash, -c, 'trap \"exit 0\" TERM; while :; do sleep 0.2; done']
{security}",
        image = image("services"),
        pod_security = restricted_pod(6, 65532),
        security = restricted(8),
    ));
    rollout(&shop, "statefulset/mysql");
    rollout(&shop, "deployment/laravel");

    // The account the example backs up with, with the privileges its comment lists, and the
    // app's data, written through the Service's ClusterIP.
    let ip = cluster_ip(&shop, "mysql");
    let mut root = mysql_connect(&ip, "root", root_password).await;
    root.query_drop(format!(
        "CREATE USER 'backup'@'%' IDENTIFIED BY '{backup_password}';
         GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON laravel.* TO 'backup'@'%';
         GRANT SELECT ON mysql.* TO 'backup'@'%';
         USE laravel;
         CREATE TABLE laravel.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY,
           email VARCHAR(100) NOT NULL, total DECIMAL(10,2) NOT NULL) ENGINE=InnoDB;
         INSERT INTO laravel.orders (email, total)
           SELECT CONCAT('user', seq, '@example.com'), seq * 1.25 FROM seq_1_to_3000;
         CREATE TABLE laravel.cache (k VARCHAR(50) PRIMARY KEY, v TEXT) ENGINE=MyISAM;
         INSERT INTO laravel.cache VALUES ('config', 'cached');"
    ))
    .await
    .unwrap();
    let before = laravel_rows(&mut root).await;

    // The example as written but for the store's endpoint, and a backup of it now.
    apply_json(&example("mysql-schedule.yaml", &["spec", "storage", "s3"]));
    let mut now = example("backup-now.yaml", &[]);
    now["metadata"]["name"] = "before-migration".into();
    now["spec"]["scheduleRef"]["name"] = "laravel-mysql".into();
    apply_json(&now);
    let backup: coffer::api::Backup = finished(&shop, "before-migration").await;
    assert_eq!(
        phase(&backup).as_deref(),
        Some("Succeeded"),
        "{:?}\nworker logs: {}",
        backup.status,
        kubectl(&[
            "logs",
            "-n",
            &shop,
            "-l",
            "app.kubernetes.io/managed-by=coffer",
            "--tail=50"
        ])
    );
    let status = backup.status.clone().unwrap();
    assert_eq!(status.source_kind, Some(coffer::api::SourceKind::MySql));
    let stats = serde_json::to_value(&status).unwrap()["stats"].clone();
    assert_eq!(stats["tables"], 2, "{stats}");
    assert_eq!(stats["rows"], 3001, "{stats}");
    // The MyISAM table's missing point in time is said where people look.
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready
            .message
            .contains("warning: tables without transactions are not from one point in time: laravel.cache (MyISAM)"),
        "{}",
        ready.message
    );

    // A migration gone wrong; the restore stops the app, puts the database back as root
    // (clean: dropped and created again) and starts the app again.
    root.query_drop("DELETE FROM laravel.orders WHERE id > 10; ALTER TABLE laravel.orders ADD COLUMN broken INT")
        .await
        .unwrap();
    let client = plane().admin_client().await.unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &shop);
    // The watcher reads the replicas once before the restore is created (on a busy machine
    // its first read could otherwise come after the app was already stopped).
    let (first_read, watching) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        let mut seen: Vec<i32> = vec![];
        let mut first_read = Some(first_read);
        for _ in 0..3000 {
            if let Ok(d) = deployments.get("laravel").await {
                let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(1);
                if seen.last() != Some(&replicas) {
                    seen.push(replicas);
                }
                if let Some(tx) = first_read.take() {
                    let _ = tx.send(());
                }
                if seen.len() >= 3 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    });
    // Its dry run first: what the restore would do, in status, and nothing done (no app
    // stopped, no safety backup, no row changed).
    let restore_request = |name: &str, dry_run: bool| {
        format!(
            "apiVersion: coffer.dev/v1alpha1
kind: RestoreRequest
metadata: {{name: {name}, namespace: {shop}}}
spec:
  backupRef: {{name: before-migration}}
  dryRun: {dry_run}
  target:
    mysql:
      host: mysql.{shop}.svc
      user: root
      passwordSecretRef: {{name: mariadb-root, key: password}}
  mysql: {{clean: true}}
  quiesce: [{{kind: Deployment, name: laravel}}]
"
        )
    };
    let app_pod = || {
        kubectl(&[
            "get",
            "pods",
            "-n",
            &shop,
            "-l",
            "app=laravel",
            "-o",
            "name",
        ])
    };
    let (pod_before, migrated) = (app_pod(), laravel_rows(&mut root).await);
    apply(&restore_request("undo-migration-preview", true));
    let looked: coffer::api::RestoreRequest = finished(&shop, "undo-migration-preview").await;
    assert_eq!(phase(&looked).as_deref(), Some("Succeeded"), "{looked:?}");
    let looked = looked.status.unwrap();
    assert_eq!(
        looked.preview,
        [
            "would stop Deployment laravel (1 replicas) during the restore, and start it again",
            "would take a safety backup of the target first (a MySQL/MariaDB restore drops and creates again the tables it holds)",
            "database \"laravel\": exists: dropped and created again (clean)",
            "  cache: 1 rows now, 1 rows after",
            "  orders: 10 rows now, 3000 rows after",
        ],
        "{looked:?}"
    );
    assert_eq!(looked.safety_backup, None);
    assert_eq!(
        laravel_rows(&mut root).await,
        migrated,
        "the dry run changed nothing"
    );
    assert_eq!(app_pod(), pod_before, "the dry run stopped no app");

    watching.await.unwrap();
    apply(&restore_request("undo-migration", false));
    let restored: coffer::api::RestoreRequest = finished(&shop, "undo-migration").await;
    assert_eq!(
        phase(&restored).as_deref(),
        Some("Succeeded"),
        "{:?}",
        restored.status
    );
    assert_eq!(
        watch.await.unwrap(),
        [1, 0, 1],
        "the app went to 0 replicas and back"
    );
    let mut root = mysql_connect(&ip, "root", root_password).await;
    assert_eq!(laravel_rows(&mut root).await, before, "every row back");
    assert_eq!(
        order_columns(&mut root).await,
        ["id", "email", "total"],
        "the migration's column is gone"
    );
    let verified = serde_json::to_value(&restored.status).unwrap()["stats"]["rowsVerified"].clone();
    assert_eq!(verified, 3001, "as the dry run said");
    // Before writing, the restore backed up the database as the migration left it.
    let safety = restored.status.as_ref().unwrap().safety_backup.clone();
    let safety = safety.expect("a clean restore takes a safety backup");
    let safety: coffer::api::Backup = finished(&shop, &safety).await;
    let safety_stats = serde_json::to_value(&safety.status).unwrap()["stats"].clone();
    assert_eq!(
        (phase(&safety).as_deref(), &safety_stats["rows"]),
        (Some("Succeeded"), &serde_json::json!(11)),
        "the 10 orders the migration left, and the cache row"
    );
    // Restoring it (clean, with no safety backup of its own) gives the migrated database
    // back exactly; restoring the first backup again undoes that, for the drills below.
    for (name, from) in [
        ("undo-the-undo", safety.metadata.name.clone().unwrap()),
        ("undo-migration-again", "before-migration".to_owned()),
    ] {
        apply(&format!(
            "apiVersion: coffer.dev/v1alpha1
kind: RestoreRequest
metadata: {{name: {name}, namespace: {shop}}}
spec:
  backupRef: {{name: {from}}}
  safetyBackup: false
  target:
    mysql:
      host: mysql.{shop}.svc
      user: root
      passwordSecretRef: {{name: mariadb-root, key: password}}
  mysql: {{clean: true}}
"
        ));
        let done: coffer::api::RestoreRequest = finished(&shop, name).await;
        assert_eq!(
            phase(&done).as_deref(),
            Some("Succeeded"),
            "{name}: {done:?}"
        );
        assert_eq!(done.status.unwrap().safety_backup, None, "{name}");
        let mut root = mysql_connect(&ip, "root", root_password).await;
        if name == "undo-the-undo" {
            assert_eq!(laravel_rows(&mut root).await, migrated, "the migrated rows");
            assert_eq!(
                order_columns(&mut root).await,
                ["id", "email", "total", "broken"],
                "and the migration's column"
            );
        } else {
            assert_eq!(laravel_rows(&mut root).await, before);
        }
    }

    // Restore drills in the Coffer image: a scratch MariaDB started inside the worker's
    // container (restricted Pod Security Standard, read-only root filesystem), checked by
    // the manifest's counts and a query of the user's; production untouched. Drills take
    // the schedule's own runs (the label `take_backup` gives), the newest when turned on.
    const DRILL: &str =
        r#"{"every":1,"checks":{"sql":["laravel: SELECT count(*) = 3000 FROM orders"]}}"#;
    let s3 = s3_client(&storage);
    drills_that_must_fail(MustFail {
        ns: &shop,
        schedule: "laravel-mysql",
        store: Store::S3(&s3),
        drill: DRILL,
        failing_check: (
            r#"{"every":1,"checks":{"sql":["laravel: SELECT count(*) = 1 FROM orders"]}}"#,
            "sql laravel: SELECT count(*) = 1 FROM orders",
        ),
        count_more: |manifest: &mut serde_json::Value| {
            one_row_more(manifest, "laravel", "orders", 3000);
            vec!["table orders has 3000 rows, the backup 3001".to_owned()]
        },
    })
    .await;

    // A good backup: Verified.
    take_backup(&shop, "checked", "laravel-mysql");
    let backups: Api<coffer::api::Backup> = Api::namespaced(client.clone(), &shop);
    let drill = drill_verdict(&backups, "checked").await;
    assert_eq!(
        drill.phase,
        coffer::api::VerificationPhase::Verified,
        "{drill:?}\nworker logs: {}",
        kubectl(&[
            "logs",
            "-n",
            &shop,
            "-l",
            "coffer.dev/operation=drill",
            "--tail=50"
        ])
    );
    assert!(
        drill.restore_seconds.is_some() && drill.checks_failed == 0,
        "{drill:?}"
    );
    let mut root = mysql_connect(&ip, "root", root_password).await;
    assert_eq!(
        laravel_rows(&mut root).await,
        before,
        "production untouched"
    );
}

// ---- Volumes and workers in real containers ----------------------------------------------

/// Every entry under `root`: its path, size and modification time, sorted.
fn entries(root: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            all.extend(entries(&path));
        }
        all.push((path, meta.len(), meta.modified().unwrap()));
    }
    all.sort();
    all
}

/// How many entries under `root` are not directories (files, links, ...).
fn not_directories(root: &Path) -> u64 {
    std::fs::read_dir(root)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                not_directories(&path)
            } else {
                1
            }
        })
        .sum()
}

/// A claim `name` of `ns` on a new local volume (its directory on this host returned).
fn claim(ns: &str, name: &str) -> PathBuf {
    apply(&format!(
        "{volume}---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: {ns}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ''
  resources: {{requests: {{storage: 1Gi}}}}
",
        volume = volume_for(ns, name)
    ));
    volume_dir(ns, name)
}

/// Where the node keeps the local volume of claim `ns/name` (see [`volume_for`]).
fn volume_dir(ns: &str, name: &str) -> PathBuf {
    node()
        .state_dir()
        .join("volumes")
        .join(format!("{ns}-{name}"))
}

fn create(doc: serde_json::Value) {
    apply_json(&doc);
}

async fn pods_gone(ns: &str, selector: &str) {
    let client = plane().admin_client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let params = ListParams::default().labels(selector);
    eventually(
        Duration::from_secs(120),
        &format!("no Pods {selector}"),
        || {
            let pods = pods.clone();
            let params = params.clone();
            async move {
                pods.list(&params)
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_postgres_data_directory_is_backed_up_as_its_owner_and_restored_with_its_owners() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !support::needs_root("volume owners on a real node") {
        return;
    }
    // A restore that gives files back their owners runs as root with four capabilities:
    // the baseline Pod Security Standard allows that, restricted does not.
    let ns = namespace_under("e2e-volume", "baseline");
    operator();
    let password = "e2e-db-admin";
    secret(&ns, "db-admin", &[("password", password)]);
    let env = "[{name: PGDATA, value: /data/pgdata}, {name: POSTGRES_PASSWORD, valueFrom: {secretKeyRef: {name: db-admin, key: password}}}]";
    apply(&stateful(
        &ns,
        "db",
        999,
        5432,
        "[postgres-entrypoint]",
        env,
    ));
    let store = claim(&ns, "backup-store");
    rollout(&ns, "statefulset/db");
    let conninfo = format!(
        "host={} port=5432 user=postgres password={password} dbname=postgres",
        cluster_ip(&ns, "db")
    );
    pg_connect(&conninfo)
        .await
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, body text); \
             INSERT INTO notes SELECT i, md5(i::text) FROM generate_series(1, 2000) i",
        )
        .await
        .unwrap();
    // The data directory as the kubelet and PostgreSQL left it: the volume's root group-owned
    // by the fsGroup (setgid), the data only the server's user may read.
    let data = volume_dir(&ns, "data-db-0");
    let root_meta = std::fs::metadata(&data).unwrap();
    assert_eq!(
        root_meta.gid(),
        999,
        "fsGroup gave the volume's root its group"
    );
    assert_ne!(root_meta.mode() & 0o2000, 0, "and the setgid bit");
    let pgdata = std::fs::metadata(data.join("pgdata")).unwrap();
    assert_eq!((pgdata.uid(), pgdata.mode() & 0o777), (999, 0o700));

    // Stopped for a consistent copy, then backed up by a worker running as the owner, into a
    // store never used before (its root belongs to root: only the worker's fsGroup makes it
    // writable).
    kubectl(&["scale", "-n", &ns, "statefulset/db", "--replicas=0"]);
    pods_gone(&ns, "app=db").await;
    let store_meta = std::fs::metadata(&store).unwrap();
    assert_eq!((store_meta.uid(), store_meta.gid()), (0, 0));
    assert_eq!(store_meta.mode() & 0o002, 0, "not writable by others");
    // A schedule of the volume that never fires (its drill is turned on at the end); the
    // Backup, made by hand, is one of its runs (the label).
    create(serde_json::json!({
        "apiVersion": "coffer.dev/v1alpha1", "kind": "BackupSchedule",
        "metadata": {"name": "db-volume", "namespace": ns},
        "spec": {
            "schedule": "0 0 1 1 *",
            "source": {"volume": {"claimName": "data-db-0"}},
            "storage": {"filesystem": {"claimName": "backup-store"}},
            "jobTemplate": {"runAsUser": 999, "runAsGroup": 999},
        },
    }));
    create(serde_json::json!({
        "apiVersion": "coffer.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": "db-files", "namespace": ns,
            "labels": {"coffer.dev/schedule": "db-volume"}},
        "spec": {"scheduleRef": {"name": "db-volume"}},
    }));
    let backup: coffer::api::Backup = finished(&ns, "db-files").await;
    assert_eq!(
        phase(&backup).as_deref(),
        Some("Succeeded"),
        "{:?}",
        backup.status
    );

    // The worker's fsGroup went to the store only: the kubelet left the data, mounted
    // read-only, as it was.
    assert_eq!(std::fs::metadata(&store).unwrap().gid(), 65532);
    let root_after = std::fs::metadata(&data).unwrap();
    assert_eq!(
        (root_after.gid(), root_after.mode()),
        (root_meta.gid(), root_meta.mode()),
        "the backup changed the data volume's root"
    );
    let version = std::fs::metadata(data.join("pgdata/PG_VERSION")).unwrap();
    assert_eq!((version.uid(), version.gid()), (999, 999));

    // The data is lost; the restore puts every file back with its owner and mode. Its dry
    // run first says so, and writes nothing.
    std::fs::remove_dir_all(data.join("pgdata")).unwrap();
    create(serde_json::json!({
        "apiVersion": "coffer.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "db-files-preview", "namespace": ns},
        "spec": {"backupRef": {"name": "db-files"}, "volume": {"restoreOwners": true},
            "dryRun": true},
    }));
    let looked: coffer::api::RestoreRequest = finished(&ns, "db-files-preview").await;
    assert_eq!(phase(&looked).as_deref(), Some("Succeeded"), "{looked:?}");
    let preview = looked.status.unwrap().preview;
    let created: u64 = preview
        .iter()
        .find_map(|l| l.strip_prefix("created: "))
        .and_then(|l| l.split_once(" files (for example pgdata/"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{preview:?}"));
    for line in [
        "replaced: 0 files",
        "left alone: 0 files",
        "removed first: 0 files",
    ] {
        assert!(preview.iter().any(|l| l == line), "{line}: {preview:?}");
    }
    assert!(!data.join("pgdata").exists(), "the dry run wrote nothing");
    create(serde_json::json!({
        "apiVersion": "coffer.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "db-files-back", "namespace": ns},
        "spec": {"backupRef": {"name": "db-files"}, "volume": {"restoreOwners": true}},
    }));
    let restored: coffer::api::RestoreRequest = finished(&ns, "db-files-back").await;
    assert_eq!(
        phase(&restored).as_deref(),
        Some("Succeeded"),
        "{:?}",
        restored.status
    );
    let pgdata = std::fs::metadata(data.join("pgdata")).unwrap();
    assert_eq!(
        (pgdata.uid(), pgdata.gid(), pgdata.mode() & 0o777),
        (999, 999, 0o700)
    );
    assert_eq!(not_directories(&data), created, "as the dry run said");
    let version = std::fs::metadata(data.join("pgdata/PG_VERSION")).unwrap();
    assert_eq!(
        (version.uid(), version.permissions().mode() & 0o777),
        (999, 0o600)
    );

    // The server starts on the restored directory and has every row.
    kubectl(&["scale", "-n", &ns, "statefulset/db", "--replicas=1"]);
    rollout(&ns, "statefulset/db");
    let count: i64 = pg_connect(&conninfo)
        .await
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2000);

    // A restore drill of that backup: restored into the drill's own scratch directory in the
    // Coffer image (its Job mounts the store, never the data: the Job builder's tests), its
    // files counted against the manifest and paths of the user's checked.
    kubectl(&[
        "patch",
        "backupschedule",
        "db-volume",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"drill":{"every":1,"checks":{"paths":["pgdata/PG_VERSION","pgdata/base"]}}}}"#,
    ]);
    let client = plane().admin_client().await.unwrap();
    let backups: Api<coffer::api::Backup> = Api::namespaced(client, &ns);
    let drill = eventually(
        Duration::from_secs(300),
        "the drill of db-files",
        || async {
            let v = backups.get("db-files").await.ok()?.status?.verification?;
            (v.phase != coffer::api::VerificationPhase::Running).then_some(v)
        },
    )
    .await;
    assert_eq!(
        drill.phase,
        coffer::api::VerificationPhase::Verified,
        "{drill:?}\nworker logs: {}",
        kubectl(&[
            "logs",
            "-n",
            &ns,
            "-l",
            "coffer.dev/operation=drill",
            "--tail=50"
        ])
    );
    assert!(
        drill.restore_seconds.is_some() && drill.checks_passed >= 3 && drill.checks_failed == 0,
        "{drill:?}"
    );

    // Backups whose path check fails, backups that restore but lack files their manifests
    // count, and backups changed after they were stored fail their drills, naming what
    // differed (taken with the server stopped again, as a consistent copy of its files is).
    kubectl(&["scale", "-n", &ns, "statefulset/db", "--replicas=0"]);
    pods_gone(&ns, "app=db").await;
    let before = entries(&data);
    drills_that_must_fail(MustFail {
        ns: &ns,
        schedule: "db-volume",
        store: Store::Dir(&store),
        drill: r#"{"every":1}"#,
        failing_check: (
            r#"{"every":1,"checks":{"paths":["pgdata/no-such-file"]}}"#,
            "path pgdata/no-such-file",
        ),
        count_more: |manifest: &mut serde_json::Value| {
            let files = &mut manifest["stats"]["files"];
            let n = files.as_u64().unwrap();
            *files = (n + 1).into();
            vec![format!("files: {n}, the backup {}", n + 1)]
        },
    })
    .await;
    assert!(entries(&data) == before, "the drills left the data alone");
}

#[tokio::test]
async fn a_worker_told_to_stop_mid_backup_stops_in_time_and_leaves_no_manifest_nor_upload() {
    if !support::needs_root("SIGTERM to a worker on a real node") {
        return;
    }
    let ns = namespace("e2e-sigterm");
    operator();
    deploy_s3(&ns);
    // Enough incompressible data that the upload takes a while.
    let files = claim(&ns, "big");
    for i in 0..6 {
        let mut chunk = support::noise(64 << 20);
        chunk[0] = i;
        std::fs::write(files.join(format!("part-{i}.bin")), chunk).unwrap();
    }
    create(serde_json::json!({
        "apiVersion": "coffer.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": "big", "namespace": ns},
        "spec": {
            "source": {"volume": {"claimName": "big"}},
            "storage": {"s3": {
                "bucket": "backups", "prefix": "sigterm/", "region": "us-east-1",
                "endpoint": format!("http://minio.{ns}.svc:9000"), "forcePathStyle": true,
                "credentialsSecretRef": {"name": "s3-creds"},
            }},
            "compression": "none",
        },
    }));
    // Mid-backup, observed: a multipart upload is open at the store.
    let s3 = s3_client(&ns);
    eventually(Duration::from_secs(120), "an open multipart upload", || {
        let s3 = s3.clone();
        async move {
            let open = s3
                .list_multipart_uploads()
                .bucket("backups")
                .send()
                .await
                .ok()?;
            (!open.uploads().is_empty()).then_some(())
        }
    })
    .await;
    let client = plane().admin_client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let worker = pods
        .list(&ListParams::default().labels("job-name=big-backup"))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the worker's Pod");
    let grace = worker
        .spec
        .as_ref()
        .unwrap()
        .termination_grace_period_seconds
        .unwrap_or(30);
    let asked = std::time::Instant::now();
    pods.delete(&worker.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    pods_gone(&ns, "job-name=big-backup").await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(grace as u64),
        "the worker stopped in {took:?}, not within its grace period of {grace}s (it was killed)"
    );
    let uploads = s3
        .list_multipart_uploads()
        .bucket("backups")
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "open uploads left: {:?}",
        uploads.uploads()
    );
    let objects = s3
        .list_objects_v2()
        .bucket("backups")
        .prefix("sigterm/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        keys.iter().all(|k| !k.ends_with("manifest.json")),
        "a manifest was written: {keys:?}"
    );
    let backup: coffer::api::Backup = finished(&ns, "big").await;
    assert_eq!(
        phase(&backup).as_deref(),
        Some("Failed"),
        "{:?}",
        backup.status
    );
}

/// The packets of the containment rule that drops what would be forwarded from the bridge to
/// another interface.
fn contained_packets() -> u64 {
    let bridge = coffer_testenv::node_config::BRIDGE;
    let out = Command::new("iptables")
        .args([
            "-w",
            "5",
            "-t",
            "mangle",
            "-L",
            "COFFER-CONTAIN",
            "-v",
            "-x",
            "-n",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // pkts bytes target prot opt in out source destination
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 6 && f[2] == "DROP" && f[5] == bridge && f[6] == format!("!{bridge}"))
        .and_then(|f| f[0].parse().ok())
        .unwrap_or_else(|| panic!("no containment rule in:\n{text}"))
}

/// A network interface of this host that goes nowhere (a bridge without ports; this kernel
/// has no `dummy`), removed when dropped.
struct Dummy(&'static str);

impl Drop for Dummy {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).status();
    }
}

#[tokio::test]
async fn a_pod_that_routes_around_the_missing_default_route_is_still_contained() {
    if !support::needs_root("the containment firewall") {
        return;
    }
    // The "elsewhere": a dummy interface of this host, which swallows whatever is sent to it
    // (should the firewall fail, nothing leaves the machine either way).
    let _ = Command::new("ip")
        .args(["link", "del", "coffer-probe"])
        .status();
    let added = Command::new("sh")
        .args(["-c", "ip link add coffer-probe type bridge && ip addr add 10.234.0.1/24 dev coffer-probe && ip link set coffer-probe up"])
        .status()
        .unwrap();
    assert!(added.success());
    let _dummy = Dummy("coffer-probe");
    // A Pod allowed to change its own routes (the privileged standard, NET_ADMIN) adds one
    // to the dummy's network through the node.
    let ns = namespace_under("e2e-firewall", "privileged");
    let before = contained_packets();
    let script = r#"
ip route add 10.234.0.0/24 via 10.233.0.1 && echo "route: added"
timeout 3 bash -c 'exec 3<>/dev/tcp/10.234.0.2/80' 2>/dev/null && echo "elsewhere: REACHED" || echo "elsewhere: not reached"
"#;
    apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: router, namespace: {ns}}}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: router
    image: {image}
    imagePullPolicy: Never
    command: [bash, -c, {script:?}]
    securityContext: {{runAsUser: 0, capabilities: {{add: [NET_ADMIN]}}}}
",
        image = image("services"),
    ));
    let log = finished_pod_log(&ns, "router").await;
    assert!(log.contains("route: added"), "{log}");
    assert!(log.contains("elsewhere: not reached"), "{log}");
    let after = contained_packets();
    assert!(
        after > before,
        "the containment chain dropped nothing ({before} packets before, {after} after): the connection failed for another reason"
    );
}
