//! A PostgreSQL cluster made with `initdb` and run with `pg_ctl` on a free loopback port.
//!
//! PostgreSQL refuses to run as root. When the tests run as root, the cluster is created and
//! run as an unprivileged user (`postgres`, or `COFFER_PG_USER`), which owns the temporary
//! directory.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use crate::process::{find_program, free_port, log_tail, random_token, run};
use crate::{Result, TestEnvError};

/// The superuser created by `initdb`.
pub const SUPERUSER: &str = "postgres";
const START_TIMEOUT_SECS: u64 = 60;

/// A running PostgreSQL server, stopped (`pg_ctl stop -m immediate`) when dropped. Only TCP
/// on 127.0.0.1 is enabled; the superuser `postgres` logs in with a random password
/// (SCRAM-SHA-256).
#[derive(Debug)]
pub struct PostgresServer {
    bin_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    data: PathBuf,
    port: u16,
    password: String,
    dir: TempDir,
}

impl PostgresServer {
    /// Creates a new cluster and starts it.
    pub fn start() -> Result<Self> {
        let bin_dir = bin_dir()?;
        let run_as = if running_as_root()? {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("coffer-pg-")
            .tempdir()
            .map_err(TestEnvError::io("creating a directory for PostgreSQL"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(
                TestEnvError::io("giving the PostgreSQL directory to its user"),
            )?;
        }
        let password = random_token();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password)
            .map_err(TestEnvError::io("writing the initdb password file"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                .map_err(TestEnvError::io("giving the password file to its user"))?;
        }
        let initdb = bin_dir.join("initdb");
        let mut command = as_user(&initdb, run_as, dir.path());
        command
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", SUPERUSER, "--auth", "scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--encoding", "UTF8", "--no-locale", "--no-sync"]);
        let initialised = run("initdb", &mut command);
        let _ = std::fs::remove_file(&pwfile);
        initialised?;
        append(
            &data.join("postgresql.conf"),
            "\ninclude 'coffer-test.conf'\n",
        )?;

        let mut server = Self {
            bin_dir,
            run_as,
            data,
            port: 0,
            password,
            dir,
        };
        let mut last_error = None;
        // A free port can be taken between our probe and the server's bind: try again.
        for _ in 0..3 {
            match server.start_on(free_port()?) {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| TestEnvError::Io {
            what: "starting PostgreSQL".to_owned(),
            source: std::io::Error::other("no attempt was made"),
        }))
    }

    fn start_on(&mut self, port: u16) -> Result<()> {
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 50\nshared_buffers = 32MB\n"
        );
        let conf = self.data.join("coffer-test.conf");
        std::fs::write(&conf, settings)
            .map_err(TestEnvError::io("writing the PostgreSQL test settings"))?;
        let log = self.dir.path().join("postgres.log");
        let mut command = self.pg_ctl();
        command.arg("--log").arg(&log).args([
            "--wait",
            "--timeout",
            &START_TIMEOUT_SECS.to_string(),
            "start",
        ]);
        match run("pg_ctl start", &mut command) {
            Ok(_) => {
                self.port = port;
                Ok(())
            }
            Err(_) => Err(TestEnvError::NotReady {
                service: "PostgreSQL",
                seconds: START_TIMEOUT_SECS,
                tail: log_tail(&log),
                log,
            }),
        }
    }

    fn pg_ctl(&self) -> Command {
        let mut command = as_user(&self.bin_dir.join("pg_ctl"), self.run_as, self.dir.path());
        command.arg("--pgdata").arg(&self.data);
        command
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the postmaster (first line of `postmaster.pid`), while it runs.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Kills the server as a crash would (SIGKILL to the postmaster; its backends notice and
    /// exit), then starts it again on the same port: it recovers from its write-ahead log.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let gone = crate::process::wait_until(std::time::Duration::from_secs(30), || {
                !Path::new(&format!("/proc/{pid}")).exists()
            });
            if !gone {
                return Err(TestEnvError::Io {
                    what: "killing PostgreSQL".to_owned(),
                    source: std::io::Error::other("the postmaster did not exit"),
                });
            }
        }
        // Backends still exiting hold the old shared memory for a moment: try for a while.
        let port = self.port;
        let mut last_error = None;
        for _ in 0..20 {
            match self.start_on(port) {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Err(last_error.unwrap_or_else(|| TestEnvError::Io {
            what: "restarting PostgreSQL".to_owned(),
            source: std::io::Error::other("no attempt was made"),
        }))
    }

    /// The cluster's directory (data and `postgres.log`), removed when the server is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The superuser's name.
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A `postgres://` URL for `database`, as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// A `tokio-postgres` / libpq key-value connection string for `database`.
    pub fn connection_string(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} password={} dbname={database}",
            self.port, self.password
        )
    }

    /// The directory with this server's programs (`pg_dump`, `pg_restore`, `psql`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let mut command = self.pg_ctl();
        command.args(["--mode", "immediate", "--wait", "stop"]);
        let _ = run("pg_ctl stop", &mut command);
    }
}

/// The directory of the PostgreSQL server programs: `COFFER_PG_BIN_DIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian), else wherever `initdb` is on `PATH`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("COFFER_PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        find_program("initdb", "postgresql", std::slice::from_ref(&dir))?;
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    let initdb = find_program("initdb", "postgresql", &[])?;
    Ok(initdb
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/")))
}

fn running_as_root() -> Result<bool> {
    // /proc/self is owned by the effective user of this process.
    let meta = std::fs::metadata("/proc/self").map_err(TestEnvError::io("reading /proc/self"))?;
    Ok(meta.uid() == 0)
}

/// The uid and gid of `COFFER_PG_USER` (default `postgres`), from `/etc/passwd`.
fn unprivileged_user() -> Result<(u32, u32)> {
    let user = std::env::var("COFFER_PG_USER").unwrap_or_else(|_| "postgres".to_owned());
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let uid = fields.get(2)?.parse().ok()?;
            let gid = fields.get(3)?.parse().ok()?;
            (fields.first() == Some(&user.as_str()) && uid != 0).then_some((uid, gid))
        })
        .next()
        .ok_or(TestEnvError::NoUnprivilegedUser { user })
}

fn as_user(program: &Path, run_as: Option<(u32, u32)>, cwd: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(cwd)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    command
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(TestEnvError::io(format!("appending to {}", path.display())))
}
