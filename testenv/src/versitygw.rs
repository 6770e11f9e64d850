//! A second, independent S3 server: versitygw (Go, Apache-2.0) with its POSIX backend, built
//! from its Go module by `tools/k8s/build`. Unlike `s3s-fs` it implements versioning and
//! enforces S3 Object Lock (retention in Governance and Compliance mode, legal holds); see
//! `docs/second-s3-server.md` for what was checked and where it differs from AWS.

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{
    ChildGuard, free_port, log_tail, random_token, spawn_tied, tied_command, wait_until,
};
use crate::s3::REGION;
use crate::{Result, TestEnvError};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running versitygw on a free loopback port, with path-style addressing and a random
/// root key. Stopped, and its files removed, when dropped.
#[derive(Debug)]
pub struct VersityServer {
    // Field order matters: the process stops before its directory is removed.
    process: Option<ChildGuard>,
    port: u16,
    access_key: String,
    secret_key: String,
    dir: TempDir,
}

impl VersityServer {
    /// Starts a server with an empty store (create buckets through the S3 API; a bucket
    /// created with `ObjectLockEnabledForBucket` is versioned and enforces retention).
    pub fn start() -> Result<Self> {
        let program = program()?;
        let mut last_error = None;
        // A free port can be taken between our probe and the server's bind: try again.
        for _ in 0..3 {
            match Self::spawn(&program) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| TestEnvError::Io {
            what: "starting versitygw".to_owned(),
            source: std::io::Error::other("no attempt was made"),
        }))
    }

    fn spawn(program: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("coffer-versitygw-")
            .tempdir()
            .map_err(TestEnvError::io("creating a directory for versitygw"))?;
        for d in ["data", "versions"] {
            std::fs::create_dir(dir.path().join(d))
                .map_err(TestEnvError::io("creating versitygw's directories"))?;
        }
        let port = free_port()?;
        let access_key = format!("AK{}", random_token().to_uppercase());
        let secret_key = random_token();
        let process = run(program, dir.path(), port, &access_key, &secret_key)?;
        Ok(Self {
            process: Some(process),
            port,
            access_key,
            secret_key,
            dir,
        })
    }

    /// Stops the server, keeping its files and port: clients get "connection refused" until
    /// [`Self::restart`].
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the stopped server again, on the same port with the same files and keys.
    pub fn restart(&mut self) -> Result<()> {
        self.process = None;
        let program = program()?;
        self.process = Some(run(
            &program,
            self.dir.path(),
            self.port,
            &self.access_key,
            &self.secret_key,
        )?);
        Ok(())
    }

    /// The endpoint URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Where the objects are kept on disk.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The environment that points the AWS SDK (and `coffer`) at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", REGION.to_owned()),
        ]
    }
}

/// The binary `tools/k8s/build` made, beside the control plane's.
fn program() -> Result<PathBuf> {
    let dir = std::env::var_os("COFFER_K8S_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::control_plane::workspace_root().join(".cache/k8s/bin"));
    let program = dir.join("versitygw");
    if program.is_file() {
        Ok(program)
    } else {
        Err(TestEnvError::ControlPlane(format!(
            "versitygw is not built in {}: run tools/k8s/build (./scripts/test runs it)",
            dir.display()
        )))
    }
}

/// Runs versitygw on `port` over the store in `dir`, and waits until it answers.
fn run(
    program: &Path,
    dir: &Path,
    port: u16,
    access_key: &str,
    secret_key: &str,
) -> Result<ChildGuard> {
    let log = dir.join("versitygw.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(TestEnvError::io("creating versitygw's log"))?;
    let log_err = log_file
        .try_clone()
        .map_err(TestEnvError::io("creating versitygw's log"))?;
    let mut command = tied_command(program);
    command
        .env("ROOT_ACCESS_KEY_ID", access_key)
        .env("ROOT_SECRET_ACCESS_KEY", secret_key)
        .args(["--port", &format!("127.0.0.1:{port}"), "--region", REGION])
        .arg("posix")
        .arg("--versioning-dir")
        .arg(dir.join("versions"))
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    let child = spawn_tied("versitygw", command)?;
    let mut process = ChildGuard(child);
    let ready = wait_until(READY_TIMEOUT, || {
        process.is_running() && TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
    });
    if !ready {
        return Err(TestEnvError::NotReady {
            service: "versitygw",
            seconds: READY_TIMEOUT.as_secs(),
            tail: log_tail(&log),
            log,
        });
    }
    Ok(process)
}
