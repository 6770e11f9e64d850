use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    coffer::cli::run(coffer::cli::Cli::parse())
}
