//! A real Kubernetes control plane on loopback: etcd, kube-apiserver (TLS, token
//! authentication, RBAC, service-account tokens) and kube-controller-manager (Job, garbage
//! collector, TTL-after-finished and the controllers a namespace needs), plus the
//! [process kubelet](crate::kubelet) that runs Pods as local processes.
//!
//! The binaries come from `tools/k8s/build` (in `.cache/k8s/bin`, or `COFFER_K8S_BIN`).
//! Tests share one control plane per test binary ([`ControlPlane::global`]), each in its own
//! namespace ([`ControlPlane::namespace`]). Every process is started so that the kernel kills
//! it when the test binary exits, however it exits.

mod clients;
mod namespace;
mod pki;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use namespace::TestNamespace;

use crate::kubelet::{KubeletOptions, ProcessKubelet};
use crate::node::{self, NodeInputs, RealNode, config::NODE_IP};
use crate::process::{ChildGuard, free_port, log_tail, random_token, spawn_tied, tied_command};
use crate::{Result, TestEnvError};

/// Label carried by every namespace made by [`ControlPlane::namespace`]; the process kubelet
/// of [`ControlPlane::global`] only runs Pods in namespaces that have it.
pub const TEST_NAMESPACE_LABEL: &str = "coffer.dev/test";

/// Non-admin users the API server knows (token authentication). They have no permissions
/// until a test binds a Role or ClusterRole to them, which is how tests prove that a set of
/// RBAC rules is enough.
pub const USERS: [&str; 3] = ["coffer-operator", "coffer-user", "coffer-viewer"];

/// The name of the Node the process kubelet registers.
pub const NODE_NAME: &str = "coffer-process-kubelet";

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The identities of a real node's programs (token authentication), bound by the API
/// server's default RBAC (the kubelet's by the Node authorizer).
const NODE_USERS: [(&str, &str); 3] = [
    ("system:node:coffer-node", "system:nodes"),
    ("system:kube-proxy", ""),
    ("system:kube-scheduler", ""),
];

/// A control plane shared by a test binary's tests (or why it could not start).
type Shared = OnceLock<std::result::Result<ControlPlane, String>>;

/// What to start besides etcd, kube-apiserver and kube-controller-manager.
#[derive(Clone, Debug, Default)]
pub struct ControlPlaneOptions {
    /// Run the process kubelet. `None`: no kubelet (Pods stay Pending).
    pub kubelet: Option<KubeletOptions>,
    /// Keep the directory (certificates, logs, etcd data) when dropped.
    pub keep_dir: bool,
    /// Run a [real node](crate::RealNode) (containerd, kubelet, kube-proxy, CoreDNS) and the
    /// scheduler instead of the process kubelet; the API server then listens on the node's
    /// address on the project's bridge, where Pods reach it. Needs root.
    pub real_node: bool,
}

/// A running control plane. Dropping it stops every process it started.
#[derive(Debug)]
pub struct ControlPlane {
    // etcd, kube-apiserver, kube-controller-manager; the API server can be restarted.
    processes: Mutex<Vec<ChildGuard>>,
    etcd_port: u16,
    api_port: u16,
    kubelet: Option<ProcessKubelet>,
    node: Option<RealNode>,
    host: &'static str,
    server: String,
    tokens: BTreeMap<String, String>,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl ControlPlane {
    /// The control plane shared by every test of this test binary, started on first use
    /// with a process kubelet for namespaces labelled [`TEST_NAMESPACE_LABEL`]. It lives
    /// until the test binary exits.
    pub fn global() -> Result<&'static ControlPlane> {
        static GLOBAL: Shared = OnceLock::new();
        Self::shared(
            &GLOBAL,
            ControlPlaneOptions {
                kubelet: Some(KubeletOptions {
                    namespace_label: Some(TEST_NAMESPACE_LABEL.to_owned()),
                    coffer_binary: None,
                }),
                keep_dir: false,
                real_node: false,
            },
        )
    }

