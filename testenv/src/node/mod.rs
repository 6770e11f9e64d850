//! A real node: containerd, runc and CNI from Debian, the kubelet, kube-proxy and CoreDNS
//! built from the pinned modules (`tools/k8s/build`), and images built here
//! (`tools/images/build`) imported into containerd. Pods run in real containers on the
//! project's own bridge, with Services and cluster DNS; nothing they send leaves the machine
//! (see [`network`]).
//!
//! One real node runs on a machine at a time ([`claim`]); it is torn down, whatever way its
//! owner exits, by `teardown.sh`.

pub(crate) mod claim;
pub mod config;
pub(crate) mod network;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::control_plane::{spawn_logged, write};
use crate::process::{ChildGuard, free_port, log_tail, run, tied_command};
use crate::{Result, TestEnvError};
use claim::Claim;
use config::{CGROUP_ROOT, NODE_IP};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Where real nodes keep their state, one directory per owning process (root's only).
pub const STATE_ROOT: &str = "/var/lib/coffer-node";

/// Kernel settings the kubelet, kube-proxy or the CNI bridge plugin change (the kubelet's
/// "kernel tunables", the global `ip_forward` that the bridge plugin sets for a gateway) or
/// that the node needs: recorded before the node starts and put back by the teardown.
const SYSCTLS: [&str; 10] = [
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
];

/// Paths outside the state directory that the kubelet, CNI or containerd write to; the
/// teardown removes those that did not exist before the node started.
const FIXED_PLACES: [&str; 4] = [
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/lib/cni",
    "/run/containerd",
];

/// The images `tools/images/build` made, by short name (`pause`, `coffer`, `services`):
/// the image reference and its archive.
pub fn built_images() -> Result<BTreeMap<String, (String, PathBuf)>> {
    let dir = std::env::var_os("COFFER_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::control_plane::workspace_root().join(".cache/images"));
    let index = dir.join("index");
    let text = std::fs::read_to_string(&index).map_err(|_| {
        TestEnvError::ControlPlane(format!(
            "no images in {}: run tools/images/build (./scripts/test runs it)",
            dir.display()
        ))
    })?;
    let mut images = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(short), Some(reference), Some(file)) =
            (fields.next(), fields.next(), fields.next())
        {
            images.insert(
                short.to_owned(),
                (reference.to_owned(), PathBuf::from(file)),
            );
        }
    }
    for short in ["pause", "coffer", "services"] {
        if !images.get(short).is_some_and(|(_, file)| file.is_file()) {
            return Err(TestEnvError::ControlPlane(format!(
                "the {short} image is missing from {}: run tools/images/build",
                index.display()
            )));
        }
    }
    Ok(images)
}

/// What [`RealNode::start`] needs from the control plane.
pub(crate) struct NodeInputs<'a> {
    pub bin: &'a Path,
    pub ca: &'a Path,
    pub node_kubeconfig: PathBuf,
    pub proxy_kubeconfig: PathBuf,
    pub dns_kubeconfig: PathBuf,
    pub admin_kubeconfig: PathBuf,
}

/// The running node. Dropping it tears it down.
#[derive(Debug)]
pub struct RealNode {
    // Dropped first: the node's programs (the teardown would kill them anyway).
    processes: Vec<(&'static str, ChildGuard)>,
    images: BTreeMap<String, String>,
    state: PathBuf,
    claim: Claim,
}

impl RealNode {
    /// Claims the machine's one real node for `state` and creates the bridge (the API
    /// server must bind to the node's address before the node starts).
    pub(crate) fn prepare(state: &Path, bin: &Path, api_port: u16) -> Result<Claim> {
        for (program, package) in [
            ("containerd", "containerd"),
            ("runc", "runc"),
            ("ctr", "containerd"),
            ("mount", "mount"),
        ] {
            crate::find_program(program, package, &[])?;
        }
        if !Path::new("/usr/lib/cni/bridge").is_file() {
            return Err(TestEnvError::ControlPlane(
                "the CNI plugins are missing: apt-get install containernetworking-plugins"
                    .to_owned(),
            ));
        }
        if !is_root() {
            return Err(TestEnvError::ControlPlane(
                "a real node needs root (containers, mounts, the bridge, iptables): run the tests as root".to_owned(),
            ));
        }
        let claim = Claim::acquire(state, &bin.join("kube-proxy"))?;
        let preexisting: String = FIXED_PLACES
            .iter()
            .filter(|p| Path::new(p).exists())
            .map(|p| format!("{p}\n"))
            .collect();
        write(&state.join("preexisting"), &preexisting)?;
        let sysctls: String = SYSCTLS
            .iter()
            .filter_map(|name| {
                let value = std::fs::read_to_string(Path::new("/proc/sys").join(name)).ok()?;
                Some(format!("{name} {}\n", value.trim()))
            })
            .collect();
        write(&state.join("sysctl"), &sysctls)?;
        network::create(api_port)?;
        Ok(claim)
    }

