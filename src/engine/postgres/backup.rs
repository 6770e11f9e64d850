//! Taking a PostgreSQL backup: roles and tablespaces (`pg_dumpall --globals-only`), then each
//! database with `pg_dump --format=custom` on a snapshot whose rows were counted, each
//! streamed through Coffer's compression; the manifest last.

use std::path::PathBuf;
use std::process::Stdio;

use chrono::Utc;

use super::catalog::{self, connect};
use super::error::PgError;
use super::process::{Credentials, Running, command, conninfo};
use super::target::PgTarget;
use super::tools::PgTools;
use crate::api::Compression;
use crate::pipeline::encryption::Seal;
use crate::pipeline::{self, Effort, ObjectSpec, Progress};
use crate::storage::Store;
use crate::storage::manifest::{
    BackupOwner, DatabaseObjects, Manifest, ObjectRecord, SourceInfo, Stats, TableRows,
};

/// The format names recorded for PostgreSQL objects.
pub const GLOBALS_FORMAT: &str = "pg-globals-sql";
pub const DUMP_FORMAT: &str = "pg-dump-custom";

/// One backup to take.
#[derive(Clone, Debug)]
pub struct PgBackupRequest {
    pub target: PgTarget,
    /// Databases to back up; empty: every database that is not a template.
    pub databases: Vec<String>,
    /// Also back up roles and tablespaces.
    pub globals: bool,
    pub compression: Compression,
    pub name: String,
    /// The backup's folder in the store, ending in `/`.
    pub folder: String,
    /// Where `pg_dump` and friends are; default: `PATH` and Debian's directories.
    pub bin_dir: Option<PathBuf>,
    /// The Backup object this backup is taken for, recorded in the manifest.
    pub owner: Option<BackupOwner>,
    /// What the data objects are encrypted to (none: stored unencrypted).
    pub seal: Option<Seal>,
}

/// The database PostgreSQL clients connect to for server-wide work.
pub fn maintenance_database(target: &PgTarget) -> String {
    target
        .database
        .clone()
        .unwrap_or_else(|| "postgres".to_owned())
}

/// A database name as a file name: letters, digits, `.`, `-` and `_` kept, the rest
/// percent-encoded.
pub fn object_name(database: &str) -> String {
    database
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            b'.' => ".".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect::<String>()
        .replacen('.', "%2E", usize::from(database.starts_with('.')))
}

