//! A MariaDB server made with `mariadb-install-db` and run as `mariadbd` on a free loopback
//! port, with its binary log on (so backups record their GTID position).
//!
//! As root the server runs as root (`--user=root`, which mariadbd accepts when asked
//! explicitly); otherwise as the current user. Only TCP on 127.0.0.1 and a socket in the
//! server's own directory are open; `root` logs in over TCP with a random password.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{
    ChildGuard, find_program, free_port, log_tail, random_token, run, spawn_tied, tied_command,
    wait_until,
};
use crate::{Result, TestEnvError};

/// The administrator account.
pub const ROOT: &str = "root";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const PACKAGE: &str = "mariadb-server";

/// A running MariaDB server, killed when dropped (its directory goes with it).
#[derive(Debug)]
pub struct MariaDbServer {
    process: ChildGuard,
    port: u16,
    password: String,
    mariadbd: PathBuf,
    options: Vec<String>,
    dir: TempDir,
}

impl MariaDbServer {
    /// Creates a new data directory and starts a server on it.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// [`MariaDbServer::start`] with more server options (`--name=value`), given to the
    /// installer too (InnoDB's data files are made there).
    pub fn start_with(options: &[&str]) -> Result<Self> {
        let options: Vec<String> = options.iter().map(|o| (*o).to_owned()).collect();
        let mariadbd = find_program("mariadbd", PACKAGE, &[PathBuf::from("/usr/sbin")])?;
        let install = find_program("mariadb-install-db", PACKAGE, &[])?;
        let dir = tempfile::Builder::new()
            .prefix("coffer-mariadb-")
            .tempdir()
            .map_err(TestEnvError::io("creating a directory for MariaDB"))?;
        let mut command = Command::new(&install);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(["--skip-name-resolve", "--innodb-log-file-size=8M"])
            .arg(format!("--tmpdir={}", dir.path().display()))
            .args(&options)
            .args(user_option())
            .stdin(Stdio::null());
        run("mariadb-install-db", &mut command)?;
        let password = random_token();
        let mut last_error = None;
        // A free port can be taken between our probe and the server's bind: try again.
        for _ in 0..3 {
            let port = free_port()?;
            match spawn(&mariadbd, dir.path(), port, &options) {
                Ok(process) => {
                    let server = Self {
                        process,
                        port,
                        password,
                        mariadbd,
                        options,
                        dir,
                    };
                    server.set_root_password()?;
                    return Ok(server);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| TestEnvError::Io {
            what: "starting MariaDB".to_owned(),
            source: std::io::Error::other("no attempt was made"),
        }))
    }

    /// Gives root a password, and an account for TCP connections from 127.0.0.1; the
    /// accounts for the machine's name and ::1 that the installer made go (with
    /// `--skip-name-resolve` a name-based account cannot even be shown).
    fn set_root_password(&self) -> Result<()> {
        let password = &self.password;
        let accounts = self.socket_sql(
            "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user \
             WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1')",
            false,
        )?;
        for account in accounts.lines().filter(|l| !l.is_empty()) {
            self.socket_sql(&format!("DROP USER {account}"), false)?;
        }
        self.socket_sql(
            &format!(
                "ALTER USER 'root'@'localhost' IDENTIFIED BY '{password}';
                 CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '{password}';
                 GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
                 GRANT PROXY ON ''@'%' TO 'root'@'127.0.0.1' WITH GRANT OPTION;
                 FLUSH PRIVILEGES;"
            ),
            false,
        )
        .map(|_| ())
    }

    /// Runs `sql` as root over the server's socket with the `mariadb` client and returns
    /// what it printed (tab-separated, no column names).
    pub fn sql_over_socket(&self, sql: &str) -> Result<String> {
        self.socket_sql(sql, true)
    }

    fn socket_sql(&self, sql: &str, with_password: bool) -> Result<String> {
        let client = find_program("mariadb", "mariadb-client", &[])?;
        let mut command = Command::new(client);
        command
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["--user=root", "--batch", "--skip-column-names"])
            .arg(format!("--execute={sql}"))
            .stdin(Stdio::null());
        if with_password {
            command.env("MYSQL_PWD", &self.password);
        }
        let output = run("mariadb", &mut command)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// root's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A `mysql://` URL as root, for `database` if given.
    pub fn url(&self, database: Option<&str>) -> String {
        let base = format!("mysql://{ROOT}:{}@127.0.0.1:{}", self.password, self.port);
        match database {
            Some(db) => format!("{base}/{db}"),
            None => base,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// Kills the server (SIGKILL, as a crash would) and starts it again on the same port:
    /// InnoDB recovers.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        let mut last_error = None;
        for _ in 0..20 {
            match spawn(&self.mariadbd, self.dir.path(), self.port, &self.options) {
                Ok(process) => {
                    self.process = process;
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(last_error.unwrap_or_else(|| TestEnvError::Io {
            what: "restarting MariaDB".to_owned(),
            source: std::io::Error::other("no attempt was made"),
        }))
    }

    /// Kills the server and leaves it stopped.
    pub fn kill(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }

    /// The server's directory (data and `mariadb.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `--user=root` when running as root (mariadbd refuses root otherwise), else nothing.
fn user_option() -> Vec<String> {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        vec!["--user=root".to_owned()]
    } else {
        Vec::new()
    }
}

fn spawn(mariadbd: &Path, dir: &Path, port: u16, options: &[String]) -> Result<ChildGuard> {
    let log = dir.join("mariadb.log");
    let mut command = tied_command(mariadbd);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
        .arg(format!("--log-error={}", log.display()))
        .arg(format!("--log-bin={}", dir.join("binlog").display()))
        .arg(format!("--tmpdir={}", dir.display()))
        .arg(format!("--port={port}"))
        .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
        .args(["--server-id=1", "--innodb-buffer-pool-size=32M"])
        .args([
            "--innodb-log-file-size=8M",
            "--innodb-flush-log-at-trx-commit=2",
        ])
        .args([
            "--sync-binlog=0",
            "--max-connections=60",
            "--performance-schema=OFF",
        ])
        .args([
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ])
        .args(options)
        .args(user_option())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_tied("mariadbd", command)?;
    let mut process = ChildGuard(child);
    let socket = dir.join("mysqld.sock");
    let ready = wait_until(READY_TIMEOUT, || {
        process.is_running()
            && socket.exists()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if !ready {
        return Err(TestEnvError::NotReady {
            service: "mariadbd",
            seconds: READY_TIMEOUT.as_secs(),
            tail: log_tail(&log),
            log,
        });
    }
    Ok(process)
}