    /// Starts containerd (and imports the images), the kubelet, kube-proxy and CoreDNS, and
    /// waits until the Node is Ready.
    pub(crate) fn start(claim: Claim, inputs: NodeInputs<'_>) -> Result<Self> {
        let started = Instant::now();
        let state = claim.state().to_owned();
        let images = built_images()?;
        let mut node = Self {
            processes: Vec::new(),
            images: images
                .iter()
                .map(|(short, (reference, _))| (short.clone(), reference.clone()))
                .collect(),
            state: state.clone(),
            claim,
        };
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .map_err(TestEnvError::io("reading /sys/fs/cgroup"))?
            .flatten()
        {
            if hierarchy.path().is_dir() {
                let dir = hierarchy.path().join(CGROUP_ROOT);
                std::fs::create_dir_all(&dir)
                    .map_err(TestEnvError::io(format!("creating {}", dir.display())))?;
            }
        }

        // containerd, then the images (nothing can pull them).
        let containerd_dir = state.join("containerd");
        let cni_dir = state.join("cni");
        std::fs::create_dir_all(cni_dir.join("net.d"))
            .and_then(|()| std::fs::create_dir_all(&containerd_dir))
            .map_err(TestEnvError::io("creating the node's directories"))?;
        write(
            &cni_dir.join("net.d/10-coffer.conflist"),
            &config::cni(&cni_dir.join("ipam")),
        )?;
        let containerd_config = containerd_dir.join("config.toml");
        write(
            &containerd_config,
            &config::containerd(&containerd_dir, &cni_dir.join("net.d")),
        )?;
        let socket = containerd_dir.join("containerd.sock");
        let mut command = tied_command("containerd");
        command.arg("--config").arg(&containerd_config);
        // Every image is imported; should a Pod name one that is not, containerd would try a
        // registry: through a proxy that is not there, never to another host.
        for proxy in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            command.env(proxy, "http://127.0.0.1:9");
        }
        command.env_remove("NO_PROXY").env_remove("no_proxy");
        node.spawn("containerd", command)?;
        if !crate::process::wait_until(Duration::from_secs(30), || socket.exists()) {
            return Err(node.not_ready("containerd", 30));
        }
        for (short, (_, file)) in &images {
            run(
                &format!("importing the {short} image"),
                Command::new("ctr")
                    .arg("--address")
                    .arg(&socket)
                    .args(["--namespace", "k8s.io", "images", "import"])
                    .arg(file),
            )?;
        }

        // The kubelet.
        let resolv = state.join("resolv.conf");
        write(&resolv, &config::resolv_conf())?;
        let kubelet_config = state.join("kubelet.json");
        write(
            &kubelet_config,
            &config::kubelet(&config::KubeletPaths {
                containerd_socket: &socket,
                client_ca: inputs.ca,
                resolv_conf: &resolv,
                pod_logs: &state.join("pod-logs"),
                port: free_port()?,
                healthz_port: free_port()?,
            }),
        )?;
        let mut command = tied_command(inputs.bin.join("kubelet"));
        command
            .arg(format!("--config={}", kubelet_config.display()))
            .arg(format!("--kubeconfig={}", inputs.node_kubeconfig.display()))
            .arg(format!("--hostname-override={}", config::NODE_NAME))
            .arg(format!("--node-ip={NODE_IP}"))
            .arg(format!("--root-dir={}", state.join("kubelet").display()))
            .arg(format!(
                "--cert-dir={}",
                state.join("kubelet/pki").display()
            ))
            .arg("--v=1");
        node.spawn("kubelet", command)?;

