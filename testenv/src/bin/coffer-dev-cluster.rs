//! Runs the test services for hands-on use until SIGTERM or Ctrl-C: the control plane with
//! the process kubelet (for every namespace), Redis, PostgreSQL and the S3 server. Writes
//! the shell exports that point tools at them to `<state-dir>/env`: KUBECONFIG, PATH (kubectl,
//! helm), the S3 server's AWS_* variables and its bucket `backups`, Redis and PostgreSQL
//! (REDIS_URL, REDIS_PORT, DATABASE_URL, PG*), and COFFER_DEV_VOLUMES, where the process
//! kubelet keeps each claim's files (`<namespace>/<claim>`). Driven by
//! `scripts/dev-cluster up|down|env`.
//!
//! With `--real-node` (root only): the control plane with a real node instead (containerd,
//! kubelet, kube-proxy, CoreDNS, the images of `tools/images/build` loaded) and no services
//! on loopback, which Pods could not reach; the exports name the images instead
//! (COFFER_IMAGE, COFFER_SERVICES_IMAGE).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use coffer_testenv::{
    ControlPlane, ControlPlaneOptions, KubeletOptions, PostgresServer, RedisServer, S3Server,
    k8s_bin_dir,
};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let real_node = args.iter().any(|a| a == "--real-node");
    args.retain(|a| a != "--real-node");
    let [state_dir] = args.as_slice() else {
        eprintln!("usage: coffer-dev-cluster [--real-node] STATE_DIR");
        return ExitCode::from(2);
    };
    let state_dir = PathBuf::from(state_dir);
    let result = if real_node {
        run_real_node(&state_dir)
    } else {
        run(&state_dir)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coffer-dev-cluster: {e}");
            let _ = std::fs::remove_file(state_dir.join("env"));
            ExitCode::FAILURE
        }
    }
}

fn run(state_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(state_dir)?;
    let plane = ControlPlane::start(ControlPlaneOptions {
        kubelet: Some(KubeletOptions::default()),
        keep_dir: false,
        real_node: false,
    })?;
    // With a password, as the examples' Redis has one (their Secret `redis-auth`).
    let redis = RedisServer::start_with_password("coffer-dev")?;
    let postgres = PostgresServer::start()?;
    let s3 = S3Server::start()?;

    let kubeconfig = state_dir.join("kubeconfig");
    std::fs::copy(plane.kubeconfig(), &kubeconfig)?;
    let mut env = String::new();
    writeln!(env, "export KUBECONFIG={}", kubeconfig.display())?;
    writeln!(env, "export PATH={}:$PATH", k8s_bin_dir()?.display())?;
    for (key, value) in s3.env() {
        writeln!(env, "export {key}={value}")?;
    }
    // A bucket for the examples and the demo (the S3 server keeps one directory per bucket).
    std::fs::create_dir_all(s3.root().join("backups"))?;
    writeln!(env, "export COFFER_DEV_BUCKET=backups")?;
    writeln!(env, "export REDIS_URL={}", redis.url())?;
    writeln!(env, "export REDIS_PORT={}", redis.port())?;
    writeln!(env, "export REDIS_PASSWORD=coffer-dev")?;
    writeln!(env, "export DATABASE_URL={}", postgres.url("postgres"))?;
    writeln!(env, "export PGHOST=127.0.0.1")?;
    writeln!(env, "export PGPORT={}", postgres.port())?;
    writeln!(env, "export PGUSER={}", postgres.user())?;
    writeln!(env, "export PGPASSWORD={}", postgres.password())?;
    // The host directory of a PersistentVolumeClaim is <this>/<namespace>/<claim>.
    if let Some(volumes) = plane.claim_dir("namespace", "claim") {
        let volumes = volumes
            .parent()
            .and_then(|p| p.parent())
            .unwrap_or(&volumes);
        writeln!(env, "export COFFER_DEV_VOLUMES={}", volumes.display())?;
    }
    serve_until_stopped(state_dir, &plane, env)?;
    // Stop in reverse order: the kubelet's processes and the control plane last.
    drop((s3, postgres, redis, plane));
    Ok(())
}

/// The control plane with a real node, and the exports that point kubectl, helm and the
/// images at it.
fn run_real_node(state_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(state_dir)?;
    let plane = ControlPlane::start(ControlPlaneOptions {
        kubelet: None,
        keep_dir: false,
        real_node: true,
    })?;
    let node = plane
        .real_node()
        .ok_or("the control plane started no real node")?;
    let kubeconfig = state_dir.join("kubeconfig");
    std::fs::copy(plane.kubeconfig(), &kubeconfig)?;
    let mut env = String::new();
    writeln!(env, "export KUBECONFIG={}", kubeconfig.display())?;
    writeln!(env, "export PATH={}:$PATH", k8s_bin_dir()?.display())?;
    writeln!(
        env,
        "export COFFER_IMAGE={}",
        node.image("coffer").unwrap_or_default()
    )?;
    writeln!(
        env,
        "export COFFER_SERVICES_IMAGE={}",
        node.image("services").unwrap_or_default()
    )?;
    writeln!(
        env,
        "export COFFER_NODE_STATE={}",
        node.state_dir().display()
    )?;
    serve_until_stopped(state_dir, &plane, env)?;
    drop(plane);
    Ok(())
}

/// Writes the exports (with this process's PID), then waits for SIGTERM or Ctrl-C.
fn serve_until_stopped(
    state_dir: &std::path::Path,
    plane: &ControlPlane,
    mut env: String,
) -> Result<(), Box<dyn std::error::Error>> {
    writeln!(env, "export COFFER_DEV_CLUSTER_PID={}", std::process::id())?;
    // Written last and atomically: its presence means everything is up.
    let tmp = state_dir.join("env.tmp");
    std::fs::write(&tmp, env)?;
    std::fs::rename(&tmp, state_dir.join("env"))?;
    eprintln!(
        "coffer-dev-cluster: up ({}); waiting for SIGTERM or Ctrl-C",
        plane.server()
    );

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            Ok::<_, std::io::Error>(())
        })?;
    eprintln!("coffer-dev-cluster: stopping");
    let _ = std::fs::remove_file(state_dir.join("env"));
    Ok(())
}
