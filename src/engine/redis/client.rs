//! Connections with the `redis` crate, watched for silence, and what `INFO` says about a
//! server.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::error::RedisError;
use super::target::RedisTarget;

/// How long Coffer waits on a Redis server, and how much memory a `keys`-mode backup may
/// spend on dropping the keys SCAN returns twice. [`Limits::default`] is what the command
/// line and the operator use; tests shorten the timeouts.
///
/// A server that accepts the connection and then says nothing never holds a worker for
/// longer than these: `connect_timeout` covers the TCP connection and the login, and
/// `idle_timeout` any later wait, reset by every byte that moves either way (so a 512 MB
/// value on a slow link, or a disk snapshot announced by a newline a second, is waited
/// for as long as it keeps moving). Only `FLUSHDB` gets longer: [`FLUSH_SILENCE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Reaching the server and logging in (default 10 s).
    pub connect_timeout: Duration,
    /// How long the server may stay silent — sending nothing and taking none of what is
    /// sent to it — while Coffer waits for it (default 60 s). Redis sends a newline every
    /// second while it prepares a snapshot, so a minute of silence means it is gone.
    pub idle_timeout: Duration,
    /// `keys` mode: about this many keys are remembered at once to drop SCAN's repeats
    /// (16 bytes each, about 68 MiB at the default of 3 million; more only if the database
    /// grows during a pass); a database with more keys is read in several SCAN passes.
    /// See [`mod@super::backup`].
    pub keys_per_pass: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            keys_per_pass: 3_000_000,
        }
    }
}

/// `FLUSHDB` of a large database keeps the server busy, and silent, while it frees every
/// key: it gets this long or the idle timeout, whichever is longer.
pub const FLUSH_SILENCE: Duration = Duration::from_secs(600);

/// A logged-in connection whose every command fails with [`RedisError::Silent`] once the
/// server has been silent for the idle timeout.
pub struct Connection {
    con: MultiplexedConnection,
    /// Bytes moved on the socket either way; unchanged over a wait means silence.
    activity: Arc<AtomicU64>,
    address: String,
    idle: Duration,
    /// The task that moves the connection's bytes, stopped with it.
    driver: tokio::task::AbortHandle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    /// Connects to `target` and logs into `db`.
    pub async fn open(target: &RedisTarget, db: u32, limits: &Limits) -> Result<Self, RedisError> {
        let address = target.address();
        let info = target
            .connection_info(db)
            .map_err(|e| RedisError::from_redis(&address, "CONNECT", &e))?;
        let stream = tcp_connect(target, limits.connect_timeout).await?;
        let activity = Arc::new(AtomicU64::new(0));
        let watched = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        // Coffer watches for silence itself (below), so the crate's response timeout,
        // which bounds a whole command however much it transfers, is off.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let login = MultiplexedConnection::new_with_config(info.redis_settings(), watched, config);
        let (con, driver) = timeout(limits.connect_timeout, login)
            .await
            .map_err(|_| RedisError::Silent {
                address: address.clone(),
                seconds: limits.connect_timeout.as_secs(),
                during: "after accepting the connection (logging in)".to_owned(),
                fix: "check that a Redis server listens there (not another service, or a proxy with nothing behind it)",
            })?
            .map_err(|e| RedisError::from_redis(&address, "CONNECT", &e))?;
        let driver = tokio::spawn(driver).abort_handle();
        Ok(Self {
            con,
            activity,
            address,
            idle: limits.idle_timeout,
            driver,
        })
    }

    /// `host:port` of the server.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(
        &mut self,
        name: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, RedisError> {
        self.query_within(name, command, self.idle).await
    }

    /// Runs one command that may keep the server silent for up to `silence` (or the idle
    /// timeout, if longer).
    pub async fn query_within<T: FromRedisValue>(
        &mut self,
        name: &'static str,
        command: &redis::Cmd,
        silence: Duration,
    ) -> Result<T, RedisError> {
        let silence = silence.max(self.idle);
        let reply = command.query_async::<T>(&mut self.con);
        let result = watch(&self.activity, silence, reply).await;
        self.finish(name, silence, result)
    }

    /// Runs a pipeline.
    pub async fn pipeline<T: FromRedisValue>(
        &mut self,
        name: &'static str,
        pipeline: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let reply = pipeline.query_async::<T>(&mut self.con);
        let result = watch(&self.activity, self.idle, reply).await;
        self.finish(name, self.idle, result)
    }

