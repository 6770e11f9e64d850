//! A MySQL/MariaDB drill: the backup restored (every database created, the accounts when the
//! backup has them) into a MariaDB server the drill makes with `mariadb-install-db` and
//! starts on loopback (its login made by an init file with a random password, durability
//! off: it is thrown away); then the restore's own verification (every table's rows counted
//! against the manifest) reported as checks, and the user's queries.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::backup::USERS_FORMAT;
use super::client::{Client, literal};
use super::error::MyError;
use super::restore::{MyRestoreRequest, restore};
use super::target::MyTarget;
use crate::drill::checks::{is_true, object_checks};
use crate::drill::scratch::{self, ScratchProcess};
use crate::drill::{
    Blame, Cause, CheckResult, DrillError, DrillRequest, Outcome, UserCheck, integrity_cause,
    restore_into, says_no_space, store_cause, table_checks,
};
use crate::pipeline::Progress;
use crate::storage::Store;
use crate::storage::manifest::{DatabaseObjects, Manifest};

/// The scratch server's login.
const LOGIN: &str = "coffer";

pub async fn drill(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &DrillRequest,
    dir: &Path,
    progress: &Progress,
) -> Result<Outcome, DrillError> {
    let version = manifest
        .source
        .server_version
        .as_deref()
        .unwrap_or_default();
    if !version.to_ascii_lowercase().contains("mariadb") {
        return Err(DrillError::NotImplemented(format!(
            "MySQL (server {version}; the drill starts MariaDB, which cannot load every MySQL 8 dump: MariaDB backups are drilled)"
        )));
    }
    let (server, target) = start(request, dir).await?;
    let restore_request = MyRestoreRequest {
        target: target.clone(),
        databases: Vec::new(),
        renames: Vec::new(),
        clean: false,
        create: true,
        users: manifest.objects.iter().any(|o| o.format == USERS_FORMAT),
        bin_dir: None,
        spool: request.spool.clone(),
        key: request.key.clone(),
    };
    let restoring = restore(store, folder, manifest, &restore_request, progress);
    let (server, restore_time, stats) = match restore_into(server, restoring).await? {
        Ok(restored) => restored,
        Err(outcome) => return Ok(outcome),
    };
    let databases = manifest
        .objects
        .iter()
        .filter(|o| o.format == super::backup::DUMP_FORMAT)
        .count() as u64;
    let mut checks = table_checks(
        manifest,
        databases,
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
            "restored {} database(s){}; verified {} tables, {} rows",
            stats.databases,
            if stats.users { " and the accounts" } else { "" },
            stats.tables_verified,
            stats.rows_verified
        )),
        checks,
    })
}

