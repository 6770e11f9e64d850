//! The real node's configuration files, as pure functions of where its state lives.

use std::path::Path;

/// The node's address: on the project's own bridge, the Pods' gateway, where the API server,
/// the kubelet and cluster DNS listen. Nothing of the node listens on another interface.
pub const NODE_IP: &str = "10.233.0.1";
/// The Pods' addresses, on the bridge.
pub const POD_CIDR: &str = "10.233.0.0/24";
/// Service ClusterIPs (the API server's `--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's ClusterIP (the first address of [`SERVICE_CIDR`]).
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// The bridge the project creates (and removes).
pub const BRIDGE: &str = "coffer0";
/// The name of the Node.
pub const NODE_NAME: &str = "coffer-node";
/// The cgroup under which the kubelet puts every Pod (in each hierarchy), so that teardown
/// knows which cgroups are the node's.
pub const CGROUP_ROOT: &str = "coffer-node";
/// The image of every Pod's sandbox (tools/images/pause.c).
pub const PAUSE_IMAGE: &str = "localhost/pause:coffer";

/// containerd 1.6's configuration: everything under `state`, the CRI plugin with the
/// cgroupfs driver, CNI from `cni_conf`, and `restrict_oom_score_adj` (root here lacks
/// CAP_SYS_RESOURCE, so the −998 containerd gives sandboxes would make runc fail).
pub fn containerd(state: &Path, cni_conf: &Path) -> String {
    let s = state.display();
    format!(
        r#"version = 2
root = "{s}/root"
state = "{s}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "{s}/containerd.sock"
[ttrpc]
  address = "{s}/containerd.sock.ttrpc"
[debug]
  address = "{s}/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{s}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{s}/opt"
"#,
        cni = cni_conf.display()
    )
}

/// The CNI network: the `bridge` plugin on [`BRIDGE`], no masquerading, and routes only to
/// the Pods and Services (no default route: a Pod cannot address anything else).
pub fn cni(ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "coffer",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "isDefaultGateway": false,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                "routes": [{"dst": POD_CIDR}, {"dst": SERVICE_CIDR}],
                "dataDir": ipam_dir,
            },
        }],
    })
    .to_string()
}

/// Where the kubelet's files go and which ports it serves on.
pub struct KubeletPaths<'a> {
    pub containerd_socket: &'a Path,
    pub client_ca: &'a Path,
    pub resolv_conf: &'a Path,
    pub pod_logs: &'a Path,
    pub port: u16,
    pub healthz_port: u16,
}

/// The kubelet's configuration: cgroupfs, cgroup v1 allowed, swap allowed, `oomScoreAdj: 0`
/// (see [`containerd`]), x509 and webhook authentication, webhook authorization, cluster DNS
/// on [`NODE_IP`], and thresholds that never garbage-collect the imported images (nothing
/// could pull them again) nor evict Pods on a full-ish disk.
pub fn kubelet(paths: &KubeletPaths<'_>) -> String {
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": paths.port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": paths.healthz_port,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": format!("/{CGROUP_ROOT}"),
        "failSwapOn": false,
        "failCgroupV1": false,
        "oomScoreAdj": 0,
        "containerRuntimeEndpoint": format!("unix://{}", paths.containerd_socket.display()),
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": paths.client_ca},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [NODE_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": paths.resolv_conf,
        "podLogsDir": paths.pod_logs,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "imageMinimumGCAge": "876000h",
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "podCIDR": POD_CIDR,
        "maxPods": 110,
        "rotateCertificates": false,
        "serverTLSBootstrap": false,
        "registerNode": true,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
    })
    .to_string()
}

/// kube-proxy in iptables mode, listening only on loopback and the node address.
pub fn kube_proxy(kubeconfig: &Path, metrics_port: u16, healthz_port: u16) -> String {
    serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "metricsBindAddress": format!("127.0.0.1:{metrics_port}"),
        "healthzBindAddress": format!("127.0.0.1:{healthz_port}"),
        "nodePortAddresses": [format!("{NODE_IP}/32")],
        "conntrack": {"maxPerCore": 0},
    })
    .to_string()
}

/// CoreDNS: the cluster's names from the API server, and NXDOMAIN for every other name (it
/// forwards nothing, so no query ever leaves the machine).
pub fn corefile(kubeconfig: &Path) -> String {
    format!(
        r#"cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {NODE_IP}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
.:53 {{
    bind {NODE_IP}
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"#,
        kubeconfig = kubeconfig.display()
    )
}

/// The resolv.conf of Pods with `dnsPolicy: Default`: cluster DNS too, never the host's.
pub fn resolv_conf() -> String {
    format!("nameserver {NODE_IP}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_no_default_route_and_no_masquerading() {
        let cni: serde_json::Value =
            serde_json::from_str(&cni(Path::new("/state/ipam"))).expect("CNI config is JSON");
        let bridge = &cni["plugins"][0];
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["isDefaultGateway"], false);
        let routes: Vec<&str> = bridge["ipam"]["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .filter_map(|r| r["dst"].as_str())
            .collect();
        assert_eq!(routes, [POD_CIDR, SERVICE_CIDR]);
    }

    #[test]
    fn cluster_dns_forwards_nothing() {
        let corefile = corefile(Path::new("/state/admin.kubeconfig"));
        assert!(!corefile.contains("forward"), "{corefile}");
        assert!(corefile.contains("rcode NXDOMAIN"), "{corefile}");
    }
}
