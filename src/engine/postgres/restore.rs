//! Restoring a PostgreSQL backup with `pg_restore` (and its roles statement by statement),
//! then proving it: every table's rows are counted and compared with the counts taken in
//! the backup's snapshot.
//!
//! Before anything is written: every object is checked against the manifest (downloaded
//! once into the spool when there is room, see [`crate::pipeline::fetch`]), `pg_restore`
//! is checked to read the archive's version, every target database must exist (or
//! `--create` be given), and the roles script (with `--globals`) must hold nothing but the
//! role and tablespace statements pg_dumpall writes (see [`globals`]). The roles are
//! restored in one transaction, and each database in another, so a failure leaves what it
//! was restoring as it was.
//!
//! What `pg_restore` reads is hashed as it passes, and its last bytes are held back until
//! the whole object matched the manifest: `pg_restore --single-transaction` cannot commit
//! before it has read them, so bytes that do not match (a store that served other bytes
//! than it did for the check) are never committed: `pg_restore` is killed and that
//! database's transaction rolled back. Databases restored before it (only possible when the
//! backup was not spooled) stay restored, and the error names them.
//!
//! The database dumps are custom-format archives that `pg_restore` sends to the server
//! itself over libpq: nothing in them is read by `psql`, so they cannot run psql
//! meta-commands (`\!` and the like) on the machine doing the restore. The SQL they hold
//! does run on the server, as the restoring role. The one exception is a server older than
//! `pg_restore` 17, which refuses the setting `pg_restore` starts with: then `psql` runs
//! `pg_restore`'s SQL without it, fenced by `\restrict` (see [`through_psql`]).

pub mod globals;
mod through_psql;

pub use globals::ScriptError;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tokio_postgres::Client;

use super::backup::{DUMP_FORMAT, GLOBALS_FORMAT};
use super::catalog::{self, connect, display_table, quote_ident};
use super::error::PgError;
use super::process::{Credentials, Running, command, conninfo};
use super::target::PgTarget;
use super::tools::{PgTools, parse_version};
use crate::api::restore_request::RoleConflict;
use crate::pipeline::Codec;
use crate::pipeline::Progress;
use crate::pipeline::encryption::DataKey;
use crate::pipeline::fetch::{self, Prepared, Spool};
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
    /// With `globals`: whether roles that exist in the target keep their attributes and
    /// password (`Keep`) or get the backup's (`Replace`).
    pub roles: RoleConflict,
    pub bin_dir: Option<PathBuf>,
    /// Where the objects may be downloaded once before they are restored.
    pub spool: Spool,
    /// The backup's data key, when it is encrypted.
    pub key: Option<DataKey>,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgRestoreStats {
    pub databases: u64,
    pub created: u64,
    pub tables_verified: u64,
    pub rows_verified: u64,
    /// With `globals`: roles of the backup that did not exist in the target.
    pub roles_created: u64,
    /// Roles of the backup that exist in the target and were left as they are (all of them
    /// with `RoleConflict::Keep`, and always the role the restore logs in as).
    pub roles_kept: u64,
    /// Roles of the backup that exist in the target and got the backup's attributes
    /// (`RoleConflict::Replace`).
    pub roles_replaced: u64,
    pub tablespaces_created: u64,
    /// Tablespaces of the backup that exist in the target: always left as they are.
    pub tablespaces_kept: u64,
}

