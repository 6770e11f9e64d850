//! `coffer delete BACKUP`: remove one backup's folder from a store, manifest first (the way
//! out when the operator left a Backup's data behind, with a DataNotDeleted Event).

use clap::Args;

use super::CliError;
use super::options::S3Args;
use crate::storage::purge::{self, PurgeError};
use crate::storage::{Destination, Store};
use crate::units;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The backup: a location `coffer backup` or `coffer list` printed, or the one a
    /// DataNotDeleted Event names.
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    /// Only delete it if its manifest names this Backup object's UID (or names none).
    #[arg(long, value_name = "UID")]
    pub owner_uid: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

pub async fn run(args: DeleteArgs) -> Result<(), CliError> {
    let destination =
        Destination::parse(&args.backup).map_err(|e| CliError::usage(e.to_string()))?;
    // The store is opened at the backup's parent, and the backup is a folder in it.
    let not_a_backup = || {
        CliError::usage(format!(
            "{destination} is not a backup's folder: name one that `coffer list` shows"
        ))
    };
    let (parent, folder) = match &destination {
        Destination::S3 { bucket, prefix } => {
            let trimmed = prefix.trim_end_matches('/');
            let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
            if name.is_empty() {
                return Err(not_a_backup());
            }
            (
                Destination::S3 {
                    bucket: bucket.clone(),
                    prefix: if parent.is_empty() {
                        String::new()
                    } else {
                        format!("{parent}/")
                    },
                },
                format!("{name}/"),
            )
        }
        Destination::Dir(dir) => {
            let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
                return Err(not_a_backup());
            };
            (
                Destination::Dir(parent.to_owned()),
                format!("{}/", name.to_string_lossy()),
            )
        }
    };
    let store = Store::open(&parent, &args.s3.options()).await;
    let purged = purge::delete_backup(&store, &folder, args.owner_uid.as_deref())
        .await
        .map_err(|e| match e {
            PurgeError::Root | PurgeError::Nested { .. } => CliError::usage(e.to_string()),
            other => CliError::from_display(other),
        })?;
    if purged.objects == 0 {
        return Err(CliError::failed(format!(
            "{destination} holds nothing: check the location (`coffer list` shows the backups)"
        )));
    }
    eprintln!(
        "deleted {} object(s) ({}) at {destination}",
        purged.objects,
        units::bytes(purged.stored_bytes)
    );
    Ok(())
}
