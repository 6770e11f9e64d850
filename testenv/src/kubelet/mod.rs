//! The process kubelet: a stand-in for a real kubelet that runs each Pod's first container
//! as a local process, so the real Job controller can complete Jobs without a container
//! runtime.
//!
//! It registers a Node, binds unscheduled Pods (in namespaces with a given label, or all) to
//! it, runs `command` + `args` with the container's `env` (plain values, `secretKeyRef`,
//! `configMapKeyRef`, `fieldRef` for the Pod's name, namespace and a few more, `envFrom`),
//! maps PersistentVolumeClaims, Secret, ConfigMap and emptyDir volumes to host directories
//! (paths in arguments and environment values are rewritten, see
//! [`container::process_spec`]), honours `activeDeadlineSeconds`, keeps stdout and stderr
//! for [`ProcessKubelet::pod_log`], and reports through `pods/status`: `Running`, then
//! `Succeeded` or `Failed` with the exit code and the termination message.
//!
//! A Pod that mounts a ServiceAccount token (the ServiceAccount admission plugin adds the
//! projected volume unless `automountServiceAccountToken: false`) gets a token bound to it
//! from the TokenRequest API and, since a process cannot have files at the in-cluster path,
//! a kubeconfig naming that token in `KUBECONFIG`. Pods without the volume get neither.
//!
//! Not simulated: restarts (a failed container fails its Pod), init and sidecar containers,
//! read-only mounts, resource limits, probes, user and security contexts.

mod container;
mod resolve;
mod status;

use std::collections::HashMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::{oneshot, watch};

use crate::control_plane::NODE_NAME;
use crate::process::{ChildGuard, spawn_tied, tied_command};
use crate::{Result, TestEnvError};

/// How the process kubelet chooses Pods and runs Coffer's image.
#[derive(Clone, Debug, Default)]
pub struct KubeletOptions {
    /// Only run Pods in namespaces carrying this label (with value `true`). `None`: all.
    pub namespace_label: Option<String>,
    /// The `coffer` binary that runs for Coffer's image. Default: `COFFER_BIN`, else the
    /// `coffer` next to the running executable (`target/debug/coffer` for test binaries).
    pub coffer_binary: Option<PathBuf>,
}

/// A running process kubelet; stopped (with every process it runs) when dropped.
#[derive(Debug)]
pub struct ProcessKubelet {
    root: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ProcessKubelet {
    /// Starts the kubelet in a thread of its own, acting as the admin of `kubeconfig`, with
    /// its Pods' files under `root`.
    pub fn start(kubeconfig: PathBuf, root: PathBuf, options: KubeletOptions) -> Result<Self> {
        std::fs::create_dir_all(&root)
            .map_err(TestEnvError::io("creating the kubelet's directory"))?;
        let coffer_binary = options.coffer_binary.clone().or_else(default_coffer_binary);
        let api_server = api_server(&kubeconfig)?;
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let kubelet = Kubelet {
            root: root.clone(),
            namespace_label: options.namespace_label,
            coffer_binary,
            api_server,
            running: Arc::default(),
            namespaces: Arc::default(),
        };
        let thread = std::thread::Builder::new()
            .name("process-kubelet".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(kubelet.run(kubeconfig, ready_tx, stopped)),
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("starting its runtime: {e}")));
                    }
                }
            })
            .map_err(TestEnvError::io("starting the process kubelet"))?;
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => Ok(Self {
                root,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(TestEnvError::ControlPlane(format!("process kubelet: {e}"))),
            Err(_) => Err(TestEnvError::ControlPlane(
                "process kubelet: not ready within 30s".to_owned(),
            )),
        }
    }

    /// What a Pod's container wrote to stdout and stderr (the newest run of that name).
    pub fn pod_log(&self, namespace: &str, pod: &str) -> Option<String> {
        std::fs::read(self.newest_pod_dir(namespace, pod)?.join("log"))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The process ID of a Pod's container while it runs (the newest run of that name), which
    /// is also the ID of the process group holding what the container started:
    /// fault-injection tests kill it as the node would (SIGKILL by the OOM killer).
    pub fn pod_pid(&self, namespace: &str, pod: &str) -> Option<u32> {
        std::fs::read_to_string(self.newest_pod_dir(namespace, pod)?.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The directory of the newest run of a Pod of that name.
    fn newest_pod_dir(&self, namespace: &str, pod: &str) -> Option<PathBuf> {
        let prefix = format!("{namespace}_{pod}_");
        let newest = std::fs::read_dir(self.root.join("pods"))
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?;
        Some(newest.path())
    }

    /// The host directory standing in for a PersistentVolumeClaim.
    pub fn claim_dir(&self, namespace: &str, claim: &str) -> PathBuf {
        resolve::claim_dir(&self.root, namespace, claim)
    }
}

impl Drop for ProcessKubelet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn default_coffer_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COFFER_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    // target/debug/coffer-dev-cluster or target/debug/deps/<test>-<hash>
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("coffer"))
        .find(|candidate| candidate.is_file())
}

