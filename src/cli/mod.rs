//! The `coffer` command line: one binary for the controller, the worker, and local use.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::api;
use crate::logging::{self, LogFormat};

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

/// Every subcommand. Those not built yet exit with status 2 and say so.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: reconcile BackupSchedules, Backups and RestoreRequests.
    Controller(Pending),
    /// Run one backup or restore from a plan (used inside the Jobs the controller creates).
    Worker(Pending),
    /// Print the CustomResourceDefinitions of every kind as multi-document YAML.
    Crds,
    /// Take a backup of a Redis server, PostgreSQL databases or a directory, locally.
    Backup(Pending),
    /// Restore a backup into a Redis server, PostgreSQL or a directory, locally.
    Restore(Pending),
    /// List the backups in a store, newest first.
    List(Pending),
    /// Check a backup's objects against its manifest (sizes and SHA-256).
    Verify(Pending),
    /// Print the version of Coffer.
    Version,
}

/// Arguments of a subcommand that is not built yet: accepted, then refused.
#[derive(Debug, Args)]
pub struct Pending {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

/// Exit status of a subcommand that is not built yet (the same as a usage error).
pub const EXIT_NOT_IMPLEMENTED: u8 = 2;

/// Runs the parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    logging::init(cli.log_format);
    let name = match cli.command {
        Command::Crds => return print_crds(),
        Command::Version => {
            println!("coffer {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Controller(_) => "controller",
        Command::Worker(_) => "worker",
        Command::Backup(_) => "backup",
        Command::Restore(_) => "restore",
        Command::List(_) => "list",
        Command::Verify(_) => "verify",
    };
    eprintln!(
        "coffer {name}: not implemented yet (see the status table in the README); nothing was done"
    );
    ExitCode::from(EXIT_NOT_IMPLEMENTED)
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