    /// The control plane shared by every test of this test binary with a [real
    /// node](crate::RealNode) (and the scheduler) instead of the process kubelet, started on
    /// first use. Only one real node runs on a machine: a second test binary waits for the
    /// first one's node to be torn down.
    pub fn real_node_global() -> Result<&'static ControlPlane> {
        static GLOBAL: Shared = OnceLock::new();
        Self::shared(
            &GLOBAL,
            ControlPlaneOptions {
                kubelet: None,
                keep_dir: false,
                real_node: true,
            },
        )
    }

    /// The control plane in `cell`, started with `options` on first use (its directory kept
    /// with `COFFER_TEST_KEEP=1`, else removed once this process has exited).
    fn shared(cell: &'static Shared, options: ControlPlaneOptions) -> Result<&'static Self> {
        cell.get_or_init(|| {
            let options = ControlPlaneOptions {
                keep_dir: std::env::var_os("COFFER_TEST_KEEP").is_some_and(|v| v == "1"),
                ..options
            };
            let plane = ControlPlane::start(options).map_err(|e| e.to_string())?;
            if plane._temp.is_some() {
                remove_when_gone(&plane.dir);
            }
            Ok(plane)
        })
        .as_ref()
        .map_err(|e| TestEnvError::ControlPlane(e.clone()))
    }

    /// Starts a new control plane in a new temporary directory.
    pub fn start(options: ControlPlaneOptions) -> Result<Self> {
        let started = Instant::now();
        let bin = bin_dir()?;
        if !options.keep_dir {
            remove_stale_dirs();
        }
        let temp = tempfile::Builder::new()
            .prefix(&format!("coffer-cp-{}-", std::process::id()))
            .tempdir()
            .map_err(TestEnvError::io("creating the control plane's directory"))?;
        let dir = temp.path().to_owned();
        let temp = if options.keep_dir {
            let _ = temp.keep();
            None
        } else {
            Some(temp)
        };

        let pki = pki::Pki::generate()
            .map_err(|e| TestEnvError::ControlPlane(format!("generating certificates: {e}")))?;
        write(&dir.join("ca.crt"), &pki.ca_cert)?;
        write(&dir.join("apiserver.crt"), &pki.serving_cert)?;
        write(&dir.join("apiserver.key"), &pki.serving_key)?;
        write(&dir.join("sa.key"), &pki.service_account_key)?;
        write(&dir.join("sa.pub"), &pki.service_account_public_key)?;
        write(&dir.join("kubelet-client.crt"), &pki.kubelet_client_cert)?;
        write(&dir.join("kubelet-client.key"), &pki.kubelet_client_key)?;

        let mut tokens = BTreeMap::new();
        let mut csv = String::new();
        let node_users: &[(&str, &str)] = if options.real_node { &NODE_USERS } else { &[] };
        for (user, groups) in std::iter::once(("admin", "system:masters"))
            .chain(USERS.iter().map(|u| (*u, "coffer:test-users")))
            .chain(node_users.iter().copied())
        {
            let token = random_token();
            csv.push_str(&format!("{token},{user},{user},\"{groups}\"\n"));
            tokens.insert(user.to_owned(), token);
        }
        write(&dir.join("tokens.csv"), &csv)?;

        // The real node's claim (one per machine) and bridge come first: the API server
        // listens on the bridge (Pods may reach only its port and DNS there).
        let api_port = free_port()?;
        let claim = if options.real_node {
            // Outside the control plane's directory, which is removed when this process
            // exits, maybe before the node's watcher has torn it down; on disk (images and
            // containers' files), root's only.
            let state = Path::new(node::STATE_ROOT).join(std::process::id().to_string());
            Some(RealNode::prepare(&state, &bin, api_port)?)
        } else {
            None
        };
        let host = if options.real_node {
            NODE_IP
        } else {
            "127.0.0.1"
        };
        let mut processes = Vec::new();
        let etcd_port = free_port()?;
        processes.push(start_etcd(&bin, &dir, etcd_port)?);
        processes.push(start_apiserver(&bin, &dir, etcd_port, host, api_port)?);
        let server = format!("https://{host}:{api_port}");
        let mut plane = Self {
            processes: Mutex::new(processes),
            etcd_port,
            api_port,
            kubelet: None,
            node: None,
            host,
            server,
            tokens,
            dir,
            _temp: temp,
        };
        for user in plane.tokens.keys() {
            clients::write_kubeconfig(
                &plane.kubeconfig_path(user),
                &plane.server,
                &plane.dir.join("ca.crt"),
                user,
                &plane.tokens[user],
            )?;
        }
        plane.wait_ready()?;
        let controllers = if options.real_node { "*" } else { CONTROLLERS };
        let kcm = start_controller_manager(&bin, &plane.dir, &plane.kubeconfig(), controllers)?;
        plane
            .processes
            .get_mut()
            .map_err(|_| TestEnvError::ControlPlane("a poisoned lock".to_owned()))?
            .push(kcm);
        if let Some(claim) = claim {
            let scheduler = start_scheduler(
                &bin,
                &plane.dir,
                &plane.kubeconfig_path("system:kube-scheduler"),
            )?;
            plane
                .processes
                .get_mut()
                .map_err(|_| TestEnvError::ControlPlane("a poisoned lock".to_owned()))?
                .push(scheduler);
            plane.node = Some(RealNode::start(
                claim,
                NodeInputs {
                    bin: &bin,
                    ca: &plane.dir.join("ca.crt"),
                    node_kubeconfig: plane
                        .kubeconfig_path(&format!("system:node:{}", node::config::NODE_NAME)),
                    proxy_kubeconfig: plane.kubeconfig_path("system:kube-proxy"),
                    dns_kubeconfig: plane.kubeconfig(),
                    admin_kubeconfig: plane.kubeconfig(),
                },
            )?);
        }
        if let Some(kubelet) = options.kubelet {
            plane.kubelet = Some(ProcessKubelet::start(
                plane.kubeconfig(),
                plane.dir.join("kubelet"),
                kubelet,
            )?);
        }
        tracing::info!(
            server = %plane.server,
            dir = %plane.dir.display(),
            "control plane ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(plane)
    }

    /// Stops kube-apiserver, waits `down`, and starts it again on the same port and etcd (the
    /// cluster's state survives), returning once it is ready: an API server restarted under
    /// running clients, as in an upgrade of the control plane.
    pub fn restart_apiserver(&self, down: Duration) -> Result<()> {
        let bin = bin_dir()?;
        let mut processes = self
            .processes
            .lock()
            .map_err(|_| TestEnvError::ControlPlane("a poisoned lock".to_owned()))?;
        let Some(apiserver) = processes.get_mut(1) else {
            return Err(TestEnvError::ControlPlane(
                "no API server to restart".to_owned(),
            ));
        };
        let _ = apiserver.0.kill();
        let _ = apiserver.0.wait();
        std::thread::sleep(down);
        processes[1] = start_apiserver(&bin, &self.dir, self.etcd_port, self.host, self.api_port)?;
        drop(processes);
        self.wait_ready()
    }

    /// The API server's URL, for example `https://127.0.0.1:40123`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The directory holding certificates, kubeconfigs and each component's log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig for the admin (group `system:masters`), for kubectl and helm.
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig_path("admin")
    }

    /// A kubeconfig for one of the non-admin [`USERS`].
    pub fn user_kubeconfig(&self, user: &str) -> Result<PathBuf> {
        if !USERS.contains(&user) {
            return Err(TestEnvError::ControlPlane(format!(
                "unknown test user {user:?}; the API server knows {USERS:?}"
            )));
        }
        Ok(self.kubeconfig_path(user))
    }

    fn kubeconfig_path(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.kubeconfig"))
    }

    /// A client acting as the admin, bound to the current tokio runtime. Make a new one in
    /// each test: a client cannot outlive the runtime it was made in.
    pub async fn admin_client(&self) -> Result<kube::Client> {
        clients::from_kubeconfig(&self.kubeconfig()).await
    }

    /// A client acting as one of the non-admin [`USERS`].
    pub async fn user_client(&self, user: &str) -> Result<kube::Client> {
        clients::from_kubeconfig(&self.user_kubeconfig(user)?).await
    }

    /// A client acting as a ServiceAccount (created if missing) with a token from the
    /// TokenRequest API, as a Pod running under that ServiceAccount would have.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client> {
        clients::service_account(self, namespace, name).await
    }

    /// A new namespace for one test, labelled [`TEST_NAMESPACE_LABEL`], with its `default`
    /// ServiceAccount ready. It is deleted when the handle is dropped, unless
    /// `COFFER_TEST_KEEP=1`.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        TestNamespace::create(self, prefix).await
    }

    /// What the containers of a Pod wrote to stdout and stderr, as the process kubelet
    /// captured it (`None` if it never ran the Pod).
    pub fn pod_log(&self, namespace: &str, pod: &str) -> Option<String> {
        self.kubelet.as_ref()?.pod_log(namespace, pod)
    }

    /// The process ID of a Pod's running container (`None` if it never ran the Pod).
    pub fn pod_pid(&self, namespace: &str, pod: &str) -> Option<u32> {
        self.kubelet.as_ref()?.pod_pid(namespace, pod)
    }

    /// The real node, when the control plane runs one.
    pub fn real_node(&self) -> Option<&RealNode> {
        self.node.as_ref()
    }

    /// The directory the process kubelet maps a PersistentVolumeClaim to.
    pub fn claim_dir(&self, namespace: &str, claim: &str) -> Option<PathBuf> {
        Some(self.kubelet.as_ref()?.claim_dir(namespace, claim))
    }

    fn wait_ready(&self) -> Result<()> {
        let kubeconfig = self.kubeconfig();
        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = clients::block_on(async move {
            let client = clients::from_kubeconfig(&kubeconfig).await?;
            loop {
                let request = http::Request::get("/readyz").body(Vec::new());
                if let Ok(request) = request
                    && matches!(client.request_text(request).await.as_deref(), Ok("ok"))
                {
                    return Ok(true);
                }
                if Instant::now() > deadline {
                    return Ok(false);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })?;
        if ready {
            return Ok(());
        }
        let log = self.dir.join("kube-apiserver.log");
        Err(TestEnvError::NotReady {
            service: "kube-apiserver",
            seconds: READY_TIMEOUT.as_secs(),
            tail: log_tail(&log),
            log,
        })
    }
}

/// A client from a kubeconfig file, bound to the current tokio runtime.
pub(crate) async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    clients::from_kubeconfig(path).await
}

