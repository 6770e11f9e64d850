//! What a restore drill found: its verdict, every check with its outcome, the measured
//! restore time. Pure data; the command line prints it, the operator will record it.

use std::time::Duration;

use serde::Serialize;

/// A drill's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// The backup restored into a scratch instance and every check passed.
    Verified,
    /// The backup did not restore, or a check failed.
    VerificationFailed,
}

/// One check and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// What was checked (`keys in database 0`, `sql app: SELECT ...`).
    pub name: String,
    pub passed: bool,
    /// What was found (and, when it failed, what was expected).
    pub message: String,
}

impl CheckResult {
    /// A check comparing a count found in the scratch instance with the backup's.
    pub fn count(name: impl Into<String>, expected: u64, found: u64) -> Self {
        Self {
            name: name.into(),
            passed: expected == found,
            message: if expected == found {
                format!("{found}, as in the backup")
            } else {
                format!("{found}, the backup {expected}")
            },
        }
    }

    pub fn passed(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: true,
            message: message.into(),
        }
    }

    pub fn failed(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: false,
            message: message.into(),
        }
    }
}

/// The outcome of one drill.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    /// The backup's location.
    pub backup: String,
    /// The engine (`redis`, `postgres`, `mysql`, `volume`).
    pub kind: String,
    pub verdict: Verdict,
    /// How long the restore into the scratch instance took (the recovery time).
    #[serde(serialize_with = "seconds")]
    pub restore_time: Duration,
    /// The backup's data as restored (decompressed bytes).
    pub bytes: u64,
    /// What the restore said it did, when it finished.
    pub restored: Option<String>,
    pub checks: Vec<CheckResult>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl DrillReport {
    /// A report from the checks made: Verified only when there are checks and all passed.
    pub fn new(
        backup: String,
        kind: String,
        restore_time: Duration,
        bytes: u64,
        restored: Option<String>,
        checks: Vec<CheckResult>,
    ) -> Self {
        let verdict = if !checks.is_empty() && checks.iter().all(|c| c.passed) {
            Verdict::Verified
        } else {
            Verdict::VerificationFailed
        };
        Self {
            backup,
            kind,
            verdict,
            restore_time,
            bytes,
            restored,
            checks,
        }
    }

    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.checks.len() - self.passed()
    }

    /// The first failed check, as one line.
    pub fn first_failure(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(checks: Vec<CheckResult>) -> DrillReport {
        DrillReport::new(
            "s3://b/x/".to_owned(),
            "redis".to_owned(),
            Duration::from_millis(1500),
            10,
            None,
            checks,
        )
    }

    #[test]
    fn verified_only_when_every_check_passed_and_there_was_one() {
        assert_eq!(report(vec![]).verdict, Verdict::VerificationFailed);
        let good = report(vec![CheckResult::count("keys", 3, 3)]);
        assert_eq!(good.verdict, Verdict::Verified);
        assert_eq!(good.first_failure(), None);
        let bad = report(vec![
            CheckResult::count("keys", 3, 3),
            CheckResult::count("keys in database 1", 2, 1),
            CheckResult::failed("functions", "x"),
        ]);
        assert_eq!(bad.verdict, Verdict::VerificationFailed);
        assert_eq!((bad.passed(), bad.failed()), (1, 2));
        assert_eq!(
            bad.first_failure().as_deref(),
            Some("keys in database 1: 1, the backup 2")
        );
    }
}
