//! `coffer restore BACKUP --to TARGET [...]`: Redis, PostgreSQL or a directory.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::keys::{self, IdentityArgs};
use super::options::{ConflictArg, S3Args};
use super::progress::Display;
use super::{CliError, my_target, open_store, pg_target, read_manifest};
use crate::api::restore_request::RoleConflict;
use crate::engine::mysql::{self, MyRestoreRequest};
use crate::engine::postgres::{self, PgRestoreRequest};
use crate::engine::redis::{self, RedisTarget, RestoreRequest};
use crate::engine::volume::{self, VolumeRestoreRequest};
use crate::pipeline::Progress;
use crate::pipeline::encryption::DataKey;
use crate::pipeline::fetch::Spool;
use crate::storage::catalog;
use crate::units;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup: a location `coffer backup` printed (or, with --latest, a destination
    /// whose newest complete backup is restored).
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    /// Where to restore: redis://..., postgres://..., mysql://... or a directory. With a
    /// database in the URL, a single database of the backup is restored into it.
    #[arg(long, value_name = "TARGET")]
    pub to: String,
    /// BACKUP is a destination: restore its newest complete backup.
    #[arg(long)]
    pub latest: bool,
    /// Redis: what to do with keys that already exist.
    #[arg(long, value_enum, default_value_t = ConflictArg::Skip)]
    pub conflict: ConflictArg,
    /// Redis: restore only this database of the backup.
    #[arg(long, value_name = "N")]
    pub database: Option<u32>,
    /// PostgreSQL, MySQL: restore only these databases, comma-separated.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub databases: Vec<String>,
    /// PostgreSQL: drop objects before re-creating them (pg_restore --clean --if-exists).
    /// MySQL: drop the restored databases and create them again first. Directories: empty
    /// the target first.
    #[arg(long)]
    pub clean: bool,
    /// PostgreSQL, MySQL: create target databases that do not exist.
    #[arg(long)]
    pub create: bool,
    /// PostgreSQL: also restore roles and tablespaces, in one transaction. Missing roles are
    /// created; existing ones are kept or replaced (--roles); the role logging in is never
    /// changed. A roles script with psql meta-commands or other statements than pg_dumpall
    /// writes is refused.
    #[arg(long)]
    pub globals: bool,
    /// PostgreSQL, with --globals: roles that already exist in the target keep their
    /// password and attributes (keep, the default) or get the backup's (replace).
    #[arg(long, value_enum, value_name = "keep|replace")]
    pub roles: Option<RolesArg>,
    /// MySQL: restore database OLD of the backup into NEW (repeat for more).
    #[arg(long, value_name = "OLD=NEW", value_parser = mysql::restore::parse_rename)]
    pub rename: Vec<(String, String)>,
    /// MySQL: also restore the accounts and their grants (accounts that exist are kept).
    #[arg(long)]
    pub users: bool,
    /// MySQL: the directory with mariadb and mariadb-dump (or mysql and mysqldump).
    #[arg(long, value_name = "DIR")]
    pub mysql_bin_dir: Option<PathBuf>,
    /// PostgreSQL: the directory with pg_restore and psql.
    #[arg(long, value_name = "DIR")]
    pub pg_bin_dir: Option<PathBuf>,
    /// Redis, PostgreSQL, MySQL: where the backup is downloaded once and checked before it is
    /// restored, when it fits (leaving 256 MiB free). Without room, the backup is checked in
    /// the store and read again for the restore. Default: TMPDIR unless it is in memory,
    /// leaving a tenth of its filesystem free if that is more than 256 MiB.
    #[arg(long, value_name = "DIR", conflicts_with = "no_spool")]
    pub spool_dir: Option<PathBuf>,
    /// Redis, PostgreSQL, MySQL: never download the backup before restoring it: check it in the
    /// store, then read it again for the restore.
    #[arg(long)]
    pub no_spool: bool,
    /// A copy of the backup (a location `coffer copy` printed; repeat for more), restored
    /// instead when BACKUP is missing or damaged. With copies, BACKUP is checked whole (every
    /// object's size and SHA-256) before anything is restored, and so is the copy used.
    #[arg(long, value_name = "COPY", conflicts_with = "latest")]
    pub fallback: Vec<String>,
    /// Check the backup and read the target, write nothing, and print what the restore would
    /// do: Redis keys added, skipped, overwritten and flushed; a directory's files created,
    /// replaced, left alone and removed (counts and examples); PostgreSQL and MySQL databases
    /// created, dropped or restored into, every table's rows now and after, and the roles or
    /// accounts.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// The backup to restore: BACKUP when it is whole, else the first whole copy (same-store
/// S3 settings), said on stderr. Without copies, BACKUP as it is (the restore checks it).
async fn locate(
    args: &RestoreArgs,
) -> Result<(crate::storage::Store, crate::storage::Destination), CliError> {
    use crate::storage::copy;
    let (store, destination) = open_store(&args.backup, &args.s3).await?;
    if args.fallback.is_empty() {
        return Ok((store, destination));
    }
    let primary = match copy::check_whole(&store, "", None).await {
        Ok(_) => return Ok((store, destination)),
        Err(e) if e.is_source_damaged() => e,
        Err(e) => return Err(CliError::from_display(e)),
    };
    // The manifest the copies must have, when the backup's own could still be read.
    // The manifest the copies must have, when the backup's own still reads as one; else the
    // copy must at least be of the same folder name (a copy keeps it).
    let expected = match store
        .get_bytes(
            crate::storage::manifest::MANIFEST,
            crate::storage::manifest::MAX_MANIFEST_BYTES,
        )
        .await
    {
        Ok(bytes) if crate::storage::manifest::Manifest::from_json(&bytes, "").is_ok() => {
            Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)))
        }
        _ => None,
    };
    let folder_name = |d: &crate::storage::Destination| {
        d.to_string()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let mut tried = Vec::new();
    for location in &args.fallback {
        let (copy_store, copy_destination) = open_store(location, &args.s3).await?;
        if expected.is_none() && folder_name(&copy_destination) != folder_name(&destination) {
            tried.push(format!(
                "{copy_destination}: not a copy of this backup (another folder name, and the backup's manifest cannot tell)"
            ));
            continue;
        }
        match copy::check_whole(&copy_store, "", expected.as_deref()).await {
            Ok(_) => {
                eprintln!(
                    "{destination} cannot be used ({primary}); restoring from the copy at {copy_destination}"
                );
                return Ok((copy_store, copy_destination));
            }
            Err(e) => tried.push(format!("{copy_destination}: {e}")),
        }
    }
    Err(CliError::failed(format!(
        "{primary}; no copy could stand in ({}); nothing was restored",
        tried.join("; ")
    )))
}

