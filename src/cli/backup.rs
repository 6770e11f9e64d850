//! `coffer backup SOURCE [--to DEST] ...`: a backup from the command line.

use std::time::Instant;

use chrono::Utc;
use clap::Args;

use super::options::{CompressionArg, ModeArg, S3Args};
use super::progress::Display;
use super::{CliError, open_store};
use crate::engine::redis::{self, BackupRequest, RedisTarget};
use crate::pipeline::Progress;
use crate::storage::Store;
use crate::storage::manifest::MANIFEST;
use crate::units;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// What to back up: redis://[user:password@]host:port[/db].
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Where to store it: s3://bucket/prefix or a directory (file:// optional).
    #[arg(long, value_name = "DEST", default_value = "./coffer-backups")]
    pub to: String,
    /// How Redis data is read.
    #[arg(long, value_enum, default_value_t = ModeArg::Snapshot)]
    pub mode: ModeArg,
    /// Compression of the stored data.
    #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
    pub compression: CompressionArg,
    /// The backup's name: its folder under DEST (default: redis-<host>-<port>).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

pub async fn run(args: BackupArgs) -> Result<(), CliError> {
    if !args.source.starts_with("redis://") && !args.source.starts_with("rediss://") {
        return Err(CliError::not_implemented(
            "only Redis sources (redis://...) can be backed up yet; PostgreSQL and directories come next",
        ));
    }
    let target = RedisTarget::parse(&args.source).map_err(CliError::from_display)?;
    let name = match &args.name {
        Some(name) => check_name(name)?,
        None => default_name(&target),
    };
    let (store, destination) = open_store(&args.to, &args.s3).await?;
    let folder = free_folder(&store, &name).await?;
    let request = BackupRequest {
        target: target.clone(),
        mode: args.mode.into(),
        compression: args.compression.into(),
        name,
        folder: folder.clone(),
    };
    let progress = Progress::default();
    let display = Display::start(format!("backing up {target}"), progress.clone());
    let started = Instant::now();
    let result = redis::backup(&store, &request, &progress).await;
    display.finish().await;
    let manifest = result.map_err(CliError::from_display)?;
    let elapsed = started.elapsed();
    let databases = manifest.stats.keys_per_database.len();
    eprintln!(
        "backed up {} keys in {} database{} from {target} ({} mode): {} read, {} stored ({}), in {} ({})",
        manifest.stats.keys.unwrap_or(0),
        databases,
        if databases == 1 { "" } else { "s" },
        request.mode.as_str(),
        units::bytes(manifest.raw_bytes()),
        units::bytes(manifest.stored_bytes()),
        request.compression.as_str(),
        units::duration(elapsed),
        units::rate(manifest.raw_bytes(), elapsed),
    );
    println!("{}", destination.join(&folder));
    Ok(())
}

/// `redis-<host>-<port>`, with anything but letters, digits, `.`, `-` and `_` replaced.
fn default_name(target: &RedisTarget) -> String {
    let raw = format!("redis-{}-{}", target.host, target.port);
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn check_name(name: &str) -> Result<String, CliError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(CliError::usage(format!(
            "--name {name:?} is not a valid backup name: use letters, digits, '.', '-' and '_' (it becomes a folder)"
        )))
    }
}

/// `<name>/<UTC timestamp>/`, with `-1`, `-2`, ... added if a backup already exists there.
async fn free_folder(store: &Store, name: &str) -> Result<String, CliError> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    for attempt in 0..100 {
        let folder = if attempt == 0 {
            format!("{name}/{stamp}/")
        } else {
            format!("{name}/{stamp}-{attempt}/")
        };
        let taken = store
            .list(&folder)
            .await
            .map_err(CliError::from_display)?
            .iter()
            .any(|o| o.key == format!("{folder}{MANIFEST}"));
        if !taken {
            return Ok(folder);
        }
    }
    Err(CliError::failed(format!(
        "too many backups named {name} at {stamp}"
    )))
}