/// A server program: in `--bin-dir`, else on PATH or in /usr/sbin.
fn program(request: &DrillRequest, name: &str) -> PathBuf {
    if let Some(dir) = &request.bin_dir {
        return dir.join(name);
    }
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

async fn start(
    request: &DrillRequest,
    dir: &Path,
) -> Result<(ScratchProcess, MyTarget), DrillError> {
    let home = dir.join("mariadb");
    let data = home.join("data");
    std::fs::create_dir(&home).map_err(|e| DrillError::Scratch {
        what: format!("making {}", home.display()),
        detail: e.to_string(),
    })?;
    // As root, the server runs as an unprivileged user (mariadbd drops to it), who owns its
    // files: the restored data is not root's to write anywhere.
    let owner = scratch::unprivileged_user()?;
    let user: Vec<String> = owner
        .iter()
        .map(|(name, _, _)| format!("--user={name}"))
        .collect();
    scratch::give(dir, owner.as_ref())?;
    scratch::give(&home, owner.as_ref())?;
    let install = program(request, "mariadb-install-db");
    let mut command = Command::new(&install);
    let output = scratch::clean_env(&mut command)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", home.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(["--skip-name-resolve", "--innodb-log-file-size=8M"])
        .args(&user)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| DrillError::Scratch {
            what: format!("running {}", install.display()),
            detail: if e.kind() == std::io::ErrorKind::NotFound {
                "not found: install mariadb-server (a drill starts its own scratch server) or give its directory with --bin-dir".to_owned()
            } else {
                e.to_string()
            },
        })?;
    if !output.status.success() {
        return Err(DrillError::Scratch {
            what: "mariadb-install-db for the scratch server".to_owned(),
            detail: String::from_utf8_lossy(&output.stderr)
                .trim()
                .replace('\n', " | "),
        });
    }
    let password = scratch::secret()?;
    let init = home.join("init.sql");
    // The installer's root accounts have no password, and one of them is reachable over
    // TCP: only root@localhost (the socket, in a directory nobody else may enter) stays, with
    // a password nobody knows; the drill logs in as its own account.
    scratch::write_private(
        &init,
        &format!(
            "DELETE FROM mysql.global_priv WHERE User = '' OR (User = 'root' AND Host <> 'localhost');\n\
             FLUSH PRIVILEGES;\n\
             ALTER USER 'root'@'localhost' IDENTIFIED BY {};\n\
             CREATE USER '{LOGIN}'@'127.0.0.1' IDENTIFIED BY {};\n\
             GRANT ALL PRIVILEGES ON *.* TO '{LOGIN}'@'127.0.0.1' WITH GRANT OPTION;\n",
            literal(&scratch::secret()?),
            literal(&password)
        ),
    )?;
    scratch::give(&init, owner.as_ref())?;
    let files = home.join("files");
    std::fs::create_dir(&files).map_err(|e| DrillError::Scratch {
        what: format!("making {}", files.display()),
        detail: e.to_string(),
    })?;
    scratch::give(&files, owner.as_ref())?;
    let port = scratch::free_port()?;
    let mut command = Command::new(program(request, "mariadbd"));
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", home.join("mysqld.sock").display()))
        .arg(format!(
            "--pid-file={}",
            home.join("mariadbd.pid").display()
        ))
        .arg(format!("--tmpdir={}", home.display()))
        .arg(format!("--init-file={}", init.display()))
        .arg(format!("--port={port}"))
        .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
        .args(["--innodb-buffer-pool-size=64M", "--innodb-log-file-size=8M"])
        .args(["--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"])
        .args(["--performance-schema=OFF", "--event-scheduler=OFF"])
        // SELECT ... INTO OUTFILE and LOAD DATA only inside the scratch directory.
        .arg(format!("--secure-file-priv={}", files.display()))
        .args(&user);
    let mut server = ScratchProcess::spawn("mariadbd", command, &dir.join("mariadb.log"))?;
    let target = MyTarget {
        host: "127.0.0.1".to_owned(),
        port,
        user: LOGIN.to_owned(),
        password: Some(password),
        database: None,
    };
    server
        .wait_ready(|| async {
            match Client::connect(&target).await {
                Ok(client) => {
                    client.close().await;
                    true
                }
                Err(_) => false,
            }
        })
        .await?;
    let _ = std::fs::remove_file(&init);
    Ok((server, target))
}

/// Whether every routine, view, trigger and event `database` held when backed up is in the
/// scratch server.
async fn objects_restored(
    target: &MyTarget,
    database: &str,
    expected: &DatabaseObjects,
) -> Vec<CheckResult> {
    let found = match Client::connect(target).await {
        Ok(mut client) => {
            let found = client.objects(database).await;
            client.close().await;
            found
        }
        Err(e) => Err(e),
    };
    object_checks(database, expected, found.map_err(|e| e.to_string()))
}

/// A user's query, run in `database` of the scratch server: its first value must be true.
async fn sql_check(target: &MyTarget, database: &str, query: &str, name: String) -> CheckResult {
    let mut client = match Client::connect(target).await {
        Ok(client) => client,
        Err(e) => return CheckResult::failed(name, e.to_string()),
    };
    let result = match client.first_value(database, query).await {
        Ok(Some(v)) if is_true(&v) => CheckResult::passed(name, format!("returned {v}")),
        Ok(Some(v)) => CheckResult::failed(name, format!("returned {v}, not true")),
        Ok(None) => CheckResult::failed(name, "returned NULL or no row, not true"),
        Err(e) => CheckResult::failed(name, e),
    };
    client.close().await;
    result
}

impl Blame for MyError {
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
            Self::Query { detail, .. } if says_no_space(detail) => Some(Cause::NoSpace),
            _ => None,
        }
    }
}
