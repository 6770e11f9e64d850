//! Restoring a MySQL/MariaDB backup into a running server: every object is checked against
//! the manifest first (downloaded once into the spool when there is room, see
//! [`crate::pipeline::fetch`]), the target databases are checked to exist (or are created
//! with `create`, or dropped and created again with `clean`) before anything is written,
//! then the accounts (only when asked) and each dump are loaded with the server's own
//! client program, and every table's rows are counted and compared with the manifest.
//!
//! A dump is loaded statement by statement (MySQL has no transactional DDL): when the bytes
//! read the second time (no spool) do not match, the client is stopped before the end of
//! its input and the error says the database was partly restored.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::oneshot;

use super::backup::{DUMP_FORMAT, USERS_FORMAT};
use super::client::{Client, ident};
use super::error::MyError;
use super::process::{Credentials, Running, command};
use super::rename::{Renaming, grant_renamed};
use super::target::MyTarget;
use super::tools::{MyTools, Version};
use crate::pipeline::Codec;
use crate::pipeline::Progress;
use crate::pipeline::encryption::DataKey;
use crate::pipeline::fetch::{self, Prepared, Spool};
use crate::storage::Store;
use crate::storage::manifest::{Manifest, ObjectRecord};

/// One restore to make.
#[derive(Clone, Debug)]
pub struct MyRestoreRequest {
    pub target: MyTarget,
    /// Databases of the backup to restore; empty: all of them.
    pub databases: Vec<String>,
    /// `old` → `new`: restore database `old` of the backup into `new`.
    pub renames: Vec<(String, String)>,
    /// Drop the target databases and create them again first.
    pub clean: bool,
    /// Create target databases that do not exist.
    pub create: bool,
    /// Also restore accounts and grants.
    pub users: bool,
    pub bin_dir: Option<PathBuf>,
    pub spool: Spool,
    /// The backup's data key, when it is encrypted.
    pub key: Option<DataKey>,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MyRestoreStats {
    pub databases: u64,
    pub created: u64,
    pub tables_verified: u64,
    pub rows_verified: u64,
    pub users: bool,
}

/// A database of the backup and where it goes.
pub(super) struct Planned<'a> {
    pub record: &'a ObjectRecord,
    pub from: String,
    pub into: String,
    pub exists: bool,
}

pub async fn restore(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &MyRestoreRequest,
    progress: &Progress,
) -> Result<MyRestoreStats, MyError> {
    let target = &request.target;
    let Checked {
        tools,
        plan,
        dumps,
        users,
    } = check(store, folder, manifest, request, progress).await?;

    let credentials = Credentials::new(target, tools.version.flavor)?;
    let mut stats = MyRestoreStats::default();
    for (planned, object) in plan.iter().zip(&dumps) {
        let options = database_options(manifest, &planned.from)?;
        let mut client = Client::connect(target).await?;
        if planned.exists && request.clean {
            client
                .execute(
                    &format!("DROP DATABASE {}", ident(&planned.into)),
                    "dropping a database for --clean",
                )
                .await?;
        }
        if !planned.exists || request.clean {
            client
                .execute(
                    &format!("CREATE DATABASE {} {options}", ident(&planned.into)),
                    "creating a database",
                )
                .await?;
            stats.created += u64::from(!planned.exists);
        }
        client.close().await;
        let subject = format!(
            "loading database {:?} into {:?} at {}",
            planned.from,
            planned.into,
            target.address()
        );
        load(
            store,
            object,
            &tools,
            &credentials,
            target,
            Some(&planned.into),
            Renaming::new(&planned.from, &planned.into),
            subject,
            progress,
        )
        .await?;
        stats.databases += 1;
    }

    // Accounts last: grants on tables need the tables.
    if let Some(object) = &users {
        let script = read_accounts(store, object, progress).await?;
        let mut client = Client::connect(target).await?;
        let existing = client.accounts().await?;
        client.close().await;
        let renames: Vec<(String, String)> = plan
            .iter()
            .filter(|p| p.from != p.into)
            .map(|p| (p.from.clone(), p.into.clone()))
            .collect();
        let script = accounts_script(&script, &target.user, &existing, &renames);
        if !script.left_out.is_empty() {
            tracing::info!(
                "left the accounts {} as they are on the target",
                script.left_out.join(", ")
            );
        }
        let subject = format!("loading the accounts into {}", target.address());
        run_script(&script.sql, &tools, &credentials, target, subject).await?;
        stats.users = true;
    }
    // Every table's rows, compared with what the backup counted.
    let mut client = Client::connect(target).await?;
    for planned in &plan {
        let Some(expected) = manifest.stats.table_rows.get(&planned.from) else {
            continue;
        };
        let mut differences = Vec::new();
        for table in expected {
            let found = match client.count(&planned.into, &table.table).await {
                Ok(n) => n.to_string(),
                Err(MyError::Query { .. }) => "no table".to_owned(),
                Err(e) => return Err(e),
            };
            if found != table.rows.to_string() {
                differences.push(format!(
                    "table {} has {found} rows, the backup {}",
                    table.table, table.rows
                ));
            } else {
                stats.tables_verified += 1;
                stats.rows_verified += table.rows;
            }
        }
        if !differences.is_empty() {
            return Err(MyError::RowCount {
                database: planned.into.clone(),
                differences: differences.join(", "),
            });
        }
    }
    client.close().await;
    Ok(stats)
}

