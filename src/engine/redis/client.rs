//! Connections with the `redis` crate, and what `INFO` says about a server.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::error::RedisError;
use super::target::RedisTarget;

/// How long a single command may take; a `RESTORE` of a 512 MB value needs a while.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in connection to `db`.
pub async fn connect(target: &RedisTarget, db: u32) -> Result<MultiplexedConnection, RedisError> {
    let address = target.address();
    let info = target
        .connection_info(db)
        .map_err(|e| RedisError::from_redis(&address, "CONNECT", &e))?;
    let client =
        redis::Client::open(info).map_err(|e| RedisError::from_redis(&address, "CONNECT", &e))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| RedisError::from_redis(&address, "CONNECT", &e))
}

/// What a backup records about the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// `redis_version`, for example `7.0.15`.
    pub version: String,
    /// Keys per non-empty database.
    pub keyspace: BTreeMap<u32, u64>,
}

/// Runs `INFO server` and `INFO keyspace`.
pub async fn server_info(
    con: &mut MultiplexedConnection,
    address: &str,
) -> Result<ServerInfo, RedisError> {
    let server: String = redis::cmd("INFO")
        .arg("server")
        .query_async(con)
        .await
        .map_err(|e| RedisError::from_redis(address, "INFO", &e))?;
    let keyspace: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(con)
        .await
        .map_err(|e| RedisError::from_redis(address, "INFO", &e))?;
    Ok(ServerInfo {
        version: info_field(&server, "redis_version").unwrap_or_default(),
        keyspace: parse_keyspace(&keyspace),
    })
}

/// A `field:value` line of `INFO` output.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .find(|(name, _)| *name == field)
        .map(|(_, value)| value.to_owned())
}

/// `db3:keys=10,expires=2,avg_ttl=0` lines → {3: 10}.
pub fn parse_keyspace(info: &str) -> BTreeMap<u32, u64> {
    info.lines()
        .filter_map(|line| {
            let (db, rest) = line.trim_end().split_once(':')?;
            let db = db.strip_prefix("db")?.parse().ok()?;
            let keys = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db, keys))
        })
        .collect()
}

/// The major version of a `redis_version` string (0 if unknown).
pub fn major_version(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_fields_and_keyspace() {
        let server = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(
            info_field(server, "redis_version").as_deref(),
            Some("7.0.15")
        );
        assert_eq!(info_field(server, "nope"), None);
        let keyspace =
            "# Keyspace\r\ndb0:keys=12,expires=1,avg_ttl=0\r\ndb15:keys=3,expires=0,avg_ttl=0\r\n";
        assert_eq!(parse_keyspace(keyspace), BTreeMap::from([(0, 12), (15, 3)]));
        assert_eq!(major_version("7.0.15"), 7);
        assert_eq!(major_version(""), 0);
    }
}
