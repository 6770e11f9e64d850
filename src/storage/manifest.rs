//! `manifest.json`: written last, it is what makes a backup exist. It records everything a
//! restore needs with nothing but the store: what was backed up, when, how, and the size and
//! SHA-256 of every object. Pure (de)serialisation and checks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::Compression;

/// The manifest's file name inside a backup's folder.
pub const MANIFEST: &str = "manifest.json";
/// The manifest format of unencrypted backups.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest format of encrypted backups: a Coffer that predates encryption refuses them
/// ("upgrade Coffer") instead of failing to decompress ciphertext.
pub const ENCRYPTED_FORMAT_VERSION: u32 = 2;
/// Manifests larger than this are refused (a manifest is a few kilobytes).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// A complete backup's description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    pub coffer_version: String,
    /// The backup's name (a schedule, a Backup object, or `--name`).
    pub name: String,
    pub source: SourceInfo,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub compression: Compression,
    /// Every data object of the backup.
    pub objects: Vec<ObjectRecord>,
    pub stats: Stats,
    /// The Kubernetes object this backup belongs to (backups taken by the operator); a
    /// deletion for another object refuses to touch the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<BackupOwner>,
    /// How the data objects are encrypted, when they are. Everything else in the manifest
    /// (names, sizes, SHA-256 of the stored and of the raw bytes, counts, times) stays
    /// readable without a key, so that listing, retention and `verify` work without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionRecord>,
}

/// An encrypted backup's record of its encryption (see [`crate::pipeline::encryption`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionRecord {
    /// `age-x25519`: each data object is an age file encrypted to the backup's data key.
    pub scheme: String,
    /// The object in the backup's folder holding the data key, wrapped for the recipients
    /// (rewritten when the recipients change; never the data).
    pub keys: String,
    /// The public half of the backup's data key: a key object that unwraps to another key
    /// does not belong to this backup.
    pub data_recipient: String,
    /// The recipients (age public keys) the data key was wrapped for when the backup was
    /// taken. The key object names the current ones.
    pub recipients: Vec<String>,
}

/// The Backup object a backup was taken for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupOwner {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The object's UID: names are reused, UIDs never.
    pub uid: String,
}

/// What was backed up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    /// `redis`, `postgres`, `mysql` or `volume`.
    pub kind: String,
    /// Where it was read from (host:port or a path; never credentials).
    pub address: String,
    /// The server's version, for example `7.0.15`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// How it was read, for example `snapshot` or `keys` for Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Redis: the only database backed up (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<u32>,
    /// Redis: the RDB version of the data (a target must be able to load it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdb_version: Option<u16>,
    /// The program that read the data, for example `pg_dump 15.18` (a restore needs the
    /// same major version or newer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// MySQL/MariaDB: where in the binary log the dump was taken (file and position, or the
    /// GTID position), when the server writes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

