//! `coffer backup SOURCE [--to DEST] ...`: a backup from the command line.

use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use clap::Args;

use super::keys::RecipientArgs;
use super::options::{CompressionArg, ModeArg, S3Args};
use super::progress::Display;
use super::{CliError, my_target, open_store, pg_target};
use crate::api::Compression;
use crate::engine::mysql::{self, MyBackupRequest};
use crate::engine::postgres::{self, PgBackupRequest};
use crate::engine::redis::{self, BackupRequest, RedisTarget};
use crate::engine::volume::{self, VolumeBackupRequest};
use crate::pipeline::Progress;
use crate::pipeline::encryption::Seal;
use crate::storage::manifest::{MANIFEST, Manifest};
use crate::storage::{Destination, Store, keys};
use crate::units;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// What to back up: redis://[user:password@]host:port[/db],
    /// postgres://user[:password]@host:port[/db], mysql://user[:password]@host:port[/db]
    /// (MySQL or MariaDB), or a directory.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Where to store it: s3://bucket/prefix or a directory (file:// optional).
    #[arg(long, value_name = "DEST", default_value = "./coffer-backups")]
    pub to: String,
    /// Compression of the stored data.
    #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
    pub compression: CompressionArg,
    /// The backup's name: its folder under DEST (default: <kind>-<host>-<port>, or
    /// volume-<directory name>).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Redis: how the data is read.
    #[arg(long, value_enum, default_value_t = ModeArg::Snapshot)]
    pub mode: ModeArg,
    /// PostgreSQL, MySQL: the databases to back up, comma-separated (default: every database
    /// that is not a template, or not the server's own schemas).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub databases: Vec<String>,
    /// PostgreSQL: leave out roles and tablespaces (pg_dumpall --globals-only).
    #[arg(long)]
    pub no_globals: bool,
    /// PostgreSQL: the directory with pg_dump, pg_dumpall, pg_restore and psql (default:
    /// PATH, then /usr/lib/postgresql/<newest>/bin).
    #[arg(long, value_name = "DIR")]
    pub pg_bin_dir: Option<PathBuf>,
    /// MySQL: also back up the accounts and their grants.
    #[arg(long)]
    pub users: bool,
    /// MySQL: the directory with mariadb-dump and mariadb, or mysqldump and mysql (default:
    /// PATH).
    #[arg(long, value_name = "DIR")]
    pub mysql_bin_dir: Option<PathBuf>,
    /// Directories: leave out files that cannot be read (they are listed in the manifest)
    /// instead of failing.
    #[arg(long)]
    pub skip_unreadable: bool,
    #[command(flatten)]
    pub encryption: RecipientArgs,
    /// Lock every object of the backup against deletion and overwriting (S3 Object Lock) in
    /// this mode, for --retain-for. The bucket must have object lock enabled.
    #[arg(long, value_enum, value_name = "MODE", requires = "retain_for")]
    pub object_lock: Option<LockModeArg>,
    /// How long the objects are locked, from now: a number and m, h, d or w (`30d`).
    #[arg(long, value_name = "PERIOD", requires = "object_lock", value_parser = parse_period)]
    pub retain_for: Option<chrono::TimeDelta>,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LockModeArg {
    Governance,
    Compliance,
}

fn parse_period(text: &str) -> Result<chrono::TimeDelta, String> {
    crate::freshness::parse_age(text).map_err(|e| e.to_string())
}

/// The store to write to, with the lock asked for (checked against the bucket first).
async fn open_locked(args: &BackupArgs) -> Result<(Store, Destination), CliError> {
    let (Some(mode), Some(period)) = (args.object_lock, args.retain_for) else {
        return open_store(&args.to, &args.s3).await;
    };
    let destination = Destination::parse(&args.to).map_err(|e| CliError::usage(e.to_string()))?;
    if !matches!(destination, Destination::S3 { .. }) {
        return Err(CliError::usage(
            "--object-lock needs an s3:// destination: S3 Object Lock is a feature of S3 buckets",
        ));
    }
    let mut options = args.s3.options();
    if options.checksums_when_required {
        return Err(CliError::usage(
            "--object-lock needs request checksums (S3 refuses a locked upload without one): leave out --s3-checksums when-required",
        ));
    }
    options.lock = Some(crate::storage::lock::Lock {
        mode: match mode {
            LockModeArg::Governance => crate::api::ObjectLockMode::Governance,
            LockModeArg::Compliance => crate::api::ObjectLockMode::Compliance,
        },
        until: Utc::now() + period,
    });
    let store = Store::open(&destination, &options).await;
    if let Store::S3(s3) = &store {
        s3.check_lock().await.map_err(CliError::from_display)?;
    }
    Ok((store, destination))
}

