//! The `pods/status` patches the process kubelet sends. Pure functions.

use serde_json::{Value, json};

/// How a container process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Termination {
    pub exit_code: i32,
    /// `Completed`, `Error`, `DeadlineExceeded` or `Killed`.
    pub reason: &'static str,
    pub message: String,
    pub started_at: String,
    pub finished_at: String,
}

/// The container is waiting (for example for a missing Secret).
pub(crate) fn waiting(container: &str, image: &str, reason: &str, message: &str) -> Value {
    json!({"status": {
        "phase": "Pending",
        "containerStatuses": [{
            "name": container, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "started": false,
            "state": {"waiting": {"reason": reason, "message": message}},
        }],
    }})
}

/// The container's process is running.
pub(crate) fn running(container: &str, image: &str, started_at: &str) -> Value {
    json!({"status": {
        "phase": "Running",
        "startTime": started_at,
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "conditions": conditions(true, started_at),
        "containerStatuses": [{
            "name": container, "image": image, "imageID": "", "ready": true, "restartCount": 0,
            "started": true,
            "state": {"running": {"startedAt": started_at}},
        }],
    }})
}

/// The container's process ended; the Pod is terminal (restarts are not simulated).
pub(crate) fn terminated(container: &str, image: &str, end: &Termination) -> Value {
    let phase = if end.exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    let mut status = json!({
        "phase": phase,
        "conditions": conditions(false, &end.finished_at),
        "containerStatuses": [{
            "name": container, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "started": false,
            "state": {"terminated": {
                "exitCode": end.exit_code,
                "reason": end.reason,
                "message": end.message,
                "startedAt": end.started_at,
                "finishedAt": end.finished_at,
            }},
        }],
    });
    if end.reason == "DeadlineExceeded" {
        status["reason"] = json!("DeadlineExceeded");
        status["message"] = json!("Pod was active on the node longer than the specified deadline");
    }
    json!({"status": status})
}

fn conditions(ready: bool, at: &str) -> Value {
    let ready = if ready { "True" } else { "False" };
    json!([
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
        {"type": "Ready", "status": ready, "lastTransitionTime": at},
        {"type": "ContainersReady", "status": ready, "lastTransitionTime": at},
    ])
}

/// The termination message: the file at `terminationMessagePath` (at most 4096 bytes, as
/// Kubernetes keeps), or, with `FallbackToLogsOnError` and a failure, the end of the log.
pub(crate) fn termination_message(
    file: Option<&[u8]>,
    log: &[u8],
    exit_code: i32,
    fallback_to_logs: bool,
) -> String {
    let from_file = file
        .map(|bytes| truncate_end(bytes, 4096, false))
        .unwrap_or_default();
    if !from_file.is_empty() || exit_code == 0 || !fallback_to_logs {
        return from_file;
    }
    truncate_end(log, 2048, true)
}

/// The first (or, with `tail`, the last) `max` bytes as text.
fn truncate_end(bytes: &[u8], max: usize, tail: bool) -> String {
    let part = if bytes.len() <= max {
        bytes
    } else if tail {
        &bytes[bytes.len() - max..]
    } else {
        &bytes[..max]
    };
    String::from_utf8_lossy(part).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(code: i32, reason: &'static str) -> Termination {
        Termination {
            exit_code: code,
            reason,
            message: "boom".into(),
            started_at: "2026-11-22T10:00:00Z".into(),
            finished_at: "2026-11-22T10:00:05Z".into(),
        }
    }

    #[test]
    fn exit_codes_decide_the_phase() {
        let ok = terminated("c", "img", &end(0, "Completed"));
        assert_eq!(ok["status"]["phase"], "Succeeded");
        let failed = terminated("c", "img", &end(3, "Error"));
        assert_eq!(failed["status"]["phase"], "Failed");
        let t = &failed["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (t["exitCode"].as_i64(), t["message"].as_str()),
            (Some(3), Some("boom"))
        );
        let late = terminated("c", "img", &end(137, "DeadlineExceeded"));
        assert_eq!(late["status"]["reason"], "DeadlineExceeded");
    }

    #[test]
    fn termination_message_prefers_the_file_then_the_log_on_failure() {
        assert_eq!(termination_message(Some(b"done"), b"log", 1, true), "done");
        assert_eq!(
            termination_message(Some(b""), b"last words", 1, true),
            "last words"
        );
        assert_eq!(termination_message(None, b"last words", 1, false), "");
        assert_eq!(termination_message(None, b"last words", 0, true), "");
        let long = vec![b'x'; 5000];
        assert_eq!(termination_message(Some(&long), b"", 0, false).len(), 4096);
    }
}