/// One stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRecord {
    /// File name inside the backup's folder, for example `redis.rdb.zst`.
    pub name: String,
    /// What the object holds once decompressed: `rdb` or `coffer-keys` for Redis.
    pub format: String,
    /// Bytes before compression.
    pub raw_bytes: u64,
    /// SHA-256 of the bytes before compression (hex).
    pub raw_sha256: String,
    /// Bytes in storage.
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes (hex).
    pub sha256: String,
    /// PostgreSQL, MySQL: the database this object holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// Counts of what the backup holds; which are set depends on the source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiring_keys: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys_per_database: BTreeMap<u32, u64>,
    /// Redis: keys of each type, as `TYPE` names them (`string`, `list`, `set`, `zset`,
    /// `hash`, `stream`; `module` for a module's types). Absent in backups made before
    /// Coffer recorded it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys_per_type: BTreeMap<String, u64>,
    /// Redis: of [`Stats::keys_per_type`], the keys with a TTL (which may expire before a
    /// restore), by type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expiring_keys_per_type: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<u64>,
    /// PostgreSQL: databases backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<u64>,
    /// PostgreSQL: rows of every table, per database, counted in the dump's snapshot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub table_rows: BTreeMap<String, Vec<TableRows>>,
    /// PostgreSQL and MySQL/MariaDB: per database, what it holds besides its tables' rows
    /// (schemas, functions, ...), listed in the dump's snapshot; a drill checks that every
    /// one is there after its restore. Absent in backups made before Coffer recorded it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub database_objects: BTreeMap<String, DatabaseObjects>,
    /// Volumes: regular files, directories, symbolic links and hard links archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directories: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlinks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_links: Option<u64>,
    /// Volumes: the regular files' data in bytes (a sparse file's holes not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    /// Volumes: the SHA-256 of a sample of the regular files' contents as archived (see
    /// `engine::volume::archive`), which a drill compares with the files it restored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sampled_files: Vec<FileSample>,
    /// Volumes: files that could not be read and were left out (`--skip-unreadable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// MySQL/MariaDB: each database's character set and collation, to create it again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub database_options: BTreeMap<String, String>,
    /// What the backup could not guarantee, for example tables of a storage engine without
    /// transactions, whose rows are not from one point in time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What one database held besides its tables' rows, by kind of object, each list sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseObjects {
    /// PostgreSQL: the schemas (not the system's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    /// The functions and procedures: PostgreSQL's as `schema.name(argument types)`, not those
    /// an extension creates; MySQL's as `name (function)` or `name (procedure)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// The views (PostgreSQL: `schema.name`, materialized views included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<String>,
    /// MySQL: the triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<String>,
    /// MySQL: the events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

impl DatabaseObjects {
    /// Each kind of object, named in the plural, with its list.
    pub fn kinds(&self) -> [(&'static str, &[String]); 5] {
        [
            ("schemas", &self.schemas),
            ("functions", &self.functions),
            ("views", &self.views),
            ("triggers", &self.triggers),
            ("events", &self.events),
        ]
    }
}

/// A file of a volume backup and the SHA-256 of its contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSample {
    /// Relative to the volume's root.
    pub path: String,
    pub sha256: String,
}

/// The rows one table held when it was backed up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    pub rows: u64,
}

impl Stats {
    /// PostgreSQL: every table's rows, added up.
    pub fn total_rows(&self) -> u64 {
        self.table_rows.values().flatten().map(|t| t.rows).sum()
    }
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest at {location} is not valid JSON for this Coffer version: {source}")]
    Json {
        location: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the manifest at {location} has format version {found}; this Coffer reads versions {FORMAT_VERSION} to {ENCRYPTED_FORMAT_VERSION}: upgrade Coffer"
    )]
    Version { location: String, found: u32 },
    #[error("the manifest at {location} is invalid: {reason}")]
    Invalid { location: String, reason: String },
}

impl Manifest {
    /// Pretty JSON, ending with a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// The format version of a manifest with (or without) encryption.
    pub fn version_for(encryption: Option<&EncryptionRecord>) -> u32 {
        if encryption.is_some() {
            ENCRYPTED_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        }
    }

