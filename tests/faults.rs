//! Fault injection: workers and the operator killed at random points, against real Redis,
//! the S3 server and the control plane, each scenario several times with random timing (the
//! seed is printed, `COFFER_FAULT_SEED` replays it). After each: nothing lost, nothing
//! reported wrongly (a backup is either complete and verifies, or does not exist), nothing
//! left open once `coffer gc` has swept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffer::api::{Backup, BackupPhase, RestorePhase};
use coffer_testenv::{RedisServer, S3Server};
use serde_json::{Value, json};

mod support;
use kube::ResourceExt;
use kube::api::Api;
use support::cli::{coffer, ok, stderr, stdout, walk};
use support::operator::{Operator, admin};
use support::random::Random;
use support::resources::{
    BUCKET, create, deployment, finished_backup, finished_restore, jobs, redis_source, replicas,
    storage, stored_keys,
};

/// Runs of each scenario.
const RUNS: usize = 5;

/// A Redis server with about 24 MiB of incompressible values, so that a backup streams a
/// multipart upload for a while.
async fn big_redis() -> RedisServer {
    let redis = RedisServer::start_with_password("pw").unwrap();
    support::redis_data::fill_blobs(&redis.url(), 3000).await;
    redis
}

async fn s3_with_bucket(bucket: &str) -> S3Server {
    let s3 = S3Server::start().unwrap();
    support::s3_client(&s3)
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    s3
}

/// Kills `child` with `signal` after `delay`; returns whether it was still running then and
/// how long it took to exit after the signal.
fn signal_after(child: &mut Child, signal: &str, delay: Duration) -> (bool, Duration) {
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    let sent = Instant::now();
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let _ = child.wait();
    (running, sent.elapsed())
}

/// Every backup `coffer list` shows as complete verifies; returns how many there are.
fn every_listed_backup_verifies(dest: &str, env: &[(&str, String)]) -> usize {
    let (_, out) = ok(&["list", dest, "--output", "json"], env);
    let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap_or_default();
    let mut complete = 0;
    for row in rows.iter().filter(|r| r["status"] == "ok") {
        let location = row["location"].as_str().unwrap();
        ok(&["verify", location], env);
        complete += 1;
    }
    complete
}

/// The lines of a failed command's stderr that report its failure (`coffer <command>: …`);
/// warnings logged on the way (a leftover that could not be removed) are not failures.
fn failure_lines(stderr: &str, command: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with(&format!("coffer {command}:")))
        .count()
}