/// Where Pods reach the API server.
#[derive(Clone, Debug)]
struct ApiServer {
    url: String,
    ca_file: PathBuf,
}

/// The API server of the kubelet's own kubeconfig.
fn api_server(kubeconfig: &Path) -> Result<ApiServer> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| {
        TestEnvError::ControlPlane(format!("reading {}: {e}", kubeconfig.display()))
    })?;
    let cluster = config
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| TestEnvError::ControlPlane("the kubeconfig names no cluster".to_owned()))?;
    match (cluster.server, cluster.certificate_authority) {
        (Some(url), Some(ca)) => Ok(ApiServer {
            url,
            ca_file: PathBuf::from(ca),
        }),
        _ => Err(TestEnvError::ControlPlane(
            "the kubeconfig's cluster has no server or certificate-authority file".to_owned(),
        )),
    }
}

/// Where a Pod with API access finds its ServiceAccount token, CA and namespace.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A running Pod's switch: `Some(grace)` once it is to stop (SIGTERM to its processes, and
/// SIGKILL if they still run after `grace`).
type Stop = watch::Sender<Option<Duration>>;

type Running = Arc<Mutex<HashMap<String, Stop>>>;

#[derive(Clone)]
struct Kubelet {
    root: PathBuf,
    namespace_label: Option<String>,
    coffer_binary: Option<PathBuf>,
    /// The API server's address and the CA file that verifies it, for Pods' in-cluster access.
    api_server: ApiServer,
    /// Pods whose process was started, by uid, with the switch that stops it.
    running: Running,
    /// Whether a namespace is served, by name.
    namespaces: Arc<Mutex<HashMap<String, bool>>>,
}

impl Kubelet {
    async fn run(
        self,
        kubeconfig: PathBuf,
        ready: std::sync::mpsc::Sender<std::result::Result<(), String>>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let client = match crate::control_plane::client_from_kubeconfig(&kubeconfig).await {
            Ok(client) => client,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        if let Err(e) = register_node(&client).await {
            let _ = ready.send(Err(format!("registering Node {NODE_NAME}: {e}")));
            return;
        }
        let _ = ready.send(Ok(()));
        let pods: Api<Pod> = Api::all(client.clone());
        let events = watcher(pods, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        let mut events = std::pin::pin!(events);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                event = events.next() => match event {
                    Some(Ok(pod)) => self.handle(&client, pod).await,
                    Some(Err(e)) => tracing::warn!("process kubelet: watching pods: {e}"),
                    None => break,
                },
            }
        }
        // Kill every process still running.
        for (_, kill) in self
            .running
            .lock()
            .map(|mut r| r.drain().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            stop_within(&kill, Duration::ZERO);
        }
    }

