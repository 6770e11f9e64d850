//! `coffer gc DEST`: find what failed or killed backups left in a store (folders without a
//! manifest, open multipart uploads, temporary files) older than a safety age, report it,
//! and with `--delete` remove it.

use clap::Args;

use super::options::S3Args;
use super::{CliError, open_store};
use crate::storage::sweep;
use crate::units;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// The store (or a folder of it) to sweep: `s3://bucket/prefix` or a directory.
    #[arg(value_name = "DEST")]
    pub dest: String,
    /// Only leftovers at least this old, so that a backup still running is never touched
    /// (`6h`, `2d`). Keep it above your longest backup (runs stop after 6 hours by default).
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = parse_age)]
    pub min_age: chrono::TimeDelta,
    /// Remove what is reported (default: only report it).
    #[arg(long)]
    pub delete: bool,
    #[command(flatten)]
    pub s3: S3Args,
}

fn parse_age(text: &str) -> Result<chrono::TimeDelta, String> {
    let bad = || format!("{text:?} is not an age: write a number and a unit, like 30m, 6h or 2d");
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    match unit {
        "s" => Ok(chrono::TimeDelta::seconds(n)),
        "m" => Ok(chrono::TimeDelta::minutes(n)),
        "h" => Ok(chrono::TimeDelta::hours(n)),
        "d" => Ok(chrono::TimeDelta::days(n)),
        _ => Err(bad()),
    }
}

pub async fn run(args: GcArgs) -> Result<(), CliError> {
    let (store, destination) = open_store(&args.dest, &args.s3).await?;
    let sweep::Found {
        leftovers: found,
        blind_spots,
    } = sweep::find(&store, chrono::Utc::now(), args.min_age)
        .await
        .map_err(CliError::from_display)?;
    for blind in &blind_spots {
        eprintln!("warning: {blind}");
    }
    for leftover in &found {
        println!(
            "{}\t{}\t{}\t{}",
            leftover.kind.as_str(),
            store.location(&leftover.key),
            units::bytes(leftover.bytes),
            leftover
                .since
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| "-".to_owned())
        );
    }
    if !args.delete {
        eprintln!(
            "{} leftover(s) older than {} in {destination}; run again with --delete to remove them",
            found.len(),
            humanize(args.min_age)
        );
        return Ok(());
    }
    let mut locked = 0;
    for leftover in &found {
        match sweep::remove(&store, leftover).await {
            Ok(()) => {}
            // Locked: left for a later run, after its date; the others are removed.
            Err(e @ crate::storage::StorageError::Retained { .. }) => {
                eprintln!("{e}");
                locked += 1;
            }
            Err(e) => return Err(CliError::from_display(e)),
        }
    }
    eprintln!(
        "removed {} leftover(s) from {destination}{}",
        found.len() - locked,
        if locked > 0 {
            format!("; {locked} are locked and left until their date")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn humanize(age: chrono::TimeDelta) -> String {
    let s = age.num_seconds();
    match (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60) {
        (0, 0, m) => format!("{m}m"),
        (0, h, _) => format!("{h}h"),
        (d, _, _) => format!("{d}d"),
    }
}
