//! `scripts/demo`'s choices that no cluster is needed to check: which cluster it uses, and how
//! it loads the image it built into a kind, k3d or minikube cluster. (The demo itself runs in
//! the README's test command three ways: on the process-based cluster, on a real node, and on
//! a real node standing in for a user's cluster, `scripts/lib/demo-current-check`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `load_command CONTEXT IMAGE BUILDER` of `scripts/lib/image-load.sh`: its output, or None
/// when it fails.
fn load_command(context: &str, builder: &str) -> Option<String> {
    let out = Command::new("bash")
        .current_dir(root())
        .args([
            "-c",
            "source scripts/lib/image-load.sh && load_command \"$@\"",
            "load",
            context,
            "localhost/coffer:demo",
            builder,
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

#[test]
fn the_image_is_loaded_the_way_each_local_cluster_expects() {
    assert_eq!(
        load_command("kind-dev", "docker").as_deref(),
        Some("kind load docker-image localhost/coffer:demo --name dev")
    );
    assert_eq!(
        load_command("kind-kind", "podman").as_deref(),
        Some(
            "KIND_EXPERIMENTAL_PROVIDER=podman kind load docker-image localhost/coffer:demo --name kind"
        )
    );
    assert_eq!(
        load_command("k3d-shop", "docker").as_deref(),
        Some("k3d image import localhost/coffer:demo --cluster shop")
    );
    assert_eq!(
        load_command("minikube", "docker").as_deref(),
        Some("minikube image load localhost/coffer:demo")
    );
    // Clusters on the builder's own images need nothing; any other cluster is refused.
    assert_eq!(
        load_command("docker-desktop", "docker").as_deref(),
        Some("")
    );
    assert_eq!(load_command("gke_project_zone_prod", "docker"), None);
    assert_eq!(load_command("admin@prod", "podman"), None);
}

/// A copy of the scripts `scripts/demo --which` reads, in a directory of its own: a
/// dev-cluster that another test runs in this checkout must not change the answer.
fn isolated_scripts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts/lib")).unwrap();
    for file in [
        "scripts/demo",
        "scripts/dev-cluster",
        "scripts/lib/demo-cluster.sh",
        "scripts/lib/demo-process.sh",
    ] {
        std::fs::copy(root().join(file), dir.path().join(file)).unwrap();
    }
    // Readable and searchable by the unprivileged user below.
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir.path())
        .status()
        .unwrap();
    dir
}

/// What `scripts/demo --which` answers in `dir`, with `env` set, KUBECONFIG unset unless
/// given, run by `user` (None: this test's user).
fn which(dir: &Path, env: &[(&str, &str)], user: Option<u32>) -> String {
    let mut command = match user {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "bash",
            ]);
            c
        }
        None => Command::new("bash"),
    };
    command
        .arg(dir.join("scripts/demo"))
        .arg("--which")
        .env_remove("KUBECONFIG")
        .env_remove("COFFER_DEMO_CLUSTER")
        .envs(env.iter().copied());
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_demo_runs_in_your_cluster_when_kubeconfig_names_one_and_on_a_real_node_otherwise() {
    let dir = isolated_scripts();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "").unwrap();
    assert_eq!(
        which(
            dir.path(),
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
            None
        ),
        "current"
    );
    assert_eq!(
        which(dir.path(), &[("COFFER_DEMO_CLUSTER", "process")], None),
        "process"
    );
    if !support::needs_root("the demo's choice for root and for other users") {
        return;
    }
    // Root, no cluster named: a real node on this machine; anyone else: the process-based one.
    assert_eq!(which(dir.path(), &[], None), "real-node");
    assert_eq!(which(dir.path(), &[], Some(65534)), "process");
}