pub async fn run(args: BackupArgs) -> Result<(), CliError> {
    let compression: Compression = args.compression.into();
    let recipients = args.encryption.parse()?;
    let (store, destination) = open_locked(&args).await?;
    let progress = Progress::default();
    let started = Instant::now();
    let (location, manifest, what) = if args.source.starts_with("redis://")
        || args.source.starts_with("rediss://")
    {
        let target = RedisTarget::parse(&args.source).map_err(CliError::from_display)?;
        let name = name(&args, || format!("redis-{}-{}", target.host, target.port))?;
        let folder = free_folder(&store, &name).await?;
        let seal = seal(&store, &folder, &recipients).await?;
        let request = BackupRequest {
            target: target.clone(),
            mode: args.mode.into(),
            compression,
            name,
            folder: folder.clone(),
            owner: None,
            seal,
        };
        let display = Display::start(format!("backing up {target}"), progress.clone());
        let result = redis::backup(&store, &request, &progress).await;
        display.finish().await;
        if let (Some(seal), true) = (&request.seal, result.is_err()) {
            keys::discard(&store, &folder, seal).await;
        }
        let manifest = result.map_err(CliError::from_display)?;
        let databases = manifest.stats.keys_per_database.len();
        let what = format!(
            "{} keys in {} database{} from {target} ({} mode)",
            manifest.stats.keys.unwrap_or(0),
            databases,
            plural(databases),
            request.mode.as_str()
        );
        (folder, manifest, what)
    } else if args.source.starts_with("postgres://") || args.source.starts_with("postgresql://") {
        let target = pg_target(&args.source)?;
        let name = name(&args, || {
            format!("postgres-{}-{}", target.host, target.port)
        })?;
        let folder = free_folder(&store, &name).await?;
        let seal = seal(&store, &folder, &recipients).await?;
        let request = PgBackupRequest {
            target: target.clone(),
            databases: args.databases.clone(),
            globals: !args.no_globals,
            compression,
            name,
            folder: folder.clone(),
            owner: None,
            seal,
            bin_dir: args.pg_bin_dir.clone(),
        };
        let display = Display::start(format!("backing up {target}"), progress.clone());
        let result = postgres::backup(&store, &request, &progress).await;
        display.finish().await;
        if let (Some(seal), true) = (&request.seal, result.is_err()) {
            keys::discard(&store, &folder, seal).await;
        }
        let manifest = result.map_err(CliError::from_display)?;
        let databases = manifest.stats.databases.unwrap_or(0) as usize;
        let tables: usize = manifest.stats.table_rows.values().map(Vec::len).sum();
        let what = format!(
            "{databases} database{} ({tables} tables, {} rows){} from {target}",
            plural(databases),
            manifest.stats.total_rows(),
            if request.globals { " and roles" } else { "" }
        );
        (folder, manifest, what)
    } else if args.source.starts_with("mysql://") || args.source.starts_with("mariadb://") {
        let target = my_target(&args.source)?;
        let name = name(&args, || format!("mysql-{}-{}", target.host, target.port))?;
        let folder = free_folder(&store, &name).await?;
        let seal = seal(&store, &folder, &recipients).await?;
        let mut databases = args.databases.clone();
        if databases.is_empty()
            && let Some(db) = &target.database
        {
            databases.push(db.clone());
        }
        let request = MyBackupRequest {
            target: target.clone(),
            databases,
            users: args.users,
            compression,
            name,
            folder: folder.clone(),
            owner: None,
            seal,
            bin_dir: args.mysql_bin_dir.clone(),
        };
        let display = Display::start(format!("backing up {target}"), progress.clone());
        let result = mysql::backup(&store, &request, &progress).await;
        display.finish().await;
        if let (Some(seal), true) = (&request.seal, result.is_err()) {
            keys::discard(&store, &folder, seal).await;
        }
        let manifest = result.map_err(CliError::from_display)?;
        let databases = manifest.stats.databases.unwrap_or(0) as usize;
        let tables: usize = manifest.stats.table_rows.values().map(Vec::len).sum();
        let what = format!(
            "{databases} database{} ({tables} tables, {} rows){} from {target}",
            plural(databases),
            manifest.stats.total_rows(),
            if request.users { " and accounts" } else { "" }
        );
        (folder, manifest, what)
    } else if args.source.contains("://") {
        return Err(CliError::usage(format!(
            "{} is not a source Coffer knows: use redis://..., postgres://..., mysql://... or a directory",
            args.source.split("://").next().unwrap_or_default()
        )));
    } else {
        let path = PathBuf::from(&args.source);
        let base = std::fs::canonicalize(&path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "root".to_owned());
        let name = name(&args, || format!("volume-{base}"))?;
        let folder = free_folder(&store, &name).await?;
        let seal = seal(&store, &folder, &recipients).await?;
        let request = VolumeBackupRequest {
            path: path.clone(),
            compression,
            name,
            folder: folder.clone(),
            owner: None,
            seal,
            skip_unreadable: args.skip_unreadable,
        };
        let display = Display::start(format!("backing up {}", path.display()), progress.clone());
        let result = volume::backup(&store, &request, &progress).await;
        display.finish().await;
        if let (Some(seal), true) = (&request.seal, result.is_err()) {
            keys::discard(&store, &folder, seal).await;
        }
        let manifest = result.map_err(CliError::from_display)?;
        let s = &manifest.stats;
        let mut what = format!(
            "{}, {}, {} and {} from {}",
            counted(s.files, "file", "files"),
            counted(s.directories, "directory", "directories"),
            counted(s.symlinks, "symbolic link", "symbolic links"),
            counted(s.hard_links, "hard link", "hard links"),
            manifest.source.address
        );
        if !s.unreadable.is_empty() {
            what.push_str(&format!(
                " (left out {} unreadable: {})",
                s.unreadable.len(),
                s.unreadable.join(", ")
            ));
        }
        (folder, manifest, what)
    };
    summarize(&manifest, &what, started);
    println!("{}", destination.join(&location));
    Ok(())
}

