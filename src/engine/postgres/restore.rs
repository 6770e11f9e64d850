//! Restoring a PostgreSQL backup with `pg_restore` (and `psql` for roles), then proving it:
//! every table's rows are counted and compared with the counts taken in the backup's
//! snapshot.
//!
//! Before anything is written: every object is checked against the manifest, `pg_restore`
//! is checked to read the archive's version, and every target database must exist (or
//! `--create` be given). Each database is restored in a single transaction, so a failed
//! restore leaves it as it was.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::backup::{DUMP_FORMAT, GLOBALS_FORMAT};
use super::catalog::{self, connect, display_table, quote_ident};
use super::error::PgError;
use super::process::{Credentials, Running, command, conninfo};
use super::target::PgTarget;
use super::tools::{PgTools, parse_version};
use crate::pipeline::{self, ObservedReader, Progress};
use crate::storage::Store;
use crate::storage::manifest::{Manifest, ObjectRecord};

#[derive(Clone, Debug)]
pub struct PgRestoreRequest {
    pub target: PgTarget,
    /// Databases of the backup to restore; empty: all.
    pub databases: Vec<String>,
    /// Drop objects before re-creating them (`pg_restore --clean --if-exists`).
    pub clean: bool,
    /// Create target databases that do not exist.
    pub create: bool,
    /// Restore roles and tablespaces first.
    pub globals: bool,
    pub bin_dir: Option<PathBuf>,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgRestoreStats {
    pub databases: u64,
    pub created: u64,
    pub tables_verified: u64,
    pub rows_verified: u64,
    /// Roles (or other globals) that already existed and were left as they are.
    pub globals_existing: u64,
}

pub async fn restore(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &PgRestoreRequest,
    progress: &Progress,
) -> Result<PgRestoreStats, PgError> {
    let target = &request.target;
    let plan = plan(manifest, request)?;
    let globals = if request.globals {
        Some(
            manifest
                .objects
                .iter()
                .find(|o| o.format == GLOBALS_FORMAT)
                .ok_or_else(|| {
                    PgError::Usage(
                        "this backup holds no roles (it was taken without globals)".to_owned(),
                    )
                })?,
        )
    } else {
        None
    };

    // 1. The backup is intact.
    for record in plan.iter().map(|(record, _)| *record).chain(globals) {
        pipeline::verify_object(
            store,
            &format!("{folder}{}", record.name),
            record,
            manifest.compression,
            true,
        )
        .await?;
    }
    // 2. pg_restore can read it, and the target is ready for it.
    let archive_major = manifest
        .source
        .tool
        .as_deref()
        .and_then(parse_version)
        .map(|(major, _)| major)
        .unwrap_or(0);
    let tools = PgTools::find(
        request.bin_dir.as_deref(),
        archive_major,
        "the pg_dump that made this backup",
    )
    .await?;
    let admin = connect(target, "postgres").await?;
    let existing: Vec<String> = catalog::databases(&admin, target)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for (_, into) in &plan {
        if !existing.contains(into) && !request.create {
            return Err(PgError::NeedCreate {
                address: target.address(),
                name: into.clone(),
            });
        }
    }

    // 3. Now the target is changed.
    let credentials = Credentials::new(target)?;
    let mut stats = PgRestoreStats::default();
    if let Some(record) = globals {
        stats.globals_existing = restore_globals(
            store,
            folder,
            manifest,
            record,
            &tools,
            &credentials,
            target,
            progress,
        )
        .await?;
    }
    for (record, into) in &plan {
        if !existing.contains(into) {
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE {} TEMPLATE template0",
                    quote_ident(into)
                ))
                .await
                .map_err(|e| {
                    PgError::from_pg(
                        &target.address(),
                        &target.user,
                        &format!("creating database {into:?}"),
                        &e,
                    )
                })?;
            stats.created += 1;
        }
        let mut pg_restore = command(&tools.pg_restore, &credentials);
        pg_restore
            .args(["--single-transaction", "--exit-on-error"])
            .arg(format!("--dbname={}", conninfo(target, into)));
        if request.clean {
            pg_restore.args(["--clean", "--if-exists"]);
        }
        let source = record.database.clone().unwrap_or_default();
        feed(
            store,
            folder,
            manifest,
            record,
            pg_restore,
            "pg_restore",
            format!("into database {into:?}"),
            progress,
        )
        .await?;
        let (tables, rows) = verify_rows(
            target,
            into,
            manifest
                .stats
                .table_rows
                .get(&source)
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )
        .await?;
        stats.databases += 1;
        stats.tables_verified += tables;
        stats.rows_verified += rows;
    }
    Ok(stats)
}

