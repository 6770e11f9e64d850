//! The safety backup a destructive restore takes of its target first (`spec.safetyBackup`):
//! when one is needed, its name, and the Backup object. Pure, no I/O.
//!
//! A safety backup reads the target and writes it somewhere, which a RestoreRequest could
//! not do before: so it is only ever written where the target is already backed up to, with
//! the settings of that backup (the restored Backup's, when the target is its own source,
//! else those of a BackupSchedule whose source is the target): its store, compression,
//! encryption and worker settings. A target nothing backs up gets no safety backup (the
//! restore is refused unless it says `safetyBackup: false`), never one in a store the
//! request names.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::api::{
    Backup, BackupSource, BackupSpec, BackupStorage, Compression, Encryption, JobTemplate,
    RedisConflict, RestoreRequest, RestoreRequestSpec, SourceKind,
};

/// How long a safety backup is kept (its `ttl`).
pub const TTL: &str = "7d";
/// The RestoreRequest a safety backup was taken for (its name; an annotation, as names may be
/// longer than a label's value)...
pub const FOR_ANNOTATION: &str = "coffer.dev/safety-backup-for";
/// ...and its UID: a Backup of the same name made for another request is never adopted.
pub const FOR_UID_LABEL: &str = "coffer.dev/safety-backup-for-uid";

/// What in the request overwrites or drops data in the target, if anything.
pub fn destructive(spec: &RestoreRequestSpec, kind: Option<SourceKind>) -> Option<&'static str> {
    match kind? {
        SourceKind::Redis => match spec.redis.as_ref().map(|r| r.conflict) {
            Some(RedisConflict::Flush) => {
                Some("redis.conflict Flush empties the restored databases")
            }
            Some(RedisConflict::Overwrite) => {
                Some("redis.conflict Overwrite replaces existing keys")
            }
            Some(RedisConflict::Skip) | None => None,
        },
        SourceKind::Postgres => spec
            .postgres
            .as_ref()
            .is_some_and(|p| p.clean)
            .then_some("postgres.clean drops objects before re-creating them"),
        SourceKind::MySql => {
            Some("a MySQL/MariaDB restore drops and creates again the tables it holds")
        }
        SourceKind::Volume => Some("a volume restore replaces files of the same name"),
    }
}

/// Whether two sources are the same server (or claim): kind, host and port (Redis, SQL) or
/// claim name (volumes), whatever the credentials, databases or options.
pub fn same_server(a: &BackupSource, b: &BackupSource) -> bool {
    match (a, b) {
        (BackupSource { redis: Some(x), .. }, BackupSource { redis: Some(y), .. }) => {
            x.host == y.host && x.port == y.port
        }
        (
            BackupSource {
                postgres: Some(x), ..
            },
            BackupSource {
                postgres: Some(y), ..
            },
        ) => x.host == y.host && x.port == y.port,
        (BackupSource { mysql: Some(x), .. }, BackupSource { mysql: Some(y), .. }) => {
            x.host == y.host && x.port == y.port
        }
        (
            BackupSource {
                volume: Some(x), ..
            },
            BackupSource {
                volume: Some(y), ..
            },
        ) => x.claim_name == y.claim_name,
        _ => false,
    }
}

/// What the safety backup reads: the target, every database of it (a restore writes the
/// backup's databases, or renames them, whichever the target's source lists).
pub fn whole(target: &BackupSource) -> BackupSource {
    let mut whole = target.clone();
    if let Some(redis) = whole.redis.as_mut() {
        redis.database = None;
    }
    if let Some(pg) = whole.postgres.as_mut() {
        pg.databases.clear();
    }
    if let Some(my) = whole.mysql.as_mut() {
        my.databases.clear();
    }
    whole
}

/// Why the request needs a safety backup: it is destructive and does not say
/// `safetyBackup: false`.
pub fn wanted(spec: &RestoreRequestSpec, kind: Option<SourceKind>) -> Option<&'static str> {
    if spec.safety_backup == Some(false) {
        return None;
    }
    destructive(spec, kind)
}

