//! A Redis drill: the backup restored into a `redis-server` the drill starts on loopback (no
//! persistence, a random password in a private configuration file, every payload's structure
//! checked deeply as it is restored: `sanitize-dump-payload yes`), then checked against
//! the manifest (keys in all and per database, keys with a TTL, function libraries) and with
//! the user's commands.

use std::collections::BTreeMap;
use std::path::Path;

use redis::Value;
use tokio::process::Command;

use super::client::{Connection, Limits, keyspace_field};
use super::error::RedisError;
use super::restore::{RestoreRequest, restore};
use super::target::RedisTarget;
use crate::api::RedisConflict;
use crate::drill::scratch::{self, ScratchProcess};
use crate::drill::{
    Blame, Cause, CheckResult, DrillError, DrillRequest, Outcome, UserCheck, integrity_cause,
    restore_into, store_cause,
};
use crate::pipeline::Progress;
use crate::storage::Store;
use crate::storage::manifest::Manifest;

pub async fn drill(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &DrillRequest,
    dir: &Path,
    progress: &Progress,
) -> Result<Outcome, DrillError> {
    let (server, target) = start(manifest, request, dir).await?;
    let restore_request = RestoreRequest {
        target: target.clone(),
        conflict: RedisConflict::Skip,
        database: None,
        spool: request.spool.clone(),
        key: request.key.clone(),
    };
    let restoring = restore(store, folder, manifest, &restore_request, progress);
    let (server, restore_time, stats) = match restore_into(server, restoring).await? {
        Ok(restored) => restored,
        Err(outcome) => return Ok(outcome),
    };
    let mut checks = Vec::new();
    let found = match read_keyspace(&target).await {
        Ok(found) => found,
        Err(e) => {
            server.stop().await;
            return Err(e);
        }
    };
    checks.extend(compare(manifest, stats.expired, &found));
    for check in &request.checks {
        if let UserCheck::Redis { command, reply } = check {
            checks.push(user_check(&target, command, reply, check.name()).await);
        }
    }
    server.stop().await;
    Ok(Outcome {
        restore_time,
        restored: Ok(format!(
            "restored {} keys, {} expired since the backup; function libraries: {}",
            stats.restored, stats.expired, stats.functions_restored
        )),
        checks,
    })
}

/// What the scratch server holds after the restore.
#[derive(Debug, Default)]
struct Found {
    keys: BTreeMap<u32, u64>,
    expires: BTreeMap<u32, u64>,
    /// Keys per `TYPE`, counted before `keys` and `expires`: keys that expire in between
    /// are then counted as expired, never as missing.
    types: BTreeMap<String, u64>,
    functions: u64,
}

/// Starts the scratch `redis-server` and waits until it answers.
async fn start(
    manifest: &Manifest,
    request: &DrillRequest,
    dir: &Path,
) -> Result<(ScratchProcess, RedisTarget), DrillError> {
    let program = request
        .bin_dir
        .as_ref()
        .map_or_else(|| "redis-server".into(), |d| d.join("redis-server"));
    let port = scratch::free_port()?;
    let password = scratch::secret()?;
    let databases = manifest
        .stats
        .keys_per_database
        .keys()
        .max()
        .map_or(16, |db| (db + 1).max(16));
    let config = dir.join("redis.conf");
    scratch::write_private(
        &config,
        &format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode yes\nsave \"\"\nappendonly no\n\
             daemonize no\ndatabases {databases}\ndir {}\nrequirepass {password}\n\
             sanitize-dump-payload yes\n",
            quoted(&dir.display().to_string())
        ),
    )?;
    // As root, the server runs as an unprivileged user: what it writes is not root's.
    let owner = scratch::unprivileged_user()?;
    scratch::give(dir, owner.as_ref())?;
    scratch::give(&config, owner.as_ref())?;
    let mut command = std::process::Command::new(&program);
    command.arg(&config);
    if let Some((_, uid, gid)) = &owner {
        std::os::unix::process::CommandExt::uid(&mut command, *uid);
        std::os::unix::process::CommandExt::gid(&mut command, *gid);
    }
    let mut server = ScratchProcess::spawn(
        "redis-server",
        Command::from(command),
        &dir.join("redis.log"),
    )?;
    let target = RedisTarget {
        host: "127.0.0.1".to_owned(),
        port,
        username: None,
        password: Some(password),
        database: None,
    };
    let limits = Limits::default();
    server
        .wait_ready(|| async {
            match Connection::open(&target, 0, &limits).await {
                Ok(mut con) => con
                    .query::<String>("PING", &redis::cmd("PING"))
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        })
        .await?;
    Ok((server, target))
}

/// A string as a quoted argument of redis.conf.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

