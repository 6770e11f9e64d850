//! A drill in a worker Pod: the backup restored into a scratch instance on the Pod's
//! emptyDir (see [`crate::drill`]), checked, and the verdict reported. The plan names no
//! source, and the Pod gets no credentials of one: production is out of the drill's reach.

use super::summary::DrillSummary;
use super::{Environment, Failed, Failure, Outcome, Summary, fail, manifest_failure, normalized};
use crate::api::DrillChecks;
use crate::drill::{self, Cause, DrillError, DrillRequest, UserCheck, Verdict};
use crate::pipeline::Progress;
use crate::pipeline::fetch::Spool;
use crate::storage::{catalog, keys};
use crate::units;

use super::encryption::unlock_failure;
use super::plan::DrillPlan;

/// The user's checks of `spec.drill.checks`, read as `coffer drill` reads its options.
pub fn user_checks(checks: &DrillChecks) -> Result<Vec<UserCheck>, String> {
    let read = |field: &str, texts: &[String], parse: fn(&str) -> Result<UserCheck, String>| {
        texts
            .iter()
            .enumerate()
            .map(|(n, text)| {
                parse(text).map_err(|e| format!("spec.drill.checks.{field}[{n}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok([
        read("redis", &checks.redis, UserCheck::parse_redis)?,
        read("sql", &checks.sql, UserCheck::parse_sql)?,
        read("paths", &checks.paths, UserCheck::parse_path)?,
    ]
    .concat())
}

pub(super) async fn drill(plan: &DrillPlan, env: &Environment) -> Outcome {
    let checks = user_checks(&plan.checks).map_err(|e| fail(Failure::InvalidPlan, e))?;
    let user_names: Vec<String> = checks.iter().map(UserCheck::name).collect();
    let folder = normalized(&plan.folder);
    let (root, destination) = super::open(&plan.storage, env, "").await?;
    let manifest =
        catalog::read_manifest_expecting(&root, &folder, plan.manifest_sha256.as_deref())
            .await
            .map_err(|e| manifest_failure(&e))?;
    let store = root.at(&folder);
    let identities = match &env.identity {
        Some(text) => {
            keys::parse_identities(text, "the Secret key in spec.drill.identitySecretRef")
                .map_err(|e| fail(Failure::EncryptionKeyError, e))?
        }
        None => Vec::new(),
    };
    let key = keys::unlock(&store, "", &manifest, &identities)
        .await
        .map_err(|e| unlock_failure(&e))?;
    let scratch = std::env::temp_dir();
    let request = DrillRequest {
        checks,
        spool: Spool::in_dir(scratch.clone()),
        scratch,
        bin_dir: None,
        key,
    };
    let location = destination.join(&folder).to_string();
    let report = drill::drill(
        &store,
        "",
        location,
        &manifest,
        &request,
        &Progress::default(),
    )
    .await
    .map_err(|e| not_run(&e))?;
    // Every check, for `kubectl logs`; the summary has room for the first failure only.
    for check in &report.checks {
        tracing::info!(
            check = check.name.as_str(),
            passed = check.passed,
            "{}",
            check.message
        );
    }
    let verified = report.verdict == Verdict::Verified;
    let message = match first_failure(&report, &user_names) {
        Some(failure) => failure,
        None if verified => format!(
            "verified: {} checks passed; the restore took {} for {}",
            report.passed(),
            units::duration(report.restore_time),
            units::bytes(report.bytes)
        ),
        None => "no check could be made".to_owned(),
    };
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(Summary {
        message,
        folder: Some(folder),
        drill: Some(DrillSummary {
            verified,
            restore_millis: u64::try_from(report.restore_time.as_millis()).unwrap_or(u64::MAX),
            bytes: report.bytes,
            passed: count(report.passed()),
            failed: count(report.failed()),
        }),
        ..Summary::default()
    })
}

/// The first failed check for the summary, which becomes status, an Event and perhaps a
/// notification: a check of the user's says it did not hold, not what it returned (restored
/// data, which those who may read the Backup need not see); the log has the reply.
fn first_failure(report: &drill::DrillReport, user_names: &[String]) -> Option<String> {
    let failed = report.checks.iter().find(|c| !c.passed)?;
    Some(if user_names.contains(&failed.name) {
        format!(
            "{}: did not hold (what it returned is in the drill worker's log)",
            failed.name
        )
    } else {
        format!("{}: {}", failed.name, failed.message)
    })
}

fn not_run(e: &DrillError) -> Failed {
    match e {
        DrillError::Usage(_) => fail(Failure::InvalidPlan, e),
        // Not the backup's fault: the store's or the scratch room's, and nothing verified.
        DrillError::Stopped { cause, .. } => fail(
            match cause {
                Cause::Store => Failure::StorageError,
                Cause::NoSpace => Failure::NoSpace,
                Cause::Scratch => Failure::DrillNotRun,
            },
            format!("the drill could not run to its end: {e}; nothing was verified"),
        ),
        DrillError::Scratch { .. } | DrillError::NotImplemented(_) => fail(
            Failure::DrillNotRun,
            format!("the drill could not run: {e}; nothing was verified"),
        ),
    }
}
