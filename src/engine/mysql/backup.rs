//! Taking a MySQL/MariaDB backup: the accounts and grants (when asked) as their own object,
//! then each database with `mariadb-dump`/`mysqldump --single-transaction` (one consistent
//! InnoDB snapshot per database, writers never blocked), each streamed through Coffer's
//! compression while its rows are counted from the dump itself; the manifest last.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use std::sync::{Arc, Mutex};

use chrono::Utc;

use super::client::Client;
use super::error::MyError;
use super::process::{Credentials, Running, command};
use super::scan::{DumpFacts, DumpScanner};
use super::target::MyTarget;
use super::tools::{Flavor, MyTools, Version};
use crate::api::Compression;
use crate::engine::pipe;
use crate::pipeline::encryption::Seal;
use crate::pipeline::{self, Effort, ObjectSpec, Observe, ObservedReader, Progress};
use crate::storage::Store;
use crate::storage::manifest::{BackupOwner, Manifest, ObjectRecord, SourceInfo, Stats, TableRows};

/// The format names recorded for MySQL objects.
pub const DUMP_FORMAT: &str = "mysql-dump-sql";
pub const USERS_FORMAT: &str = "mysql-users-sql";

/// One backup to take.
#[derive(Clone, Debug)]
pub struct MyBackupRequest {
    pub target: MyTarget,
    /// Databases to back up; empty: every database but the server's own schemas.
    pub databases: Vec<String>,
    /// Also back up accounts and their grants.
    pub users: bool,
    pub compression: Compression,
    pub name: String,
    /// The backup's folder in the store, ending in `/`.
    pub folder: String,
    /// Where `mariadb-dump` and `mariadb` are; default: `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// The Backup object this backup is taken for, recorded in the manifest.
    pub owner: Option<BackupOwner>,
    /// What the data objects are encrypted to (none: stored unencrypted).
    pub seal: Option<Seal>,
}

/// The options every dump gets: one consistent snapshot without locking InnoDB tables,
/// rows read one at a time, every kind of object, binary data as hex, and no tablespaces
/// (which would need the PROCESS privilege and are not recreated by a logical restore).
const DUMP_OPTIONS: [&str; 9] = [
    "--single-transaction",
    "--quick",
    "--routines",
    "--events",
    "--triggers",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--no-tablespaces",
    "--max-allowed-packet=1G",
];

