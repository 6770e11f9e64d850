//! A PostgreSQL drill: the backup restored (roles first, every database created) into a
//! PostgreSQL server the drill makes with `initdb` and starts on loopback (a random password,
//! durability off: it is thrown away), of the source's major version or the nearest newer
//! one installed; then the restore's own verification (every table's rows counted against
//! the manifest) reported as checks, and the user's queries.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::error::PgError;
use super::restore::{PgRestoreRequest, restore};
use super::target::PgTarget;
use crate::api::restore_request::RoleConflict;
use crate::drill::checks::{is_true, object_checks};
use crate::drill::scratch::{self, ScratchProcess};
use crate::drill::{
    Blame, Cause, CheckResult, DrillError, DrillRequest, Outcome, UserCheck, integrity_cause,
    restore_into, says_no_space, store_cause, table_checks,
};
use crate::pipeline::Progress;
use crate::storage::Store;
use crate::storage::manifest::{DatabaseObjects, Manifest};

/// The scratch cluster's superuser.
const SUPERUSER: &str = "coffer";

pub async fn drill(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &DrillRequest,
    dir: &Path,
    progress: &Progress,
) -> Result<Outcome, DrillError> {
    let bin = bin_dir(manifest, request)?;
    let (server, target) = start(&bin, dir).await?;
    let restore_request = PgRestoreRequest {
        target: target.clone(),
        databases: Vec::new(),
        clean: false,
        create: true,
        globals: manifest
            .objects
            .iter()
            .any(|o| o.format == super::backup::GLOBALS_FORMAT),
        roles: RoleConflict::Keep,
        bin_dir: Some(bin),
        spool: request.spool.clone(),
        key: request.key.clone(),
    };
    let restoring = restore(store, folder, manifest, &restore_request, progress);
    let (server, restore_time, stats) = match restore_into(server, restoring).await? {
        Ok(restored) => restored,
        Err(outcome) => return Ok(outcome),
    };
    let mut checks = table_checks(
        manifest,
        manifest
            .stats
            .databases
            .unwrap_or(manifest.stats.table_rows.len() as u64),
        stats.databases,
        stats.tables_verified,
        stats.rows_verified,
    );
    for (database, expected) in &manifest.stats.database_objects {
        checks.extend(objects_restored(&target, database, expected).await);
    }
    for check in &request.checks {
        if let UserCheck::Sql { database, query } = check {
            checks.push(sql_check(&target, database, query, check.name()).await);
        }
    }
    server.stop().await;
    Ok(Outcome {
        restore_time,
        restored: Ok(format!(
            "restored {} database(s), {} roles; verified {} tables, {} rows",
            stats.databases, stats.roles_created, stats.tables_verified, stats.rows_verified
        )),
        checks,
    })
}