pub async fn backup(
    store: &Store,
    request: &PgBackupRequest,
    progress: &Progress,
) -> Result<Manifest, PgError> {
    let started_at = Utc::now();
    let target = &request.target;
    let maintenance = maintenance_database(target);
    let admin = connect(target, &maintenance).await?;
    let (major, server_version) = catalog::server_version(&admin, target).await?;
    let existing = catalog::databases(&admin, target).await?;
    let chosen: Vec<String> = if request.databases.is_empty() {
        existing.iter().map(|(name, _)| name.clone()).collect()
    } else {
        for name in &request.databases {
            if !existing.iter().any(|(e, _)| e == name) {
                return Err(PgError::MissingDatabase {
                    address: target.address(),
                    name: name.clone(),
                    existing: existing
                        .iter()
                        .map(|(e, _)| e.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        request.databases.clone()
    };
    let tools = PgTools::find(request.bin_dir.as_deref(), major, "the server").await?;
    store.preflight().await?;
    let superuser = catalog::is_superuser(&admin, target).await?;
    let total: u64 = existing
        .iter()
        .filter(|(n, _)| chosen.contains(n))
        .map(|(_, s)| s)
        .sum();
    tracing::debug!(
        "backing up {} database(s) of {} ({} on disk)",
        chosen.len(),
        target.address(),
        crate::units::bytes(total)
    );
    let credentials = Credentials::new(target)?;
    let dumper = Dumper {
        store,
        request,
        tools: &tools,
        credentials: &credentials,
        progress,
    };
    let mut objects = Vec::new();
    let mut listed = Listed::default();
    let dumped = dumper
        .all(&chosen, superuser, &mut objects, &mut listed)
        .await;
    let manifest = Manifest {
        format_version: Manifest::version_for(request.seal.as_ref().map(Seal::record)),
        coffer_version: env!("CARGO_PKG_VERSION").to_owned(),
        name: request.name.clone(),
        source: SourceInfo {
            kind: "postgres".to_owned(),
            address: target.address(),
            server_version: Some(server_version),
            mode: None,
            database: None,
            rdb_version: None,
            tool: Some(format!("pg_dump {}", tools.version)),
            position: None,
        },
        started_at,
        completed_at: Utc::now(),
        compression: request.compression,
        objects,
        stats: Stats {
            databases: Some(chosen.len() as u64),
            table_rows: listed.table_rows,
            database_objects: listed.objects,
            ..Stats::default()
        },
        owner: request.owner.clone(),
        encryption: request.seal.as_ref().map(|s| s.record().clone()),
    };
    // A failed backup leaves nothing: the objects already stored go too (put_manifest
    // removes them itself when the manifest cannot be written).
    if let Err(e) = dumped {
        store.discard(&request.folder, &manifest.objects).await;
        return Err(e);
    }
    store.put_manifest(&request.folder, &manifest).await?;
    Ok(manifest)
}

/// What the backup counted and listed in each database's snapshot.
#[derive(Default)]
struct Listed {
    table_rows: std::collections::BTreeMap<String, Vec<TableRows>>,
    objects: std::collections::BTreeMap<String, DatabaseObjects>,
}

/// Runs the dump programs of one backup.
struct Dumper<'a> {
    store: &'a Store,
    request: &'a PgBackupRequest,
    tools: &'a PgTools,
    credentials: &'a Credentials,
    progress: &'a Progress,
}

impl Dumper<'_> {
    /// Dumps the globals (if asked) and each database, adding what is stored to `objects`
    /// as it is stored, so that a failure can remove it.
    async fn all(
        &self,
        databases: &[String],
        superuser: bool,
        objects: &mut Vec<ObjectRecord>,
        listed: &mut Listed,
    ) -> Result<(), PgError> {
        if self.request.globals {
            objects.push(self.globals(superuser).await?);
        }
        for database in databases {
            let (record, counts, held) = self.database(database).await?;
            objects.push(record);
            listed.table_rows.insert(database.clone(), counts);
            listed.objects.insert(database.clone(), held);
        }
        Ok(())
    }

    async fn globals(&self, superuser: bool) -> Result<ObjectRecord, PgError> {
        let target = &self.request.target;
        let mut dumpall = command(&self.tools.pg_dumpall, self.credentials);
        dumpall.arg("--globals-only").arg(format!(
            "--dbname={}",
            conninfo(target, &maintenance_database(target))
        ));
        if !superuser {
            // Only superusers can read role passwords.
            dumpall.arg("--no-role-passwords");
        }
        let name = format!(
            "postgres/globals.sql{}",
            pipeline::extension(self.request.compression)
        );
        self.run(
            &name,
            GLOBALS_FORMAT,
            dumpall,
            "pg_dumpall",
            format!("of the globals at {}", self.request.target.address()),
        )
        .await
    }

    /// Counts the rows of every table and lists the other objects in a snapshot, and dumps
    /// the database on it.
    async fn database(
        &self,
        database: &str,
    ) -> Result<(ObjectRecord, Vec<TableRows>, DatabaseObjects), PgError> {
        let target = &self.request.target;
        let client = connect(target, database).await?;
        let fail = |what: &str, e: &tokio_postgres::Error| {
            PgError::from_pg(&target.address(), &target.user, what, e)
        };
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| fail("starting the snapshot transaction", &e))?;
        let snapshot: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|e| fail("exporting the snapshot", &e))?
            .get(0);
        let mut counts = Vec::new();
        for (schema, table) in catalog::tables(&client, target).await? {
            let rows = catalog::count_rows(&client, target, &schema, &table).await?;
            counts.push(TableRows {
                schema,
                table,
                rows,
            });
        }
        let held = catalog::objects(&client, target).await?;
        let mut dump = command(&self.tools.pg_dump, self.credentials);
        // A table locked exclusively by someone else (a long migration) fails the dump after
        // two minutes instead of hanging the run until its deadline.
        dump.args([
            "--format=custom",
            "--compress=0",
            "--lock-wait-timeout=120s",
        ])
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!("--dbname={}", conninfo(target, database)));
        let name = format!(
            "postgres/{}.dump{}",
            object_name(database),
            pipeline::extension(self.request.compression)
        );
        let subject = format!(
            "of database {database:?} at {}",
            self.request.target.address()
        );
        let mut record = self
            .run(&name, DUMP_FORMAT, dump, "pg_dump", subject)
            .await?;
        record.database = Some(database.to_owned());
        // The snapshot must live until pg_dump is done with it.
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| fail("ending the snapshot transaction", &e))?;
        Ok((record, counts, held))
    }

    /// Streams a dump program's stdout into the object `name`; the object is kept only if
    /// the program exits successfully.
    async fn run(
        &self,
        name: &str,
        format: &str,
        mut program: tokio::process::Command,
        tool: &'static str,
        subject: String,
    ) -> Result<ObjectRecord, PgError> {
        let spec = ObjectSpec {
            folder: &self.request.folder,
            name,
            format,
            compression: self.request.compression,
            effort: Effort::Standard,
            seal: self.request.seal.as_ref(),
        };
        program.stdout(Stdio::piped());
        let mut running = Running::spawn(program, tool, subject)?;
        let mut stdout = running
            .child
            .stdout
            .take()
            .ok_or_else(|| PgError::Internal(format!("{tool} has no stdout")))?;
        crate::engine::pipe::widen(&stdout);
        let check = async { running.finish().await.map(|_| ()) };
        Ok(pipeline::upload(self.store, spec, &mut stdout, None, self.progress, check).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_safe_file_names() {
        assert_eq!(object_name("shop"), "shop");
        assert_eq!(object_name("my db/ü"), "my%20db%2F%C3%BC");
        assert_eq!(object_name("..x"), "%2E.x");
        assert_eq!(object_name("a.b"), "a.b");
    }
}
