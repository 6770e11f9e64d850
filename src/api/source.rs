//! What is backed up: a Redis server, PostgreSQL or MySQL/MariaDB databases, or a volume.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeySelector;

/// Where the data comes from. Set exactly one of `redis`, `postgres`, `mysql` or `volume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.redis) ? 1 : 0) + (has(self.postgres) ? 1 : 0) + (has(self.mysql) ? 1 : 0) + (has(self.volume) ? 1 : 0) == 1"
).message("exactly one of redis, postgres, mysql or volume must be set"))]
pub struct BackupSource {
    /// A Redis server (or one of its databases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSource>,
    /// A PostgreSQL server: some or all of its databases, and optionally its roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSource>,
    /// A MySQL or MariaDB server: some or all of its databases, and optionally its accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MySqlSource>,
    /// The files of a PersistentVolumeClaim in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSource>,
}

/// The kind of a source, as shown in status and listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SourceKind {
    /// A Redis server.
    Redis,
    /// A PostgreSQL server.
    Postgres,
    /// A MySQL or MariaDB server.
    #[serde(rename = "MySQL")]
    MySql,
    /// A PersistentVolumeClaim.
    Volume,
}

impl BackupSource {
    /// The kind of this source, or `None` when no kind (or more than one) is set, which the
    /// schema rejects.
    pub fn kind(&self) -> Option<SourceKind> {
        match (&self.redis, &self.postgres, &self.mysql, &self.volume) {
            (Some(_), None, None, None) => Some(SourceKind::Redis),
            (None, Some(_), None, None) => Some(SourceKind::Postgres),
            (None, None, Some(_), None) => Some(SourceKind::MySql),
            (None, None, None, Some(_)) => Some(SourceKind::Volume),
            _ => None,
        }
    }
}

/// A Redis server reachable from the worker Pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSource {
    /// Host name or IP address of the Redis server, for example `redis.shop.svc`.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port of the Redis server.
    #[serde(default = "default_redis_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Only this database index. Default: every database of the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub database: Option<i32>,
    /// ACL user name to authenticate as (Redis 6 and later). Default: the `default` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Secret key holding the password. The value is passed to the worker as an environment
    /// variable and never appears in status, events or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeySelector>,
    /// How the data is read: `Snapshot` takes a point-in-time RDB over the replication
    /// protocol (like `redis-cli --rdb`); `Keys` walks the keyspace with SCAN and DUMP, for
    /// managed services that refuse SYNC.
    #[serde(default)]
    pub mode: RedisMode,
}

fn default_redis_port() -> i32 {
    6379
}

/// How Redis data is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RedisMode {
    /// A point-in-time RDB snapshot over the replication protocol (the default).
    #[default]
    Snapshot,
    /// SCAN + DUMP of every key; works where SYNC is refused (ElastiCache, Redis Cloud).
    Keys,
}

/// A PostgreSQL server reachable from the worker Pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSource {
    /// Host name or IP address of the PostgreSQL server, for example `pg.shop.svc`.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port of the PostgreSQL server.
    #[serde(default = "default_postgres_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Databases to back up. Default: every database that is not a template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub databases: Vec<String>,
    /// Role to connect as. It must be able to read everything that is backed up (for
    /// example a member of `pg_read_all_data`, or a superuser when `globals` is on).
    #[serde(default = "default_postgres_user")]
    #[schemars(length(min = 1, max = 63))]
    pub user: String,
    /// Secret key holding the role's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeySelector>,
    /// Also back up roles and tablespaces (`pg_dumpall --globals-only`).
    #[serde(default = "default_true")]
    pub globals: bool,
}

fn default_postgres_port() -> i32 {
    5432
}

fn default_postgres_user() -> String {
    "postgres".to_owned()
}

fn default_true() -> bool {
    true
}

/// A MySQL or MariaDB server reachable from the worker Pod. Each database is dumped with
/// `mariadb-dump --single-transaction` (one consistent snapshot per database, writers are
/// never blocked; tables of engines without transactions, such as MyISAM, are named in a
/// warning). The account needs `SELECT`, `SHOW VIEW`, `TRIGGER` and `EVENT` on the databases
/// (and `SELECT` on `mysql.*` with `users`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MySqlSource {
    /// Host name or IP address of the server, for example `mariadb.shop.svc`.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port of the server.
    #[serde(default = "default_mysql_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Account to log in as.
    #[schemars(length(min = 1, max = 80))]
    pub user: String,
    /// Secret key holding the account's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeySelector>,
    /// Databases to back up. Default: every database but the server's own schemas
    /// (`mysql`, `sys`, `information_schema`, `performance_schema`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub databases: Vec<String>,
    /// Also back up the accounts and their grants, as their own object (restored only when
    /// a RestoreRequest asks for them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub users: bool,
}

fn default_mysql_port() -> i32 {
    3306
}

/// A PersistentVolumeClaim in the same namespace. It is mounted read-only into the worker for
/// a backup, and read-write for a restore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSource {
    /// Name of the PersistentVolumeClaim.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Back up what can be read and list the files that cannot (in the manifest and the
    /// worker's log) instead of failing the backup. The worker runs as UID 65532 (see
    /// `jobTemplate.runAsUser`): files only their owner can read fail the backup without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_unreadable: bool,
}
