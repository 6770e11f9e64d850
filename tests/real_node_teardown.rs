//! A real node, once stopped, leaves nothing on the machine: no process, mount, network
//! interface, iptables rule, cgroup or file of its own (what `scripts/dev-cluster down` and
//! the end of every test run rely on). Its own test binary: the node of `tests/real_node.rs`
//! lives until that binary exits, and one real node runs on a machine at a time (this one
//! waits for the other's to be torn down, or the other for this one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use coffer_testenv::{ControlPlane, ControlPlaneOptions};

mod support;

#[test]
fn a_stopped_real_node_leaves_nothing_behind() {
    if !support::needs_root("a real node's teardown") {
        return;
    }
    let links_before = coffer_testenv::links();
    let places_before = coffer_testenv::fixed_places();
    let plane = ControlPlane::start(ControlPlaneOptions {
        kubelet: None,
        keep_dir: false,
        real_node: true,
    })
    .unwrap();
    let node = plane.real_node().unwrap();
    let state = node.state_dir().to_owned();
    let services = node.image("services").unwrap().to_owned();
    // A running Pod: a container, its sandbox, a network namespace, a veth, cgroups, mounts.
    let kubectl = coffer_testenv::k8s_bin_dir().unwrap().join("kubectl");
    let out = Command::new(&kubectl)
        .env("KUBECONFIG", plane.kubeconfig())
        .args([
            "run",
            "sleeper",
            "--image",
            &services,
            "--image-pull-policy=Never",
        ])
        .args(["--restart=Never", "--command", "--", "sleep", "3600"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let phase = Command::new(&kubectl)
            .env("KUBECONFIG", plane.kubeconfig())
            .args(["get", "pod", "sleeper", "-o", "jsonpath={.status.phase}"])
            .output()
            .unwrap();
        if phase.stdout == b"Running" {
            break;
        }
        assert!(Instant::now() < deadline, "the Pod never ran");
        std::thread::sleep(Duration::from_millis(250));
    }

    // The check sees a running node's traces (it is not blind)...
    let running = coffer_testenv::node_leftovers(&state, &links_before, &places_before);
    for kind in [
        "process",
        "mount",
        "network interface",
        "iptables",
        "cgroup",
        "file",
    ] {
        assert!(
            running.iter().any(|l| l.starts_with(kind)),
            "a running node shows no {kind}: {running:#?}"
        );
    }
    assert!(
        running.iter().any(|l| l.contains("sleep 3600")),
        "{running:#?}"
    );

    // ...and none once it is stopped.
    drop(plane);
    let left = coffer_testenv::node_leftovers(&state, &links_before, &places_before);
    assert!(left.is_empty(), "left behind: {left:#?}");
}
