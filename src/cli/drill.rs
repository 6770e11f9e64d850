//! `coffer drill BACKUP`: restore a backup into a scratch instance this command starts and
//! throws away, check it, and print the report (see [`crate::drill`]).

use std::path::PathBuf;

use clap::Args;

use super::keys::{self, IdentityArgs};
use super::options::S3Args;
use super::progress::Display;
use super::{CliError, open_store, read_manifest};
use crate::drill::{self, DrillRequest, UserCheck, Verdict};
use crate::pipeline::Progress;
use crate::pipeline::fetch::Spool;
use crate::storage::catalog;
use crate::units;

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The backup: a location `coffer backup` printed (or, with --latest, a destination
    /// whose newest complete backup is drilled).
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    /// BACKUP is a destination: drill its newest complete backup.
    #[arg(long)]
    pub latest: bool,
    /// Redis: a command and the reply it must give in the scratch server's database 0, as
    /// `COMMAND ARG... => REPLY` (repeat for more). Integers are compared as digits, nil as
    /// `(nil)`.
    #[arg(long, value_name = "CHECK", value_parser = UserCheck::parse_redis)]
    pub check_redis: Vec<UserCheck>,
    /// PostgreSQL, MySQL: `DATABASE: QUERY`, a query run in that database of the scratch
    /// server whose first value must be true (repeat for more).
    #[arg(long, value_name = "CHECK", value_parser = UserCheck::parse_sql)]
    pub check_sql: Vec<UserCheck>,
    /// Directories: a path (relative to the volume's root) that must exist once restored
    /// (repeat for more).
    #[arg(long, value_name = "PATH", value_parser = UserCheck::parse_path)]
    pub check_path: Vec<UserCheck>,
    /// Where the scratch instance lives while the drill runs (a directory is made there and
    /// removed after). It needs room for the restored data. Default: TMPDIR.
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// The directory with the scratch server's programs (`redis-server`; `initdb`,
    /// `postgres`, `pg_ctl`, `pg_restore` and `psql`; `mariadb-install-db` and `mariadbd`),
    /// when they are not where Debian puts them or on PATH.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Redis, PostgreSQL, MySQL: never download the backup into the scratch directory before
    /// restoring it: check it in the store, then read it again for the restore (as a drill
    /// without room for it there does).
    #[arg(long)]
    pub no_spool: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// The exit status of a drill that could not run (no verdict), apart from 1 (the backup
/// failed its drill).
const EXIT_NOT_RUN: u8 = 3;

/// Runs the drill until it ends or the command is stopped (SIGTERM, SIGINT): then the drill
/// is dropped at once, which kills its scratch server and removes its directory with the
/// restored data.
async fn until_stopped(
    work: impl std::future::Future<Output = Result<drill::DrillReport, drill::DrillError>>,
) -> Result<drill::DrillReport, drill::DrillError> {
    super::stopped::until_stopped(work)
        .await
        .unwrap_or_else(|signal| Err(stopped(signal)))
}

fn stopped(signal: &str) -> drill::DrillError {
    drill::DrillError::Scratch {
        what: format!("stopped by {signal}"),
        detail: "the scratch instance and its data were removed; nothing was verified".to_owned(),
    }
}

pub async fn run(args: DrillArgs) -> Result<(), CliError> {
    let identities = args.identity.parse()?;
    let (store, destination) = open_store(&args.backup, &args.s3).await?;
    let (folder, manifest) = if args.latest {
        catalog::latest(&store)
            .await
            .map_err(CliError::from_display)?
            .ok_or_else(|| CliError::failed(format!("{destination} holds no complete backup")))?
    } else {
        (String::new(), read_manifest(&store, "").await?)
    };
    let location = destination.join(&folder).to_string();
    let key = keys::unlock(&store, &folder, &manifest, &identities).await?;
    let scratch = args.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let request = DrillRequest {
        checks: [args.check_redis, args.check_sql, args.check_path].concat(),
        spool: if args.no_spool {
            Spool::off()
        } else {
            Spool::in_dir(scratch.clone())
        },
        scratch,
        bin_dir: args.bin_dir,
        key,
    };
    let progress = Progress::default();
    let display = Display::start(format!("drilling {location}"), progress.clone());
    let report = until_stopped(drill::drill(
        &store, &folder, location, &manifest, &request, &progress,
    ))
    .await;
    display.finish().await;
    let report = report.map_err(|e| match e {
        drill::DrillError::NotImplemented(_) => CliError::not_implemented(&e.to_string()),
        drill::DrillError::Usage(message) => CliError::usage(message),
        other => CliError {
            message: format!("the drill could not run: {other}"),
            code: EXIT_NOT_RUN,
        },
    })?;
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::failed(format!("writing the report: {e}")))?;
        println!("{json}");
    } else {
        println!(
            "{}: {:?} ({} checks passed, {} failed)",
            report.backup,
            report.verdict,
            report.passed(),
            report.failed()
        );
        println!(
            "restore time: {} for {}{}",
            units::duration(report.restore_time),
            units::bytes(report.bytes),
            report
                .restored
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        for check in &report.checks {
            println!(
                "  {} {}: {}",
                if check.passed { "ok    " } else { "FAILED" },
                check.name,
                check.message
            );
        }
    }
    match report.verdict {
        Verdict::Verified => Ok(()),
        Verdict::VerificationFailed => Err(CliError::failed(format!(
            "{} failed its drill: {}",
            report.backup,
            report
                .first_failure()
                .unwrap_or_else(|| "no check could be made".to_owned())
        ))),
    }
}
