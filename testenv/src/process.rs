//! Finding programs, free ports, and child processes that die with their handle.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::{Result, TestEnvError};

/// Finds `program` on `PATH` or in `extra_dirs`. The error names the Debian `package` to
/// install, in one line.
pub fn find_program(program: &str, package: &str, extra_dirs: &[PathBuf]) -> Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    extra_dirs
        .iter()
        .chain(path_dirs.iter())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| TestEnvError::MissingProgram {
            program: program.to_owned(),
            package: package.to_owned(),
            searched: if extra_dirs.is_empty() {
                String::new()
            } else {
                let dirs: Vec<_> = extra_dirs.iter().map(|d| d.display().to_string()).collect();
                format!(" or in {}", dirs.join(", "))
            },
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Services started on it retry with
/// another port if someone else took it in between.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(TestEnvError::io("binding a free port on 127.0.0.1"))?;
    let port = listener
        .local_addr()
        .map_err(TestEnvError::io("reading a bound port"))?
        .port();
    Ok(port)
}

/// Runs a command to completion; a non-zero exit becomes [`TestEnvError::CommandFailed`]
/// carrying its output.
pub(crate) fn run(what: &str, command: &mut Command) -> Result<Output> {
    let output = command
        .output()
        .map_err(TestEnvError::io(format!("starting {what}")))?;
    if output.status.success() {
        return Ok(output);
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Err(TestEnvError::CommandFailed {
        what: what.to_owned(),
        status: output.status.to_string(),
        output: one_line(&text),
    })
}

/// Polls `ready` every 50 ms until it returns true or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last few lines of a log file, joined into one line for an error message.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    one_line(&tail.join(" | "))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A command for `program` that the kernel kills with SIGKILL when this process exits, even
/// when it is killed itself and no destructor runs: `setpriv --pdeathsig KILL -- program`
/// (util-linux), or plain `program` where setpriv is missing. Add arguments, environment
/// and stdio as usual, then start it with [`spawn_tied`].
pub(crate) fn tied_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match find_program("setpriv", "util-linux", &[]) {
        Ok(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--"]).arg(program);
            command
        }
        Err(_) => Command::new(program),
    }
}

/// Starts a [`tied_command`]. The "parent" whose death the kernel watches is the thread that
/// forks, so every such child is forked by one thread that lives as long as the process,
/// never by a test's own (short-lived) thread.
pub(crate) fn spawn_tied(what: &str, command: Command) -> Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let _ = std::thread::Builder::new()
            .name("testenv-spawner".to_owned())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            });
        Mutex::new(tx)
    });
    let gone = || std::io::Error::other("the testenv spawner thread is gone");
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .map_err(|_| gone())
        .and_then(|tx| tx.send((command, reply)).map_err(|_| gone()))
        .and_then(|()| answer.recv().map_err(|_| gone())?)
        .map_err(TestEnvError::io(format!("starting {what}")))
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// A child process that is killed (and reaped) when the handle is dropped.
#[derive(Debug)]
pub(crate) struct ChildGuard(pub(crate) Child);

impl ChildGuard {
    /// True while the process has not exited.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A random hex token (not for cryptography: test passwords and keys).
pub(crate) fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..2)
        .map(|_| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            format!("{:016x}", h.finish())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_package_in_one_line() {
        let err = find_program("coffer-no-such-program", "coffer-pkg", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("coffer-no-such-program not found"), "{text}");
        assert!(text.contains("apt-get install coffer-pkg"), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn programs_on_path_are_found() {
        let sh = find_program("sh", "dash", &[]).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"));
    }

    #[test]
    fn extra_dirs_are_searched_first_and_named_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_program("nope", "pkg", &[dir.path().to_owned()]).unwrap_err();
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
}