/// Where the control plane's binaries are: `COFFER_K8S_BIN`, or `.cache/k8s/bin` in the
/// workspace. Each missing binary is an error saying how to build it.
pub fn bin_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("COFFER_K8S_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/k8s/bin"));
    for binary in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        if !dir.join(binary).is_file() {
            return Err(TestEnvError::ControlPlane(format!(
                "{binary} is not built in {}: run tools/k8s/build (./scripts/test runs it)",
                dir.display()
            )));
        }
    }
    Ok(dir)
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn write(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(TestEnvError::io(format!("writing {}", path.display())))
}

fn log_file(dir: &Path, name: &str) -> Result<(std::fs::File, PathBuf)> {
    let path = dir.join(format!("{name}.log"));
    // Appended to: a restarted component keeps its earlier log.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(TestEnvError::io(format!("creating {}", path.display())))?;
    Ok((file, path))
}

pub(crate) fn spawn_logged(
    what: &str,
    mut command: std::process::Command,
    dir: &Path,
) -> Result<(ChildGuard, PathBuf)> {
    let (log, path) = log_file(dir, what)?;
    let stderr = log
        .try_clone()
        .map_err(TestEnvError::io("duplicating a log file"))?;
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr);
    Ok((ChildGuard(spawn_tied(what, command)?), path))
}

