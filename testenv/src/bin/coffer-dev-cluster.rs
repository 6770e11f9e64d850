//! Runs the test services for hands-on use until SIGTERM or Ctrl-C: the control plane with
//! the process kubelet (for every namespace), Redis, PostgreSQL and the S3 server. Writes
//! the shell exports that point tools at them to `<state-dir>/env`: KUBECONFIG, PATH (kubectl,
//! helm), the S3 server's AWS_* variables and its bucket `backups`, Redis and PostgreSQL
//! (REDIS_URL, REDIS_PORT, DATABASE_URL, PG*), and COFFER_DEV_VOLUMES, where the process
//! kubelet keeps each claim's files (`<namespace>/<claim>`). Driven by
//! `scripts/dev-cluster up|down|env`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use coffer_testenv::{
    ControlPlane, ControlPlaneOptions, KubeletOptions, PostgresServer, RedisServer, S3Server,
    k8s_bin_dir,
};

fn main() -> ExitCode {
    let Some(state_dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: coffer-dev-cluster STATE_DIR");
        return ExitCode::from(2);
    };
    match run(&state_dir) {
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
    // Stop in reverse order: the kubelet's processes and the control plane last.
    drop((s3, postgres, redis, plane));
    Ok(())
}