pub async fn restore(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &PgRestoreRequest,
    progress: &Progress,
) -> Result<PgRestoreStats, PgError> {
    let target = &request.target;
    // 1. The backup is intact.
    let Checked {
        plan,
        dumps: prepared,
        globals: globals_object,
    } = check(store, folder, manifest, request, progress).await?;
    // 2. pg_restore can read it, and the target is ready for it.
    let tools = tools_for(manifest, request).await?;
    let admin = connect(target, "postgres").await?;
    let (server_major, _) = catalog::server_version(&admin, target).await?;
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

    // The roles script holds nothing but what pg_dumpall writes about roles.
    let globals = match &globals_object {
        Some(object) => Some(read_globals(store, object, progress).await?),
        None => None,
    };

    // 3. Now the target is changed.
    let credentials = Credentials::new(target)?;
    let mut stats = PgRestoreStats::default();
    if let Some(script) = &globals {
        let counts = restore_globals(script, target, request.roles).await?;
        stats.roles_created = counts.roles_created;
        stats.roles_kept = counts.roles_kept;
        stats.roles_replaced = counts.roles_replaced;
        stats.tablespaces_created = counts.tablespaces_created;
        stats.tablespaces_kept = counts.tablespaces_kept;
    }
    let mut restored: Vec<&str> = Vec::new();
    for ((record, into), object) in plan.iter().zip(&prepared) {
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
        if request.clean {
            pg_restore.args(["--clean", "--if-exists"]);
        }
        let loader = if tools.major >= through_psql::SETS_TRANSACTION_TIMEOUT
            && server_major < through_psql::SETS_TRANSACTION_TIMEOUT
        {
            let mut psql = command(&tools.psql, &credentials);
            psql.arg(format!("--dbname={}", conninfo(target, into)));
            Loader::ThroughPsql { pg_restore, psql }
        } else {
            pg_restore
                .args(["--single-transaction", "--exit-on-error"])
                .arg(format!("--dbname={}", conninfo(target, into)));
            Loader::Direct(pg_restore)
        };
        let source = record.database.clone().unwrap_or_default();
        feed(
            store,
            object,
            loader,
            "pg_restore",
            format!("into database {into:?} at {}", target.address()),
            progress,
        )
        .await
        .map_err(|e| match e {
            PgError::Integrity(source) if source.is_mismatch() => PgError::RestoreRefused {
                source,
                outcome: refused_outcome(
                    into,
                    &restored,
                    globals.is_some(),
                    !existing.contains(into),
                ),
            },
            other => other,
        })?;
        restored.push(into);
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

/// What a restore reads, checked: which dump goes into which database, the dumps, and the
/// roles script when the restore restores roles.
pub(super) struct Checked<'m> {
    pub plan: Vec<(&'m ObjectRecord, String)>,
    pub dumps: Vec<Prepared>,
    pub globals: Option<Prepared>,
}

/// Plans the restore and checks every object it reads against the manifest (spooled when
/// there is room), before anything else is done.
pub(super) async fn check<'m>(
    store: &Store,
    folder: &str,
    manifest: &'m Manifest,
    request: &PgRestoreRequest,
    progress: &Progress,
) -> Result<Checked<'m>, PgError> {
    let plan = plan(manifest, request)?;
    let globals_record = globals_record(manifest, request)?;
    let (dumps, globals) = fetch::prepare_dumps(
        store,
        folder,
        plan.iter().map(|(record, _)| *record),
        globals_record,
        &Codec::of(manifest, request.key.clone()),
        &request.spool,
        progress,
    )
    .await?;
    Ok(Checked {
        plan,
        dumps,
        globals,
    })
}

/// The client programs that can read the backup's archives (refused when older).
pub(super) async fn tools_for(
    manifest: &Manifest,
    request: &PgRestoreRequest,
) -> Result<PgTools, PgError> {
    let archive_major = manifest
        .source
        .tool
        .as_deref()
        .and_then(parse_version)
        .map(|(major, _)| major)
        .unwrap_or(0);
    PgTools::find(
        request.bin_dir.as_deref(),
        archive_major,
        "the pg_dump that made this backup",
    )
    .await
}

/// The backup's roles script, when the restore restores roles (`globals`).
pub(super) fn globals_record<'m>(
    manifest: &'m Manifest,
    request: &PgRestoreRequest,
) -> Result<Option<&'m ObjectRecord>, PgError> {
    if !request.globals {
        return Ok(None);
    }
    manifest
        .objects
        .iter()
        .find(|o| o.format == GLOBALS_FORMAT)
        .map(Some)
        .ok_or_else(|| {
            PgError::Usage("this backup holds no roles (it was taken without globals)".to_owned())
        })
}

/// Which dump goes into which database: each into its own name, or a single one into the
/// database named in the target URL.
pub(super) fn plan<'m>(
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

/// What the target holds after the bytes for database `into` did not match.
fn refused_outcome(into: &str, restored: &[&str], roles: bool, created: bool) -> String {
    let mut outcome = format!(
        "nothing was restored into database {into:?} (pg_restore was stopped before it could commit)"
    );
    if created {
        outcome.push_str("; it had been created for the restore and stays, empty");
    }
    let before: Vec<String> = restored.iter().map(|d| format!("{d:?}")).collect();
    match (before.is_empty(), roles) {
        (true, false) => {}
        (true, true) => outcome.push_str("; the roles had been restored and stay"),
        (false, false) => outcome.push_str(&format!(
            "; database(s) {} had been restored and stay",
            before.join(", ")
        )),
        (false, true) => outcome.push_str(&format!(
            "; the roles and database(s) {} had been restored and stay",
            before.join(", ")
        )),
    }
    outcome.push_str(": check the store, then restore again from a good copy");
    outcome
}

/// What loads a database's archive: `pg_restore` straight into the server, or `pg_restore`
/// writing SQL that `psql` runs (see [`through_psql`]). One is made per database restored:
/// its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Loader {
    Direct(tokio::process::Command),
    ThroughPsql {
        pg_restore: tokio::process::Command,
        psql: tokio::process::Command,
    },
}

