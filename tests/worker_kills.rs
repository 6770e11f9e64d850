//! Fault injection inside the cluster: the worker Pod's processes SIGKILLed, as the node's
//! out-of-memory killer or a dying node would, at a random point of a backup and of a
//! restore, for each engine (Redis, PostgreSQL, a volume), through the operator, against the
//! real API server, S3 server and databases. Each kill is timed at random within the
//! measured length of an undisturbed run (the seed is printed, `COFFER_FAULT_SEED` replays
//! it).
//!
//! After each: a backup is `Succeeded` and verifies, or `Failed` with `WorkerKilled` and no
//! manifest; no manifest exists that no `Succeeded` Backup names; `coffer gc` leaves nothing;
//! the next backup succeeds. A restore is `Succeeded` (the target equals the backup) or
//! `Failed` with `WorkerKilled` saying it may have run in part, never run twice (one Pod); a
//! PostgreSQL restore killed mid-way leaves the target as it was (one transaction); the
//! quiesced app is scaled back; and the backup still restores completely afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use coffer::api::{Backup, BackupPhase, RestorePhase, RestoreRequest};
use coffer_testenv::{PostgresServer, RedisServer, S3Server, TestNamespace};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

mod support;
use support::cli::{coffer, ok, stderr, stdout};
use support::operator::{Operator, admin, eventually, plane, prepare};
use support::random::Random;
use support::resources::{
    RUN, create, deployment, finished_backup, finished_restore, replicas, s3_secret,
    s3_with_bucket, secret, storage, stored_keys,
};

/// Killed runs of each kind, per engine.
const RUNS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Engine {
    Redis,
    Postgres,
    Volume,
}

/// An engine's source with enough data that a run lasts a few seconds, in a namespace of
/// its own with the operator's RBAC, an S3 server and a one-replica Deployment `app` to
/// quiesce.
struct Fixture {
    engine: Engine,
    ns: String,
    s3: S3Server,
    redis: Option<RedisServer>,
    pg: Option<PostgresServer>,
    claim: Option<PathBuf>,
    _namespace: TestNamespace,
}