/// A restore decided against the target as it is, and checked before anything is written.
pub(super) struct Checked<'m> {
    /// The client programs for the target's server.
    pub tools: MyTools,
    /// Where each database of the backup goes.
    pub plan: Vec<Planned<'m>>,
    /// Each planned database's dump, fetched and verified, in the plan's order.
    pub dumps: Vec<Prepared>,
    /// The accounts, fetched and verified, when the request restores them.
    pub users: Option<Prepared>,
}

/// What restoring `request` does (see [`Checked`]): the request checked against the backup
/// and the target, the client programs chosen, every object it loads checked intact.
pub(super) async fn check<'m>(
    store: &Store,
    folder: &str,
    manifest: &'m Manifest,
    request: &MyRestoreRequest,
    progress: &Progress,
) -> Result<Checked<'m>, MyError> {
    let (chosen, users_record) = choose(manifest, request)?;
    let mut client = Client::connect(&request.target).await?;
    let tools = tools_for(&mut client, request).await?;
    let existing = client.databases().await?;
    let plan = place(&chosen, request, &existing)?;
    // Connections are made for each step: one held through hours of loading would be closed
    // by the server's wait_timeout or a proxy meanwhile.
    client.close().await;
    let (dumps, users) = fetch::prepare_dumps(
        store,
        folder,
        plan.iter().map(|p| p.record),
        users_record,
        &Codec::of(manifest, request.key.clone()),
        &request.spool,
        progress,
    )
    .await?;
    Ok(Checked {
        tools,
        plan,
        dumps,
        users,
    })
}

/// The databases of the backup the request restores (in the backup's order), and its
/// accounts object when it restores accounts; checks the request against the backup.
pub(super) fn choose<'m>(
    manifest: &'m Manifest,
    request: &MyRestoreRequest,
) -> Result<(Vec<&'m ObjectRecord>, Option<&'m ObjectRecord>), MyError> {
    let target = &request.target;
    let dumps: Vec<&ObjectRecord> = manifest
        .objects
        .iter()
        .filter(|o| o.format == DUMP_FORMAT)
        .collect();
    let in_backup: Vec<&str> = dumps.iter().filter_map(|o| o.database.as_deref()).collect();
    let chosen: Vec<&ObjectRecord> = if request.databases.is_empty() {
        dumps.clone()
    } else {
        let mut chosen = Vec::new();
        for name in &request.databases {
            let record = dumps
                .iter()
                .find(|o| o.database.as_deref() == Some(name.as_str()))
                .ok_or_else(|| {
                    MyError::Usage(format!(
                        "the backup holds no database {name:?} (it holds: {})",
                        in_backup.join(", ")
                    ))
                })?;
            chosen.push(*record);
        }
        chosen
    };
    for (from, _) in &request.renames {
        if !chosen
            .iter()
            .any(|o| o.database.as_deref() == Some(from.as_str()))
        {
            return Err(MyError::Usage(format!(
                "--rename {from}=...: the restore holds no database {from:?} (it holds: {})",
                in_backup.join(", ")
            )));
        }
    }
    if target.database.is_some() && !request.renames.is_empty() {
        return Err(MyError::Usage(
            "the target URL names a database and --rename names others: use one or the other"
                .to_owned(),
        ));
    }
    if target.database.is_some() && chosen.len() != 1 {
        return Err(MyError::Usage(format!(
            "the target URL names a database, but the restore holds {} ({}): restore one with --databases, or leave the database out of the URL",
            chosen.len(),
            in_backup.join(", ")
        )));
    }
    let users_record = manifest
        .objects
        .iter()
        .find(|o| o.format == USERS_FORMAT)
        .filter(|_| request.users);
    if request.users && users_record.is_none() {
        return Err(MyError::Usage(
            "the backup holds no accounts (it was taken without users): restore without --users"
                .to_owned(),
        ));
    }
    Ok((chosen, users_record))
}