    /// Parses and checks a manifest read from `location`.
    pub fn from_json(bytes: &[u8], location: &str) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            format_version: u32,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
                location: location.to_owned(),
                source,
            })?;
        if !(FORMAT_VERSION..=ENCRYPTED_FORMAT_VERSION).contains(&version.format_version) {
            return Err(ManifestError::Version {
                location: location.to_owned(),
                found: version.format_version,
            });
        }
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
                location: location.to_owned(),
                source,
            })?;
        manifest.check().map_err(|reason| ManifestError::Invalid {
            location: location.to_owned(),
            reason,
        })?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        if self.objects.is_empty() {
            return Err("it lists no objects".to_owned());
        }
        for object in &self.objects {
            let name = &object.name;
            if name.is_empty()
                || name.starts_with('/')
                || name.split('/').any(|part| part == ".." || part.is_empty())
            {
                return Err(format!("object name {name:?} is not a relative path"));
            }
            let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex64(&object.sha256) || !hex64(&object.raw_sha256) {
                return Err(format!("object {name:?} has no valid SHA-256"));
            }
        }
        if (self.format_version == ENCRYPTED_FORMAT_VERSION) != self.encryption.is_some() {
            return Err(format!(
                "format version {} does not match its encryption record",
                self.format_version
            ));
        }
        if let Some(e) = &self.encryption {
            if e.scheme != crate::pipeline::encryption::SCHEME {
                return Err(format!(
                    "it is encrypted with {:?}, which this Coffer does not know: upgrade Coffer",
                    e.scheme
                ));
            }
            if !super::keys::valid_keys_name(&e.keys) {
                return Err("its key object is not a file in its folder".to_owned());
            }
            if !e.data_recipient.starts_with("age1") || e.recipients.is_empty() {
                return Err("its encryption record names no valid keys".to_owned());
            }
        }
        if self.completed_at < self.started_at {
            return Err("it completed before it started".to_owned());
        }
        Ok(())
    }

    /// The total bytes in storage.
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.stored_bytes).sum()
    }

    /// The total bytes before compression.
    pub fn raw_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.raw_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn manifest() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            coffer_version: "0.1.0".into(),
            name: "shop-redis".into(),
            source: SourceInfo {
                kind: "redis".into(),
                address: "redis.shop.svc:6379".into(),
                server_version: Some("7.0.15".into()),
                mode: Some("snapshot".into()),
                database: None,
                rdb_version: Some(10),
                tool: None,
                position: None,
            },
            started_at: Utc.with_ymd_and_hms(2026, 12, 1, 16, 0, 0).unwrap(),
            completed_at: Utc.with_ymd_and_hms(2026, 12, 1, 16, 0, 42).unwrap(),
            compression: Compression::Zstd,
            objects: vec![ObjectRecord {
                name: "redis.rdb.zst".into(),
                format: "rdb".into(),
                raw_bytes: 1000,
                raw_sha256: "a".repeat(64),
                stored_bytes: 400,
                sha256: "b".repeat(64),
                database: None,
            }],
            stats: Stats {
                keys: Some(10),
                keys_per_database: [(0, 7), (3, 3)].into(),
                ..Stats::default()
            },
            owner: None,
            encryption: None,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let m = manifest();
        let json = m.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"formatVersion\": 1") && text.contains("\"rawSha256\""));
        assert_eq!(Manifest::from_json(&json, "x").unwrap(), m);
        assert_eq!((m.stored_bytes(), m.raw_bytes()), (400, 1000));
    }

    #[test]
    fn refuses_other_versions_and_bad_objects() {
        let mut m = manifest();
        m.format_version = 3;
        let err = Manifest::from_json(&m.to_json(), "s3://b/x/manifest.json").unwrap_err();
        assert!(err.to_string().contains("upgrade Coffer"), "{err}");

        let mut m = manifest();
        m.objects[0].name = "../../etc/passwd".into();
        let err = Manifest::from_json(&m.to_json(), "x").unwrap_err();
        assert!(err.to_string().contains("not a relative path"), "{err}");

        let mut m = manifest();
        m.objects[0].sha256 = "zz".into();
        assert!(Manifest::from_json(&m.to_json(), "x").is_err());

        let mut m = manifest();
        m.objects.clear();
        assert!(Manifest::from_json(&m.to_json(), "x").is_err());

        // An encrypted backup says so in its version, and only then.
        let mut m = manifest();
        m.format_version = ENCRYPTED_FORMAT_VERSION;
        assert!(Manifest::from_json(&m.to_json(), "x").is_err());
        m.encryption = Some(EncryptionRecord {
            scheme: "age-x25519".into(),
            keys: "keys-abc.json".into(),
            data_recipient: "age1data".into(),
            recipients: vec!["age1user".into()],
        });
        assert_eq!(Manifest::from_json(&m.to_json(), "x").unwrap(), m);
        m.format_version = FORMAT_VERSION;
        assert!(Manifest::from_json(&m.to_json(), "x").is_err());
        // A key object outside the folder is refused.
        m.format_version = ENCRYPTED_FORMAT_VERSION;
        m.encryption.as_mut().unwrap().keys = "../../other/keys.json".into();
        assert!(Manifest::from_json(&m.to_json(), "x").is_err());

        let err = Manifest::from_json(b"{not json", "x").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }
}