    fn finish<T>(
        &self,
        name: &'static str,
        silence: Duration,
        result: Option<redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match result {
            Some(reply) => reply.map_err(|e| RedisError::from_redis(&self.address, name, &e)),
            None => Err(RedisError::Silent {
                address: self.address.clone(),
                seconds: silence.as_secs(),
                during: format!("while Coffer waited for its answer to {name}"),
                fix: "check that it is up and not paused, overloaded or cut off by the network, then try again",
            }),
        }
    }
}

/// Opens the TCP connection, within `limit`.
pub(super) async fn tcp_connect(
    target: &RedisTarget,
    limit: Duration,
) -> Result<TcpStream, RedisError> {
    let address = target.address();
    let connect_error = |detail: String| RedisError::Connect {
        address: address.clone(),
        detail,
    };
    timeout(
        limit,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| connect_error(format!("no answer within {}s", limit.as_secs())))?
    .map_err(|e| connect_error(e.to_string()))
}

/// Waits for `reply`, giving up (`None`) once `activity` has not moved for `silence`.
/// Checked four times per `silence`, so silence is noticed within 1¼ × `silence`.
async fn watch<T>(
    activity: &AtomicU64,
    silence: Duration,
    reply: impl Future<Output = T>,
) -> Option<T> {
    let tick = (silence / 4).max(Duration::from_millis(10));
    let mut reply = std::pin::pin!(reply);
    let mut last = activity.load(Ordering::Relaxed);
    let mut quiet = Duration::ZERO;
    loop {
        match timeout(tick, reply.as_mut()).await {
            Ok(done) => return Some(done),
            Err(_) => {
                let now = activity.load(Ordering::Relaxed);
                if now == last {
                    quiet += tick;
                    if quiet >= silence {
                        return None;
                    }
                } else {
                    last = now;
                    quiet = Duration::ZERO;
                }
            }
        }
    }
}

/// A socket that counts the bytes it moves.
struct Watched<S> {
    inner: S,
    activity: Arc<AtomicU64>,
}

impl<S> Watched<S> {
    fn moved(&self, bytes: usize) {
        if bytes > 0 {
            self.activity.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.moved(buf.filled().len().saturating_sub(before));
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.moved(n);
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            this.moved(n);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
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
pub async fn server_info(con: &mut Connection) -> Result<ServerInfo, RedisError> {
    let server: String = con.query("INFO", redis::cmd("INFO").arg("server")).await?;
    let keyspace: String = con
        .query("INFO", redis::cmd("INFO").arg("keyspace"))
        .await?;
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
    keyspace_field(info, "keys")
}

/// One field of each `INFO keyspace` line: `expires` of `db3:keys=10,expires=2` → {3: 2}.
pub fn keyspace_field(info: &str, field: &str) -> BTreeMap<u32, u64> {
    let prefix = format!("{field}=");
    info.lines()
        .filter_map(|line| {
            let (db, rest) = line.trim_end().split_once(':')?;
            let db = db.strip_prefix("db")?.parse().ok()?;
            let value = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix(prefix.as_str()))?
                .parse()
                .ok()?;
            Some((db, value))
        })
        .collect()
}

/// The major version of a `redis_version` string (0 if unknown).
pub fn major_version(version: &str) -> u32 {
    version_parts(version).0
}

/// (major, minor) of a `redis_version` string ((0, 0) if unknown).
pub fn version_parts(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next().flatten().unwrap_or(0);
    let minor = parts.next().flatten().unwrap_or(0);
    (major, minor)
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
        assert_eq!(version_parts("6.2.14"), (6, 2));
        assert_eq!(version_parts("6"), (6, 0));
    }

    #[tokio::test]
    async fn silence_is_noticed_and_any_movement_resets_it() {
        let activity = AtomicU64::new(0);
        let silence = Duration::from_millis(400);
        // Nothing moves: given up after the silence.
        let started = std::time::Instant::now();
        let never = watch(&activity, silence, std::future::pending::<()>()).await;
        assert_eq!(never, None);
        let waited = started.elapsed();
        assert!(
            waited >= silence && waited < Duration::from_secs(10),
            "{waited:?}"
        );

        // A byte every 150 ms keeps a wait of 1.5 s, almost four silences, alive.
        let started = std::time::Instant::now();
        let slow = async {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                activity.fetch_add(1, Ordering::Relaxed);
            }
            "done"
        };
        assert_eq!(watch(&activity, silence, slow).await, Some("done"));
        assert!(started.elapsed() >= Duration::from_millis(1500));
    }
}