async fn read_keyspace(target: &RedisTarget) -> Result<Found, DrillError> {
    let scratch_error = |e: super::RedisError| DrillError::Scratch {
        what: "reading the scratch redis-server".to_owned(),
        detail: e.to_string(),
    };
    let mut con = Connection::open(target, 0, &Limits::default())
        .await
        .map_err(scratch_error)?;
    let before: String = con
        .query("INFO", redis::cmd("INFO").arg("keyspace"))
        .await
        .map_err(scratch_error)?;
    let mut types = BTreeMap::new();
    for db in keyspace_field(&before, "keys").keys() {
        count_types(target, *db, &mut types)
            .await
            .map_err(scratch_error)?;
    }
    let info: String = con
        .query("INFO", redis::cmd("INFO").arg("keyspace"))
        .await
        .map_err(scratch_error)?;
    let libraries: Value = con
        .query("FUNCTION", redis::cmd("FUNCTION").arg("LIST"))
        .await
        .unwrap_or(Value::Array(Vec::new()));
    Ok(Found {
        keys: keyspace_field(&info, "keys"),
        expires: keyspace_field(&info, "expires"),
        types,
        functions: match libraries {
            Value::Array(items) | Value::Set(items) => items.len() as u64,
            _ => 0,
        },
    })
}

