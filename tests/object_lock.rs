//! S3 Object Lock against versitygw, a server that enforces it: backups written locked,
//! deletions refused before the date ("locked until DATE") and done after it with no version
//! left behind, Compliance retention that cannot be shortened, a bucket without lock refused
//! up front; and through the operator, a Backup whose deletion waits for its date, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_s3::types::{ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode};
use coffer::api::{Backup, BackupPhase, BackupSchedule};
use coffer_testenv::{RedisServer, VersityServer};
use kube::api::{Api, DeleteParams};
use serde_json::json;

mod support;
use support::cli::{fails, ok};
use support::operator::{Operator, admin, eventually};
use support::resources::{create, finished_backup, setup};

async fn locked_bucket(client: &aws_sdk_s3::Client, name: &str) {
    client
        .create_bucket()
        .bucket(name)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
}

/// Every version and delete marker below `prefix`.
async fn versions(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let page = client
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    page.versions()
        .iter()
        .filter_map(|v| v.key().map(str::to_owned))
        .chain(
            page.delete_markers()
                .iter()
                .filter_map(|m| m.key().map(|k| format!("{k} (delete marker)"))),
        )
        .collect()
}

/// The data objects (not the manifest) of the backup at `folder`.
async fn keys(client: &aws_sdk_s3::Client, bucket: &str, folder: &str) -> Vec<String> {
    client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(folder)
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn locked_backups_cannot_be_deleted_before_their_date_and_leave_no_version_after_it() {
    let versity = VersityServer::start().unwrap();
    let client = support::versity_client(&versity);
    locked_bucket(&client, "locked").await;
    client.create_bucket().bucket("plain").send().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("data");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(source.join("b.bin"), support::noise(1 << 20)).unwrap();
    let env = versity.env();
    let src = source.to_str().unwrap();

    // A bucket without object lock is refused before anything is written.
    fails(
        &[
            "backup",
            src,
            "--to",
            "s3://plain/x/",
            "--object-lock",
            "governance",
            "--retain-for",
            "1d",
        ],
        &env,
        &[
            "has no object lock",
            "create a bucket with object lock enabled",
        ],
    );
    assert!(keys(&client, "plain", "").await.is_empty());

    // Compliance for a day: every object carries the lock.
    let (location, _) = ok(
        &[
            "backup",
            src,
            "--to",
            "s3://locked/c/",
            "--object-lock",
            "compliance",
            "--retain-for",
            "1d",
        ],
        &env,
    );
    let folder = location.strip_prefix("s3://locked/").unwrap().to_owned();
    let objects = keys(&client, "locked", &folder).await;
    assert!(objects.len() >= 2, "{objects:?}");
    for key in &objects {
        let head = client
            .head_object()
            .bucket("locked")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.object_lock_mode(),
            Some(&ObjectLockMode::Compliance),
            "{key}"
        );
        let until = head.object_lock_retain_until_date().unwrap().secs();
        let expected = chrono::Utc::now().timestamp() + 86_400;
        assert!(
            (until - expected).abs() < 600,
            "{key}: {until} vs {expected}"
        );
    }
    // Deleting it is refused, naming the date; nothing of it goes.
    fails(
        &["delete", &location],
        &env,
        &[
            "is locked (S3 Object Lock) until",
            "try again after that date",
        ],
    );
    assert_eq!(keys(&client, "locked", &folder).await, objects);
    ok(&["verify", &location], &env);
    // Compliance retention cannot be shortened, not even by the bucket's owner.
    let shorter = ObjectLockRetention::builder()
        .mode(ObjectLockRetentionMode::Compliance)
        .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
            chrono::Utc::now().timestamp() + 60,
        ))
        .build();
    let refused = client
        .put_object_retention()
        .bucket("locked")
        .key(&objects[0])
        .retention(shorter)
        .send()
        .await;
    assert!(refused.is_err(), "Compliance retention was shortened");

    // Governance for a minute: refused before, deleted after, with every version and delete
    // marker gone (a delete by key alone would leave the data behind a marker).
    let (short, _) = ok(
        &[
            "backup",
            src,
            "--to",
            "s3://locked/g/",
            "--object-lock",
            "governance",
            "--retain-for",
            "1m",
        ],
        &env,
    );
    let short_folder = short.strip_prefix("s3://locked/").unwrap().to_owned();
    fails(
        &["delete", &short],
        &env,
        &["is locked (S3 Object Lock) until"],
    );
    tokio::time::sleep(Duration::from_secs(62)).await;
    ok(&["delete", &short], &env);
    assert_eq!(
        versions(&client, "locked", &short_folder).await,
        Vec::<String>::new()
    );

    // A versioned bucket without lock: deletions remove every version too.
    client
        .put_bucket_versioning()
        .bucket("plain")
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (plain, _) = ok(&["backup", src, "--to", "s3://plain/v/"], &env);
    let plain_folder = plain.strip_prefix("s3://plain/").unwrap().to_owned();
    assert!(!versions(&client, "plain", &plain_folder).await.is_empty());
    ok(&["delete", &plain], &env);
    assert_eq!(
        versions(&client, "plain", &plain_folder).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_locked_backups_deletion_waits_for_its_date_and_a_bucket_without_lock_fails_the_check() {
    let (_namespace, ns, _s3) = setup("lock").await;
    let versity = VersityServer::start().unwrap();
    let client = support::versity_client(&versity);
    locked_bucket(&client, "vault").await;
    client
        .create_bucket()
        .bucket("nolock")
        .send()
        .await
        .unwrap();
    support::resources::versity_secret(&ns, "vault-creds", &versity).await;
    let redis = RedisServer::start().unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::set_numbered(&mut con, "k:", "v", 10).await;
    let _operator = Operator::start(&ns, "solo");
    let store = |bucket: &str| {
        json!({"s3": {"bucket": bucket, "prefix": "p/", "endpoint": versity.endpoint(),
            "region": "us-east-1", "forcePathStyle": true,
            "credentialsSecretRef": {"name": "vault-creds"},
            "objectLock": {"mode": "Governance", "retainFor": "2m"}}})
    };
    let source = json!({"redis": {"host": "127.0.0.1", "port": redis.port()}});
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "locked"}, "spec": {"schedule": "0 0 1 1 *",
            "source": source, "storage": store("vault")}}),
    )
    .await;
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "unlocked"}, "spec": {"schedule": "0 0 1 1 *",
            "source": source, "storage": store("nolock")}}),
    )
    .await;
    // The check reads the bucket's lock configuration.
    let schedules: Api<BackupSchedule> = Api::namespaced(admin().await, &ns);
    let message = eventually(
        Duration::from_secs(120),
        "the unlocked bucket's check",
        || async {
            let s = schedules.get("unlocked").await.unwrap();
            let c = s
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "StorageWritable" && c.status == "False")?;
            Some(c.message)
        },
    )
    .await;
    assert!(message.contains("has no object lock"), "{message}");

    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "kept"}, "spec": {"scheduleRef": {"name": "locked"}}}),
    )
    .await;
    let backup = finished_backup(&ns, "kept").await;
    let status = backup.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
    let run = status.resolved.unwrap();
    let lock = run.lock.expect("the run records its lock");
    let folder = format!("p/{}", run.folder);
    for key in keys(&client, "vault", &folder).await {
        let head = client
            .head_object()
            .bucket("vault")
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.object_lock_mode(),
            Some(&ObjectLockMode::Governance),
            "{key}"
        );
    }
    // Deleted (as retention does): the Backup stays, saying until when, and goes after.
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    backups
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    let said = eventually(
        Duration::from_secs(60),
        "the Backup to say it is retained",
        || async {
            let b = backups.get_opt("kept").await.unwrap()?;
            let c = b
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Deleting" && c.reason == "Retained")?;
            Some(c.message)
        },
    )
    .await;
    let until = coffer::controller::status::chrono(&lock.retain_until).to_rfc3339();
    assert!(said.contains(&format!("retained until {until}")), "{said}");
    assert!(!keys(&client, "vault", &folder).await.is_empty());
    // It waits quietly: no deletion Job is made before the date, the condition stays.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let jobs = support::resources::jobs(&ns).await;
    assert!(
        !jobs
            .iter()
            .any(|j| j.metadata.name.as_deref() == Some("kept-delete")),
        "a deletion Job ran before the date"
    );
    let b = backups.get("kept").await.unwrap();
    let c = b
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Deleting")
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Retained")
    );
    // Meanwhile it can still be restored: it is whole.
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    create::<coffer::api::RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "back"}, "spec": {"backupRef": {"name": "kept"}}}),
    )
    .await;
    let restored = support::resources::finished_restore(&ns, "back")
        .await
        .status
        .unwrap();
    assert_eq!(
        restored.phase,
        Some(coffer::api::RestorePhase::Succeeded),
        "{restored:?}"
    );
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, 10);
    eventually(
        Duration::from_secs(240),
        "the Backup to go after its date",
        || async {
            backups
                .get_opt("kept")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        versions(&client, "vault", &folder).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_backup_kept_by_a_monthly_rule_is_locked_for_the_months() {
    let (_namespace, ns, _s3) = setup("relock").await;
    let versity = VersityServer::start().unwrap();
    let client = support::versity_client(&versity);
    locked_bucket(&client, "vault").await;
    support::resources::versity_secret(&ns, "vault-creds", &versity).await;
    let redis = RedisServer::start().unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::set_numbered(&mut con, "k:", "v", 5).await;
    let _operator = Operator::start(&ns, "solo");
    let storage = json!({"s3": {"bucket": "vault", "prefix": "p/", "endpoint": versity.endpoint(),
        "region": "us-east-1", "forcePathStyle": true,
        "credentialsSecretRef": {"name": "vault-creds"},
        "objectLock": {"mode": "Governance"}}});
    let source = json!({"redis": {"host": "127.0.0.1", "port": redis.port()}});
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "ext"}, "spec": {"schedule": "0 0 1 1 *",
            "source": source, "storage": storage,
            "retention": {"keepDaily": 1, "keepMonthly": 2}}}),
    )
    .await;
    // A run of last month (caught up late, as a schedule does): kept for its month, which
    // has ended.
    let month_ago = chrono::Utc::now() - chrono::TimeDelta::days(40);
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "month", "labels": {"coffer.dev/schedule": "ext"},
            "annotations": {"coffer.dev/scheduled-time": month_ago.to_rfc3339()}},
            "spec": {"scheduleRef": {"name": "ext"}}}),
    )
    .await;
    let backup = finished_backup(&ns, "month").await;
    let status = backup.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Succeeded), "{status:?}");
    let written = coffer::controller::status::chrono(
        &status
            .resolved
            .as_ref()
            .unwrap()
            .lock
            .as_ref()
            .unwrap()
            .retain_until,
    );
    let now = chrono::Utc::now();
    // Written for the shortest rule (a day)...
    assert!(
        (written - now - chrono::TimeDelta::days(1))
            .num_minutes()
            .abs()
            < 10,
        "{written}"
    );
    // ...and, kept by the monthly rule for a month that has ended, locked for two months of
    // 31 days from when it was taken.
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    let locked = eventually(
        Duration::from_secs(120),
        "the lock to be extended",
        || async {
            let b = backups.get("month").await.unwrap();
            b.status?.locked_until
        },
    )
    .await;
    let locked = coffer::controller::status::chrono(&locked);
    let expected = month_ago + chrono::TimeDelta::days(62);
    assert!(
        (locked - expected).num_minutes().abs() < 10,
        "{locked} vs {expected}"
    );
    let folder = format!("p/{}", status.resolved.unwrap().folder);
    let objects = keys(&client, "vault", &folder).await;
    assert!(!objects.is_empty());
    for key in objects {
        let head = client
            .head_object()
            .bucket("vault")
            .key(&key)
            .send()
            .await
            .unwrap();
        let until = head.object_lock_retain_until_date().unwrap().secs();
        assert!(
            (until - locked.timestamp()).abs() < 5,
            "{key}: {until} vs {locked}"
        );
    }
}