/// `coffer gc --min-age 0s --delete`, then nothing is left to sweep; returns how many
/// leftovers it removed.
fn sweep(dest: &str, env: &[(&str, String)]) -> usize {
    let (_, out) = ok(&["gc", dest, "--min-age", "0s", "--delete"], env);
    let removed = stdout(&out).lines().count();
    let out = coffer(&["gc", dest, "--min-age", "0s"], env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "left after the sweep");
    removed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_killed_at_a_random_point_leaves_no_backup_that_lies_and_gc_cleans_up() {
    let mut random = Random::new("sigkill-backup");
    let redis = big_redis().await;
    let s3 = s3_with_bucket("faults").await;
    let env = s3.env();
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    for i in 0..12 {
        std::fs::write(volume.join(format!("f{i}")), support::noise(2 << 20)).unwrap();
    }
    let dir_store = work.path().join("store");
    let sources = [
        (
            redis.url(),
            "s3://faults/redis".to_owned(),
            vec!["--mode", "keys"],
        ),
        (
            volume.display().to_string(),
            dir_store.display().to_string(),
            vec![],
        ),
    ];
    let backup = |source: &str, dest: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(["backup", source, "--to", dest, "--compression", "gzip"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long a whole backup takes here: the kills land anywhere within it.
    let mut lasts = Vec::new();
    for (source, dest, extra) in &sources {
        let started = Instant::now();
        assert!(backup(source, dest, extra).wait().unwrap().success());
        lasts.push(started.elapsed());
        assert_eq!(every_listed_backup_verifies(dest, &env), 1);
    }
    let mut interrupted = 0;
    let mut swept = 0;
    for run in 0..RUNS {
        for ((source, dest, extra), lasts) in sources.iter().zip(&lasts) {
            let mut child = backup(source, dest, extra);
            // Every other run into the directory store is killed while it writes (a
            // temporary file observed), however fast the machine; the others at a random
            // point of the measured length.
            let mid_write = run % 2 == 0 && !dest.starts_with("s3://");
            let delay = if mid_write {
                let deadline = Instant::now() + Duration::from_secs(60);
                // A data file being written (not the store's start-up probe).
                let writing =
                    |f: &String| f.contains("/.coffer-tmp-") && !f.contains("/.coffer-tmp-probe-");
                while !walk(&dir_store).iter().any(writing) {
                    assert!(
                        Instant::now() < deadline,
                        "run {run}: nothing was ever written"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                random.between(Duration::ZERO, Duration::from_millis(20))
            } else {
                random.between(*lasts / 20, *lasts * 19 / 20)
            };
            let (was_running, _) = signal_after(&mut child, "-KILL", delay);
            eprintln!("run {run} {dest}: SIGKILL after {delay:?}, running: {was_running}");
            interrupted += usize::from(was_running);
            // Nothing that lies: every backup listed as complete verifies.
            every_listed_backup_verifies(dest, &env);
            let removed = sweep(dest, &env);
            assert!(
                !mid_write || removed > 0,
                "run {run}: killed mid-write, nothing swept"
            );
            swept += removed;
            // The killed run's multipart upload is found and aborted too.
            assert_eq!(s3.open_multipart_uploads(), 0, "run {run}: open uploads");
        }
    }
    // The store can list open uploads: no blind spot reported.
    let out = coffer(&["gc", "s3://faults/redis", "--min-age", "0s"], &env);
    assert!(!stderr(&out).contains("lifecycle rule"), "{}", stderr(&out));
    // Most kills land mid-backup; if none did, the scenario tested nothing.
    assert!(interrupted > 0, "no run was interrupted");
    assert!(swept > 0, "the sweep never found a leftover");
}

/// A worker process backing `redis` up (keys, uncompressed) into `folder` of bucket
/// `faults`, its summary written to `log`.
fn redis_backup_worker(
    redis: &RedisServer,
    s3: &S3Server,
    folder: &str,
    log: &std::path::Path,
) -> Child {
    let plan = json!({"operation": "backup", "folder": folder, "name": "redis",
        "compression": "none",
        "source": {"redis": {"host": "127.0.0.1", "port": redis.port(), "mode": "Keys"}},
        "storage": {"s3": {"bucket": "faults", "endpoint": s3.endpoint(),
            "region": s3.region(), "forcePathStyle": true}}});
    Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["worker", &format!("--termination-log={}", log.display())])
        .env("COFFER_PLAN", plan.to_string())
        .env("COFFER_PASSWORD", "pw")
        .envs(s3.env().iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_stop_stops_promptly_writes_nothing_more_and_leaves_no_open_upload() {
    let mut random = Random::new("sigterm-worker");
    let redis = big_redis().await;
    let s3 = s3_with_bucket("faults").await;
    let work = tempfile::tempdir().unwrap();
    let mut interrupted = 0;
    for run in 0..RUNS {
        let folder = format!("shop/redis/run-{run}/");
        let log = work.path().join(format!("termination-{run}"));
        let mut child = redis_backup_worker(&redis, &s3, &folder, &log);
        // Every other run is told to stop while its upload is open (polled for, so that an
        // abort is proven however fast the machine); the others at a random point.
        let mid_upload = run % 2 == 0;
        let delay = if mid_upload {
            let deadline = Instant::now() + Duration::from_secs(60);
            while s3.open_multipart_uploads() == 0 {
                assert!(
                    Instant::now() < deadline,
                    "run {run}: no upload was ever open"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            random.between(Duration::ZERO, Duration::from_millis(30))
        } else {
            random.between(Duration::from_millis(100), Duration::from_millis(1500))
        };
        let (was_running, took) = signal_after(&mut child, "-TERM", delay);
        eprintln!(
            "run {run}: SIGTERM after {delay:?}{}, running: {was_running}, exit took {took:?}",
            if mid_upload { " of an open upload" } else { "" }
        );
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(&log).unwrap_or_default())
                .unwrap_or(Value::Null);
        let manifest = s3.root().join(format!("faults/{folder}manifest.json"));
        if mid_upload {
            assert_eq!(summary["failure"], "Interrupted", "run {run}: {summary}");
        }
        if was_running && summary["failure"] == "Interrupted" {
            interrupted += 1;
            assert!(took < Duration::from_secs(10), "run {run}: {took:?}");
            assert_eq!(s3.open_multipart_uploads(), 0, "run {run}");
            if manifest.exists() {
                // The signal landed after the store took the manifest, before the worker
                // heard so: the backup is complete (the operator judges such a run by
                // storage), and it says nothing that is not so.
                let location = format!("s3://faults/{folder}");
                ok(&["verify", &location], &s3.env());
                assert!(!mid_upload, "run {run}: the upload was open");
            }
        } else {
            // It had finished: a complete backup, said so.
            assert!(summary["failure"].is_null(), "run {run}: {summary}");
            assert!(manifest.exists(), "run {run}");
        }
    }
    assert!(interrupted > 0, "no run was interrupted");
}

/// The narrowest window of a stopped upload: the store has opened it, and its answer (the
/// upload's id) has not reached the worker when the worker is told to stop. The worker waits
/// for that answer and aborts the upload; it used to drop the request and leave the upload
/// open, with nothing that knew its id (a fresh CI run hit this once at random).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_stop_while_its_upload_is_being_opened_aborts_that_upload() {
    let redis = big_redis().await;
    let s3 = s3_with_bucket("faults").await;
    let work = tempfile::tempdir().unwrap();
    let held = s3.hold_upload_start("/redis.keys");
    let log = work.path().join("termination");
    let mut child = redis_backup_worker(&redis, &s3, "shop/redis/opening/", &log);
    tokio::time::timeout(Duration::from_secs(60), held.stored())
        .await
        .expect("the worker never opened its upload");
    assert_eq!(s3.open_multipart_uploads(), 1);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    // The answer arrives after the signal, as it would from a slow store.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success(), "{status:?}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&log).unwrap_or_default()).unwrap();
    assert_eq!(summary["failure"], "Interrupted", "{summary}");
    assert_eq!(
        s3.open_multipart_uploads(),
        0,
        "the opened upload was left open"
    );
    assert!(
        !s3.root()
            .join("faults/shop/redis/opening/manifest.json")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_killed_at_random_points_never_loses_repeats_or_misreports_a_run() {
    let mut random = Random::new("sigkill-operator");
    let (_namespace, ns, s3, redis) = support::resources::redis_namespace("opkill", 50).await;
    deployment(&ns, "app", 2).await;

    let mut operator = Operator::start(&ns, "a");
    let mut names = Vec::new();
    for run in 0..RUNS {
        let name = format!("run-{run}");
        create::<Backup>(
            &ns,
            json!({"metadata": {"name": name}, "spec": {
            "source": redis_source(&redis, "redis-auth"), "storage": storage(&s3)}}),
        )
        .await;
        let delay = random.between(Duration::ZERO, Duration::from_secs(4));
        tokio::time::sleep(delay).await;
        operator.kill();
        eprintln!("backup {run}: operator killed after {delay:?}");
        operator = Operator::start(&ns, "a");
        names.push(name);
    }
    let env = s3.env();
    let mut locations = Vec::new();
    for name in &names {
        let backup = finished_backup(&ns, name).await;
        let status = backup.status.clone().unwrap();
        assert_eq!(
            status.phase,
            Some(BackupPhase::Succeeded),
            "{name}: {status:?}"
        );
        let location = status.location.unwrap();
        ok(&["verify", &location], &env);
        locations.push(location);
    }
    // One worker Job per run, and no manifest that no Succeeded Backup names.
    let all = jobs(&ns).await;
    for name in &names {
        let count = all
            .iter()
            .filter(|j| j.metadata.name.as_deref() == Some(&format!("{name}-backup")))
            .count();
        assert_eq!(count, 1, "{name}");
    }
    let manifests: Vec<String> = stored_keys(&s3, &format!("ci/{ns}/"))
        .await
        .into_iter()
        .filter(|k| k.ends_with("manifest.json"))
        .collect();
    assert_eq!(manifests.len(), names.len(), "{manifests:?}");
    for manifest in &manifests {
        let folder = manifest.trim_end_matches("manifest.json");
        assert!(
            locations.iter().any(|l| l.ends_with(folder)),
            "{manifest} belongs to no Succeeded Backup"
        );
    }

    // Restores with the app quiesced, the operator killed at a random point of each: the
    // restore ends, and the app always comes back to its replicas.
    let restores: Api<coffer::api::RestoreRequest> = Api::namespaced(admin().await, &ns);
    for (run, backup) in names.iter().enumerate() {
        let name = format!("restore-{run}");
        create::<coffer::api::RestoreRequest>(
            &ns,
            json!({"metadata": {"name": name}, "spec": {
            "backupRef": {"name": backup}, "redis": {"conflict": "Overwrite"},
            "quiesce": [{"kind": "Deployment", "name": "app"}]}}),
        )
        .await;
        let delay = random.between(Duration::ZERO, Duration::from_secs(4));
        tokio::time::sleep(delay).await;
        operator.kill();
        eprintln!("restore {run}: operator killed after {delay:?}");
        operator = Operator::start(&ns, "a");
        let done = finished_restore(&ns, &name).await;
        let status = done.status.unwrap();
        assert_eq!(
            status.phase,
            Some(RestorePhase::Succeeded),
            "{name}: {status:?}"
        );
        assert_eq!(replicas(&ns, "app").await, 2, "{name}");
        let jobs_of = jobs(&ns)
            .await
            .iter()
            .filter(|j| j.metadata.name.as_deref() == Some(&format!("{name}-restore")))
            .count();
        assert_eq!(jobs_of, 1, "{name}");
    }
    drop(restores);
    // Each restore ran exactly once: the server saw one RESTORE per key per restore.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut support::redis_data::connect(&redis.url()).await)
        .await
        .unwrap();
    let calls: usize = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_restore:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(calls, 50 * RUNS, "{stats}");
    let _ = BUCKET;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_drops_the_backup_mid_way_fails_it_and_leaves_nothing_that_lies() {
    let mut random = Random::new("source-drops");
    let pg = coffer_testenv::PostgresServer::start().unwrap();
    support::pg_data::create(
        &pg,
        "shop",
        "CREATE TABLE events (id int, body text);
         INSERT INTO events SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 8)
           FROM generate_series(1, 150000) g;",
    )
    .await;
    let redis = big_redis().await;
    let admin_pg = support::pg_data::connect(&pg, "postgres").await;
    let mut admin_redis = support::redis_data::connect(&redis.url()).await;
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("store").display().to_string();
    let mut failed = 0;
    for run in 0..RUNS {
        for source in [pg.url("shop"), redis.url()] {
            let is_pg = source.starts_with("postgres");
            let mut args = vec!["backup", source.as_str(), "--to", dest.as_str()];
            if !is_pg {
                args.extend(["--mode", "keys"]);
            }
            args.extend(["--compression", "gzip"]);
            let child = Command::new(env!("CARGO_BIN_EXE_coffer"))
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Every other run waits until the backup is reading (so that it is cut off mid-way
            // however fast the machine); the others drop it at a random point, which may come
            // before it connects or after it ends.
            let mid_way = run % 2 == 0;
            let delay = if mid_way {
                at_work(
                    &admin_pg,
                    &mut admin_redis,
                    is_pg,
                    &["scan", "dump", "pttl", "pexpiretime", "type"],
                )
                .await;
                random.between(Duration::ZERO, Duration::from_millis(20))
            } else {
                random.between(Duration::from_millis(100), Duration::from_millis(900))
            };
            tokio::time::sleep(delay).await;
            // The database drops the backup's connections (a restart, a failover, a kill).
            drop_connections(&admin_pg, &mut admin_redis, is_pg).await;
            let out = child.wait_with_output().unwrap();
            let message = String::from_utf8_lossy(&out.stderr).into_owned();
            eprintln!(
                "run {run} {}: dropped after {delay:?}: {}",
                if is_pg { "postgres" } else { "redis" },
                message.lines().last().unwrap_or_default()
            );
            assert!(
                !mid_way || !out.status.success(),
                "run {run}: cut off mid-way, yet {message}"
            );
            if !out.status.success() {
                failed += 1;
                // One line that names the problem, and no backup.
                assert_eq!(failure_lines(&message, "backup"), 1, "{message}");
                if !is_pg {
                    assert!(message.contains("closed the connection"), "{message}");
                }
            }
            every_listed_backup_verifies(&dest, &[]);
            sweep(&dest, &[]);
        }
    }
    assert!(failed > 0, "the source never dropped a backup mid-way");
}

/// Waits until a backup or restore is at work in the database: a `COPY` in PostgreSQL
/// database `shop`, or a Redis client whose last command is one of `redis_commands`.
async fn at_work(
    admin_pg: &tokio_postgres::Client,
    admin_redis: &mut redis::aio::MultiplexedConnection,
    is_pg: bool,
    redis_commands: &[&str],
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let busy = if is_pg {
            let copies: i64 = admin_pg
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = 'shop' AND state = 'active' AND query LIKE 'COPY%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            copies > 0
        } else {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .arg("TYPE")
                .arg("normal")
                .query_async(admin_redis)
                .await
                .unwrap();
            clients.lines().any(|client| {
                redis_commands
                    .iter()
                    .any(|command| client.contains(&format!(" cmd={command} ")))
            })
        };
        if busy {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing ever worked on the database"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The database drops every other client's connection (a restart, a failover, a kill):
/// PostgreSQL `pg_terminate_backend` on database `shop`, or Redis `CLIENT KILL`.
async fn drop_connections(
    admin_pg: &tokio_postgres::Client,
    admin_redis: &mut redis::aio::MultiplexedConnection,
    is_pg: bool,
) {
    if is_pg {
        admin_pg
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE pid <> pg_backend_pid() AND datname = 'shop'",
                &[],
            )
            .await
            .unwrap();
    } else {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async::<i64>(admin_redis)
            .await
            .unwrap();
    }
}

/// What a restore target holds, in comparable form: PostgreSQL's fingerprint of every table,
/// Redis' own digest of its whole dataset (`DEBUG DIGEST`).
async fn target_state(
    pg: &coffer_testenv::PostgresServer,
    redis: &RedisServer,
    is_pg: bool,
) -> String {
    if is_pg {
        let client = support::pg_data::connect(pg, "shop").await;
        format!("{:?}", support::pg_data::fingerprint(&client).await)
    } else {
        let mut con = support::redis_data::connect(&redis.url()).await;
        redis::cmd("DEBUG")
            .arg("DIGEST")
            .query_async(&mut con)
            .await
            .unwrap()
    }
}

/// A restore whose target drops its connections mid-way (a restart, a failover): it fails
/// with one line naming the server; a PostgreSQL target is left as it was (one
/// transaction); nothing is lost, since the backup restores completely afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_drops_the_restore_mid_way_fails_it_in_one_line_and_loses_nothing() {
    let mut random = Random::new("target-drops");
    let pg = coffer_testenv::PostgresServer::start().unwrap();
    support::pg_data::create(
        &pg,
        "shop",
        "CREATE TABLE events (id int PRIMARY KEY, body text);
         INSERT INTO events SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 8)
           FROM generate_series(1, 100000) g;",
    )
    .await;
    let redis = RedisServer::start_with(Some("pw"), &[("enable-debug-command", "yes")]).unwrap();
    support::redis_data::fill_blobs(&redis.url(), 3000).await;
    let mut admin_redis = support::redis_data::connect(&redis.url()).await;
    let admin_pg = support::pg_data::connect(&pg, "postgres").await;
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("store").display().to_string();
    for is_pg in [true, false] {
        let mut failed = 0;
        let (source, options): (String, &[&str]) = if is_pg {
            (pg.url("shop"), &["--clean", "--databases", "shop"])
        } else {
            (redis.url(), &["--conflict", "flush"])
        };
        let original = target_state(&pg, &redis, is_pg).await;
        let (location, _) = ok(&["backup", &source, "--to", &dest], &[]);
        let location = location.trim().to_owned();
        let damage = || async {
            if is_pg {
                support::pg_data::connect(&pg, "shop")
                    .await
                    .batch_execute("DELETE FROM events WHERE id % 3 = 0")
                    .await
                    .unwrap();
            } else {
                let mut con = support::redis_data::connect(&redis.url()).await;
                let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
            }
        };
        let restore = || {
            Command::new(env!("CARGO_BIN_EXE_coffer"))
                .args(["restore", &location, "--to", &source])
                .args(options)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        // An undisturbed restore measures how long one lasts.
        damage().await;
        let started = Instant::now();
        let out = restore().wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let length = started.elapsed();
        assert!(target_state(&pg, &redis, is_pg).await == original);
        for run in 0..RUNS {
            damage().await;
            let damaged = target_state(&pg, &redis, is_pg).await;
            let child = restore();
            // Every other run waits until the restore writes (its download and checks come
            // first), so that it is cut off mid-way however fast the machine.
            let mid_way = run % 2 == 0;
            let delay = if mid_way {
                at_work(&admin_pg, &mut admin_redis, is_pg, &["restore"]).await;
                random.between(Duration::ZERO, Duration::from_millis(20))
            } else {
                random.between(Duration::ZERO, length)
            };
            tokio::time::sleep(delay).await;
            drop_connections(&admin_pg, &mut admin_redis, is_pg).await;
            let out = child.wait_with_output().unwrap();
            let message = String::from_utf8_lossy(&out.stderr).into_owned();
            eprintln!(
                "run {run} {}: dropped after {delay:?} of {length:?}: {}",
                if is_pg { "postgres" } else { "redis" },
                message.lines().last().unwrap_or_default()
            );
            let now = target_state(&pg, &redis, is_pg).await;
            assert!(
                !mid_way || !out.status.success(),
                "run {run}: cut off mid-way, yet {message}"
            );
            if out.status.success() {
                assert!(
                    now == original,
                    "a restore that succeeded left another state"
                );
                continue;
            }
            failed += 1;
            assert_eq!(failure_lines(&message, "restore"), 1, "{message}");
            if is_pg {
                assert!(
                    now == damaged || now == original,
                    "a PostgreSQL restore cut short left part of the backup: {message}"
                );
                // The row a COPY stopped at is not quoted (errors reach status and Events).
                if let Some((_, after)) = message.split_once("COPY events, line ") {
                    let rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
                    let quoted = rest.trim_start_matches(':').trim_start().starts_with('"');
                    assert!(!quoted, "{message}");
                }
            } else {
                assert!(message.contains("127.0.0.1"), "{message}");
            }
        }
        // Nothing lost: the backup still restores completely.
        damage().await;
        let out = restore().wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(target_state(&pg, &redis, is_pg).await == original);
        assert!(
            failed > 0,
            "is_pg={is_pg}: the target never dropped a restore mid-way"
        );
    }
}

/// The database server itself killed (SIGKILL, as a crash or the OOM killer would) at a
/// random point of a backup, then started again: the backup fails with one line or
/// completes and verifies, nothing incomplete is left after the sweep, and the next backup
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_killed_mid_dump_fails_the_backup_in_one_line_and_the_next_succeeds() {
    let mut random = Random::new("database-killed");
    let mut pg = coffer_testenv::PostgresServer::start().unwrap();
    support::pg_data::create(
        &pg,
        "shop",
        "CREATE TABLE events (id int, body text);
         INSERT INTO events SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 8)
           FROM generate_series(1, 150000) g;",
    )
    .await;
    let mut redis = RedisServer::start_with_password("pw").unwrap();
    support::redis_data::fill_blobs(&redis.url(), 3000).await;
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("store").display().to_string();
    for is_pg in [true, false] {
        let mut failed = 0;
        let source = if is_pg { pg.url("shop") } else { redis.url() };
        let backup = || {
            Command::new(env!("CARGO_BIN_EXE_coffer"))
                .args(["backup", &source, "--to", &dest])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let started = Instant::now();
        assert!(backup().wait().unwrap().success());
        let length = started.elapsed();
        for run in 0..RUNS {
            let child = backup();
            let delay = random.between(Duration::ZERO, length);
            tokio::time::sleep(delay).await;
            if is_pg {
                tokio::task::block_in_place(|| pg.crash_and_restart()).unwrap();
            } else {
                redis.crash_and_restart().unwrap();
            }
            let out = child.wait_with_output().unwrap();
            let message = String::from_utf8_lossy(&out.stderr).into_owned();
            eprintln!(
                "run {run} {}: killed after {delay:?} of {length:?}: {}",
                if is_pg { "postgres" } else { "redis" },
                message.lines().last().unwrap_or_default()
            );
            if !out.status.success() {
                failed += 1;
                assert_eq!(failure_lines(&message, "backup"), 1, "{message}");
                assert!(message.contains("127.0.0.1"), "{message}");
                // A server that went away mid-run is not a wrong address: only a connection
                // that was never made (refused while it restarts) says to check it.
                assert!(
                    !message.contains("check the host and port") || message.contains("refused"),
                    "{message}"
                );
            }
            every_listed_backup_verifies(&dest, &[]);
            sweep(&dest, &[]);
            if !is_pg {
                support::redis_data::fill_blobs(&redis.url(), 3000).await;
            }
        }
        assert!(
            failed > 0,
            "is_pg={is_pg}: the database was never killed mid-dump"
        );
        // The server is back: the next backup succeeds.
        let out = backup().wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    every_listed_backup_verifies(&dest, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_going_away_mid_upload_fails_the_backup_and_the_next_one_succeeds() {
    let mut random = Random::new("s3-away");
    let redis = big_redis().await;
    let mut s3 = s3_with_bucket("faults").await;
    let env = s3.env();
    let dest = "s3://faults/away";
    let mut failed = 0;
    for run in 0..RUNS {
        // Every other run, the store goes away while the backup waits for the answer to its
        // data's upload (the data stored, the manifest not): mid-upload whatever the speed
        // of the machine. The others stop it at a random point, which may come after the end.
        let held = (run % 2 == 0).then(|| s3.hold_answer("/redis.keys.gz"));
        let child = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(["backup", &redis.url(), "--to", dest, "--mode", "keys"])
            .args(["--compression", "gzip"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let when = match &held {
            Some(held) => {
                tokio::time::timeout(Duration::from_secs(60), held.stored())
                    .await
                    .expect("the backup never stored its data");
                "while its data's upload waited for an answer".to_owned()
            }
            None => {
                let delay = random.between(Duration::from_millis(100), Duration::from_millis(900));
                tokio::time::sleep(delay).await;
                format!("after {delay:?}")
            }
        };
        s3.stop();
        drop(held);
        let out = child.wait_with_output().unwrap();
        let message = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "run {run}: store stopped {when}: {}",
            message.lines().last().unwrap_or_default()
        );
        s3.restart().unwrap();
        if !out.status.success() {
            failed += 1;
            assert_eq!(failure_lines(&message, "backup"), 1, "{message}");
        }
        // Whatever it left, nothing lies; and the store works again for the next backup.
        let complete = every_listed_backup_verifies(dest, &env);
        let out = coffer(
            &["backup", &redis.url(), "--to", dest, "--mode", "keys"],
            &env,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(every_listed_backup_verifies(dest, &env), complete + 1);
    }
    assert!(
        failed >= RUNS.div_ceil(2),
        "a backup whose store went away mid-upload succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_handing_the_lease_over_mid_run_never_lose_or_repeat_a_run() {
    let mut random = Random::new("lease-handover");
    let (_namespace, ns, s3, redis) = support::resources::redis_namespace("handover", 30).await;
    let mut operators = [Operator::start(&ns, "a"), Operator::start(&ns, "b")];
    let mut names = Vec::new();
    for run in 0..RUNS {
        let name = format!("handover-{run}");
        create::<Backup>(
            &ns,
            json!({"metadata": {"name": name}, "spec": {
            "source": redis_source(&redis, "redis-auth"), "storage": storage(&s3)}}),
        )
        .await;
        let delay = random.between(Duration::ZERO, Duration::from_secs(3));
        tokio::time::sleep(delay).await;
        // The replica that leads now (the Lease's holder) dies without a word; the other
        // takes over once the Lease runs out.
        let holder = lease_holder(&ns).await;
        let leader = operators
            .iter()
            .position(|o| o.identity == holder)
            .unwrap_or(0);
        let identity = operators[leader].identity.clone();
        operators[leader].kill();
        eprintln!("backup {run}: leader {identity} killed after {delay:?}");
        // The other replica takes the Lease over while the run goes on.
        support::operator::eventually(Duration::from_secs(60), "the Lease to change hands", || {
            let ns = ns.clone();
            let identity = identity.clone();
            async move {
                let holder = lease_holder(&ns).await;
                (!holder.is_empty() && holder != identity).then_some(())
            }
        })
        .await;
        operators[leader] = Operator::start(&ns, &identity);
        names.push(name);
    }
    let env = s3.env();
    let mut locations = Vec::new();
    for name in &names {
        let status = finished_backup(&ns, name).await.status.unwrap();
        assert_eq!(
            status.phase,
            Some(BackupPhase::Succeeded),
            "{name}: {status:?}"
        );
        let location = status.location.unwrap();
        ok(&["verify", &location], &env);
        locations.push(location);
    }
    // One worker Pod per run (a repeated run would have made a second), and no manifest that
    // no Succeeded Backup names.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin().await, &ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    for name in &names {
        let job = format!("{name}-backup");
        let count = pods
            .iter()
            .filter(|p| p.labels().get("batch.kubernetes.io/job-name") == Some(&job))
            .count();
        assert_eq!(count, 1, "{name}");
    }
    let manifests: Vec<String> = stored_keys(&s3, &format!("ci/{ns}/"))
        .await
        .into_iter()
        .filter(|k| k.ends_with("manifest.json"))
        .collect();
    assert_eq!(manifests.len(), names.len(), "{manifests:?}");
    for manifest in &manifests {
        let folder = manifest.trim_end_matches("manifest.json");
        assert!(locations.iter().any(|l| l.ends_with(folder)), "{manifest}");
    }
}

/// Deletions with the operator SIGKILLed at a random point of each: every Backup goes, its
/// folder is emptied by exactly one deletion Pod, and the Backup kept beside them still
/// verifies; nothing gives up (`DataNotDeleted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_killed_at_random_points_of_deletions_deletes_each_backup_once() {
    let mut random = Random::new("sigkill-operator-deletion");
    let (_namespace, ns, s3, redis) = support::resources::redis_namespace("opdelete", 30).await;
    let mut operator = Operator::start(&ns, "a");
    let names: Vec<String> = std::iter::once("keep".to_owned())
        .chain((0..RUNS).map(|run| format!("gone-{run}")))
        .collect();
    for name in &names {
        create::<Backup>(
            &ns,
            json!({"metadata": {"name": name}, "spec": {
            "source": redis_source(&redis, "redis-auth"), "storage": storage(&s3)}}),
        )
        .await;
    }
    let mut folders = Vec::new();
    for name in &names {
        let status = finished_backup(&ns, name).await.status.unwrap();
        assert_eq!(
            status.phase,
            Some(BackupPhase::Succeeded),
            "{name}: {status:?}"
        );
        let location = status.location.unwrap();
        folders.push(
            location
                .split_once(&format!("{BUCKET}/"))
                .unwrap()
                .1
                .to_owned(),
        );
    }
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    for name in &names[1..] {
        backups.delete(name, &Default::default()).await.unwrap();
        let delay = random.between(Duration::ZERO, Duration::from_secs(3));
        tokio::time::sleep(delay).await;
        operator.kill();
        eprintln!("deletion of {name}: operator killed after {delay:?}");
        operator = Operator::start(&ns, "a");
        support::operator::eventually(support::resources::RUN, &format!("{name} to go"), || {
            let backups = backups.clone();
            async move { backups.get_opt(name).await.unwrap().is_none().then_some(()) }
        })
        .await;
    }
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin().await, &ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    for (name, folder) in names.iter().zip(&folders).skip(1) {
        assert_eq!(
            stored_keys(&s3, folder).await,
            Vec::<String>::new(),
            "{name}"
        );
        let job = format!("{name}-delete");
        let count = pods
            .iter()
            .filter(|p| p.labels().get("batch.kubernetes.io/job-name") == Some(&job))
            .count();
        assert_eq!(count, 1, "{name}: deletion Pods");
    }
    ok(
        &["verify", &format!("s3://{BUCKET}/{}", folders[0])],
        &s3.env(),
    );
    for name in &names {
        let events = support::resources::events_of(&ns, name).await;
        assert!(
            !events
                .iter()
                .any(|(_, reason, _)| reason == "DataNotDeleted"),
            "{name}: {events:?}"
        );
    }
}

/// Who holds the operator's Lease in `ns` now.
async fn lease_holder(ns: &str) -> String {
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin().await, ns)
        .get_opt("coffer-controller")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
        .unwrap_or_default()
}