        // kube-proxy and CoreDNS.
        let proxy_config = state.join("kube-proxy.json");
        write(
            &proxy_config,
            &config::kube_proxy(&inputs.proxy_kubeconfig, free_port()?, free_port()?),
        )?;
        let mut command = tied_command(inputs.bin.join("kube-proxy"));
        command
            .arg(format!("--config={}", proxy_config.display()))
            .arg("--v=1");
        node.spawn("kube-proxy", command)?;
        let corefile = state.join("Corefile");
        write(&corefile, &config::corefile(&inputs.dns_kubeconfig))?;
        let mut command = tied_command(inputs.bin.join("coredns"));
        command.arg("-conf").arg(&corefile);
        node.spawn("coredns", command)?;

        node.wait_ready(inputs.bin, &inputs.admin_kubeconfig)?;
        tracing::info!("real node ready in {:.1}s", started.elapsed().as_secs_f64());
        Ok(node)
    }

    /// The reference of an image `tools/images/build` made (`coffer`, `services`, `pause`).
    pub fn image(&self, short: &str) -> Option<&str> {
        self.images.get(short).map(String::as_str)
    }

    /// Where the node keeps its state and each program's log.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    fn spawn(&mut self, what: &'static str, command: Command) -> Result<()> {
        let (process, _) = spawn_logged(what, command, &self.state)?;
        self.processes.push((what, process));
        Ok(())
    }

    fn not_ready(&self, service: &'static str, seconds: u64) -> TestEnvError {
        let log = self.state.join(format!("{service}.log"));
        TestEnvError::NotReady {
            service,
            seconds,
            tail: log_tail(&log),
            log,
        }
    }

    fn wait_ready(&mut self, bin: &Path, kubeconfig: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let stopped = self
                .processes
                .iter_mut()
                .find_map(|(name, p)| (!p.is_running()).then_some(*name));
            if let Some(name) = stopped {
                return Err(self.not_ready(name, 0));
            }
            let ready = Command::new(bin.join("kubectl"))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .args([
                    "get",
                    "node",
                    config::NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout == b"True");
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.not_ready("kubelet", READY_TIMEOUT.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops the node and removes every trace of it now (dropping it does the same).
    pub fn stop(mut self) {
        self.processes.clear();
        self.claim.release();
    }
}

/// What of a real node whose state was in `state` is still on this machine: its programs and
/// containers (command lines naming the state directory), mounts under it, the bridge,
/// iptables rules of kube-proxy, the kubelet or the containment chains, the Pods' cgroups,
/// network interfaces that were not there in `links_before`, the fixed places the kubelet,
/// CNI and containerd write to that were not in `places_before`, and the state directory.
/// Empty after a teardown.
pub fn leftovers(state: &Path, links_before: &[String], places_before: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    let marker = state.display().to_string();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&marker) {
                left.push(format!("process {pid}: {}", cmdline.trim()));
            }
        }
    }
    // Containers: whatever runs in the node's cgroups.
    let mut dirs = vec![Path::new("/sys/fs/cgroup/pids").join(CGROUP_ROOT)];
    while let Some(dir) = dirs.pop() {
        for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            left.push(format!("process {pid} (a container's): {}", cmdline.trim()));
        }
        dirs.extend(
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path()),
        );
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mounts.lines() {
            if let Some(point) = line.split(' ').nth(4)
                && point.starts_with(&marker)
            {
                left.push(format!("mount {point}"));
            }
        }
    }
    for link in links() {
        if link == config::BRIDGE || !links_before.contains(&link) {
            left.push(format!("network interface {link}"));
        }
    }
    for tool in ["iptables-save", "ip6tables-save"] {
        if let Ok(out) = Command::new(tool).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if line.contains("KUBE-")
                    || line.contains("COFFER-")
                    || line.contains(config::BRIDGE)
                {
                    left.push(format!("{tool}: {line}"));
                }
            }
        }
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = hierarchy.path().join(CGROUP_ROOT);
        if dir.exists() {
            left.push(format!("cgroup {}", dir.display()));
        }
    }
    for place in FIXED_PLACES {
        if Path::new(place).exists() && !places_before.iter().any(|p| p == place) {
            left.push(format!("file {place}"));
        }
    }
    for path in [
        state.to_owned(),
        PathBuf::from(claim::CURRENT),
        PathBuf::from(STATE_ROOT),
    ] {
        if path.exists() {
            left.push(format!("file {}", path.display()));
        }
    }
    left
}

/// The network interfaces of this machine, by name.
pub fn links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Which of the fixed places the kubelet, CNI and containerd write to exist now.
pub fn fixed_places() -> Vec<String> {
    FIXED_PLACES
        .iter()
        .filter(|p| Path::new(p).exists())
        .map(|p| (*p).to_owned())
        .collect()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}