impl Fixture {
    async fn new(engine: Engine) -> Self {
        let prefix = format!("kill-{engine:?}").to_lowercase();
        let namespace = plane().namespace(&prefix).await.unwrap();
        let ns = namespace.name().to_owned();
        prepare(&ns).await;
        let s3 = s3_with_bucket().await;
        s3_secret(&ns, &s3).await;
        let mut fixture = Self {
            engine,
            ns,
            s3,
            redis: None,
            pg: None,
            claim: None,
            _namespace: namespace,
        };
        let ns = fixture.ns.clone();
        match engine {
            Engine::Redis => {
                let redis = RedisServer::start_with_password("pw").unwrap();
                support::redis_data::fill_blobs(&redis.url(), 2000).await;
                secret(&ns, "redis-auth", &[("password", "pw")]).await;
                fixture.redis = Some(redis);
            }
            Engine::Postgres => {
                let pg = PostgresServer::start().unwrap();
                support::pg_data::create(
                    &pg,
                    "shop",
                    "CREATE TABLE orders (id int PRIMARY KEY, note text); \
                     INSERT INTO orders SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 4) \
                     FROM generate_series(1, 150000) g;",
                )
                .await;
                secret(&ns, "pg-auth", &[("password", pg.password())]).await;
                fixture.pg = Some(pg);
            }
            Engine::Volume => {
                create::<PersistentVolumeClaim>(
                    &ns,
                    json!({"metadata": {"name": "app-data"}, "spec": {
                    "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
                )
                .await;
                let dir = plane().claim_dir(&ns, "app-data").unwrap();
                let noise = support::noise(1 << 20);
                for d in 0..4 {
                    std::fs::create_dir_all(dir.join(format!("uploads/{d}"))).unwrap();
                    for f in 0..15u64 {
                        let mut content = noise.clone();
                        content[..8].copy_from_slice(&(d * 15 + f).to_le_bytes());
                        std::fs::write(dir.join(format!("uploads/{d}/{f}.bin")), content).unwrap();
                    }
                }
                std::fs::write(dir.join("config.json"), "{}").unwrap();
                fixture.claim = Some(dir);
            }
        }
        deployment(&fixture.ns, "app", 1).await;
        fixture
    }

    fn source(&self) -> Value {
        match self.engine {
            Engine::Redis => support::resources::redis_source(self.redis(), "redis-auth"),
            Engine::Postgres => {
                let pg = self.pg.as_ref().unwrap();
                json!({"postgres": {"host": "127.0.0.1", "port": pg.port(), "user": pg.user(),
                    "databases": ["shop"], "globals": false,
                    "passwordSecretRef": {"name": "pg-auth", "key": "password"}}})
            }
            Engine::Volume => json!({"volume": {"claimName": "app-data"}}),
        }
    }

    /// The most destructive options: the target is emptied before the backup is loaded.
    fn restore_options(&self) -> (&'static str, Value) {
        match self.engine {
            Engine::Redis => ("redis", json!({"conflict": "Flush"})),
            Engine::Postgres => ("postgres", json!({"clean": true})),
            Engine::Volume => ("volume", json!({"clean": true})),
        }
    }

    fn redis(&self) -> &RedisServer {
        self.redis.as_ref().unwrap()
    }

    /// Everything the source holds, in comparable form.
    async fn snapshot(&self) -> String {
        match self.engine {
            Engine::Redis => {
                let mut con = support::redis_data::connect(&self.redis().url()).await;
                format!("{:?}", support::redis_data::state(&mut con).await)
            }
            Engine::Postgres => {
                let client = support::pg_data::connect(self.pg.as_ref().unwrap(), "shop").await;
                format!("{:?}", support::pg_data::fingerprint(&client).await)
            }
            Engine::Volume => format!(
                "{:?}",
                support::tree::describe(self.claim.as_ref().unwrap())
            ),
        }
    }

    /// Changes the target so that a restore has work to do.
    async fn damage(&self) {
        match self.engine {
            Engine::Redis => {
                let mut con = support::redis_data::connect(&self.redis().url()).await;
                let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
                let _: () = redis::cmd("SET")
                    .arg("stray")
                    .arg("1")
                    .query_async(&mut con)
                    .await
                    .unwrap();
            }
            Engine::Postgres => {
                let client = support::pg_data::connect(self.pg.as_ref().unwrap(), "shop").await;
                client
                    .batch_execute("DELETE FROM orders WHERE id % 2 = 0")
                    .await
                    .unwrap();
            }
            Engine::Volume => {
                let dir = self.claim.as_ref().unwrap();
                let _ = std::fs::remove_dir_all(dir.join("uploads/1"));
                std::fs::write(dir.join("stray.txt"), "not in the backup").unwrap();
            }
        }
    }
}

/// The running worker Pod of Job `job` and its process (group) ID, once it has started.
async fn worker_process(ns: &str, job: &str) -> (String, u32) {
    let pods: Api<Pod> = Api::namespaced(admin().await, ns);
    eventually(RUN, &format!("{job}'s worker process"), || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
            .unwrap();
        let pod = list.items.first()?.metadata.name.clone()?;
        let pid = plane().pod_pid(ns, &pod)?;
        Some((pod, pid))
    })
    .await
}

/// How many Pods Job `job` ran.
async fn pods_of(ns: &str, job: &str) -> usize {
    Api::<Pod>::namespaced(admin().await, ns)
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap()
        .items
        .len()
}

/// How long the process `pid` runs from now on.
async fn lifetime(pid: u32) -> Duration {
    let started = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// SIGKILLs the process group `pid` (the container's processes); whether the worker still
/// ran. A process ID that now names another program (reused) is left alone.
fn kill_group(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let alive = String::from_utf8_lossy(&cmdline).contains("coffer");
    if !alive {
        return false;
    }
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(std::process::Stdio::null())
        .status();
    alive
}

/// Without `kill_within`: how long the worker `pid` runs. With it: SIGKILLs the worker at a
/// random point within that time, and says when and whether it still ran.
async fn run_or_kill(
    pid: u32,
    kill_within: Option<(&mut Random, Duration)>,
    what: &str,
) -> (Duration, bool) {
    let Some((random, within)) = kill_within else {
        return (lifetime(pid).await, false);
    };
    let delay = random.between(Duration::ZERO, within);
    tokio::time::sleep(delay).await;
    let alive = kill_group(pid);
    eprintln!("{what}: killed after {delay:?} (running: {alive})");
    (delay, alive)
}

/// The window the next kill aims in: a kill that found the worker already gone shows that
/// runs last less than `ran` (the undisturbed run that measured `window` may have been slowed
/// by a busy machine), so the next kills aim inside that shorter time.
fn next_window(window: Duration, ran: Duration, alive: bool) -> Duration {
    if alive {
        window
    } else {
        window.min(ran * 3 / 4)
    }
}

/// Starts a Backup `name` and waits for it; with `kill_within`, SIGKILLs its worker at a
/// random point within that time. Returns the Backup, how long its worker ran (until the
/// kill), and whether the kill found it running.
async fn backup(
    fixture: &Fixture,
    name: &str,
    kill_within: Option<(&mut Random, Duration)>,
) -> (Backup, Duration, bool) {
    let ns = &fixture.ns;
    create::<Backup>(
        ns,
        json!({"metadata": {"name": name}, "spec": {
        "source": fixture.source(), "storage": storage(&fixture.s3)}}),
    )
    .await;
    let (_, pid) = worker_process(ns, &format!("{name}-backup")).await;
    let what = format!("{:?} backup {name}", fixture.engine);
    let (ran, alive) = run_or_kill(pid, kill_within, &what).await;
    (finished_backup(ns, name).await, ran, alive)
}

/// Starts a RestoreRequest `name` of Backup `base` with the app quiesced and waits for it,
/// killing its worker as [`backup`] does.
async fn restore(
    fixture: &Fixture,
    name: &str,
    kill_within: Option<(&mut Random, Duration)>,
) -> (RestoreRequest, Duration, bool) {
    let ns = &fixture.ns;
    let (kind, options) = fixture.restore_options();
    create::<RestoreRequest>(
        ns,
        json!({"metadata": {"name": name}, "spec": {
        "backupRef": {"name": "base"}, kind: options,
        "quiesce": [{"kind": "Deployment", "name": "app"}]}}),
    )
    .await;
    let (_, pid) = worker_process(ns, &format!("{name}-restore")).await;
    let what = format!("{:?} restore {name}", fixture.engine);
    let (ran, alive) = run_or_kill(pid, kill_within, &what).await;
    (finished_restore(ns, name).await, ran, alive)
}

/// The reason and message of the condition `kind`.
fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    kind: &str,
) -> (String, String) {
    conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

async fn workers_killed_at_random_points(engine: Engine) {
    let mut random = Random::new(&format!("worker-kill-{engine:?}"));
    let fixture = Fixture::new(engine).await;
    let ns = fixture.ns.clone();
    let env = fixture.s3.env();
    let _operator = Operator::start(&ns, "solo");
    let original = fixture.snapshot().await;

    // An undisturbed backup measures how long a run lasts.
    let (base, length, _) = backup(&fixture, "base", None).await;
    // The first run is the slowest (cold caches): kills aim inside the later ones.
    let mut length = length * 9 / 10;
    let status = base.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
    let mut succeeded = vec![status.location.unwrap()];
    eprintln!("{engine:?}: an undisturbed backup took {length:?}");

    let (mut killed, mut interrupted) = (0, 0);
    for run in 0..RUNS {
        let name = format!("killed-{run}");
        let (done, ran, alive) = backup(&fixture, &name, Some((&mut random, length))).await;
        interrupted += usize::from(alive);
        length = next_window(length, ran, alive);
        let status = done.status.unwrap();
        let (reason, message) = condition(&status.conditions, "Ready");
        let location = status.location.clone().unwrap();
        match status.phase {
            Some(BackupPhase::Succeeded) => {
                // Killed while it ran, it could not report: storage said it is complete.
                assert!(
                    !alive || message.contains("storage holds its manifest"),
                    "{name}: {message}"
                );
                ok(&["verify", &location], &env);
                succeeded.push(location);
            }
            _ => {
                assert_eq!(reason, "WorkerKilled", "{name}: {message}");
                assert!(message.contains("by signal 9"), "{name}: {message}");
                let folder = location.split_once("backups/").unwrap().1;
                let manifests = stored_keys(&fixture.s3, folder)
                    .await
                    .into_iter()
                    .filter(|k| k.ends_with("manifest.json"))
                    .count();
                assert_eq!(manifests, 0, "{name} failed but left a manifest");
                killed += 1;
            }
        }
        assert_eq!(pods_of(&ns, &format!("{name}-backup")).await, 1, "{name}");
    }
    eprintln!("{engine:?}: {killed} of {RUNS} backups failed WorkerKilled, the rest completed");
    assert!(
        interrupted > 0,
        "{engine:?}: no kill found a backup running"
    );

    // No manifest that no Succeeded Backup names; the sweep leaves nothing.
    for key in stored_keys(&fixture.s3, &format!("ci/{ns}/")).await {
        if let Some(folder) = key.strip_suffix("manifest.json") {
            assert!(
                succeeded.iter().any(|l| l.ends_with(folder)),
                "{key} belongs to no Succeeded Backup"
            );
        }
    }
    let dest = format!("s3://{}/ci/{ns}/", support::resources::BUCKET);
    ok(&["gc", &dest, "--min-age", "0s", "--delete"], &env);
    let out = coffer(&["gc", &dest, "--min-age", "0s"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "left after the sweep");
    assert_eq!(fixture.s3.open_multipart_uploads(), 0, "open uploads");
    for location in &succeeded {
        ok(&["verify", location], &env);
    }
    // The next backup succeeds.
    let (next, _, _) = backup(&fixture, "next", None).await;
    let status = next.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");

    // Restores: an undisturbed one measures the length, then each killed at random.
    fixture.damage().await;
    let (done, length, _) = restore(&fixture, "restore-first", None).await;
    let mut length = length * 9 / 10;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    assert!(fixture.snapshot().await == original, "restore-first");
    eprintln!("{engine:?}: an undisturbed restore took {length:?}");

    let (mut killed, mut interrupted) = (0, 0);
    for run in 0..RUNS {
        let name = format!("restore-killed-{run}");
        fixture.damage().await;
        let damaged = fixture.snapshot().await;
        let (done, ran, alive) = restore(&fixture, &name, Some((&mut random, length))).await;
        interrupted += usize::from(alive);
        length = next_window(length, ran, alive);
        let status = done.status.unwrap();
        let (reason, message) = condition(&status.conditions, "Restored");
        let now = fixture.snapshot().await;
        match status.phase {
            Some(RestorePhase::Succeeded) => assert!(now == original, "{name}: not the backup"),
            _ => {
                assert_eq!(reason, "WorkerKilled", "{name}: {message}");
                assert!(
                    message.contains("may have run in part"),
                    "{name}: {message}"
                );
                if engine == Engine::Postgres {
                    // One transaction: all or nothing.
                    assert!(
                        now == damaged || now == original,
                        "{name}: a PostgreSQL restore killed mid-way left a partial target"
                    );
                }
                killed += 1;
            }
        }
        // Run once (one Pod), and the app is back.
        assert_eq!(pods_of(&ns, &format!("{name}-restore")).await, 1, "{name}");
        assert_eq!(replicas(&ns, "app").await, 1, "{name}");
    }
    eprintln!("{engine:?}: {killed} of {RUNS} restores failed WorkerKilled, the rest completed");
    assert!(
        interrupted > 0,
        "{engine:?}: no kill found a restore running"
    );

    // Nothing lost: the backup still restores completely.
    fixture.damage().await;
    let (done, _, _) = restore(&fixture, "restore-last", None).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RestorePhase::Succeeded), "{status:?}");
    assert!(fixture.snapshot().await == original, "restore-last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_workers_killed_at_random_points_never_leave_a_run_that_lies() {
    workers_killed_at_random_points(Engine::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_workers_killed_at_random_points_never_leave_a_run_that_lies() {
    workers_killed_at_random_points(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_workers_killed_at_random_points_never_leave_a_run_that_lies() {
    workers_killed_at_random_points(Engine::Volume).await;
}

/// The narrowest window: the worker killed right after its manifest was stored, before it
/// could know it (the store holds back its answer until the kill). The run is judged by
/// storage, finds its own manifest, and is `Succeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_killed_after_storing_its_manifest_is_judged_by_storage_and_succeeds() {
    let fixture = Fixture::new(Engine::Redis).await;
    let ns = fixture.ns.clone();
    // The S3 server holds back its answer to the manifest's upload: the worker, killed while
    // it waits, has stored its manifest and cannot know it, however loaded the machine is.
    let held = fixture.s3.hold_answer("/manifest.json");
    let _operator = Operator::start(&ns, "solo");
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "late"}, "spec": {
        "source": fixture.source(), "storage": storage(&fixture.s3)}}),
    )
    .await;
    let (_, pid) = worker_process(&ns, "late-backup").await;
    tokio::time::timeout(RUN, held.stored())
        .await
        .expect("the worker never stored its manifest");
    assert!(kill_group(pid), "the worker had already exited");
    drop(held);
    let done = finished_backup(&ns, "late").await;
    let status = done.status.unwrap();
    let (reason, message) = condition(&status.conditions, "Ready");
    assert_eq!(
        status.phase,
        Some(BackupPhase::Succeeded),
        "{reason}: {message}"
    );
    assert!(
        message.contains("by signal 9") && message.contains("storage holds its manifest"),
        "{message}"
    );
    assert!(status.manifest_sha256.is_some(), "{status:?}");
    ok(&["verify", &status.location.unwrap()], &fixture.s3.env());
    assert_eq!(pods_of(&ns, "late-backup").await, 1);
}