type Finishing = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PgError>> + Send>>;

/// Streams an object, decompressed, into `pg_restore`'s stdin (which sends what it reads to
/// the server over libpq, or writes it as SQL for `psql`). When the bytes do not match the
/// manifest, the programs are killed before `pg_restore` sees the end of its input.
async fn feed(
    store: &Store,
    object: &Prepared,
    loader: Loader,
    tool: &'static str,
    subject: String,
    progress: &Progress,
) -> Result<(), PgError> {
    let running_subject = subject.clone();
    let (restoring, verdict) = object.open(store, progress).await?;
    let (stop, stopped) = oneshot::channel();
    let (mut stdin, finishing): (_, Finishing) = match loader {
        Loader::Direct(mut program) => {
            program.stdin(Stdio::piped());
            let mut running = Running::spawn(program, tool, subject)?;
            let stdin = running
                .child
                .stdin
                .take()
                .ok_or_else(|| PgError::Internal(format!("{tool} has no stdin")))?;
            let finishing = async move { running.finish_unless(stopped).await.map(|_| ()) };
            (stdin, Box::pin(finishing))
        }
        Loader::ThroughPsql { pg_restore, psql } => {
            let (loading, stdin) = through_psql::Loading::start(pg_restore, psql, &subject)?;
            (stdin, Box::pin(loading.finish_unless(stopped)))
        }
    };
    let copied = async move {
        let mut restoring = restoring;
        let result = tokio::io::copy(&mut restoring, &mut stdin).await;
        // Stop reading: the object's reader then reads on (to judge it) without waiting.
        drop(restoring);
        if result.is_ok() {
            // The whole object matched: the end of its input.
            drop(stdin);
            return (result, None);
        }
        let _ = stop.send(());
        // Its stdin stays open until it was killed (see below): closing it first would tell
        // it the input ended.
        (result, Some(stdin))
    };
    let ((copied, stdin), finished) = tokio::join!(copied, finishing);
    drop(stdin);
    if copied.is_err() || finished.is_err() {
        if finished.is_ok() {
            // It finished although its input did not end well: it needed less than the
            // whole object (bytes the store changed into a shorter complete archive) and
            // committed. Whether the bytes matched decides what to say.
            if let Err(mismatch) = verdict.wait().await
                && mismatch.is_mismatch()
            {
                return Err(PgError::RestoreRefused {
                    source: mismatch,
                    outcome: format!(
                        "{tool} had already finished {running_subject} and committed: what it restored does not match the backup; restore it again from a good copy (with a spool directory that has room, the backup is checked before it is restored)"
                    ),
                });
            }
        } else if let Some(verdict) = verdict.explain(false).await {
            // Bytes that did not match, or the store failing to send them.
            return Err(verdict.into());
        }
        // The program's own failure explains a broken pipe better than the pipe does.
        finished?;
        copied.map_err(|e| PgError::Internal(format!("feeding {tool}: {e}")))?;
        return Ok(());
    }
    verdict.wait().await?;
    Ok(())
}

/// The most a roles-and-tablespaces script may hold once decompressed.
const MAX_GLOBALS_BYTES: u64 = 64 << 20;

/// Reads the backup's roles script and checks it (see [`globals`]), before anything is
/// changed.
pub(super) async fn read_globals(
    store: &Store,
    object: &Prepared,
    progress: &Progress,
) -> Result<globals::Script, PgError> {
    let record = object.record();
    if record.raw_bytes > MAX_GLOBALS_BYTES {
        return Err(PgError::Usage(format!(
            "the backup's roles script is {} (more than {}): restore without --globals and load it with psql yourself",
            crate::units::bytes(record.raw_bytes),
            crate::units::bytes(MAX_GLOBALS_BYTES)
        )));
    }
    let (restoring, verdict) = object.open(store, progress).await?;
    let mut script = Vec::new();
    let read = restoring
        .take(MAX_GLOBALS_BYTES)
        .read_to_end(&mut script)
        .await;
    // The whole script is read before any of it is used: it matched, or it is refused.
    verdict.wait().await?;
    read.map_err(|e| PgError::Internal(format!("reading the roles script: {e}")))?;
    Ok(globals::Script::parse(&script)?)
}