/// A new data key for the backup in `folder`, stored there, when it is to be encrypted.
async fn seal(
    store: &Store,
    folder: &str,
    recipients: &[age::x25519::Recipient],
) -> Result<Option<Seal>, CliError> {
    if recipients.is_empty() {
        return Ok(None);
    }
    keys::store(store, folder, recipients)
        .await
        .map(Some)
        .map_err(CliError::from_display)
}

fn summarize(manifest: &Manifest, what: &str, started: Instant) {
    let elapsed = started.elapsed();
    eprintln!(
        "backed up {what}: {} read, {} stored ({}), in {} ({})",
        units::bytes(manifest.raw_bytes()),
        units::bytes(manifest.stored_bytes()),
        manifest.compression.as_str(),
        units::duration(elapsed),
        units::rate(manifest.raw_bytes(), elapsed),
    );
}

/// `1 file`, `2 files`.
fn counted(n: Option<u64>, one: &str, many: &str) -> String {
    let n = n.unwrap_or(0);
    format!("{n} {}", if n == 1 { one } else { many })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `--name`, checked, or the default with anything but letters, digits, `.`, `-` and `_`
/// replaced.
fn name(args: &BackupArgs, default: impl FnOnce() -> String) -> Result<String, CliError> {
    match &args.name {
        Some(name) => {
            let valid = !name.is_empty()
                && name.len() <= 128
                && !name.starts_with('.')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if valid {
                Ok(name.clone())
            } else {
                Err(CliError::usage(format!(
                    "--name {name:?} is not a valid backup name: use letters, digits, '.', '-' and '_' (it becomes a folder)"
                )))
            }
        }
        None => Ok(default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '-'
                }
            })
            .collect()),
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
