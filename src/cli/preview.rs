//! `coffer restore --dry-run`: what a restore would do, found without writing anything
//! (each engine's `preview`), printed for people.

use std::path::PathBuf;

use super::CliError;
use super::progress::Display;
use super::restore::{RestoreArgs, my_request, pg_request, shown_target, spool};
use crate::engine::redis::{self, RedisTarget, RestoreRequest};
use crate::engine::volume::{self, VolumeRestoreRequest};
use crate::engine::{mysql, postgres};
use crate::pipeline::Progress;
use crate::pipeline::encryption::DataKey;
use crate::storage::Store;
use crate::storage::manifest::Manifest;

/// `--dry-run`: what the restore would do, with nothing written.
pub(super) async fn dry_run(
    args: &RestoreArgs,
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    key: Option<DataKey>,
    progress: &Progress,
) -> Result<(), CliError> {
    let display = Display::start(
        format!("previewing a restore into {}", shown_target(&args.to)),
        progress.clone(),
    );
    let found = lines(args, store, folder, manifest, key, progress).await;
    display.finish().await;
    let lines = found?;
    println!("dry run: nothing was written to {}", shown_target(&args.to));
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// The engine's preview of the restore `args` ask for, as lines.
async fn lines(
    args: &RestoreArgs,
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    key: Option<DataKey>,
    progress: &Progress,
) -> Result<Vec<String>, CliError> {
    let lines = match manifest.source.kind.as_str() {
        "volume" => {
            let request = VolumeRestoreRequest {
                target: PathBuf::from(&args.to),
                clean: args.clean,
                key,
            };
            volume::preview::preview(store, folder, manifest, &request, progress)
                .await
                .map_err(CliError::from_display)?
                .lines()
        }
        "postgres" => {
            let request = pg_request(args, key)?;
            postgres::preview::preview(store, folder, manifest, &request, progress)
                .await
                .map_err(CliError::from_display)?
                .lines(request.clean)
        }
        "mysql" => {
            let request = my_request(args, key)?;
            mysql::preview::preview(store, folder, manifest, &request, progress)
                .await
                .map_err(CliError::from_display)?
                .lines()
        }
        _ => {
            let request = RestoreRequest {
                target: RedisTarget::parse(&args.to).map_err(CliError::from_display)?,
                conflict: args.conflict.into(),
                database: args.database,
                spool: spool(args),
                key,
            };
            redis::preview(store, folder, manifest, &request, progress)
                .await
                .map_err(CliError::from_display)?
                .lines(request.conflict == crate::api::RedisConflict::Flush)
        }
    };
    Ok(lines)
}