/// `--roles`: what a PostgreSQL restore does with roles that exist in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RolesArg {
    /// Leave their password and attributes as they are.
    Keep,
    /// Give them the backup's password and attributes.
    Replace,
}

impl From<RolesArg> for RoleConflict {
    fn from(r: RolesArg) -> Self {
        match r {
            RolesArg::Keep => Self::Keep,
            RolesArg::Replace => Self::Replace,
        }
    }
}

pub async fn run(args: RestoreArgs) -> Result<(), CliError> {
    let kind = if args.to.starts_with("redis://") || args.to.starts_with("rediss://") {
        "redis"
    } else if args.to.starts_with("postgres://") || args.to.starts_with("postgresql://") {
        "postgres"
    } else if args.to.starts_with("mysql://") || args.to.starts_with("mariadb://") {
        "mysql"
    } else if args.to.contains("://") {
        return Err(CliError::usage(format!(
            "{} is not a restore target: use redis://..., postgres://..., mysql://... or a directory",
            args.to
        )));
    } else {
        "volume"
    };
    if args.roles.is_some() && !(kind == "postgres" && args.globals) {
        return Err(CliError::usage(
            "--roles applies to PostgreSQL roles restored with --globals: add --globals, or leave --roles out",
        ));
    }
    let identities = args.identity.parse()?;
    let (store, destination) = locate(&args).await?;
    let (folder, manifest) = if args.latest {
        catalog::latest(&store)
            .await
            .map_err(CliError::from_display)?
            .ok_or_else(|| CliError::failed(format!("{destination} holds no complete backup")))?
    } else {
        (String::new(), read_manifest(&store, "").await?)
    };
    if manifest.source.kind != kind {
        return Err(CliError::failed(format!(
            "{} is a {} backup; it cannot be restored into {}",
            destination.join(&folder),
            manifest.source.kind,
            if kind == "volume" {
                "a directory"
            } else {
                kind
            }
        )));
    }
    // An encrypted backup opens before anything else is done.
    if manifest.encryption.is_none() && !identities.is_empty() {
        return Err(CliError::failed(format!(
            "{} is not encrypted, but --identity was given: if it was meant to be encrypted, it was replaced or taken without encryption; leave out --identity to restore it anyway",
            destination.join(&folder)
        )));
    }
    let key = keys::unlock(&store, &folder, &manifest, &identities).await?;
    let progress = Progress::default();
    if args.dry_run {
        return super::preview::dry_run(&args, &store, &folder, &manifest, key, &progress).await;
    }
    let display = Display::start(
        format!("restoring into {}", shown_target(&args.to)),
        progress.clone(),
    );
    let started = Instant::now();
    let summary = match kind {
        "redis" => {
            let request = RestoreRequest {
                target: RedisTarget::parse(&args.to).map_err(CliError::from_display)?,
                conflict: args.conflict.into(),
                database: args.database,
                spool: spool(&args),
                key: key.clone(),
            };
            redis::restore(&store, &folder, &manifest, &request, &progress)
                .await
                .map(|stats| {
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
                    summary
                })
                .map_err(CliError::from_display)
        }
        "postgres" => {
            let request = pg_request(&args, key.clone())?;
            postgres::restore(&store, &folder, &manifest, &request, &progress)
                .await
                .map(|stats| {
                    let mut summary = format!(
                        "restored {} database(s) ({} created); verified {} tables, {} rows",
                        stats.databases, stats.created, stats.tables_verified, stats.rows_verified
                    );
                    if args.globals {
                        summary.push_str(&format!(
                            "; roles: {} created, {} kept, {} replaced",
                            stats.roles_created, stats.roles_kept, stats.roles_replaced
                        ));
                        if stats.tablespaces_created + stats.tablespaces_kept > 0 {
                            summary.push_str(&format!(
                                "; tablespaces: {} created, {} kept",
                                stats.tablespaces_created, stats.tablespaces_kept
                            ));
                        }
                    }
                    summary
                })
                .map_err(CliError::from_display)
        }
        "mysql" => {
            let request = my_request(&args, key.clone())?;
            mysql::restore(&store, &folder, &manifest, &request, &progress)
                .await
                .map(|stats| {
                    format!(
                        "restored {} database(s) ({} created){}; verified {} tables, {} rows",
                        stats.databases,
                        stats.created,
                        if stats.users { " and the accounts" } else { "" },
                        stats.tables_verified,
                        stats.rows_verified
                    )
                })
                .map_err(CliError::from_display)
        }
        _ => {
            let request = VolumeRestoreRequest {
                target: PathBuf::from(&args.to),
                clean: args.clean,
                key: key.clone(),
            };
            volume::restore(&store, &folder, &manifest, &request, &progress)
                .await
                .map(|entries| format!("restored {entries} entries into {}", args.to))
                .map_err(CliError::from_display)
        }
    };
    display.finish().await;
    let summary = summary?;
    eprintln!(
        "restored {} into {} in {}",
        destination.join(&folder),
        shown_target(&args.to),
        units::duration(started.elapsed())
    );
    println!("{summary}");
    Ok(())
}

