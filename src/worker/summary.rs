//! The worker's result: a short JSON document in its termination message, which the
//! controller reads from the Pod's status. Pure.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::{BackupStats, RestoreStats};

/// Kubernetes keeps at most this many bytes of a termination message.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// A failure message is cut to this many characters so the summary always fits.
const MAX_MESSAGE_CHARS: usize = 1500;
/// A dry run's preview line is cut to this many characters in the termination message.
const MAX_PREVIEW_LINE_CHARS: usize = 200;

/// Why a run failed: a bounded category, used as the condition reason and as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Failure {
    /// The plan or the worker's arguments were invalid (a controller bug or a version skew).
    InvalidPlan,
    /// The source or target server could not be reached.
    SourceUnreachable,
    /// The source or target refused the credentials.
    AuthenticationFailed,
    /// The source or target answered with an error.
    SourceError,
    /// The store could not be reached, refused the credentials, or is missing.
    StorageError,
    /// The store or the restore target is full.
    NoSpace,
    /// The backup's data does not match its manifest.
    IntegrityCheckFailed,
    /// The encryption keys cannot be used: a recipient is not an age public key, or no
    /// identity given opens the backup (or none was given).
    EncryptionKeyError,
    /// A backup already exists where this one would be written.
    AlreadyExists,
    /// The backup to restore does not exist.
    BackupNotFound,
    /// The folder holds another Backup's data; it was left alone.
    NotOwned,
    /// An object is locked (S3 Object Lock) and cannot be deleted before its date.
    Retained,
    /// The worker was told to stop (SIGTERM) and stopped without finishing.
    Interrupted,
    /// A drill could not start its scratch instance or use the backup's key: nothing was
    /// verified.
    DrillNotRun,
    /// The worker's Job disappeared before the controller read its result.
    WorkerVanished,
    /// The worker was killed (a signal: the out-of-memory killer, the node going away, or by
    /// hand) before it could report its result.
    WorkerKilled,
    /// Anything else.
    Internal,
}

impl Failure {
    /// The category's name, as in conditions and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPlan => "InvalidPlan",
            Self::SourceUnreachable => "SourceUnreachable",
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::SourceError => "SourceError",
            Self::StorageError => "StorageError",
            Self::NoSpace => "NoSpace",
            Self::IntegrityCheckFailed => "IntegrityCheckFailed",
            Self::EncryptionKeyError => "EncryptionKeyError",
            Self::AlreadyExists => "AlreadyExists",
            Self::BackupNotFound => "BackupNotFound",
            Self::NotOwned => "NotOwned",
            Self::Retained => "Retained",
            Self::Interrupted => "Interrupted",
            Self::DrillNotRun => "DrillNotRun",
            Self::WorkerVanished => "WorkerVanished",
            Self::WorkerKilled => "WorkerKilled",
            Self::Internal => "Internal",
        }
    }
}

/// What a worker did, or why it failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// `None` when the run succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// One line: what was done, or what went wrong and how to fix it.
    pub message: String,
    /// The backup's folder in the store (for a restore of the latest backup: the one found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStats>,
    /// A backup: its data is encrypted (the manifest has an encryption record).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStats>,
    /// A restore: the copy it read, when the backup itself was missing or damaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from_copy: Option<String>,
    /// A copy: the backups (folders) the copy store's retention deleted there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
    /// A copy: why the copy store's retention stopped, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_error: Option<String>,
    /// A deletion refused by object lock: the date the locked object may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_until: Option<DateTime<Utc>>,
    /// A sweep: leftovers removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swept: Option<u64>,
    /// A pre-flight check: what each probe found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
    /// A drill: its verdict and measurements (the first failed check is the message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillSummary>,
    /// A restore's dry run: what the restore would do, one line per outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Set by the controller when the worker left no summary of its own (killed, crashed,
    /// stopped by its deadline, its Pod gone): the outcome is not the worker's verdict, and
    /// a backup so ended is judged by what is in storage. Never serialised.
    #[serde(skip)]
    pub unreported: bool,
}

