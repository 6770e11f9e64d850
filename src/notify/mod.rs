//! Telling people: what a notification says ([`Notice`], rendered by [`render`]) and the
//! sinks that carry it ([`webhook`], [`email`], [`heartbeat`]). The operator decides what to
//! send and records it (`controller::notify`); this module only renders and sends, and
//! says whether a failed send certainly did not arrive ([`SendError::retryable`]).

pub mod email;
pub mod heartbeat;
pub mod http;
pub mod render;
pub mod webhook;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The version of the webhook document; a change that removes or renames a field gets a
/// new one.
pub const SCHEMA: &str = "coffer.dev/notification/v1";

/// What happened, in the words every sink uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// `failed`, `succeeded`, `recovered`, `stale`, `restoreSucceeded`, `restoreFailed`,
    /// `preflightFailed`, `copyFailed`, `drillFailed`; `start` for heartbeats.
    pub event: String,
    /// The delivery's id: the same for every retry of one notification, so a receiver can
    /// drop duplicates.
    pub id: String,
    pub namespace: String,
    /// The kind of the object it is about: `Backup`, `BackupSchedule`, `RestoreRequest`.
    pub kind: String,
    /// Its name.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// `redis`, `postgres`, `mysql`, `volume`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_kind: Option<String>,
    /// The object's phase, for example `Failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// A machine-readable cause, for example `SourceUnreachable`.
    pub reason: String,
    /// What happened, one line.
    pub message: String,
    /// Where the backup is (or would have been) stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    /// For `stale`: when the newest good backup completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<DateTime<Utc>>,
    /// What to do, one line, or empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub action: String,
}

impl Notice {
    /// Whether the news is bad.
    pub fn is_bad(&self) -> bool {
        matches!(
            self.event.as_str(),
            "failed" | "stale" | "restoreFailed" | "preflightFailed" | "copyFailed" | "drillFailed"
        )
    }

    /// One line without links: `Backup shop/redis-nightly-20261201 failed: SourceUnreachable:
    /// cannot connect to redis.shop.svc:6379`.
    pub fn summary(&self) -> String {
        let what = match self.event.as_str() {
            "failed" | "restoreFailed" => "failed",
            "succeeded" | "restoreSucceeded" => "succeeded",
            "recovered" => "succeeded again after failures",
            "stale" => "is stale",
            "preflightFailed" => "failed its pre-flight check",
            "copyFailed" => "could not be copied",
            "drillFailed" => "failed its restore drill",
            "start" => "started",
            "test" => "sent a test notification",
            other => other,
        };
        let head = format!("{} {}/{} {what}", self.kind, self.namespace, self.name);
        if self.message.is_empty() {
            head
        } else if self.is_bad() {
            crate::text::one_line(&format!("{head}: {}: {}", self.reason, self.message))
        } else {
            crate::text::one_line(&format!("{head}: {}", self.message))
        }
    }

    /// The commands that show more.
    pub fn look_further(&self) -> Vec<String> {
        let resource = match self.kind.as_str() {
            "BackupSchedule" => "backupschedule",
            "RestoreRequest" => "restorerequest",
            _ => "backup",
        };
        let mut commands = vec![format!(
            "kubectl -n {} describe {resource} {}",
            self.namespace, self.name
        )];
        if self.kind == "Backup" || self.kind == "RestoreRequest" {
            commands.push(format!(
                "kubectl -n {} logs -l coffer.dev/owner-name={} --tail=100",
                self.namespace, self.name
            ));
        }
        if let Some(schedule) = &self.schedule {
            commands.push(format!(
                "kubectl -n {} get backups -l coffer.dev/schedule={schedule}",
                self.namespace
            ));
        }
        commands
    }
}