/// The client programs for the target's server (refused when older than its version).
pub(super) async fn tools_for(
    client: &mut Client,
    request: &MyRestoreRequest,
) -> Result<MyTools, MyError> {
    let target = &request.target;
    let server_version = client.version().await?;
    let server = Version::of_server(&server_version).ok_or_else(|| MyError::Query {
        address: target.address(),
        what: "reading the version".to_owned(),
        detail: format!("{server_version:?} is not a version Coffer understands"),
    })?;
    let tools = MyTools::find(request.bin_dir.as_deref(), &server).await?;
    Ok(tools)
}

/// Where each chosen database goes, given the target's databases `existing`; refuses two
/// into one and a missing one without `create`/`clean`.
pub(super) fn place<'m>(
    chosen: &[&'m ObjectRecord],
    request: &MyRestoreRequest,
    existing: &[String],
) -> Result<Vec<Planned<'m>>, MyError> {
    let target = &request.target;
    let mut plan = Vec::new();
    for record in chosen {
        let from = record.database.clone().unwrap_or_default();
        let into = target
            .database
            .clone()
            .or_else(|| {
                request
                    .renames
                    .iter()
                    .find(|(old, _)| *old == from)
                    .map(|(_, new)| new.clone())
            })
            .unwrap_or_else(|| from.clone());
        if plan.iter().any(|p: &Planned| p.into == into) {
            return Err(MyError::Usage(format!(
                "two databases of the backup would be restored into {into:?}: give each its own name with --rename"
            )));
        }
        let exists = existing.contains(&into);
        if !(exists || request.create || request.clean) {
            return Err(MyError::NeedCreate {
                address: target.address(),
                name: into,
            });
        }
        plan.push(Planned {
            record,
            from,
            into,
            exists,
        });
    }
    Ok(plan)
}

/// Streams an object, decompressed, into the client program (`mariadb`/`mysql`), into
/// `database` when given. When the bytes do not match the manifest, the program is killed
/// before it sees the end of its input.
#[allow(clippy::too_many_arguments)]
async fn load(
    store: &Store,
    object: &Prepared,
    tools: &MyTools,
    credentials: &Credentials,
    target: &MyTarget,
    database: Option<&str>,
    renaming: Option<Renaming>,
    subject: String,
    progress: &Progress,
) -> Result<(), MyError> {
    let mut program = loader(tools, credentials);
    if let Some(database) = database {
        program.arg(format!("--database={database}"));
    }
    let (restoring, verdict) = object.open(store, progress).await?;
    let mut running = Running::spawn(program, target, subject.clone())?;
    let mut stdin = running
        .child
        .stdin
        .take()
        .ok_or_else(|| MyError::Internal("the client program has no stdin".to_owned()))?;
    let (stop, stopped) = oneshot::channel();
    let finishing = running.finish_unless(stopped);
    let copied = async move {
        let mut restoring = restoring;
        let result = feed(&mut restoring, &mut stdin, renaming).await;
        drop(restoring);
        if result.is_ok() {
            drop(stdin);
            return (result, None);
        }
        let _ = stop.send(());
        (result, Some(stdin))
    };
    let ((copied, stdin), finished) = tokio::join!(copied, finishing);
    drop(stdin);
    if copied.is_err() || finished.is_err() {
        // Bytes that did not match, or the store failing to send them.
        if let Some(verdict) = verdict.explain(false).await {
            return Err(MyError::RestoreRefused {
                source: verdict,
                outcome: format!(
                    "stopped {subject} before its end; what was loaded before stays: restore it again from a good copy with --clean"
                ),
            });
        }
        finished?;
        copied.map_err(|e| MyError::Internal(format!("feeding the client program: {e}")))?;
        return Ok(());
    }
    verdict.wait().await?;
    Ok(())
}