/// Which dump goes into which database: each into its own name, or a single one into the
/// database named in the target URL.
fn plan<'m>(
    manifest: &'m Manifest,
    request: &PgRestoreRequest,
) -> Result<Vec<(&'m ObjectRecord, String)>, PgError> {
    let dumps: Vec<&ObjectRecord> = manifest
        .objects
        .iter()
        .filter(|o| o.format == DUMP_FORMAT)
        .collect();
    let held = || {
        dumps
            .iter()
            .filter_map(|d| d.database.as_deref())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen: Vec<&ObjectRecord> = if request.databases.is_empty() {
        dumps.clone()
    } else {
        request
            .databases
            .iter()
            .map(|name| {
                dumps
                    .iter()
                    .find(|d| d.database.as_deref() == Some(name))
                    .copied()
                    .ok_or_else(|| {
                        PgError::Usage(format!(
                            "the backup has no database {name:?} (it holds {})",
                            held()
                        ))
                    })
            })
            .collect::<Result<_, _>>()?
    };
    if chosen.is_empty() {
        return Err(PgError::Usage(
            "the backup holds no database dump".to_owned(),
        ));
    }
    match &request.target.database {
        Some(into) if chosen.len() > 1 => Err(PgError::Usage(format!(
            "the backup holds databases {}: choose one with --databases to restore it into {into:?}",
            held()
        ))),
        Some(into) => Ok(vec![(chosen[0], into.clone())]),
        None => Ok(chosen
            .into_iter()
            .map(|d| (d, d.database.clone().unwrap_or_default()))
            .collect()),
    }
}

/// Streams an object, decompressed, into a program's stdin.
#[allow(clippy::too_many_arguments)]
async fn feed(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    record: &ObjectRecord,
    mut program: tokio::process::Command,
    tool: &'static str,
    subject: String,
    progress: &Progress,
) -> Result<(), PgError> {
    program.stdin(Stdio::piped());
    let mut running = Running::spawn(program, tool, subject)?;
    let mut stdin = running
        .child
        .stdin
        .take()
        .ok_or_else(|| PgError::Internal(format!("{tool} has no stdin")))?;
    let stored = ObservedReader::new(
        store.get(&format!("{folder}{}", record.name)).await?,
        progress.clone(),
    );
    let mut decoded = pipeline::decoder(manifest.compression, stored);
    let copied = async {
        let result = tokio::io::copy(&mut decoded, &mut stdin).await;
        drop(stdin);
        result
    };
    let (copied, finished) = tokio::join!(copied, running.finish());
    // The program's own failure explains a broken pipe better than the pipe does.
    finished?;
    copied.map_err(|e| PgError::Internal(format!("feeding {tool}: {e}")))?;
    Ok(())
}

/// The most a roles-and-tablespaces script may hold once decompressed.
const MAX_GLOBALS_BYTES: u64 = 64 << 20;

/// Runs the roles and tablespaces script with `psql`, leaving out the statements that would
/// re-create or alter the role the restore logs in as (its password and attributes on the
/// target stay the target's). Statements for objects that already exist fail harmlessly and
/// are counted; any other error fails the restore.
#[allow(clippy::too_many_arguments)]
async fn restore_globals(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    record: &ObjectRecord,
    tools: &PgTools,
    credentials: &Credentials,
    target: &PgTarget,
    progress: &Progress,
) -> Result<u64, PgError> {
    if record.raw_bytes > MAX_GLOBALS_BYTES {
        return Err(PgError::Usage(format!(
            "the backup's roles script is {} (more than {}): restore it with psql yourself",
            crate::units::bytes(record.raw_bytes),
            crate::units::bytes(MAX_GLOBALS_BYTES)
        )));
    }
    let stored = ObservedReader::new(
        store.get(&format!("{folder}{}", record.name)).await?,
        progress.clone(),
    );
    let mut script = Vec::new();
    pipeline::decoder(manifest.compression, stored)
        .take(MAX_GLOBALS_BYTES)
        .read_to_end(&mut script)
        .await
        .map_err(|e| PgError::Internal(format!("reading the roles script: {e}")))?;
    let script = without_own_role(&String::from_utf8_lossy(&script), &target.user);

    let mut psql = command(&tools.psql, credentials);
    psql.args([
        "--quiet",
        "--no-psqlrc",
        "--set=ON_ERROR_STOP=0",
        "--file=-",
    ])
    .arg(format!("--dbname={}", conninfo(target, "postgres")))
    .stdin(Stdio::piped());
    let mut running = Running::spawn(psql, "psql", "of the globals".to_owned())?;
    let mut stdin = running
        .child
        .stdin
        .take()
        .ok_or_else(|| PgError::Internal("psql has no stdin".to_owned()))?;
    let written = async {
        let result = stdin.write_all(script.as_bytes()).await;
        drop(stdin);
        result
    };
    let (written, said) = tokio::join!(written, running.finish());
    let said = said?;
    written.map_err(|e| PgError::Internal(format!("feeding psql: {e}")))?;
    if let Some(first) = said.first_errors.first() {
        return Err(PgError::Tool {
            tool: "psql",
            subject: "of the globals".to_owned(),
            status: format!("{} error(s)", said.other_errors),
            stderr: first.clone(),
        });
    }
    Ok(said.already_exists)
}

/// `pg_dumpall --globals-only` output without the `CREATE ROLE` and `ALTER ROLE ... WITH`
/// lines of `user`, so that restoring roles cannot change the password of the role doing it.
pub fn without_own_role(script: &str, user: &str) -> String {
    let plain = user
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !user.starts_with(|c: char| c.is_ascii_digit());
    let mut names = vec![quote_ident(user)];
    if plain {
        names.push(user.to_owned());
    }
    let own = |line: &str| {
        names.iter().any(|name| {
            line == format!("CREATE ROLE {name};")
                || line.starts_with(&format!("ALTER ROLE {name} WITH "))
        })
    };
    let mut out = String::with_capacity(script.len());
    for line in script.lines().filter(|line| !own(line)) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Counts every table the backup counted and compares.
async fn verify_rows(
    target: &PgTarget,
    database: &str,
    expected: &[crate::storage::manifest::TableRows],
) -> Result<(u64, u64), PgError> {
    let client = connect(target, database).await?;
    let mut rows = 0;
    let present: BTreeMap<(String, String), ()> = catalog::tables(&client, target)
        .await?
        .into_iter()
        .map(|t| (t, ()))
        .collect();
    for table in expected {
        let key = (table.schema.clone(), table.table.clone());
        let found = if present.contains_key(&key) {
            catalog::count_rows(&client, target, &table.schema, &table.table).await?
        } else {
            return Err(PgError::RowCount {
                database: database.to_owned(),
                table: display_table(&table.schema, &table.table),
                found: "no such table".to_owned(),
                expected: table.rows,
            });
        };
        if found != table.rows {
            return Err(PgError::RowCount {
                database: database.to_owned(),
                table: display_table(&table.schema, &table.table),
                found: found.to_string(),
                expected: table.rows,
            });
        }
        rows += found;
    }
    Ok((expected.len() as u64, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restoring_role_is_left_alone() {
        let script = "CREATE ROLE app;\nALTER ROLE app WITH LOGIN PASSWORD 'SCRAM-SHA-256$x';\n\
                      CREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER PASSWORD 'y';\n\
                      CREATE ROLE \"Admin\";\nALTER ROLE \"Admin\" WITH LOGIN;\n\
                      GRANT app TO postgres;\n";
        let kept = without_own_role(script, "postgres");
        assert!(!kept.contains("ROLE postgres"), "{kept}");
        assert!(kept.contains("CREATE ROLE app;") && kept.contains("GRANT app TO postgres;"));
        let kept = without_own_role(script, "Admin");
        assert!(!kept.contains("\"Admin\"") && kept.contains("ALTER ROLE postgres WITH"));
        // A role whose name merely starts like the restoring one stays.
        assert!(without_own_role(script, "ap").contains("CREATE ROLE app;"));
    }
}