/// What a person can do about a failure with `reason`, one line, or empty.
pub fn action_for(reason: &str) -> &'static str {
    match reason {
        "SourceUnreachable" => {
            "check that the source's host and port answer from the worker's namespace (Service, NetworkPolicy)"
        }
        "AuthenticationFailed" => {
            "check the user and the password in the Secret the source names, and the user's privileges"
        }
        "SourceError" => "read the worker's log: the source refused or broke off the backup",
        "StorageError" => {
            "check the store: bucket, endpoint, credentials and that they may write; then the worker's log"
        }
        "NoSpace" => "free space in the store, or give the backup a larger volume",
        "IntegrityCheckFailed" => {
            "do not trust this backup: read the worker's log; the next run takes a new one"
        }
        "WorkerVanished" | "WorkerKilled" | "Interrupted" => {
            "the worker was stopped (node lost, OOM kill, deadline): check the Job's events and its memory limit"
        }
        "InvalidPlan" => "fix the spec the Backup was made from",
        "SecretNotFound" | "ClaimNotFound" => "create what is missing, or fix the reference",
        "Stale" => "find out why the schedule's backups do not succeed: look at its newest Backups",
        "SourceCheckFailed" => {
            "fix what the message names (host, password Secret, privileges); the schedule checks again when its Secret changes"
        }
        "VerificationFailed" => {
            "do not count on this backup: read the drill Job's log, and restore an older backup that passed its drill if you must"
        }
        "DrillNotRun" => {
            "give the drill what the message says it lacked (memory, scratchSize, activeDeadlineSeconds) in the schedule's spec.drill"
        }
        "StorageCheckFailed" => {
            "fix the store (bucket, endpoint, credentials Secret, write access); the schedule checks again when its Secret changes"
        }
        _ => "",
    }
}

/// A send that did not succeed, in one line that never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// The sink certainly did not take the notification (the connection was refused, the
    /// server answered "try later"): sending it again cannot make a duplicate.
    pub retryable: bool,
}

impl SendError {
    /// Certainly not delivered; worth trying again.
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// Not delivered, or perhaps delivered (an answer that never came): not tried again.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    /// This error with every secret in `secrets` replaced by `***`.
    pub fn scrubbed(mut self, secrets: &[&str]) -> Self {
        self.message = scrub(&self.message, secrets);
        self
    }
}

/// `text` with every (non-trivial) secret in `secrets` replaced by `***`, so that an error
/// that quotes a URL never carries its token into status, Events or logs.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = crate::text::one_line(text);
    for secret in secrets.iter().map(|s| s.trim()).filter(|s| s.len() >= 4) {
        out = out.replace(secret, "***");
        // A URL also shows up without its query, or with its path only.
        if let Ok(url) = url::Url::parse(secret) {
            let path = url.path();
            if path.len() > 1 {
                out = out.replace(path, "/***");
            }
            if let Some(query) = url.query() {
                out = out.replace(query, "***");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Notice {
        Notice {
            event: "failed".to_owned(),
            kind: "Backup".to_owned(),
            namespace: "shop".to_owned(),
            name: "redis-1".to_owned(),
            schedule: Some("redis".to_owned()),
            reason: "SourceUnreachable".to_owned(),
            message: "cannot connect\nto redis:6379".to_owned(),
            ..Notice::default()
        }
    }

    #[test]
    fn a_summary_is_one_line_that_names_the_object_the_reason_and_the_cause() {
        assert_eq!(
            failed().summary(),
            "Backup shop/redis-1 failed: SourceUnreachable: cannot connect to redis:6379"
        );
        let recovered = Notice {
            event: "recovered".to_owned(),
            message: "4.2 MiB stored".to_owned(),
            ..failed()
        };
        assert_eq!(
            recovered.summary(),
            "Backup shop/redis-1 succeeded again after failures: 4.2 MiB stored"
        );
    }

    #[test]
    fn the_commands_to_look_further_name_the_object_and_its_schedule() {
        let commands = failed().look_further();
        assert_eq!(commands[0], "kubectl -n shop describe backup redis-1");
        assert!(commands[2].contains("coffer.dev/schedule=redis"));
    }

    #[test]
    fn secrets_are_scrubbed_from_error_text_whole_or_in_parts() {
        let url = "https://hooks.example.com/services/T000/B000/XXXXSECRET?token=abcd1234";
        let text = format!(
            "error sending request for url ({url}): refused; path /services/T000/B000/XXXXSECRET; q token=abcd1234"
        );
        let scrubbed = scrub(&text, &[url]);
        assert!(!scrubbed.contains("XXXXSECRET"), "{scrubbed}");
        assert!(!scrubbed.contains("abcd1234"), "{scrubbed}");
        assert_eq!(
            scrub("password pw is wrong", &["pw"]),
            "password pw is wrong"
        );
        assert_eq!(
            scrub("auth failed for s3cr3t-pass", &["s3cr3t-pass"]),
            "auth failed for ***"
        );
    }
}