/// Copies a dump into the client program, through `renaming` when the database is loaded
/// under another name.
async fn feed(
    dump: &mut (impl AsyncRead + Unpin),
    stdin: &mut ChildStdin,
    renaming: Option<Renaming>,
) -> std::io::Result<()> {
    let Some(mut renaming) = renaming else {
        tokio::io::copy(dump, stdin).await?;
        return Ok(());
    };
    let mut chunk = vec![0; 64 << 10];
    let mut out = Vec::with_capacity(chunk.len() + 256);
    loop {
        let read = dump.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        renaming.push(&chunk[..read], &mut out);
        stdin.write_all(&out).await?;
        out.clear();
    }
    if renaming.rewritten > 0 {
        tracing::debug!(
            "renamed the database in {} ALTER DATABASE line(s) of the dump",
            renaming.rewritten
        );
    }
    renaming.finish(&mut out);
    stdin.write_all(&out).await?;
    stdin.flush().await
}

/// A database's `CHARACTER SET x COLLATE y` from the manifest, checked to be only that (it
/// goes into a `CREATE DATABASE` statement).
fn database_options(manifest: &Manifest, database: &str) -> Result<String, MyError> {
    let Some(options) = manifest.stats.database_options.get(database) else {
        return Ok(String::new());
    };
    let words: Vec<&str> = options.split(' ').collect();
    let name = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match words.as_slice() {
        [] | [""] => Ok(String::new()),
        ["CHARACTER", "SET", charset, "COLLATE", collation] if name(charset) && name(collation) => {
            Ok(options.clone())
        }
        _ => Err(MyError::Usage(format!(
            "the manifest's character set for database {database:?} is not CHARACTER SET <name> COLLATE <name>: the manifest was changed; restore from a good copy"
        ))),
    }
}

/// The most an accounts script may hold once decompressed.
const MAX_ACCOUNTS_BYTES: u64 = 64 << 20;

/// Reads the backup's accounts script, all of it checked before any of it is used.
pub(super) async fn read_accounts(
    store: &Store,
    object: &Prepared,
    progress: &Progress,
) -> Result<String, MyError> {
    use tokio::io::AsyncReadExt;
    let record = object.record();
    if record.raw_bytes > MAX_ACCOUNTS_BYTES {
        return Err(MyError::Usage(format!(
            "the backup's accounts script is {} (more than {}): restore without --users and load it with the mariadb client yourself",
            crate::units::bytes(record.raw_bytes),
            crate::units::bytes(MAX_ACCOUNTS_BYTES)
        )));
    }
    let (restoring, verdict) = object.open(store, progress).await?;
    let mut script = Vec::new();
    let read = restoring
        .take(MAX_ACCOUNTS_BYTES)
        .read_to_end(&mut script)
        .await;
    verdict.wait().await?;
    read.map_err(|e| MyError::Internal(format!("reading the accounts script: {e}")))?;
    Ok(String::from_utf8_lossy(&script).into_owned())
}

/// Accounts a restore never changes: the server's own, `root`, and the one it logs in as.
fn kept_account(name: &str, login: &str) -> bool {
    name == login || name == "root" || name == "mariadb.sys" || name.starts_with("mysql.")
}