fn start_etcd(bin: &Path, dir: &Path, client_port: u16) -> Result<ChildGuard> {
    let peer_port = free_port()?;
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut command = tied_command(bin.join("etcd"));
    command
        .arg("--name=coffer-test")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=coffer-test={peer}"))
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    let (mut process, log) = spawn_logged("etcd", command, dir)?;
    let healthy = crate::process::wait_until(READY_TIMEOUT, || {
        process.is_running() && etcd_healthy(client_port)
    });
    if !healthy {
        return Err(TestEnvError::NotReady {
            service: "etcd",
            seconds: READY_TIMEOUT.as_secs(),
            tail: log_tail(&log),
            log,
        });
    }
    Ok(process)
}

fn etcd_healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.contains("\"health\":\"true\"")
}

fn start_apiserver(
    bin: &Path,
    dir: &Path,
    etcd_port: u16,
    host: &str,
    port: u16,
) -> Result<ChildGuard> {
    let file = |name: &str| dir.join(name).display().to_string();
    let mut command = tied_command(bin.join("kube-apiserver"));
    if host == NODE_IP {
        // A real node: the Node authorizer for the kubelet's identity, the kubelet reached by
        // its address (never a name looked up in the machine's DNS) with a client
        // certificate, and the `kubernetes` Service's endpoints kept (Pods use it).
        command
            .arg("--authorization-mode=Node,RBAC")
            .arg("--kubelet-preferred-address-types=InternalIP")
            .arg(format!(
                "--kubelet-client-certificate={}",
                file("kubelet-client.crt")
            ))
            .arg(format!(
                "--kubelet-client-key={}",
                file("kubelet-client.key")
            ));
    } else {
        command
            .arg("--authorization-mode=RBAC")
            .arg("--endpoint-reconciler-type=none");
    }
    command
        .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
        .arg(format!("--bind-address={host}"))
        .arg(format!("--advertise-address={host}"))
        .arg(format!("--secure-port={port}"))
        .arg(format!("--tls-cert-file={}", file("apiserver.crt")))
        .arg(format!("--tls-private-key-file={}", file("apiserver.key")))
        .arg(format!("--client-ca-file={}", file("ca.crt")))
        .arg(format!("--token-auth-file={}", file("tokens.csv")))
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!("--service-account-key-file={}", file("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            file("sa.key")
        ))
        .arg(format!(
            "--service-cluster-ip-range={}",
            node::config::SERVICE_CIDR
        ))
        .arg("--enable-priority-and-fairness=false")
        .arg("--profiling=false")
        .arg(format!("--cert-dir={}", file("apiserver-certs")))
        .arg("--v=1");
    Ok(spawn_logged("kube-apiserver", command, dir)?.0)
}