/// The PostgreSQL restore the arguments ask for.
pub(super) fn pg_request(
    args: &RestoreArgs,
    key: Option<DataKey>,
) -> Result<PgRestoreRequest, CliError> {
    Ok(PgRestoreRequest {
        target: pg_target(&args.to)?,
        databases: args.databases.clone(),
        clean: args.clean,
        create: args.create,
        globals: args.globals,
        roles: args.roles.map_or(RoleConflict::Keep, RoleConflict::from),
        bin_dir: args.pg_bin_dir.clone(),
        spool: spool(args),
        key,
    })
}

/// The MySQL restore the arguments ask for.
pub(super) fn my_request(
    args: &RestoreArgs,
    key: Option<DataKey>,
) -> Result<MyRestoreRequest, CliError> {
    Ok(MyRestoreRequest {
        target: my_target(&args.to)?,
        databases: args.databases.clone(),
        renames: args.rename.clone(),
        clean: args.clean,
        create: args.create,
        users: args.users,
        bin_dir: args.mysql_bin_dir.clone(),
        spool: spool(args),
        key,
    })
}

/// Where the backup may be downloaded before it is restored.
pub(super) fn spool(args: &RestoreArgs) -> Spool {
    match (&args.spool_dir, args.no_spool) {
        (_, true) => Spool::off(),
        (Some(dir), false) => Spool::in_dir(dir.clone()),
        (None, false) => Spool::default(),
    }
}

/// The target without its password.
pub(super) fn shown_target(target: &str) -> String {
    if target.contains("://") {
        crate::text::redact_url(target)
    } else {
        target.to_owned()
    }
}