/// What a drill found. Its `message` says what was verified, or the first check that failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillSummary {
    pub verified: bool,
    /// How long the restore into the scratch instance took.
    pub restore_millis: u64,
    /// The backup's data size before compression.
    pub bytes: u64,
    pub passed: u32,
    pub failed: u32,
}

/// The findings of a pre-flight check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checks {
    pub source_ok: bool,
    pub source: String,
    pub storage_ok: bool,
    pub storage: String,
}

impl Summary {
    /// A failed run.
    pub fn failed(failure: Failure, message: impl Into<String>) -> Self {
        Self {
            failure: Some(failure),
            message: message.into(),
            ..Self::default()
        }
    }

    /// The summary as a termination message: JSON within Kubernetes' 4096-byte limit. A long
    /// message is cut (on a character boundary, marked with `…`), never the JSON, whatever
    /// the characters and however much escaping they need.
    pub fn to_termination_message(&self) -> String {
        const FALLBACK: &str =
            r#"{"failure":"Internal","message":"the worker could not write its summary"}"#;
        let mut summary = self.clone();
        let cut = |text: &str, limit: usize| {
            let text = crate::text::one_line(text);
            if text.chars().count() > limit {
                let mut short: String = text.chars().take(limit).collect();
                short.push('…');
                short
            } else {
                text
            }
        };
        // A check's findings repeat its message: the three share the room, and the
        // findings are never what gets dropped.
        let limit = if let Some(checks) = summary.checks.as_mut() {
            checks.source = cut(&checks.source, MAX_MESSAGE_CHARS / 3);
            checks.storage = cut(&checks.storage, MAX_MESSAGE_CHARS / 3);
            MAX_MESSAGE_CHARS / 3
        } else {
            MAX_MESSAGE_CHARS
        };
        summary.message = cut(&summary.message, limit);
        // A preview keeps as many of its first lines as fit beside the rest (each cut short),
        // and a last line says how many more the worker's log holds.
        if !summary.preview.is_empty() {
            let all: Vec<String> = std::mem::take(&mut summary.preview)
                .iter()
                .map(|line| {
                    // Indented lines stay indented (`cut` trims): only control characters go.
                    let mut kept: String = line
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_PREVIEW_LINE_CHARS)
                        .collect();
                    if line.chars().count() > MAX_PREVIEW_LINE_CHARS {
                        kept.push('…');
                    }
                    kept
                })
                .collect();
            let rest = serde_json::to_string(&summary).map_or(MAX_TERMINATION_MESSAGE, |j| j.len());
            // `,"preview":[...]` and the last line's room.
            let mut room = MAX_TERMINATION_MESSAGE.saturating_sub(rest + 16 + 64);
            let mut kept = 0;
            for line in &all {
                let needs = escaped_len(line) + 3;
                if needs > room {
                    break;
                }
                room -= needs;
                kept += 1;
            }
            summary.preview = all[..kept].to_vec();
            if kept < all.len() {
                summary.preview.push(format!(
                    "… {} more lines in the worker's log",
                    all.len() - kept
                ));
            }
        }
        loop {
            let Ok(json) = serde_json::to_string(&summary) else {
                return FALLBACK.to_owned();
            };
            if json.len() <= MAX_TERMINATION_MESSAGE {
                return json;
            }
            let over = json.len() - MAX_TERMINATION_MESSAGE;
            // The longest of the texts is cut.
            let mut texts = vec![&mut summary.message];
            if let Some(checks) = summary.checks.as_mut() {
                texts.push(&mut checks.source);
                texts.push(&mut checks.storage);
            }
            let Some(longest) = texts.into_iter().max_by_key(|t| escaped_len(t)) else {
                return FALLBACK.to_owned();
            };
            let text = longest.trim_end_matches('…');
            if text.is_empty() {
                return FALLBACK.to_owned();
            }
            // Characters come off the end until their JSON (escapes up to 6 bytes each)
            // makes up for what is over, and the `…` (3 bytes).
            let mut saved = 0;
            let mut keep = text.len();
            for (i, c) in text.char_indices().rev() {
                if saved >= over + 3 {
                    break;
                }
                saved += escaped_len(c.encode_utf8(&mut [0; 4]));
                keep = i;
            }
            *longest = format!("{}…", &text[..keep]);
        }
    }

    /// Reads a termination message; `None` when it is not a worker's summary (for example the
    /// tail of a log Kubernetes put there because the worker crashed).
    pub fn from_termination_message(message: &str) -> Option<Self> {
        serde_json::from_str(message.trim()).ok()
    }
}

