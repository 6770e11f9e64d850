//! `coffer copy BACKUP --to DEST`: a second copy of a backup in another store, checked object
//! by object at the destination, its manifest written last.

use clap::Args;

use super::options::S3Args;
use super::{CliError, open_store};
use crate::storage::copy::{self, CopyOptions};
use crate::storage::{Destination, S3Options, Store};
use crate::units;

/// The variables holding the destination's S3 credentials when they differ from the
/// source's (the worker of a copy Job reads the same ones).
pub const COPY_ACCESS_KEY_ENV: &str = "COFFER_COPY_AWS_ACCESS_KEY_ID";
pub const COPY_SECRET_KEY_ENV: &str = "COFFER_COPY_AWS_SECRET_ACCESS_KEY";

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The backup: a location `coffer backup` or `coffer list` printed.
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    /// The store to copy it into (s3://bucket/prefix or a directory); the backup keeps its
    /// folder's name there. Its S3 credentials come from COFFER_COPY_AWS_ACCESS_KEY_ID and
    /// COFFER_COPY_AWS_SECRET_ACCESS_KEY when set, else from the same place as the source's.
    #[arg(long, value_name = "DEST")]
    pub to: String,
    /// Endpoint URL of the destination's S3-compatible store (default: the source's).
    #[arg(long, value_name = "URL")]
    pub to_s3_endpoint: Option<String>,
    /// Region of the destination bucket (default: the source's).
    #[arg(long, value_name = "REGION")]
    pub to_s3_region: Option<String>,
    /// Path-style addressing at the destination (default: the source's).
    #[arg(long, value_name = "BOOL")]
    pub to_s3_path_style: Option<bool>,
    #[command(flatten)]
    pub s3: S3Args,
}

pub async fn run(args: CopyArgs) -> Result<(), CliError> {
    let (from, source) = open_store(&args.backup, &args.s3).await?;
    let name = backup_name(&source)?;
    let dest = Destination::parse(&args.to).map_err(|e| CliError::usage(e.to_string()))?;
    let target = dest.join(&name);
    let (shown_target, shown_source) = (target.to_string(), source.to_string());
    if shown_target.starts_with(&shown_source) || shown_source.starts_with(&shown_target) {
        return Err(CliError::usage(format!(
            "{target} is the backup itself or inside it: give --to another store or prefix"
        )));
    }
    let credentials = copy_credentials()?;
    let mut options = args.s3.options();
    // Another service or other credentials: the bytes pass through here; the same service
    // copies them itself.
    let same_service = credentials.is_none()
        && args.to_s3_endpoint.is_none()
        && args.to_s3_region.is_none()
        && args.to_s3_path_style.is_none();
    options = S3Options {
        endpoint: args.to_s3_endpoint.clone().or(options.endpoint),
        region: args.to_s3_region.clone().or(options.region),
        force_path_style: args.to_s3_path_style.or(options.force_path_style),
        credentials,
        ..options
    };
    let to = Store::open(&target, &options).await;
    let copied = copy::copy_backup(
        &from,
        "",
        &to,
        "",
        CopyOptions {
            manifest_sha256: None,
            server_side: same_service,
        },
    )
    .await
    .map_err(CliError::from_display)?;
    if copied.already {
        eprintln!(
            "{target} already holds this backup, intact ({} object(s), {}): nothing was copied",
            copied.objects,
            units::bytes(copied.bytes)
        );
    } else {
        eprintln!(
            "copied {} object(s), {}{} and checked them at the destination; manifest SHA-256 {}",
            copied.objects,
            units::bytes(copied.bytes),
            if copied.server_side > 0 {
                format!(" ({} copied by the S3 service itself)", copied.server_side)
            } else {
                String::new()
            },
            copied.manifest_sha256
        );
    }
    println!("{target}");
    Ok(())
}

/// The backup folder's own name: the last part of its location.
fn backup_name(source: &Destination) -> Result<String, CliError> {
    let name = match source {
        Destination::S3 { prefix, .. } => prefix
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned(),
        Destination::Dir(dir) => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(CliError::usage(format!(
            "{source} names no backup folder: give the backup's location, as `coffer list` prints it"
        )));
    }
    Ok(name)
}

/// The destination's credentials, when given apart from the source's.
fn copy_credentials() -> Result<Option<(String, String)>, CliError> {
    let id = std::env::var(COPY_ACCESS_KEY_ENV)
        .ok()
        .filter(|v| !v.is_empty());
    let secret = std::env::var(COPY_SECRET_KEY_ENV)
        .ok()
        .filter(|v| !v.is_empty());
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        (None, None) => Ok(None),
        _ => Err(CliError::usage(format!(
            "set both {COPY_ACCESS_KEY_ENV} and {COPY_SECRET_KEY_ENV}, or neither"
        ))),
    }
}
