//! A `redis-server` on a free loopback port, in a temporary directory.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{
    ChildGuard, find_program, free_port, log_tail, spawn_tied, tied_command, wait_until,
};
use crate::{Result, TestEnvError};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `redis-server`, stopped when dropped. Persistence is off (no RDB saves, no AOF),
/// so the server only holds what a test writes.
#[derive(Debug)]
pub struct RedisServer {
    // Field order matters: the process stops before its directory is removed.
    _process: ChildGuard,
    port: u16,
    password: Option<String>,
    program: PathBuf,
    config: Vec<(String, String)>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server without a password.
    pub fn start() -> Result<Self> {
        Self::start_with(None, &[])
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Result<Self> {
        Self::start_with(Some(password), &[])
    }

    /// Starts a server with a password (optional) and extra configuration directives, for
    /// example `[("repl-diskless-sync", "no")]`.
    pub fn start_with(password: Option<&str>, config: &[(&str, &str)]) -> Result<Self> {
        let program = find_program("redis-server", "redis-server", &[])?;
        let mut last_error = None;
        // A free port can be taken between our probe and the server's bind: try again.
        for _ in 0..3 {
            match Self::spawn(&program, password.map(str::to_owned), config) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| TestEnvError::Io {
            what: "starting redis-server".to_owned(),
            source: std::io::Error::other("no attempt was made"),
        }))
    }

    fn spawn(program: &PathBuf, password: Option<String>, config: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("coffer-redis-")
            .tempdir()
            .map_err(TestEnvError::io("creating a directory for redis-server"))?;
        let port = free_port()?;
        let config: Vec<(String, String)> = config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let process = Self::run(program, port, password.as_deref(), &config, dir.path())?;
        Ok(Self {
            _process: process,
            port,
            password,
            program: program.clone(),
            config,
            dir,
        })
    }

    /// Kills the server (SIGKILL, as a crash or the OOM killer would) and starts it again on
    /// the same port, empty: persistence is off.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        let _ = self._process.0.kill();
        let _ = self._process.0.wait();
        self._process = Self::run(
            &self.program,
            self.port,
            self.password.as_deref(),
            &self.config,
            self.dir.path(),
        )?;
        Ok(())
    }

    fn run(
        program: &PathBuf,
        port: u16,
        password: Option<&str>,
        config: &[(String, String)],
        dir: &std::path::Path,
    ) -> Result<ChildGuard> {
        let log = dir.join("redis.log");
        let mut command = tied_command(program);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        for (directive, value) in config {
            command.arg(format!("--{directive}")).arg(value);
        }
        let child = spawn_tied("redis-server", command)?;
        let mut process = ChildGuard(child);
        let ready = wait_until(READY_TIMEOUT, || process.is_running() && answers_ping(port));
        if !ready {
            return Err(TestEnvError::NotReady {
                service: "redis-server",
                seconds: READY_TIMEOUT.as_secs(),
                tail: log_tail(&log),
                log,
            });
        }
        Ok(process)
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self._process.0.id()
    }

    /// The password, if the server requires one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// A `redis://` URL without a database (every database, for a backup), with the
    /// password if there is one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A `redis://` URL for database `db`.
    pub fn url_db(&self, db: u32) -> String {
        format!("{}/{db}", self.url())
    }

    /// The server's working directory (its log is `redis.log` there).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// True when something on `port` answers a RESP `PING` like a Redis server (`+PONG`, or
/// `-NOAUTH` when a password is required).
fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 16];
    match stream.read(&mut reply) {
        Ok(n) => reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}
