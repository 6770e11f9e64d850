//! A scratch server a drill starts itself and throws away: its process (killed when dropped),
//! a free loopback port and a random password that never appears on a command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::DrillError;

/// How long a scratch server may take to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running scratch server.
pub struct ScratchProcess {
    child: Child,
    program: String,
    log: PathBuf,
    /// How to stop it so that it cleans up after itself (PostgreSQL's shared memory);
    /// otherwise, and when dropped, it is killed.
    stop: Option<Command>,
}

/// A scratch program's environment: PATH, the C locale and what the drill set on `command`
/// itself (nss_wrapper's variables). Nothing the drill inherited (S3 keys, passwords)
/// reaches a server that runs as another user.
pub fn clean_env(command: &mut Command) -> &mut Command {
    let set: Vec<(OsString, OsString)> = command
        .as_std()
        .get_envs()
        .filter_map(|(key, value)| Some((key.to_owned(), value?.to_owned())))
        .collect();
    command.env_clear().env("LC_ALL", "C");
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(set)
}

impl ScratchProcess {
    /// Starts `command` (output into `log`); it is killed when this is dropped.
    pub fn spawn(program: &str, mut command: Command, log: &Path) -> Result<Self, DrillError> {
        let output = std::fs::File::create(log).map_err(|e| DrillError::Scratch {
            what: format!("creating {}", log.display()),
            detail: e.to_string(),
        })?;
        let errors = output.try_clone().map_err(|e| DrillError::Scratch {
            what: format!("opening {}", log.display()),
            detail: e.to_string(),
        })?;
        clean_env(&mut command)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| DrillError::Scratch {
            what: format!("starting {program}"),
            detail: if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{program} not found: install it (a drill starts its own scratch server) or name its directory"
                )
            } else {
                e.to_string()
            },
        })?;
        Ok(Self {
            child,
            program: program.to_owned(),
            log: log.to_owned(),
            stop: None,
        })
    }

    /// Stops the server with `command` (waited for up to 30 s) rather than killing it.
    pub fn stopped_with(mut self, mut command: Command) -> Self {
        clean_env(&mut command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.stop = Some(command);
        self
    }

    /// Waits until `ready` says the server answers; fails when the process ends first or
    /// [`READY_TIMEOUT`] passes, with the end of its log.
    pub async fn wait_ready<F, Fut>(&mut self, mut ready: F) -> Result<(), DrillError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.not_ready(&format!("it exited ({status})")));
            }
            if ready().await {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(self.not_ready(&format!(
                    "it did not answer within {} s",
                    READY_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn not_ready(&self, why: &str) -> DrillError {
        DrillError::Scratch {
            what: format!("starting the scratch {}", self.program),
            detail: format!("{why}; its log ends: {}", log_tail(&self.log)),
        }
    }

    /// Stops the server (it holds nothing worth keeping) and waits for it.
    pub async fn stop(mut self) {
        if let Some(mut command) = self.stop.take() {
            let stopped = async {
                let _ = command.status().await;
                self.child.wait().await
            };
            if tokio::time::timeout(Duration::from_secs(30), stopped)
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// The last lines of a log, on one line.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "(nothing)".to_owned()
    } else {
        tail
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, DrillError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DrillError::Scratch {
            what: "finding a free port on 127.0.0.1".to_owned(),
            detail: e.to_string(),
        })
}

/// A random password for a scratch server (32 hex digits).
pub fn secret() -> Result<String, DrillError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| DrillError::Scratch {
            what: "reading /dev/urandom".to_owned(),
            detail: e.to_string(),
        })?;
    Ok(hex::encode(bytes))
}

/// Writes a file only its owner may read (a scratch server's configuration or password).
pub fn write_private(path: &Path, contents: &str) -> Result<(), DrillError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| DrillError::Scratch {
            what: format!("writing {}", path.display()),
            detail: e.to_string(),
        })
}

/// The user a scratch server runs as when the drill runs as root (PostgreSQL refuses root;
/// the others need not have it): `postgres`, else `nobody`, from `/etc/passwd`, as (name,
/// uid, gid); `None` when not root.
pub fn unprivileged_user() -> Result<Option<(String, u32, u32)>, DrillError> {
    if identity().0 != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let find = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let uid: u32 = fields.get(2)?.parse().ok()?;
            let gid: u32 = fields.get(3)?.parse().ok()?;
            (fields.first() == Some(&name) && uid != 0).then(|| (name.to_owned(), uid, gid))
        })
    };
    find("postgres")
        .or_else(|| find("nobody"))
        .map(Some)
        .ok_or_else(|| DrillError::Scratch {
            what: "choosing a user for the scratch server".to_owned(),
            detail: "running as root, and neither a postgres nor a nobody user exists: run the drill as another user".to_owned(),
        })
}

/// This process's effective user and group.
pub fn identity() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// Gives `path` to `owner` (when the scratch server runs as another user).
pub fn give(path: &Path, owner: Option<&(String, u32, u32)>) -> Result<(), DrillError> {
    if let Some((_, uid, gid)) = owner {
        let (uid, gid) = (*uid, *gid);
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| DrillError::Scratch {
            what: format!("giving {} to the scratch server's user", path.display()),
            detail: e.to_string(),
        })?;
    }
    Ok(())
}