    async fn handle(&self, client: &kube::Client, pod: Pod) {
        let (Some(namespace), Some(name), Some(uid)) = (
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
            pod.metadata.uid.clone(),
        ) else {
            return;
        };
        if !self.serves(client, &namespace).await {
            return;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        if pod.metadata.deletion_timestamp.is_some() {
            // As a kubelet does: SIGTERM, and SIGKILL once the deletion's grace period ran out.
            let grace = Duration::from_secs(
                pod.metadata
                    .deletion_grace_period_seconds
                    .unwrap_or(0)
                    .max(0)
                    .unsigned_abs(),
            );
            let killed = self
                .running
                .lock()
                .ok()
                .and_then(|r| r.get(&uid).map(|stop| stop_within(stop, grace)))
                .unwrap_or(false);
            // A running process is killed and its task deletes the Pod; otherwise nothing
            // runs for it and it can go now.
            if !killed && node.as_deref() == Some(NODE_NAME) {
                force_delete(&pods, &name, &uid).await;
            }
            return;
        }
        match node.as_deref() {
            None => {
                if let Err(e) = bind(&pods, &name).await {
                    tracing::warn!("process kubelet: binding {namespace}/{name}: {e}");
                }
            }
            Some(NODE_NAME) => {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Succeeded") | Some("Failed")) {
                    return;
                }
                let (kill, killed) = watch::channel(None);
                {
                    let Ok(mut running) = self.running.lock() else {
                        return;
                    };
                    if running.contains_key(&uid) {
                        return;
                    }
                    running.insert(uid, kill);
                }
                let kubelet = self.clone();
                let client = client.clone();
                tokio::spawn(async move { kubelet.run_pod(client, pod, killed).await });
            }
            Some(_) => {}
        }
    }

    async fn serves(&self, client: &kube::Client, namespace: &str) -> bool {
        let Some(label) = &self.namespace_label else {
            return true;
        };
        if let Some(known) = self
            .namespaces
            .lock()
            .ok()
            .and_then(|n| n.get(namespace).copied())
        {
            return known;
        }
        let Ok(Some(ns)) = Api::<Namespace>::all(client.clone())
            .get_opt(namespace)
            .await
        else {
            return false;
        };
        let served = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(label))
            .is_some_and(|v| v == "true");
        if let Ok(mut namespaces) = self.namespaces.lock() {
            namespaces.insert(namespace.to_owned(), served);
        }
        served
    }

    async fn run_pod(
        self,
        client: kube::Client,
        pod: Pod,
        mut killed: watch::Receiver<Option<Duration>>,
    ) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let Some(container) = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .cloned()
        else {
            return;
        };
        let image = container.image.clone().unwrap_or_default();
        let pod_dir = self
            .root
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"));
        let _ = std::fs::create_dir_all(&pod_dir);

        // Wait for what the container needs, as a kubelet does (CreateContainerConfigError).
        let mut last_reason = String::new();
        let (spec, termination_file) = loop {
            match self.prepare(&client, &pod, &container, &pod_dir).await {
                Ok(ready) => break ready,
                Err(resolve::NotReady(reason)) => {
                    if reason != last_reason {
                        let patch = status::waiting(
                            &container.name,
                            &image,
                            "CreateContainerConfigError",
                            &reason,
                        );
                        patch_status(&pods, &name, patch).await;
                        last_reason = reason;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = killed.changed() => {
                            force_delete(&pods, &name, &uid).await;
                            return;
                        }
                    }
                }
            }
        };

        // Deleted while its container was being prepared: it never starts.
        if killed.borrow().is_some() {
            force_delete(&pods, &name, &uid).await;
            return;
        }
        let started_at = now();
        let log_path = pod_dir.join("log");
        let (exit_code, reason) = match spawn_container(&spec, &pod_dir, &log_path) {
            Err(e) => (128, Err(e.to_string())),
            Ok(child) => {
                // Tests find the process here to kill it as a node would (OOM, SIGKILL).
                let _ = std::fs::write(pod_dir.join("pid"), child.0.id().to_string());
                let running = status::running(&container.name, &image, &started_at);
                patch_status(&pods, &name, running).await;
                let spec = pod.spec.as_ref();
                let deadline = spec.and_then(|s| s.active_deadline_seconds);
                let grace = spec
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30);
                let (code, reason) = wait_for_exit(child, &killed, deadline, grace).await;
                (code, Ok(reason))
            }
        };
        let (reason, message) = match reason {
            Err(start_error) => ("StartError", start_error),
            Ok(reason) => {
                let fallback = container.termination_message_policy.as_deref()
                    == Some("FallbackToLogsOnError");
                let message = status::termination_message(
                    std::fs::read(&termination_file).ok().as_deref(),
                    &std::fs::read(&log_path).unwrap_or_default(),
                    exit_code,
                    fallback,
                );
                (reason, message)
            }
        };
        let end = status::Termination {
            exit_code,
            reason,
            message,
            started_at,
            finished_at: now(),
        };
        patch_status(
            &pods,
            &name,
            status::terminated(&container.name, &image, &end),
        )
        .await;
        // Whether the Pod is to go is decided under the lock that `handle` takes to stop
        // it: either it saw this task still there (and left the deletion to it, as read
        // here), or it saw the task gone (and deletes the Pod itself).
        drop(killed);
        let stopped = self
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&uid).map(|stop| stop.borrow().is_some()))
            .unwrap_or(false);
        if stopped {
            force_delete(&pods, &name, &uid).await;
        }
    }

    async fn prepare(
        &self,
        client: &kube::Client,
        pod: &Pod,
        container: &k8s_openapi::api::core::v1::Container,
        pod_dir: &Path,
    ) -> std::result::Result<(container::ProcessSpec, PathBuf), resolve::NotReady> {
        let env = resolve::environment(client, pod, container).await?;
        let mut mounts = resolve::mounts(client, pod, container, &self.root, pod_dir).await?;
        let termination_file = pod_dir.join("termination-log");
        let _ = std::fs::write(&termination_file, b"");
        mounts.push(container::Mount {
            container_path: container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".to_owned()),
            host_path: termination_file.clone(),
        });
        let mut env = env;
        if let Some(account) = mounts
            .iter()
            .find(|m| m.container_path == SERVICE_ACCOUNT_DIR)
        {
            env.extend(self.in_cluster_access(&account.host_path, pod_dir)?);
        }
        let spec = container::process_spec(container, &env, &mounts, self.coffer_binary.as_deref())
            .map_err(resolve::NotReady)?;
        Ok((spec, termination_file))
    }
}