/// Restores the roles and tablespaces of a checked script, statement by statement over the
/// PostgreSQL protocol (never through `psql`):
///
/// - Roles that do not exist in the target are created with the backup's attributes,
///   password, settings and comment. Roles that exist keep all of those with
///   [`RoleConflict::Keep`], or get the backup's with [`RoleConflict::Replace`] (settings
///   and comments the backup does not have stay). The role the restore logs in as is never
///   changed, so its password stays the target's.
/// - Role memberships and privileges on configuration parameters only add and are always
///   applied, also to roles that existed; nothing is revoked.
/// - Tablespaces that exist are left alone, their privileges included. Missing ones are
///   created first, outside the transaction (`CREATE TABLESPACE` cannot run in one), owned by
///   the restoring role until the transaction gives them their owner.
/// - Everything else runs in one transaction. If any statement fails, the transaction is
///   rolled back and the tablespaces just created are dropped again: the error names the
///   statement (its line in the script, and the role or tablespace) and nothing is changed.
async fn restore_globals(
    script: &globals::Script,
    target: &PgTarget,
    roles: RoleConflict,
) -> Result<globals::Counts, PgError> {
    let client = connect(target, "postgres").await?;
    let existing = existing_globals(&client, target).await?;
    let plan = script.plan(&existing, &target.user, roles);
    let mut created = Vec::new();
    let mut begun = false;
    let result = async {
        // Notices ("role x is already a member of role y") are expected, not news.
        client
            .batch_execute("SET client_min_messages = warning")
            .await
            .map_err(|e| PgError::from_pg(&target.address(), &target.user, "setting up", &e))?;
        for step in &plan.settings {
            run(&client, target, step).await?;
        }
        for (name, step) in &plan.tablespaces {
            run(&client, target, step).await?;
            created.push(name.clone());
        }
        client.batch_execute("BEGIN").await.map_err(|e| {
            PgError::from_pg(
                &target.address(),
                &target.user,
                "starting the roles transaction",
                &e,
            )
        })?;
        begun = true;
        for step in &plan.transaction {
            run(&client, target, step).await?;
        }
        client.batch_execute("COMMIT").await.map_err(|e| {
            PgError::from_pg(&target.address(), &target.user, "committing the roles", &e)
        })
    }
    .await;
    match result {
        Ok(()) => Ok(plan.counts),
        Err(error) => Err(undo(&client, begun, &created, error).await),
    }
}

/// The roles and tablespaces the target has.
pub(super) async fn existing_globals(
    client: &Client,
    target: &PgTarget,
) -> Result<globals::Existing, PgError> {
    let names = |sql: &'static str, what: &'static str| async move {
        let fail =
            |e: tokio_postgres::Error| PgError::from_pg(&target.address(), &target.user, what, &e);
        client
            .query(sql, &[])
            .await
            .map_err(fail)?
            .iter()
            .map(|row| row.try_get::<_, String>(0).map_err(fail))
            .collect::<Result<_, _>>()
    };
    Ok(globals::Existing {
        roles: names("SELECT rolname::text FROM pg_roles", "listing roles").await?,
        tablespaces: names(
            "SELECT spcname::text FROM pg_tablespace",
            "listing tablespaces",
        )
        .await?,
    })
}

/// Runs one statement of the roles script; a failure names it.
async fn run(client: &Client, target: &PgTarget, step: &globals::Step) -> Result<(), PgError> {
    // The extended protocol runs exactly one statement, whatever the text holds.
    client
        .execute(step.sql.as_str(), &[])
        .await
        .map(|_| ())
        .map_err(|e| {
            PgError::from_pg(
                &target.address(),
                &target.user,
                &format!(
                    "restoring line {} of the backup's roles script ({})",
                    step.line, step.head
                ),
                &e,
            )
        })
}

/// After a failed roles restore: rolls the transaction back and drops the tablespaces it
/// created, and says so in the error.
async fn undo(client: &Client, begun: bool, created: &[String], error: PgError) -> PgError {
    if begun {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    let mut left = Vec::new();
    for name in created {
        if let Err(e) = client
            .batch_execute(&format!("DROP TABLESPACE {}", quote_ident(name)))
            .await
        {
            let detail = e
                .as_db_error()
                .map(|d| crate::text::one_line(d.message()))
                .unwrap_or_else(|| e.to_string());
            left.push(format!("{name:?} ({detail})"));
        }
    }
    let outcome = if left.is_empty() {
        "no role or tablespace was changed: fix the cause in the target (or the backup), or restore without --globals".to_owned()
    } else {
        format!(
            "no role was changed, but tablespace(s) {} created for it could not be dropped again: drop them, then fix the cause or restore without --globals",
            left.join(", ")
        )
    };
    match error {
        PgError::Query {
            address,
            what,
            detail,
        } => PgError::Query {
            address,
            what,
            detail: format!("{detail}; {outcome}"),
        },
        PgError::Connect { address, detail } => PgError::Connect {
            address,
            detail: format!("{detail}; {outcome}"),
        },
        PgError::Dropped {
            address,
            what,
            detail,
        } => PgError::Dropped {
            address,
            what,
            detail: format!("{detail}; {outcome}"),
        },
        other => other,
    }
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