/// What the accounts script does on a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountsScript {
    /// The statements to run.
    pub sql: String,
    /// Accounts left out entirely ([`kept_account`]).
    pub left_out: Vec<String>,
    /// Accounts the script creates, as `user@host`.
    pub created: Vec<String>,
    /// Accounts of the backup that the target has, as `user@host`: they keep their
    /// password and attributes and get the backup's grants added.
    pub existing: Vec<String>,
}

/// The accounts script for a target that has the accounts `existing` (user, host), logged in
/// as `login`. The dump programs write one statement per line, naming accounts as
/// `` `name`@`host` `` or `'name'@'host'`.
///
/// - Statements about `root`, the server's own accounts and `login` are left out.
/// - Accounts that exist keep their password and attributes: only `GRANT` statements reach
///   them (privileges and roles are added, nothing is revoked).
/// - `GRANT ... IDENTIFIED BY PASSWORD '...'` (MariaDB's) loses the `IDENTIFIED` part: a
///   grant never sets a password (a new account gets its password from its `CREATE USER`).
/// - Grants on a database restored under another name name that one ([`grant_renamed`]).
pub fn accounts_script(
    script: &str,
    login: &str,
    existing: &[(String, String)],
    renames: &[(String, String)],
) -> AccountsScript {
    let mut out = AccountsScript::default();
    for line in script.lines() {
        let named = account_names(line);
        if let Some((name, _)) = named.iter().find(|(n, _)| kept_account(n, login)) {
            if !out.left_out.contains(name) {
                out.left_out.push(name.clone());
            }
            continue;
        }
        let word = statement_word(line);
        let grant = word.eq_ignore_ascii_case("GRANT");
        if word.eq_ignore_ascii_case("CREATE") {
            for account in &named {
                let (list, shown) = (
                    if existing.contains(account) {
                        &mut out.existing
                    } else {
                        &mut out.created
                    },
                    format!("{}@{}", account.0, account.1),
                );
                if !list.contains(&shown) {
                    list.push(shown);
                }
            }
        }
        if !grant && named.iter().any(|a| existing.contains(a)) {
            continue;
        }
        let line = if grant {
            without_identified(line)
        } else {
            line.to_owned()
        };
        let line = if grant || word.eq_ignore_ascii_case("REVOKE") {
            match grant_renamed(&line, renames) {
                Some(line) => line,
                None => {
                    tracing::warn!(
                        "left out a grant on a database another one was restored into: {}",
                        line.split(" TO ").next().unwrap_or_default()
                    );
                    continue;
                }
            }
        } else {
            line
        };
        out.sql.push_str(&line);
        out.sql.push('\n');
    }
    out
}

/// The first word of a statement, inside a version comment (`/*M!100005 SET ...`) too.
fn statement_word(line: &str) -> &str {
    let mut rest = line.trim_start();
    if let Some(after) = rest.strip_prefix("/*") {
        rest = after
            .trim_start_matches(['M', '!'])
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
    }
    rest.split(|c: char| c.is_whitespace() || c == ';')
        .next()
        .unwrap_or_default()
}

/// A GRANT without its ` IDENTIFIED BY PASSWORD '...'`/` IDENTIFIED VIA ...` part (up to
/// ` WITH ` or the end of the statement).
fn without_identified(line: &str) -> String {
    let Some(at) = line.find(" IDENTIFIED ") else {
        return line.to_owned();
    };
    let rest = &line[at..];
    let end = rest
        .find(" WITH ")
        .or_else(|| rest.rfind(';'))
        .unwrap_or(rest.len());
    format!("{}{}", &line[..at], &rest[end..])
}

/// The `user@host` accounts a statement names, as (user, host).
fn account_names(line: &str) -> Vec<(String, String)> {
    let bytes = line.as_bytes();
    let quoted = |from: usize| -> Option<(String, usize)> {
        let quote = *bytes.get(from)?;
        if quote != b'`' && quote != b'\'' {
            return None;
        }
        let mut end = from + 1;
        while end < bytes.len() && bytes[end] != quote {
            end += 1;
        }
        (end < bytes.len()).then(|| (line[from + 1..end].to_owned(), end + 1))
    };
    let mut accounts = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match quoted(i) {
            Some((name, after)) => {
                if bytes.get(after) == Some(&b'@')
                    && let Some((host, next)) = quoted(after + 1)
                {
                    accounts.push((name, host));
                    i = next;
                } else {
                    i = after;
                }
            }
            None => i += 1,
        }
    }
    accounts
}