/// The safety backup's name: the request's, and a piece of its UID (a request made again
/// under the same name gets a backup of its own).
pub fn name(request: &str, uid: &str) -> String {
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let suffix = format!("-safety-{short}");
    // Backup names become Job and folder names: keep them within a DNS label.
    let keep = 63usize.saturating_sub(suffix.len());
    let mut base: String = request.chars().take(keep).collect();
    while base.ends_with(['-', '.']) {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// What the safety backup is taken with: the settings of a backup of the target.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub target: BackupSource,
    pub storage: BackupStorage,
    pub compression: Compression,
    pub encryption: Option<Encryption>,
    /// The worker settings of that backup (they can read the source: a volume's files as
    /// their owner, for example).
    pub job_template: Option<JobTemplate>,
}

/// The Backup of the target, owned by nobody (deleting the request keeps it), labelled with
/// the request it was taken for.
pub fn build(request: &RestoreRequest, uid: &str, settings: Settings) -> Backup {
    let request_name = request.name_any();
    Backup {
        metadata: ObjectMeta {
            name: Some(name(&request_name, uid)),
            namespace: request.namespace(),
            annotations: Some([(FOR_ANNOTATION.to_owned(), request_name)].into()),
            labels: Some(
                [
                    (FOR_UID_LABEL.to_owned(), uid.to_owned()),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "coffer".to_owned(),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: BackupSpec {
            schedule_ref: None,
            source: Some(whole(&settings.target)),
            storage: Some(settings.storage),
            compression: Some(settings.compression),
            encryption: settings.encryption,
            deletion_policy: Default::default(),
            job_template: settings.job_template,
            notify: Vec::new(),
            ttl: Some(TTL.to_owned()),
        },
        status: None,
    }
}

/// Whether `backup` is the safety backup of the request with `uid`, of its target (a Backup
/// someone else made under that name and label, of another source, is not). The store is
/// not compared: the schedule it was taken from may have been edited since.
pub fn belongs_to(backup: &Backup, uid: &str, settings: &Settings) -> bool {
    backup.labels().get(FOR_UID_LABEL).map(String::as_str) == Some(uid)
        && backup.spec.source.as_ref() == Some(&whole(&settings.target))
        && backup.spec.schedule_ref.is_none()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::{PostgresRestoreOptions, RedisRestoreOptions};

    fn spec(json: serde_json::Value) -> RestoreRequestSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_restores_that_overwrite_or_drop_need_one() {
        let base = serde_json::json!({"backupRef": {"name": "b"}});
        let plain = spec(base.clone());
        assert_eq!(
            wanted(&plain, Some(SourceKind::Redis)),
            None,
            "Skip keeps keys"
        );
        assert_eq!(wanted(&plain, Some(SourceKind::Postgres)), None);
        assert!(wanted(&plain, Some(SourceKind::MySql)).is_some());
        assert!(wanted(&plain, Some(SourceKind::Volume)).is_some());
        assert_eq!(wanted(&plain, None), None);
        for conflict in [RedisConflict::Flush, RedisConflict::Overwrite] {
            let mut s = plain.clone();
            s.redis = Some(RedisRestoreOptions {
                conflict,
                database: None,
            });
            assert!(
                wanted(&s, Some(SourceKind::Redis)).is_some(),
                "{conflict:?}"
            );
            s.safety_backup = Some(false);
            assert_eq!(wanted(&s, Some(SourceKind::Redis)), None, "turned off");
            s.safety_backup = Some(true);
            assert!(wanted(&s, Some(SourceKind::Redis)).is_some());
        }
        let mut s = plain.clone();
        s.postgres = Some(PostgresRestoreOptions {
            clean: true,
            ..Default::default()
        });
        assert!(
            wanted(&s, Some(SourceKind::Postgres))
                .unwrap()
                .contains("clean")
        );
    }

    #[test]
    fn the_same_server_is_told_by_kind_host_and_port_not_credentials() {
        let source = |json| -> BackupSource { serde_json::from_value(json).unwrap() };
        let app = source(serde_json::json!({"mysql": {"host": "db", "user": "app",
            "databases": ["shop"], "passwordSecretRef": {"name": "a", "key": "p"}}}));
        let root = source(serde_json::json!({"mysql": {"host": "db", "user": "root",
            "passwordSecretRef": {"name": "r", "key": "p"}}}));
        let other = source(serde_json::json!({"mysql": {"host": "db2", "user": "app"}}));
        let other_port =
            source(serde_json::json!({"mysql": {"host": "db", "port": 3307, "user": "app"}}));
        let redis = source(serde_json::json!({"redis": {"host": "db"}}));
        assert!(same_server(&app, &root));
        assert!(!same_server(&app, &other));
        assert!(!same_server(&app, &other_port));
        assert!(!same_server(&app, &redis), "another kind");
        let a = source(serde_json::json!({"volume": {"claimName": "data"}}));
        let b =
            source(serde_json::json!({"volume": {"claimName": "data", "skipUnreadable": true}}));
        assert!(same_server(&a, &b));
    }

    #[test]
    fn a_database_target_is_backed_up_whole() {
        let target: BackupSource = serde_json::from_value(serde_json::json!({
            "mysql": {"host": "db", "user": "u", "databases": ["shop"],
                "passwordSecretRef": {"name": "s", "key": "password"}}
        }))
        .unwrap();
        let all = whole(&target);
        assert!(all.mysql.as_ref().unwrap().databases.is_empty());
        assert_eq!(all.mysql.as_ref().unwrap().host, "db");
        let pg: BackupSource = serde_json::from_value(serde_json::json!({
            "postgres": {"host": "pg", "user": "u", "databases": ["a", "b"],
                "passwordSecretRef": {"name": "s", "key": "password"}}
        }))
        .unwrap();
        assert!(whole(&pg).postgres.unwrap().databases.is_empty());
    }

    #[test]
    fn names_fit_a_dns_label_and_differ_per_request_uid() {
        let a = name("undo", "0f3c9a12-aaaa-bbbb");
        assert_eq!(a, "undo-safety-0f3c9a12");
        assert_ne!(a, name("undo", "77777777-aaaa"));
        let long = name(&format!("{}-x", "r".repeat(70)), "0f3c9a12");
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with("-safety-0f3c9a12"), "{long}");
        let dashed = name(
            &format!("{}-{}", "a".repeat(46), "b".repeat(20)),
            "12345678",
        );
        assert!(!dashed.contains("--"), "{dashed}");
    }

    #[test]
    fn the_backup_is_of_the_target_kept_a_week_and_labelled_with_the_request() {
        let request: RestoreRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "coffer.dev/v1alpha1", "kind": "RestoreRequest",
            "metadata": {"name": "undo", "namespace": "shop", "uid": "u-1"},
            "spec": {"backupRef": {"name": "b"}, "redis": {"conflict": "Flush"}}
        }))
        .unwrap();
        let target: BackupSource = serde_json::from_value(serde_json::json!({
            "redis": {"host": "redis.shop.svc"}
        }))
        .unwrap();
        let storage: BackupStorage = serde_json::from_value(serde_json::json!({
            "s3": {"bucket": "b"}
        }))
        .unwrap();
        let settings = Settings {
            target: target.clone(),
            storage: storage.clone(),
            compression: Compression::Gzip,
            encryption: None,
            job_template: None,
        };
        let backup = build(&request, "u-1", settings.clone());
        assert_eq!(
            backup.spec.source.as_ref(),
            Some(&target),
            "Redis: the whole server"
        );
        assert_eq!(backup.spec.storage.as_ref(), Some(&storage));
        assert_eq!(backup.spec.compression, Some(Compression::Gzip));
        assert_eq!(backup.spec.ttl.as_deref(), Some("7d"));
        assert_eq!(backup.spec.schedule_ref, None);
        assert_eq!(
            backup.metadata.owner_references, None,
            "outlives the request"
        );
        assert!(belongs_to(&backup, "u-1", &settings));
        assert!(!belongs_to(&backup, "u-2", &settings));
        let mut other = settings.clone();
        other.target = serde_json::from_value(serde_json::json!({"redis": {"host": "x"}})).unwrap();
        assert!(
            !belongs_to(&backup, "u-1", &other),
            "a Backup of the name and label, of another source, is not adopted"
        );
        assert_eq!(backup.annotations()[FOR_ANNOTATION], "undo");
    }
}
