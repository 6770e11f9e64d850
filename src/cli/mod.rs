//! The `coffer` command line: one binary for the controller, the worker, and local use.

mod backup;
mod check;
mod controller;
pub mod copy;
mod delete;
mod download;
mod drill;
mod gc;
mod keys;
mod list;
mod options;
mod preview;
mod progress;
mod restore;
mod stopped;
mod verify;
mod worker;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api;
use crate::logging::{self, LogFormat};
use crate::storage::manifest::Manifest;
use crate::storage::{Destination, Store};

/// Coffer backs up Redis, PostgreSQL and volumes to S3-compatible storage, and restores them.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about, long_about = None)]
pub struct Cli {
    /// Format of log lines on stderr. The level is set with RUST_LOG (default: info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "COFFER_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: reconcile BackupSchedules, Backups and RestoreRequests.
    Controller(controller::ControllerArgs),
    /// Run one backup or restore from a plan (used inside the Jobs the controller creates).
    Worker(worker::WorkerArgs),
    /// Print the CustomResourceDefinitions of every kind as multi-document YAML.
    Crds,
    /// Take a backup of Redis, PostgreSQL or a directory into S3 or a directory, from this
    /// machine.
    Backup(backup::BackupArgs),
    /// Restore a backup into Redis, PostgreSQL or a directory, from this machine.
    Restore(restore::RestoreArgs),
    /// List the backups in a store, newest first.
    List(list::ListArgs),
    /// Re-read a backup's objects and check them against its manifest (sizes, SHA-256).
    Verify(verify::VerifyArgs),
    /// Copy a backup to another store (3-2-1): every object checked at the destination
    /// against the manifest, the manifest written last.
    Copy(copy::CopyArgs),
    /// Write a backup's data in the source's own formats (dump.rdb, pg_dump archives, the
    /// MySQL dump, a tar) into a directory or to stdout, decrypted and decompressed, after
    /// checking it against the manifest.
    Download(download::DownloadArgs),
    /// Restore a backup into a scratch instance this command starts and throws away (a
    /// redis-server, a directory), check it against its manifest and your own checks, and
    /// print the report with the measured restore time. The source is never touched.
    Drill(drill::DrillArgs),
    /// Delete one backup (or the leftovers of a failed one) from a store: its manifest
    /// first, then its data objects.
    Delete(delete::DeleteArgs),
    /// Report (and with --delete remove) what failed or killed backups left in a store:
    /// folders without a manifest, open multipart uploads, temporary files.
    Gc(gc::GcArgs),
    /// Check, before the first backup, that a source can be backed up (it answers, the
    /// credentials work, the user has the privileges a backup needs) and that the store
    /// takes, returns and deletes an object.
    Check(check::CheckArgs),
    /// Make an age key pair for encrypted backups: the public key goes in --recipient or
    /// spec.encryption, the private key stays with whoever may restore.
    Keygen(keys::KeygenArgs),
    /// Re-encrypt backups' data keys for other recipients (rotation): rewrites each backup's
    /// small key object, never its data.
    Rewrap(keys::RewrapArgs),
    /// Print the version of Coffer.
    Version,
}

/// Exit status of a subcommand that is not built yet (the same as a usage error).
pub const EXIT_NOT_IMPLEMENTED: u8 = 2;

