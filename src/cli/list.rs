//! `coffer list DEST [--output table|json]`: the backups in a store, newest first.

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::options::S3Args;
use super::{CliError, open_store};
use crate::storage::catalog;
use crate::units;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The store: s3://bucket/prefix or a directory.
    #[arg(value_name = "DEST")]
    pub dest: String,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// One line of the listing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    location: String,
    name: Option<String>,
    time: Option<String>,
    source: Option<String>,
    mode: Option<String>,
    keys: Option<u64>,
    stored_bytes: u64,
    raw_bytes: Option<u64>,
    /// `ok`, `incomplete` (data without a manifest: not a backup) or `unreadable`.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    /// An encrypted backup's recipients when it was taken (age public keys).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    encrypted_to: Vec<String>,
}

pub async fn run(args: ListArgs) -> Result<(), CliError> {
    let (store, destination) = open_store(&args.dest, &args.s3).await?;
    let entries = catalog::scan(&store)
        .await
        .map_err(CliError::from_display)?;
    let rows: Vec<Row> = entries
        .into_iter()
        .map(|entry| {
            let status = entry.status().to_owned();
            let location = destination.join(&entry.folder).to_string();
            match entry.manifest {
                Some(Ok(m)) => Row {
                    location,
                    time: Some(m.completed_at.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    source: Some(format!("{} {}", m.source.kind, m.source.address)),
                    mode: m.source.mode.clone(),
                    keys: m.stats.keys,
                    stored_bytes: entry.stored_bytes,
                    raw_bytes: Some(m.raw_bytes()),
                    encrypted_to: m.encryption.map(|e| e.recipients).unwrap_or_default(),
                    name: Some(m.name),
                    status,
                    problem: None,
                },
                other => Row {
                    location,
                    name: None,
                    time: None,
                    source: None,
                    mode: None,
                    keys: None,
                    stored_bytes: entry.stored_bytes,
                    raw_bytes: None,
                    status,
                    problem: other.and_then(|r| r.err()),
                    encrypted_to: Vec::new(),
                },
            }
        })
        .collect();
    match args.output {
        Output::Json => {
            let json =
                serde_json::to_string_pretty(&rows).map_err(|e| CliError::failed(e.to_string()))?;
            println!("{json}");
        }
        Output::Table => print_table(&rows),
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.time.clone().unwrap_or_else(|| "-".to_owned()),
                r.name.clone().unwrap_or_else(|| "-".to_owned()),
                r.source.clone().unwrap_or_else(|| "-".to_owned()),
                units::bytes(r.stored_bytes),
                r.status.clone(),
                r.location.clone(),
            ]
        })
        .collect();
    let header = ["TIME", "NAME", "SOURCE", "SIZE", "STATUS", "LOCATION"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