/// Runs a script held in memory through the client program.
async fn run_script(
    script: &str,
    tools: &MyTools,
    credentials: &Credentials,
    target: &MyTarget,
    subject: String,
) -> Result<(), MyError> {
    use tokio::io::AsyncWriteExt;
    let program = loader(tools, credentials);
    let mut running = Running::spawn(program, target, subject)?;
    let mut stdin = running
        .child
        .stdin
        .take()
        .ok_or_else(|| MyError::Internal("the client program has no stdin".to_owned()))?;
    let written = stdin.write_all(script.as_bytes()).await;
    drop(stdin);
    running.finish().await?;
    written.map_err(|e| MyError::Internal(format!("feeding the client program: {e}")))
}

/// The client program reading SQL from its stdin: binary data as data and client commands
/// off (`--binary-mode`: a backup changed to hold `\! sh`, `system ...` or `source FILE` is
/// refused at that line instead of running them in the worker), comments kept (a routine's
/// body is stored as sent), and with MariaDB's client its `--sandbox` as well.
fn loader(tools: &MyTools, credentials: &Credentials) -> tokio::process::Command {
    let mut program = command(&tools.client, credentials);
    program
        .args(["--batch", "--binary-mode", "--comments"])
        .args(["--default-character-set=utf8mb4", "--max-allowed-packet=1G"])
        .stdin(Stdio::piped());
    if tools.version.flavor == super::tools::Flavor::MariaDb {
        program.arg("--sandbox");
    }
    program
}

/// `a=b` → (`a`, `b`).
pub fn parse_rename(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => {
            Ok((old.to_owned(), new.to_owned()))
        }
        _ => Err(format!(
            "--rename {text:?} is not OLD=NEW: name the backup's database and the target's"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "CREATE USER IF NOT EXISTS `mariadb.sys`@`localhost` ACCOUNT LOCK;
CREATE USER IF NOT EXISTS `root`@`localhost`;
CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*ABC';
CREATE USER IF NOT EXISTS `old`@`%` IDENTIFIED BY PASSWORD '*DEF';
CREATE USER IF NOT EXISTS `coffer`@`%`;
CREATE ROLE IF NOT EXISTS mariadb_dump_import_role;
GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION;
GRANT SELECT ON `shop`.* TO `app`@`%`;
GRANT SELECT ON *.* TO `old`@`%` IDENTIFIED BY PASSWORD '*DEF' WITH GRANT OPTION;
GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*ABC';
/*M!100005 SET DEFAULT ROLE NONE FOR 'old'@'%' */;
/*!80001 ALTER USER 'old'@'%' DEFAULT ROLE NONE */;
GRANT SELECT ON `shop`.* TO 'coffer'@'%';
";

    #[test]
    fn the_servers_own_accounts_and_the_login_are_left_alone_and_existing_ones_only_gain_grants() {
        let existing = [("old".to_owned(), "%".to_owned())];
        let script = accounts_script(SCRIPT, "coffer", &existing, &[]);
        assert_eq!(
            script.sql,
            "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*ABC';
CREATE ROLE IF NOT EXISTS mariadb_dump_import_role;
GRANT SELECT ON `shop`.* TO `app`@`%`;
GRANT SELECT ON *.* TO `old`@`%` WITH GRANT OPTION;
GRANT USAGE ON *.* TO `app`@`%`;
"
        );
        assert_eq!(script.left_out, ["mariadb.sys", "root", "coffer"]);
    }

    #[test]
    fn statement_words() {
        assert_eq!(
            statement_word("/*M!100005 SET DEFAULT ROLE NONE */;"),
            "SET"
        );
        assert_eq!(statement_word("/*!80001 ALTER USER 'a'@'%' */;"), "ALTER");
        assert_eq!(statement_word("  GRANT SELECT"), "GRANT");
    }
}
