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

/// `load_command CONTEXT ARCHIVE BUILDER` of `scripts/lib/demo-image.sh`: its output, or
/// None when it fails.
fn load_command(context: &str, builder: &str) -> Option<String> {
    let out = Command::new("bash")
        .current_dir(root())
        .args([
            "-c",
            "source scripts/lib/demo-image.sh && load_command \"$@\"",
            "load",
            context,
            "/home/me/my repo/.cache/demo/coffer-image.tar",
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
    let archive = r"/home/me/my\ repo/.cache/demo/coffer-image.tar";
    assert_eq!(
        load_command("kind-dev", "docker"),
        Some(format!("kind load image-archive {archive} --name dev"))
    );
    // kind reaches podman's nodes only when told to; the archive needs no docker daemon.
    assert_eq!(
        load_command("kind-kind", "podman"),
        Some(format!(
            "KIND_EXPERIMENTAL_PROVIDER=podman kind load image-archive {archive} --name kind"
        ))
    );
    assert_eq!(
        load_command("k3d-shop", "podman"),
        Some(format!("k3d image import {archive} --cluster shop"))
    );
    assert_eq!(
        load_command("minikube", "docker"),
        Some(format!("minikube image load {archive}"))
    );
    // Clusters on docker's own images need nothing, but not podman's; any other is refused.
    assert_eq!(
        load_command("docker-desktop", "docker").as_deref(),
        Some("")
    );
    assert_eq!(load_command("orbstack", "podman"), None);
    assert_eq!(load_command("gke_project_zone_prod", "docker"), None);
    assert_eq!(load_command("admin@prod", "podman"), None);
}

/// The commands run as the demo runs them: the archive's path with a space stays one word.
#[test]
fn a_load_command_runs_with_its_archive_as_one_argument() {
    let dir = tempfile::tempdir().unwrap();
    // A `kind` that prints its arguments one per line, found first on PATH.
    let kind = dir.path().join("kind");
    std::fs::write(&kind, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
    Command::new("chmod").arg("+x").arg(&kind).status().unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new("bash")
        .current_dir(root())
        .env("PATH", path)
        .args([
            "-c",
            "source scripts/lib/demo-image.sh && bash -c \"$(load_command kind-dev '/a b/image.tar' docker)\"",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "load\nimage-archive\n/a b/image.tar\n--name\ndev\n"
    );
}

/// `image_settings REFERENCE` of `scripts/lib/demo-image.sh`: Helm's arguments, one per line.
fn image_settings(reference: &str) -> String {
    let out = Command::new("bash")
        .current_dir(root())
        .args([
            "-c",
            "source scripts/lib/demo-image.sh && image_settings \"$1\"",
            "settings",
            reference,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_image_reference_becomes_the_charts_repository_tag_or_digest() {
    let set =
        |kv: &[&str]| -> String { kv.iter().map(|s| format!("--set-string\n{s}\n")).collect() };
    assert_eq!(
        image_settings("localhost/coffer:demo"),
        set(&["image.repository=localhost/coffer", "image.tag=demo"])
    );
    // A registry's port is not a tag; a numeric tag stays a string (--set-string).
    assert_eq!(
        image_settings("registry.local:5000/team/coffer:20261130"),
        set(&[
            "image.repository=registry.local:5000/team/coffer",
            "image.tag=20261130"
        ])
    );
    assert_eq!(
        image_settings("localhost:5001/coffer"),
        set(&["image.repository=localhost:5001/coffer"])
    );
    assert_eq!(
        image_settings("ghcr.io/me/coffer@sha256:0123abcd"),
        set(&[
            "image.repository=ghcr.io/me/coffer",
            "image.digest=sha256:0123abcd"
        ])
    );
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
        "scripts/lib/demo-image.sh",
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
    // KUBECONFIG naming the dev-cluster's own kubeconfig (left set after `eval "$(scripts/
    // dev-cluster env)"`) is not a user's cluster.
    let env_dir = dir.path().join(".cache/dev-cluster");
    std::fs::create_dir_all(&env_dir).unwrap();
    let own = env_dir.join("kubeconfig");
    std::fs::write(
        env_dir.join("env"),
        format!("export KUBECONFIG={}\n", own.display()),
    )
    .unwrap();
    assert_eq!(
        which(dir.path(), &[("KUBECONFIG", own.to_str().unwrap())], None),
        "real-node"
    );
}
