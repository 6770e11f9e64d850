//! `coffer restore BACKUP --to redis://... [--conflict skip|overwrite|flush]`.

use std::time::Instant;

use clap::Args;

use super::options::{ConflictArg, S3Args};
use super::progress::Display;
use super::{CliError, open_store, read_manifest};
use crate::engine::redis::{self, RedisTarget, RestoreRequest};
use crate::pipeline::Progress;
use crate::storage::catalog;
use crate::units;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup: a location `coffer backup` printed (or, with --latest, a destination
    /// whose newest complete backup is restored).
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    /// Where to restore: redis://[user:password@]host:port[/db] (with /db, a single
    /// database of the backup is restored into database db).
    #[arg(long, value_name = "TARGET")]
    pub to: String,
    /// What to do with keys that already exist.
    #[arg(long, value_enum, default_value_t = ConflictArg::Skip)]
    pub conflict: ConflictArg,
    /// Restore only this database of the backup.
    #[arg(long, value_name = "N")]
    pub database: Option<u32>,
    /// BACKUP is a destination: restore its newest complete backup.
    #[arg(long)]
    pub latest: bool,
    #[command(flatten)]
    pub s3: S3Args,
}

pub async fn run(args: RestoreArgs) -> Result<(), CliError> {
    if !args.to.starts_with("redis://") && !args.to.starts_with("rediss://") {
        return Err(CliError::not_implemented(
            "only Redis targets (redis://...) can be restored into yet",
        ));
    }
    let target = RedisTarget::parse(&args.to).map_err(CliError::from_display)?;
    let (store, destination) = open_store(&args.backup, &args.s3).await?;
    let (folder, manifest) = if args.latest {
        catalog::latest(&store)
            .await
            .map_err(CliError::from_display)?
            .ok_or_else(|| CliError::failed(format!("{destination} holds no complete backup")))?
    } else {
        (String::new(), read_manifest(&store, "").await?)
    };
    if manifest.source.kind != "redis" {
        return Err(CliError::failed(format!(
            "{} is a {} backup; it cannot be restored into Redis",
            destination.join(&folder),
            manifest.source.kind
        )));
    }
    let request = RestoreRequest {
        target: target.clone(),
        conflict: args.conflict.into(),
        database: args.database,
    };
    let progress = Progress::default();
    let display = Display::start(format!("restoring into {target}"), progress.clone());
    let started = Instant::now();
    let result = redis::restore(&store, &folder, &manifest, &request, &progress).await;
    display.finish().await;
    let stats = result.map_err(CliError::from_display)?;
    eprintln!(
        "restored {} from {} in {}",
        target,
        destination.join(&folder),
        units::duration(started.elapsed())
    );
    let mut summary = format!(
        "restored {} keys, skipped {} existing, {} expired",
        stats.restored, stats.skipped, stats.expired
    );
    if stats.functions_restored + stats.functions_skipped > 0 {
        summary.push_str(&format!(
            "; function libraries: {} restored, {} skipped",
            stats.functions_restored, stats.functions_skipped
        ));
    }
    println!("{summary}");
    Ok(())
}