/// Adds the keys of database `db` to `types`, by `TYPE`: a SCAN of every key, its `TYPE`s
/// asked in one pipeline per batch. A type Redis does not know of itself is a module's.
async fn count_types(
    target: &RedisTarget,
    db: u32,
    types: &mut BTreeMap<String, u64>,
) -> Result<(), super::RedisError> {
    const KNOWN: [&str; 6] = ["string", "list", "set", "zset", "hash", "stream"];
    let mut con = Connection::open(target, db, &Limits::default()).await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = con
            .query(
                "SCAN",
                redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000),
            )
            .await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("TYPE").arg(key);
            }
            let replies: Vec<String> = con.pipeline("TYPE", &pipe).await?;
            for reply in replies {
                let kind = match reply.as_str() {
                    // Expired or deleted since the SCAN.
                    "none" => continue,
                    known if KNOWN.contains(&known) => known,
                    _ => "module",
                };
                *types.entry(kind.to_owned()).or_default() += 1;
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The built-in checks: what the scratch server holds against what the manifest recorded.
/// Keys without a TTL must all be there. Keys with one may have expired since the backup:
/// before the restore began (`expired`, not restored) or since (gone from the scratch
/// server); so the keys with a TTL may be fewer, never more, and a database may lack at most
/// as many keys as there are keys with a TTL missing.
fn compare(manifest: &Manifest, expired: u64, found: &Found) -> Vec<CheckResult> {
    let stats = &manifest.stats;
    let mut checks = Vec::new();
    let total: u64 = found.keys.values().sum();
    let with_ttl: u64 = found.expires.values().sum();
    // Keys with a TTL that are not there, all of them explained by expiry.
    let mut vanished = expired;
    if let (Some(keys), Some(expiring)) = (stats.keys, stats.expiring_keys) {
        checks.push(CheckResult::count(
            "keys without a TTL",
            keys.saturating_sub(expiring),
            total.saturating_sub(with_ttl),
        ));
        let name = "keys with a TTL";
        if with_ttl > expiring {
            checks.push(CheckResult::count(name, expiring, with_ttl));
        } else {
            vanished = expiring - with_ttl;
            checks.push(if vanished == 0 {
                CheckResult::count(name, expiring, with_ttl)
            } else {
                CheckResult::passed(
                    name,
                    format!(
                        "{with_ttl}, the backup {expiring} ({vanished} expired since the backup)"
                    ),
                )
            });
        }
    } else if let Some(keys) = stats.keys {
        checks.push(CheckResult::count(
            "keys",
            keys.saturating_sub(expired),
            total,
        ));
    }
    let databases: std::collections::BTreeSet<u32> = stats
        .keys_per_database
        .keys()
        .chain(found.keys.keys())
        .copied()
        .collect();
    for db in databases {
        let name = format!("keys in database {db}");
        let expected = stats.keys_per_database.get(&db).copied().unwrap_or(0);
        let got = found.keys.get(&db).copied().unwrap_or(0);
        checks.push(if got < expected && expected - got <= vanished {
            CheckResult::passed(
                name,
                format!("{got}, the backup {expected} (keys with a TTL expired since the backup)"),
            )
        } else {
            CheckResult::count(name, expected, got)
        });
    }
    // Recorded since Coffer counts types. A SCAN may return a key twice (when expiry
    // shrinks the server's table), so only a shortfall fails: the totals above are exact,
    // and a key of the wrong type is a shortfall of its own type. A type may fall short
    // only by its own keys with a TTL, and by no more than expired in all.
    let types: std::collections::BTreeSet<&String> = stats
        .keys_per_type
        .keys()
        .chain(found.types.keys())
        .collect();
    for kind in types
        .into_iter()
        .filter(|_| !stats.keys_per_type.is_empty())
    {
        let name = format!("{kind} keys");
        let expected = stats.keys_per_type.get(kind).copied().unwrap_or(0);
        let got = found.types.get(kind).copied().unwrap_or(0);
        let may_expire = stats.expiring_keys_per_type.get(kind).copied().unwrap_or(0);
        checks.push(
            if got < expected && expected - got <= vanished.min(may_expire) {
                CheckResult::passed(
                    name,
                    format!(
                        "{got}, the backup {expected} (keys with a TTL expired since the backup)"
                    ),
                )
            } else if got > expected {
                CheckResult::passed(
                    name,
                    format!("{got} counted, the backup {expected} (a SCAN may return a key twice)"),
                )
            } else {
                CheckResult::count(name, expected, got)
            },
        );
    }
    if let Some(functions) = stats.functions {
        checks.push(CheckResult::count(
            "function libraries",
            functions,
            found.functions,
        ));
    }
    checks
}

/// A user's command, run in database 0 of the scratch server; its reply as text must match.
async fn user_check(
    target: &RedisTarget,
    command: &[String],
    reply: &str,
    name: String,
) -> CheckResult {
    let mut cmd = redis::cmd(&command[0]);
    for arg in &command[1..] {
        cmd.arg(arg);
    }
    let answer = match Connection::open(target, 0, &Limits::default()).await {
        Ok(mut con) => con.query::<Value>("user check", &cmd).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(value) => {
            let text = as_text(&value);
            if text == reply {
                CheckResult::passed(name, format!("replied {text:?}"))
            } else {
                CheckResult::failed(name, format!("replied {text:?}, expected {reply:?}"))
            }
        }
        Err(e) => CheckResult::failed(name, e.to_string()),
    }
}

/// A reply as a user writes it: text as text, numbers as digits, nil as `(nil)`, the items
/// of an array one per line.
fn as_text(value: &Value) -> String {
    match value {
        Value::Nil => "(nil)".to_owned(),
        Value::Int(n) => n.to_string(),
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".to_owned(),
        Value::Double(d) => d.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Array(items) | Value::Set(items) => {
            items.iter().map(as_text).collect::<Vec<_>>().join("\n")
        }
        other => format!("{other:?}"),
    }
}

impl Blame for RedisError {
    fn not_the_backup(&self) -> Option<Cause> {
        match self {
            Self::Storage(e) => store_cause(e),
            Self::Integrity(e) | Self::RestoreRefused { source: e, .. } => integrity_cause(e),
            Self::Connect { .. }
            | Self::Dropped { .. }
            | Self::Silent { .. }
            | Self::Auth { .. }
            // The scratch server is older than the backup's data.
            | Self::TargetTooOld { .. }
            // The drill's own work (a task that failed).
            | Self::Internal(_) => Some(Cause::Scratch),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::manifest::Stats;

    fn manifest(stats: Stats) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "formatVersion": 1, "cofferVersion": "x", "name": "n",
            "source": {"kind": "redis", "address": "a"},
            "startedAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:00:00Z",
            "compression": "none", "objects": [], "stats": {}
        }))
        .unwrap();
        m.stats = stats;
        m
    }

    fn found(keys: &[(u32, u64)], expires: &[(u32, u64)], functions: u64) -> Found {
        Found {
            keys: keys.iter().copied().collect(),
            expires: expires.iter().copied().collect(),
            types: BTreeMap::new(),
            functions,
        }
    }

    fn types(counts: &[(&str, u64)]) -> BTreeMap<String, u64> {
        counts.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
    }

    #[test]
    fn keys_per_type_may_fall_short_only_by_the_keys_that_expired() {
        let m = manifest(Stats {
            keys: Some(6),
            expiring_keys: Some(1),
            keys_per_database: [(0, 6)].into_iter().collect(),
            keys_per_type: types(&[("string", 3), ("hash", 2), ("stream", 1)]),
            expiring_keys_per_type: types(&[("string", 1)]),
            ..Stats::default()
        });
        let failed = |found: Found, expired: u64| -> Vec<String> {
            compare(&m, expired, &found)
                .into_iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{}: {}", c.name, c.message))
                .collect()
        };
        let with = |t: &[(&str, u64)], keys: u64, ttl: u64| Found {
            types: types(t),
            ..found(&[(0, keys)], &[(0, ttl)], 0)
        };
        let same = with(&[("string", 3), ("hash", 2), ("stream", 1)], 6, 1);
        assert_eq!(failed(same, 0), Vec::<String>::new());
        // The key with a TTL expired: one string fewer is explained.
        let expired = with(&[("string", 2), ("hash", 2), ("stream", 1)], 5, 0);
        assert_eq!(failed(expired, 1), Vec::<String>::new());
        // A stream restored as a string: the totals hold, the stream is missing.
        let changed = with(&[("string", 4), ("hash", 2)], 6, 1);
        assert_eq!(failed(changed, 0), ["stream keys: 0, the backup 1"]);
        // A key with a TTL expired, but a hash (which had none) is missing: the hash is
        // named although the totals are explained.
        let wrong_one = with(&[("string", 3), ("hash", 1), ("stream", 1)], 5, 0);
        assert_eq!(failed(wrong_one, 1), ["hash keys: 1, the backup 2"]);
        // A hash lost while a key with a TTL stayed: not excused.
        let lost = with(&[("string", 3), ("hash", 1), ("stream", 1)], 5, 1);
        assert_eq!(
            failed(lost, 0),
            [
                "keys without a TTL: 4, the backup 5",
                "keys in database 0: 5, the backup 6",
                "hash keys: 1, the backup 2"
            ]
        );
        // A backup from before types were recorded checks none.
        let old = manifest(Stats {
            keys_per_type: BTreeMap::new(),
            ..m.stats.clone()
        });
        let checks = compare(&old, 0, &with(&[("string", 6)], 6, 1));
        assert!(
            checks.iter().all(|c| !c.name.ends_with(" keys")),
            "{checks:?}"
        );
    }

    #[test]
    fn counts_match_the_manifest_allowing_only_keys_with_a_ttl_to_expire() {
        let m = manifest(Stats {
            keys: Some(5),
            expiring_keys: Some(2),
            keys_per_database: [(0, 3), (2, 2)].into_iter().collect(),
            functions: Some(1),
            ..Stats::default()
        });
        let failed = |checks: &[CheckResult]| -> Vec<String> {
            checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{}: {}", c.name, c.message))
                .collect()
        };
        let all = compare(&m, 0, &found(&[(0, 3), (2, 2)], &[(0, 2)], 1));
        assert_eq!(failed(&all), Vec::<String>::new());
        assert_eq!(all.len(), 5);

        // A key without a TTL missing from database 2: named, never excused.
        let lost = compare(&m, 0, &found(&[(0, 3), (2, 1)], &[(0, 2)], 1));
        assert_eq!(
            failed(&lost),
            [
                "keys without a TTL: 2, the backup 3",
                "keys in database 2: 1, the backup 2"
            ]
        );

        // Keys with a TTL that expired (before the restore or since) are not a loss.
        let expired = compare(&m, 1, &found(&[(0, 2), (2, 2)], &[(0, 1)], 1));
        assert_eq!(failed(&expired), Vec::<String>::new());
        let since = compare(&m, 0, &found(&[(0, 1), (2, 2)], &[], 1));
        assert_eq!(failed(&since), Vec::<String>::new());
        // ...but the keys without a TTL are counted apart, and a database cannot lack more
        // keys than expired.
        let more = compare(&m, 0, &found(&[(0, 2), (2, 1)], &[(0, 1)], 1));
        assert_eq!(failed(&more), ["keys without a TTL: 2, the backup 3"]);
        let two = compare(&m, 1, &found(&[(0, 3)], &[(0, 1)], 1));
        assert_eq!(
            failed(&two),
            [
                "keys without a TTL: 2, the backup 3",
                "keys in database 2: 0, the backup 2"
            ]
        );

        // More keys with a TTL than the backup had, a database it did not have, or a
        // missing function library fail.
        let extra = compare(&m, 0, &found(&[(0, 3), (2, 2), (5, 1)], &[(0, 3)], 0));
        assert_eq!(
            failed(&extra),
            [
                "keys with a TTL: 3, the backup 2",
                "keys in database 5: 1, the backup 0",
                "function libraries: 0, the backup 1"
            ]
        );
    }

    #[test]
    fn replies_read_as_a_user_writes_them() {
        assert_eq!(as_text(&Value::Nil), "(nil)");
        assert_eq!(as_text(&Value::Int(3)), "3");
        assert_eq!(as_text(&Value::BulkString(b"Zo\xc3\xab".to_vec())), "Zoë");
        assert_eq!(
            as_text(&Value::Array(vec![
                Value::BulkString(b"a".to_vec()),
                Value::Int(1)
            ])),
            "a\n1"
        );
    }
}
