//! One real node per machine: a lock held by a small watcher shell for the node's whole life,
//! which tears the node down when its owner exits (however it exits) and only then lets the
//! next node start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::config::{BRIDGE, CGROUP_ROOT};
use crate::{Result, TestEnvError};

/// The machine-wide lock (flock) that the watcher holds.
const LOCK: &str = "/run/coffer-node.lock";
/// The state directory of the node that holds the lock, for cleaning up after a watcher that
/// was itself killed.
pub(crate) const CURRENT: &str = "/run/coffer-node.current";
/// How long to wait for another node (another test binary's) to be torn down.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(40 * 60);

const TEARDOWN: &str = include_str!("teardown.sh");

// $1 lock, $2 state, $3 owner PID, $4.. teardown's arguments. It takes the lock, says so,
// waits for its owner to exit or ask (a file `stop`), tears down, and only then exits,
// releasing the lock.
const WATCHER: &str = r#"exec 9>>"$1" || exit 1
flock 9 || exit 1
if [ -s /run/coffer-node.current ]; then
  previous=$(cat /run/coffer-node.current)
  [ -f "$previous/teardown.sh" ] && sh "$previous/teardown.sh" "$previous" "$4" "$5" "$6"
fi
printf '%s' "$2" > /run/coffer-node.current
: > "$2/claimed"
while kill -0 "$3" 2>/dev/null && [ ! -e "$2/stop" ]; do sleep 0.5; done
sh "$2/teardown.sh" "$2" "$4" "$5" "$6" >>"$2.teardown.log" 2>&1
[ -s "$2.teardown.log" ] || rm -f "$2.teardown.log"
rm -f /run/coffer-node.current
rmdir "$(dirname "$2")" 2>/dev/null
"#;

/// The right to run the real node, held until dropped (or the process exits), after which
/// the node is torn down.
#[derive(Debug)]
pub(crate) struct Claim {
    state: PathBuf,
    watcher: Child,
    released: bool,
}

impl Claim {
    /// Waits until no other node runs on this machine (tearing down one whose owner died),
    /// then claims `state` for a new one.
    pub(crate) fn acquire(state: &Path, kube_proxy: &Path) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        if let Some(parent) = state.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(TestEnvError::io(format!("creating {}", parent.display())))?;
        }
        // A directory of a process that had this PID and never tore its node down: that
        // teardown first (this process is not running a node yet).
        if state.join("teardown.sh").is_file() {
            let _ = Command::new("sh")
                .arg(state.join("teardown.sh"))
                .arg(state)
                .args([BRIDGE, CGROUP_ROOT])
                .arg(kube_proxy)
                .status();
        }
        let _ = std::fs::remove_dir_all(state);
        // New, and only root's: root runs the teardown script it holds.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(state)
            .map_err(TestEnvError::io(format!("creating {}", state.display())))?;
        let teardown = state.join("teardown.sh");
        std::fs::write(&teardown, TEARDOWN)
            .map_err(TestEnvError::io(format!("writing {}", teardown.display())))?;
        let setsid = crate::find_program("setsid", "util-linux", &[])?;
        crate::find_program("flock", "util-linux", &[])?;
        // In a session of its own, not tied to this process: it must outlive it.
        let watcher = Command::new(setsid)
            .args(["sh", "-c", WATCHER, "coffer-node-watcher", LOCK])
            .arg(state)
            .arg(std::process::id().to_string())
            .arg(BRIDGE)
            .arg(CGROUP_ROOT)
            .arg(kube_proxy)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(TestEnvError::io("starting the real node's watcher"))?;
        let mut claim = Self {
            state: state.to_owned(),
            watcher,
            released: false,
        };
        let claimed = state.join("claimed");
        if !crate::process::wait_until(WAIT_FOR_OTHER, || {
            claimed.exists() || !matches!(claim.watcher.try_wait(), Ok(None))
        }) || !claimed.exists()
        {
            // Not waiting for it (dropping the claim would): it may never get the lock.
            let _ = claim.watcher.kill();
            let _ = claim.watcher.wait();
            claim.released = true;
            return Err(TestEnvError::ControlPlane(format!(
                "another real node kept {LOCK} for {} minutes (or its watcher failed); stop it with scripts/dev-cluster down, or see {CURRENT}",
                WAIT_FOR_OTHER.as_secs() / 60
            )));
        }
        // Reaped by the watcher's own exit; `claim` is returned.
        let _ = claim.watcher.try_wait();
        Ok(claim)
    }

    /// The node's state directory.
    pub(crate) fn state(&self) -> &Path {
        &self.state
    }

    /// Asks the watcher to tear the node down now, and waits until it has.
    pub(crate) fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let _ = std::fs::write(self.state.join("stop"), b"");
        let _ = self.watcher.wait();
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.release();
    }
}