pub async fn backup(
    store: &Store,
    request: &MyBackupRequest,
    progress: &Progress,
) -> Result<Manifest, MyError> {
    let started_at = Utc::now();
    let target = &request.target;
    let mut client = Client::connect(target).await?;
    let server_version = client.version().await?;
    let server = Version::of_server(&server_version).ok_or_else(|| MyError::Query {
        address: target.address(),
        what: "reading the version".to_owned(),
        detail: format!("{server_version:?} is not a version Coffer understands"),
    })?;
    let existing = client.databases().await?;
    let chosen: Vec<String> = if request.databases.is_empty() {
        existing.clone()
    } else {
        for name in &request.databases {
            if !existing.contains(name) {
                return Err(MyError::MissingDatabase {
                    address: target.address(),
                    name: name.clone(),
                    existing: existing.join(", "),
                });
            }
        }
        request.databases.clone()
    };
    let tools = MyTools::find(request.bin_dir.as_deref(), &server).await?;
    store.preflight().await?;
    let binary_log = client.binary_log().await?;
    let mut warnings = Vec::new();
    let mut database_options = BTreeMap::new();
    let mut listed = BTreeMap::new();
    let mut database_objects = BTreeMap::new();
    for database in &chosen {
        let tables = client.tables(database).await?;
        listed.insert(
            database.clone(),
            tables.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        );
        let loose: Vec<String> = tables
            .iter()
            .filter(|t| !t.engine.eq_ignore_ascii_case("InnoDB"))
            .map(|t| format!("{database}.{} ({})", t.name, t.engine))
            .collect();
        if !loose.is_empty() {
            let warning = format!(
                "tables without transactions are not from one point in time: {}",
                loose.join(", ")
            );
            tracing::warn!("{warning}");
            warnings.push(warning);
        }
        database_options.insert(database.clone(), client.database_options(database).await?);
        // Listed before the dump, like the tables: an object created or dropped during the
        // backup can differ from the dump.
        database_objects.insert(database.clone(), client.objects(database).await?);
    }
    let accounts = if request.users && server.flavor == Flavor::MySql {
        Some(client.accounts_sql().await?)
    } else {
        None
    };
    client.close().await;
    tracing::debug!(
        "backing up {} database(s) of {} with {}",
        chosen.len(),
        target.address(),
        tools.describe()
    );
    let credentials = Credentials::new(target, tools.version.flavor)?;
    // Only a dump program of the server's own flavor records the position without locking:
    // MariaDB's on a MySQL server would take FLUSH TABLES WITH READ LOCK (RELOAD, writers
    // blocked) and use statements MySQL 8.4 removed.
    let position = binary_log && tools.version.flavor == server.flavor;
    if binary_log && !position {
        warnings.push(format!(
            "the binary-log position is not recorded: {} cannot read it from {} {} without locking the tables",
            tools.describe(),
            server.flavor.name(),
            server.text
        ));
    }
    let dumper = Dumper {
        store,
        request,
        tools: &tools,
        credentials: &credentials,
        progress,
        binary_log: position,
    };
    let mut objects = Vec::new();
    let mut table_rows = BTreeMap::new();
    let mut positions = Vec::new();
    let dumped = dumper
        .all(
            &chosen,
            accounts,
            &mut objects,
            &mut table_rows,
            &mut positions,
        )
        .await;
    // Tables the dump holds that were not listed before it, or the other way round: created
    // or dropped meanwhile, or a dump the counter could not follow. Either way, say so.
    for (database, tables) in &listed {
        let dumped: Vec<&String> = table_rows
            .get(database)
            .map(|rows: &Vec<TableRows>| rows.iter().map(|t| &t.table).collect())
            .unwrap_or_default();
        let missing: Vec<&String> = tables.iter().filter(|t| !dumped.contains(t)).collect();
        let extra: Vec<&&String> = dumped.iter().filter(|t| !tables.contains(t)).collect();
        if missing.is_empty() && extra.is_empty() {
            continue;
        }
        warnings.push(format!(
            "database {database:?}: the dump's tables differ from those listed before it (not in the dump: {}; not listed: {}): tables changed during the backup; their rows are not verified on restore",
            join(&missing),
            join(&extra.into_iter().copied().collect::<Vec<_>>())
        ));
    }
    let position = (!positions.is_empty()).then(|| positions.join("; "));
    let manifest = Manifest {
        format_version: Manifest::version_for(request.seal.as_ref().map(Seal::record)),
        coffer_version: env!("CARGO_PKG_VERSION").to_owned(),
        name: request.name.clone(),
        source: SourceInfo {
            kind: "mysql".to_owned(),
            address: target.address(),
            server_version: Some(server_version),
            mode: None,
            database: None,
            rdb_version: None,
            tool: Some(tools.describe()),
            position,
        },
        started_at,
        completed_at: Utc::now(),
        compression: request.compression,
        objects,
        stats: Stats {
            databases: Some(chosen.len() as u64),
            table_rows,
            database_options,
            database_objects,
            warnings,
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

fn join(names: &[&String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A database name as a file name: letters, digits, `-` and `_` kept, the rest
/// percent-encoded (as the PostgreSQL engine names its objects).
pub fn object_name(database: &str) -> String {
    crate::engine::postgres::backup::object_name(database)
}

/// Runs the dump program for one backup.
struct Dumper<'a> {
    store: &'a Store,
    request: &'a MyBackupRequest,
    tools: &'a MyTools,
    credentials: &'a Credentials,
    progress: &'a Progress,
    binary_log: bool,
}

impl Dumper<'_> {
    /// Dumps the accounts (if asked) and each database, adding what is stored to `objects`
    /// as it is stored, so that a failure can remove it.
    async fn all(
        &self,
        databases: &[String],
        accounts: Option<String>,
        objects: &mut Vec<ObjectRecord>,
        table_rows: &mut BTreeMap<String, Vec<TableRows>>,
        positions: &mut Vec<String>,
    ) -> Result<(), MyError> {
        if self.request.users {
            objects.push(self.users(accounts).await?);
        }
        for database in databases {
            let (record, facts) = self.database(database).await?;
            objects.push(record);
            table_rows.insert(
                database.clone(),
                facts
                    .rows
                    .into_iter()
                    .map(|(table, rows)| TableRows {
                        schema: database.clone(),
                        table,
                        rows,
                    })
                    .collect(),
            );
            // Each database is its own snapshot, at its own position.
            if !facts.position.is_empty() {
                positions.push(format!("{database}: {}", facts.position.join(", ")));
            }
        }
        Ok(())
    }

    /// Accounts and grants: MariaDB's `--system=users`, or the statements read for MySQL.
    async fn users(&self, accounts: Option<String>) -> Result<ObjectRecord, MyError> {
        let name = format!(
            "mysql/users.sql{}",
            pipeline::extension(self.request.compression)
        );
        let spec = ObjectSpec {
            folder: &self.request.folder,
            name: &name,
            format: USERS_FORMAT,
            compression: self.request.compression,
            effort: Effort::Fast,
            seal: self.request.seal.as_ref(),
        };
        if let Some(sql) = accounts {
            let mut reader = std::io::Cursor::new(sql.into_bytes());
            let check = async { Ok::<(), MyError>(()) };
            return Ok(
                pipeline::upload(self.store, spec, &mut reader, None, self.progress, check).await?,
            );
        }
        let mut dump = command(&self.tools.dump, self.credentials);
        dump.args(["--system=users", "--no-data", "--no-create-info"])
            .arg("--single-transaction")
            .args(["--skip-comments", "--skip-triggers", "--insert-ignore"])
            .arg("mysql");
        let subject = format!("of the accounts at {}", self.request.target.address());
        let (record, _) = self.run(spec, dump, subject, false).await?;
        Ok(record)
    }

    async fn database(&self, database: &str) -> Result<(ObjectRecord, DumpFacts), MyError> {
        let mut dump = command(&self.tools.dump, self.credentials);
        dump.args(DUMP_OPTIONS);
        if self.binary_log {
            match self.tools.version.flavor {
                Flavor::MariaDb => {
                    dump.args(["--master-data=2", "--gtid"]);
                }
                Flavor::MySql => {
                    dump.args(["--source-data=2", "--set-gtid-purged=OFF"]);
                }
            }
        } else if self.tools.version.flavor == Flavor::MySql {
            dump.arg("--set-gtid-purged=OFF");
        }
        // A database named like an option (`--host=...`) stays a name.
        dump.arg("--").arg(database);
        let name = format!(
            "mysql/{}.sql{}",
            object_name(database),
            pipeline::extension(self.request.compression)
        );
        let spec = ObjectSpec {
            folder: &self.request.folder,
            name: &name,
            format: DUMP_FORMAT,
            compression: self.request.compression,
            effort: Effort::Fast,
            seal: self.request.seal.as_ref(),
        };
        let subject = format!(
            "of database {database:?} at {}",
            self.request.target.address()
        );
        let (mut record, facts) = self.run(spec, dump, subject, true).await?;
        record.database = Some(database.to_owned());
        Ok((record, facts))
    }

    /// Streams a dump program's stdout into an object while its rows are counted; the
    /// object is kept only if the program exits successfully and, when `trailer`, the dump
    /// ends with its completion trailer.
    async fn run(
        &self,
        spec: ObjectSpec<'_>,
        mut program: tokio::process::Command,
        subject: String,
        trailer: bool,
    ) -> Result<(ObjectRecord, DumpFacts), MyError> {
        program.stdout(Stdio::piped());
        let mut running = Running::spawn(program, &self.request.target, subject.clone())?;
        let stdout = running
            .child
            .stdout
            .take()
            .ok_or_else(|| MyError::Internal("the dump program has no stdout".to_owned()))?;
        pipe::widen(&stdout);
        // Rows are counted inline as the bytes pass (no copy, no task): the scanner is
        // shared with `check`, which needs its verdict before the object is committed.
        let scanner = Arc::new(Mutex::new(Some(DumpScanner::new())));
        let mut source = ObservedReader::new(stdout, Scanning(scanner.clone()));
        let mut facts = DumpFacts::default();
        let check = async {
            running.finish().await?;
            facts = scanner
                .lock()
                .ok()
                .and_then(|mut held| held.take())
                .ok_or_else(|| MyError::Internal("the dump's row counter failed".to_owned()))?
                .finish();
            if trailer && !facts.completed {
                return Err(MyError::CutShort {
                    subject: subject.clone(),
                });
            }
            Ok::<(), MyError>(())
        };
        let record =
            pipeline::upload(self.store, spec, &mut source, None, self.progress, check).await?;
        Ok((record, facts))
    }
}

/// Feeds a dump's bytes to its row counter until the counter is taken out to finish.
struct Scanning(Arc<Mutex<Option<DumpScanner>>>);

impl Observe for Scanning {
    fn observe(&mut self, bytes: &[u8]) {
        if let Ok(mut held) = self.0.lock()
            && let Some(scanner) = held.as_mut()
        {
            scanner.feed(bytes);
        }
    }
}