/// The controllers a test cluster needs: Jobs and their Pods, garbage collection of owned
/// objects, TTL after finished, namespaces and their default ServiceAccount, and the
/// Deployment/ReplicaSet/StatefulSet controllers that scaling (quiesce) relies on, and the
/// `kube-root-ca.crt` ConfigMap that Pods with a ServiceAccount token mount.
const CONTROLLERS: &str = "job-controller,garbage-collector-controller,ttl-after-finished-controller,\
namespace-controller,serviceaccount-controller,deployment-controller,replicaset-controller,\
statefulset-controller,root-ca-cert-publisher";

fn start_controller_manager(
    bin: &Path,
    dir: &Path,
    kubeconfig: &Path,
    controllers: &str,
) -> Result<ChildGuard> {
    let mut command = tied_command(bin.join("kube-controller-manager"));
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--controllers={controllers}"))
        .arg("--leader-elect=false")
        .arg(format!("--root-ca-file={}", dir.join("ca.crt").display()))
        .arg("--secure-port=0")
        .arg("--concurrent-job-syncs=5")
        .arg("--v=1");
    let (mut process, log) = spawn_logged("kube-controller-manager", command, dir)?;
    // It has no health endpoint with --secure-port=0: give it a moment to fail on bad flags.
    std::thread::sleep(Duration::from_millis(300));
    if !process.is_running() {
        return Err(TestEnvError::ControlPlane(format!(
            "kube-controller-manager exited at start; its log {} ends with: {}",
            log.display(),
            log_tail(&log)
        )));
    }
    Ok(process)
}

/// The scheduler of a real node's cluster, as its own user (`system:kube-scheduler`, which the
/// API server's default RBAC binds).
fn start_scheduler(bin: &Path, dir: &Path, kubeconfig: &Path) -> Result<ChildGuard> {
    let mut command = tied_command(bin.join("kube-scheduler"));
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--secure-port=0")
        .arg("--leader-elect=false")
        .arg("--v=1");
    Ok(spawn_logged("kube-scheduler", command, dir)?.0)
}

/// Removes `dir` once this process has exited: the global control plane is never dropped,
/// so a small shell watches this process and cleans up after it.
fn remove_when_gone(dir: &Path) {
    let script = r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done; rm -rf -- "$1""#;
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Removes the directories of control planes whose test binary is gone (a test binary that
/// exits never drops its global control plane).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("coffer-cp-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