/// The server programs: `--bin-dir`, else Debian's `/usr/lib/postgresql/<major>/bin` of the
/// source's major version, or the nearest newer one installed (a dump loads into a newer
/// server, not an older one).
fn bin_dir(manifest: &Manifest, request: &DrillRequest) -> Result<PathBuf, DrillError> {
    if let Some(dir) = &request.bin_dir {
        return Ok(dir.clone());
    }
    let major: u32 = manifest
        .source
        .server_version
        .as_deref()
        .and_then(|v| v.split(['.', ' ']).next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .filter(|(version, _)| *version >= major)
        .collect();
    installed.sort();
    installed
        .into_iter()
        .next()
        .map(|(_, bin)| bin)
        .ok_or_else(|| DrillError::Scratch {
            what: "finding a PostgreSQL server for the scratch instance".to_owned(),
            detail: format!(
                "no PostgreSQL server of version {major} or newer in /usr/lib/postgresql: install postgresql-{major}, or give the directory of its initdb and postgres with --bin-dir"
            ),
        })
}

/// The scratch server's user: who runs it, and the environment that gives it a passwd
/// entry if it has none.
struct Owner {
    /// When the drill runs as root: the user it switches to (name, uid, gid).
    switch_to: Option<(String, u32, u32)>,
    env: Vec<(&'static str, std::ffi::OsString)>,
}

impl Owner {
    /// A command run as this user, with nothing of the drill's environment.
    fn command(&self, program: PathBuf, cwd: &Path) -> Command {
        let mut command = std::process::Command::new(program);
        command.current_dir(cwd);
        if let Some((_, uid, gid)) = &self.switch_to {
            command.uid(*uid).gid(*gid);
        }
        let mut command = Command::from(command);
        scratch::clean_env(&mut command);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

async fn start(bin: &Path, dir: &Path) -> Result<(ScratchProcess, PgTarget), DrillError> {
    let switch_to = scratch::unprivileged_user()?;
    let home = dir.join("postgres");
    std::fs::create_dir(&home).map_err(|e| DrillError::Scratch {
        what: format!("making {}", home.display()),
        detail: e.to_string(),
    })?;
    scratch::give(dir, switch_to.as_ref())?;
    scratch::give(&home, switch_to.as_ref())?;
    let env = match &switch_to {
        Some(_) => Vec::new(),
        None => {
            let (uid, gid) = scratch::identity();
            crate::drill::passwd::entry_for(uid, gid, &home, "initdb")?
        }
    };
    let owner = Owner { switch_to, env };
    let give = |path: &Path| scratch::give(path, owner.switch_to.as_ref());
    let password = scratch::secret()?;
    let pwfile = home.join("pwfile");
    scratch::write_private(&pwfile, &password)?;
    give(&pwfile)?;
    let data = home.join("data");
    let output = owner
        .command(bin.join("initdb"), &home)
        .arg("--pgdata")
        .arg(&data)
        .args(["--username", SUPERUSER, "--auth", "scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--encoding", "UTF8", "--no-locale", "--no-sync"])
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    let _ = std::fs::remove_file(&pwfile);
    match output {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(DrillError::Scratch {
                what: "initdb for the scratch PostgreSQL".to_owned(),
                detail: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " | "),
            });
        }
        Err(e) => {
            return Err(DrillError::Scratch {
                what: format!("running {}", bin.join("initdb").display()),
                detail: e.to_string(),
            });
        }
    }
    let port = scratch::free_port()?;
    let settings = format!(
        "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
         fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 20\n"
    );
    {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .map_err(|e| DrillError::Scratch {
                what: "configuring the scratch PostgreSQL".to_owned(),
                detail: e.to_string(),
            })?;
    }
    let mut command = owner.command(bin.join("postgres"), &home);
    command.arg("-D").arg(&data);
    // Stopped by pg_ctl (immediate mode): killed, its shared memory would stay behind.
    let mut stop = owner.command(bin.join("pg_ctl"), &home);
    stop.args(["stop", "--mode", "immediate", "--wait", "--pgdata"])
        .arg(&data);
    let mut server =
        ScratchProcess::spawn("postgres", command, &dir.join("postgres.log"))?.stopped_with(stop);
    let target = PgTarget {
        host: "127.0.0.1".to_owned(),
        port,
        user: SUPERUSER.to_owned(),
        password: Some(password),
        database: None,
    };
    server
        .wait_ready(|| async { super::catalog::connect(&target, "postgres").await.is_ok() })
        .await?;
    Ok((server, target))
}

/// Whether every schema, function and view `database` held when backed up is in the scratch
/// server.
async fn objects_restored(
    target: &PgTarget,
    database: &str,
    expected: &DatabaseObjects,
) -> Vec<CheckResult> {
    let found = match super::catalog::connect(target, database).await {
        Ok(client) => super::catalog::objects(&client, target).await,
        Err(e) => Err(e),
    };
    object_checks(database, expected, found.map_err(|e| e.to_string()))
}

/// A user's query, run in `database` of the scratch server: its first value must be true.
async fn sql_check(target: &PgTarget, database: &str, query: &str, name: String) -> CheckResult {
    let client = match super::catalog::connect(target, database).await {
        Ok(client) => client,
        Err(e) => return CheckResult::failed(name, e.to_string()),
    };
    // The simple protocol returns every value as text, whatever its type.
    match client.simple_query(query).await {
        Ok(messages) => {
            let value = messages.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
                _ => None,
            });
            match value {
                Some(Some(v)) if is_true(&v) => CheckResult::passed(name, format!("returned {v}")),
                Some(Some(v)) => CheckResult::failed(name, format!("returned {v}, not true")),
                Some(None) => CheckResult::failed(name, "returned NULL, not true"),
                None => CheckResult::failed(name, "returned no row"),
            }
        }
        Err(e) => CheckResult::failed(
            name,
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
        ),
    }
}

impl Blame for PgError {
    fn not_the_backup(&self) -> Option<Cause> {
        match self {
            Self::Storage(e) => store_cause(e),
            Self::Integrity(e) | Self::RestoreRefused { source: e, .. } => integrity_cause(e),
            Self::Connect { .. }
            | Self::Dropped { .. }
            | Self::Auth { .. }
            | Self::ToolMissing { .. }
            | Self::ToolTooOld { .. }
            // The drill's own work (temporary files, pipes, waiting for a tool).
            | Self::Internal(_) => Some(Cause::Scratch),
            Self::Tool { stderr, .. } if says_no_space(stderr) => Some(Cause::NoSpace),
            // The scratch server went away under the tool (killed for memory, a panic).
            Self::Tool { stderr, .. } if stderr.ends_with(super::process::DROPPED_HINT) => {
                Some(Cause::Scratch)
            }
            Self::Query { detail, .. } if says_no_space(detail) => Some(Cause::NoSpace),
            _ => None,
        }
    }
}