impl Kubelet {
    /// A Pod that mounts a ServiceAccount token reaches the API server as that account. A
    /// process cannot see the token at its in-cluster path, so a kubeconfig with the same
    /// server, CA and token file is written for it and named in `KUBECONFIG` (clients try
    /// that before the in-cluster files); `KUBERNETES_SERVICE_HOST`/`PORT` are set as a
    /// kubelet sets them.
    fn in_cluster_access(
        &self,
        account_dir: &Path,
        pod_dir: &Path,
    ) -> std::result::Result<Vec<(String, String)>, resolve::NotReady> {
        let kubeconfig = pod_dir.join("in-cluster.kubeconfig");
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": self.api_server.url,
                "certificate-authority": self.api_server.ca_file,
            }}],
            "users": [{"name": "service-account", "user": {
                "tokenFile": account_dir.join("token"),
            }}],
            "contexts": [{"name": "in-cluster", "context": {
                "cluster": "in-cluster",
                "user": "service-account",
                "namespace": std::fs::read_to_string(account_dir.join("namespace")).unwrap_or_default(),
            }}],
            "current-context": "in-cluster",
        });
        std::fs::write(&kubeconfig, config.to_string())
            .map_err(|e| resolve::NotReady(format!("writing {}: {e}", kubeconfig.display())))?;
        let (host, port) = self
            .api_server
            .url
            .trim_start_matches("https://")
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.to_owned()))
            .unwrap_or_else(|| (self.api_server.url.clone(), "443".to_owned()));
        Ok(vec![
            ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
            ("KUBERNETES_SERVICE_HOST".to_owned(), host),
            ("KUBERNETES_SERVICE_PORT".to_owned(), port),
        ])
    }
}

/// Starts the container's process with its output going to `log`.
fn spawn_container(
    spec: &container::ProcessSpec,
    pod_dir: &Path,
    log: &Path,
) -> Result<ChildGuard> {
    let out = std::fs::File::create(log).map_err(TestEnvError::io("creating the pod log"))?;
    let err = out
        .try_clone()
        .map_err(TestEnvError::io("creating the pod log"))?;
    let mut command = tied_command(&spec.argv[0]);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", pod_dir)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(pod_dir)
        // A process group per container: killing it kills what the container started too,
        // as the end of a container's PID namespace does.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    Ok(ChildGuard(spawn_tied(&spec.argv[0], command)?))
}