/// The bytes `text` takes inside a JSON string.
fn escaped_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(text.len(), |json| json.len().saturating_sub(2))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_long_failure_still_fits_in_a_termination_message() {
        let summary = Summary::failed(Failure::SourceError, "x\n".repeat(10_000));
        let message = summary.to_termination_message();
        assert!(
            message.len() <= MAX_TERMINATION_MESSAGE,
            "{}",
            message.len()
        );
        let back = Summary::from_termination_message(&message).unwrap();
        assert_eq!(back.failure, Some(Failure::SourceError));
        assert!(!back.message.contains('\n'));
    }

    #[test]
    fn a_long_preview_keeps_its_first_lines_and_says_how_many_more_there_are() {
        let lines: Vec<String> = (0..500)
            .map(|i| format!("  public.table_{i}: {i} rows now, {i} rows after"))
            .collect();
        let summary = Summary {
            message: "dry run: nothing was written".into(),
            preview: lines.clone(),
            ..Summary::default()
        };
        let message = summary.to_termination_message();
        assert!(
            message.len() <= MAX_TERMINATION_MESSAGE,
            "{}",
            message.len()
        );
        let back = Summary::from_termination_message(&message).unwrap();
        let (last, first) = back.preview.split_last().unwrap();
        assert!(first.len() > 20, "{}", first.len());
        assert_eq!(first, &lines[..first.len()]);
        assert_eq!(
            last,
            &format!("… {} more lines in the worker's log", 500 - first.len())
        );
        // A short one is kept whole.
        let short = Summary {
            preview: lines[..3].to_vec(),
            ..Summary::default()
        };
        let back = Summary::from_termination_message(&short.to_termination_message()).unwrap();
        assert_eq!(back.preview, lines[..3]);
    }

    #[test]
    fn a_check_with_long_findings_keeps_its_findings() {
        // Control characters, which JSON writes as six bytes each (`\u0001`).
        let long = "cannot connect: ".to_owned() + &"\u{1}".repeat(2000);
        let summary = Summary {
            failure: Some(Failure::SourceUnreachable),
            message: format!("{long}; {long}"),
            checks: Some(Checks {
                source_ok: false,
                source: long.clone(),
                storage_ok: true,
                storage: long,
            }),
            ..Summary::default()
        };
        let message = summary.to_termination_message();
        assert!(
            message.len() <= MAX_TERMINATION_MESSAGE,
            "{}",
            message.len()
        );
        let back = Summary::from_termination_message(&message).unwrap();
        let checks = back.checks.unwrap();
        assert!(!checks.source_ok && checks.storage_ok);
        assert!(checks.source.starts_with("cannot connect: "));
    }

    #[test]
    fn any_characters_fit_in_bytes_and_stay_valid_json() {
        // Multi-byte characters and characters JSON must escape: 1500 of them are far more
        // than 4096 bytes.
        for unit in ["é", "€", "𝄞", "\"", "\u{1}", "\\"] {
            let mut summary = Summary::failed(Failure::SourceError, unit.repeat(3000));
            summary.folder = Some("f".repeat(300));
            let message = summary.to_termination_message();
            assert!(
                message.len() <= MAX_TERMINATION_MESSAGE,
                "{unit:?}: {}",
                message.len()
            );
            let back = Summary::from_termination_message(&message).unwrap();
            assert_eq!(back.failure, Some(Failure::SourceError), "{unit:?}");
            assert!(back.message.ends_with('…'), "{unit:?}");
            if !unit.chars().any(char::is_control) {
                assert!(back.message.starts_with(unit), "{unit:?}");
            }
            assert_eq!(back.folder, summary.folder);
        }
    }

    #[test]
    fn a_log_tail_is_not_a_summary() {
        assert_eq!(
            Summary::from_termination_message("panicked at main.rs"),
            None
        );
        assert_eq!(Summary::from_termination_message(""), None);
    }
}