/// Runs the parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    logging::init(cli.log_format);
    let (name, result) = match cli.command {
        Command::Crds => return print_crds(),
        Command::Version => {
            println!("coffer {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Controller(args) => ("controller", block_on(Threads::Many, controller::run(args))),
        Command::Worker(args) => ("worker", block_on(Threads::One, worker::run(args))),
        Command::Backup(args) => ("backup", block_on(Threads::One, backup::run(args))),
        Command::Restore(args) => ("restore", block_on(Threads::One, restore::run(args))),
        Command::List(args) => ("list", block_on(Threads::One, list::run(args))),
        Command::Verify(args) => ("verify", block_on(Threads::One, verify::run(args))),
        Command::Copy(args) => ("copy", block_on(Threads::One, copy::run(args))),
        Command::Download(args) => ("download", block_on(Threads::One, download::run(args))),
        Command::Drill(args) => ("drill", block_on(Threads::One, drill::run(args))),
        Command::Delete(args) => ("delete", block_on(Threads::One, delete::run(args))),
        Command::Gc(args) => ("gc", block_on(Threads::One, gc::run(args))),
        Command::Check(args) => ("check", block_on(Threads::One, check::run(args))),
        Command::Keygen(args) => ("keygen", keys::keygen(args)),
        Command::Rewrap(args) => ("rewrap", block_on(Threads::One, keys::rewrap(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coffer {name}: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// The threads a command's async runtime has.
enum Threads {
    /// The controller: many watches and reconciles at once.
    Many,
    /// Commands that move data: one stream at a time, where every hand-over between the
    /// source, the compressor and the store would otherwise wake a thread. On 2 cores a
    /// MySQL backup ran in 8.2 s instead of 11.2 s (MariaDB's dump alone: 6 s). Compression
    /// and archiving still have threads of their own.
    One,
}

fn block_on(
    threads: Threads,
    future: impl std::future::Future<Output = Result<(), CliError>>,
) -> Result<(), CliError> {
    let runtime = match threads {
        Threads::Many => tokio::runtime::Builder::new_multi_thread(),
        Threads::One => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(future);
    // A command stopped by a signal may leave a blocking write behind (to a stdout nobody
    // reads, a hung mount): the process exits anyway.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

/// A command failed: its one-line message and exit status.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

impl CliError {
    /// Something went wrong while doing the work (exit status 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }

    pub fn from_display(e: impl std::fmt::Display) -> Self {
        Self::failed(e.to_string())
    }

    /// The command line asks for something invalid (exit status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }

    /// The command line asks for something Coffer does not do yet (exit status 2).
    pub fn not_implemented(message: &str) -> Self {
        let message = if message.contains("not implemented yet") {
            format!("{message} (see the status table in the README); nothing was done")
        } else {
            format!("not implemented yet: {message}; nothing was done")
        };
        Self {
            message,
            code: EXIT_NOT_IMPLEMENTED,
        }
    }
}

/// Opens the store at a destination given on the command line.
async fn open_store(dest: &str, s3: &options::S3Args) -> Result<(Store, Destination), CliError> {
    let destination = Destination::parse(dest).map_err(|e| CliError::usage(e.to_string()))?;
    Ok((Store::open(&destination, &s3.options()).await, destination))
}

/// A PostgreSQL target from a URL, completed from the `PG*` variables and the password file
/// (`PGPASSFILE`, else `~/.pgpass`; ignored, as by libpq, if others can read it).
fn pg_target(url: &str) -> Result<crate::engine::postgres::PgTarget, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let env: std::collections::HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PG"))
        .collect();
    let passfile = env
        .get("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))
        .filter(|p| {
            let private = std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o077 == 0);
            if p.exists() && !private {
                tracing::warn!(
                    "ignoring {} because others can read it (chmod 600 it)",
                    p.display()
                );
            }
            private
        })
        .and_then(|p| std::fs::read_to_string(p).ok());
    crate::engine::postgres::PgTarget::parse(url, &env, passfile.as_deref())
        .map_err(CliError::from_display)
}

/// A MySQL/MariaDB target from a URL, completed as the server's client programs do: the
/// `MYSQL_*` variables, then the `[client]` group of `~/.my.cnf` (ignored, as by the client
/// programs, if anyone may write it).
fn my_target(url: &str) -> Result<crate::engine::mysql::MyTarget, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let env: std::collections::HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MYSQL_"))
        .collect();
    let option_file = std::env::var_os("HOME")
        .map(|h| std::path::Path::new(&h).join(".my.cnf"))
        .filter(|p| {
            let safe = std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o002 == 0);
            if p.exists() && !safe {
                tracing::warn!("ignoring {} because anyone may write it", p.display());
            }
            safe
        })
        .and_then(|p| std::fs::read_to_string(p).ok());
    crate::engine::mysql::MyTarget::parse(url, &env, option_file.as_deref())
        .map_err(CliError::from_display)
}

/// Reads the manifest of the backup in `folder`: a folder without one holds no backup.
async fn read_manifest(store: &Store, folder: &str) -> Result<Manifest, CliError> {
    crate::storage::catalog::read_manifest(store, folder)
        .await
        .map_err(CliError::from_display)
}

fn print_crds() -> ExitCode {
    let yaml = match api::crds::to_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("coffer crds: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(yaml.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coffer crds: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}