/// Waits for the process to exit, stopping it when the Pod is deleted or its
/// `activeDeadlineSeconds` pass: SIGTERM to its process group, then SIGKILL once the grace
/// period (the deletion's, or the Pod's `terminationGracePeriodSeconds` for a deadline) ran
/// out. Returns the exit code (128 + signal for a killed process) and the reason Kubernetes
/// would give.
async fn wait_for_exit(
    mut child: ChildGuard,
    killed: &watch::Receiver<Option<Duration>>,
    active_deadline_seconds: Option<i64>,
    termination_grace_seconds: i64,
) -> (i32, &'static str) {
    let deadline = active_deadline_seconds
        .map(|s| Instant::now() + Duration::from_secs(s.max(0).unsigned_abs()));
    let pid = child.0.id();
    let mut reason = None;
    // When SIGTERM was sent, and how long the process then has.
    let mut stopping: Option<(Instant, Duration)> = None;
    let exit = loop {
        if let Ok(Some(exit)) = child.0.try_wait() {
            break exit;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) && stopping.is_none() {
            reason.get_or_insert("DeadlineExceeded");
            let grace = Duration::from_secs(termination_grace_seconds.max(0).unsigned_abs());
            stopping = Some((Instant::now(), grace));
            signal_group(pid, "TERM");
        }
        if let Some(grace) = *killed.borrow() {
            match &mut stopping {
                None => {
                    stopping = Some((Instant::now(), grace));
                    signal_group(pid, "TERM");
                }
                // A later deletion may shorten the grace period (a forced one ends it).
                Some((_, left)) => *left = (*left).min(grace),
            }
        }
        if let Some((since, grace)) = stopping
            && since.elapsed() >= grace
        {
            reason.get_or_insert("Killed");
            signal_group(pid, "KILL");
            let _ = child.0.kill();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let code = exit
        .code()
        .unwrap_or_else(|| 128 + exit.signal().unwrap_or(9));
    (
        code,
        reason.unwrap_or(if code == 0 { "Completed" } else { "Error" }),
    )
}

/// Tells a running Pod to stop within `grace` (or sooner, if it was told so already);
/// whether it was still running.
fn stop_within(stop: &Stop, grace: Duration) -> bool {
    stop.send_if_modified(|current| match current {
        Some(old) if *old <= grace => false,
        _ => {
            *current = Some(grace);
            true
        }
    });
    !stop.is_closed()
}

/// Sends `signal` (a name, such as `TERM`) to the process group `pgid`: a container's
/// processes, as the end of its PID namespace would reach them all.
fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{signal}"), "--".to_owned(), format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

async fn register_node(client: &kube::Client) -> std::result::Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(NODE_NAME.to_owned()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", NODE_NAME),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", "amd64"),
                    ("coffer.dev/process-kubelet", "true"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    if nodes.get_opt(NODE_NAME).await?.is_none() {
        nodes.create(&PostParams::default(), &node).await?;
    }
    let at = now();
    let status = json!({"status": {
        "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "process kubelet is running", "lastHeartbeatTime": at, "lastTransitionTime": at,
        }],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE_NAME}],
        "nodeInfo": {
            "architecture": "amd64", "operatingSystem": "linux", "osImage": "process kubelet",
            "kernelVersion": "", "containerRuntimeVersion": "process://", "kubeletVersion": "v0.0.0",
            "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
        },
    }});
    nodes
        .patch_status(NODE_NAME, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

async fn bind(pods: &Api<Pod>, name: &str) -> std::result::Result<(), kube::Error> {
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(NODE_NAME.to_owned()),
            ..ObjectReference::default()
        },
    };
    match pods
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already bound (a second event for the same Pod).
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes a Pod's status; like a kubelet, it keeps trying (for two minutes) while the API
/// server cannot be reached or is not ready, so that a restart of it loses no result.
async fn patch_status(pods: &Api<Pod>, name: &str, patch: serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let e = match pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(e) => e,
        };
        let transient = match &e {
            kube::Error::Api(status) => status.code >= 500 || status.code == 429,
            _ => true,
        };
        if !transient || Instant::now() >= deadline {
            tracing::warn!("process kubelet: updating the status of pod {name}: {e}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deletes a Pod at once, as a kubelet does once its containers are gone.
async fn force_delete(pods: &Api<Pod>, name: &str, uid: &str) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let _ = pods.delete(name, &params).await;
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
