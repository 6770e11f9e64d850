//! A point-in-time RDB over the replication protocol, the way `redis-cli --rdb` takes one:
//! `AUTH`, `REPLCONF capa eof`, `REPLCONF rdb-only 1`, `SYNC`; then either `$<len>` and that
//! many bytes, or `$EOF:<40-byte mark>` and bytes up to the mark (diskless replication).
//! Bare newlines the server sends while it prepares the snapshot are skipped.
//!
//! The login waits at most [`Limits::connect_timeout`] for each answer; after `SYNC`, every
//! wait is bounded by [`Limits::idle_timeout`] and restarts with each byte received: while
//! it prepares a snapshot on disk, which can take an hour, Redis sends a newline every
//! second, and each one restarts the wait. Only a server that sends nothing at all for that
//! long is given up on.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::client::{self, Limits};
use super::error::RedisError;
use super::target::RedisTarget;
use crate::text::one_line;

const EOF_MARK_LEN: usize = 40;
const PIPE_BUFFER: usize = 1 << 20;

/// How the server frames the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `$<len>`: exactly this many bytes follow (disk-based replication).
    Sized(u64),
    /// `$EOF:<mark>`: bytes follow until the 40-byte mark (diskless replication).
    EndMark(Vec<u8>),
}

/// A snapshot being received: its bytes arrive on `reader`; `task` ends with the number of
/// bytes, or with why the transfer failed (the reader then just ends early, so the caller
/// must check the task before trusting the data).
pub struct Snapshot {
    pub reader: DuplexStream,
    pub framing: Framing,
    pub task: JoinHandle<Result<u64, RedisError>>,
}

/// Logs in, asks for a snapshot and starts receiving it.
pub async fn start(target: &RedisTarget, limits: &Limits) -> Result<Snapshot, RedisError> {
    let address = target.address();
    let stream = client::tcp_connect(target, limits.connect_timeout).await?;
    let mut conn = Conn {
        io: BufReader::with_capacity(256 << 10, stream),
        address: address.clone(),
        idle: limits.idle_timeout,
    };
    let login = Wait::Login(limits.connect_timeout);

    if let Some(password) = &target.password {
        let mut args = vec!["AUTH"];
        if let Some(user) = &target.username {
            args.push(user);
        }
        args.push(password);
        conn.send(&args, login).await?;
        let reply = conn.reply_line(login).await?;
        if reply.starts_with('-') {
            return Err(RedisError::Auth {
                address,
                detail: reply.trim_start_matches('-').to_owned(),
            });
        }
    }
    for args in [["REPLCONF", "capa", "eof"], ["REPLCONF", "rdb-only", "1"]] {
        conn.send(&args, login).await?;
        let reply = conn.reply_line(login).await?;
        // Servers before 7.0 do not know rdb-only; that only means the replication stream
        // follows the snapshot, which the end-mark reader stops before.
        if reply.starts_with("-NOPERM") || reply.starts_with("-NOAUTH") {
            return Err(refused(&address, &reply));
        }
    }
    conn.send(&["SYNC"], login).await?;
    let header = conn.reply_line(Wait::Preparing).await?;
    let framing = parse_header(&header).map_err(|detail| {
        if header.starts_with('-') {
            refused(&address, &header)
        } else {
            RedisError::Protocol {
                address: address.clone(),
                detail,
            }
        }
    })?;
    let (writer, reader) = tokio::io::duplex(PIPE_BUFFER);
    let task = tokio::spawn(receive(conn, writer, framing.clone()));
    Ok(Snapshot {
        reader,
        framing,
        task,
    })
}

fn refused(address: &str, reply: &str) -> RedisError {
    RedisError::SyncRefused {
        address: address.to_owned(),
        detail: one_line(reply.trim_start_matches('-')),
    }
}

/// Parses the line announcing the snapshot.
pub fn parse_header(line: &str) -> Result<Framing, String> {
    if let Some(mark) = line.strip_prefix("$EOF:") {
        if mark.len() != EOF_MARK_LEN {
            return Err(format!(
                "the end mark is {} bytes, not {EOF_MARK_LEN}",
                mark.len()
            ));
        }
        return Ok(Framing::EndMark(mark.as_bytes().to_vec()));
    }
    if let Some(len) = line.strip_prefix('$') {
        return len
            .parse::<u64>()
            .map(Framing::Sized)
            .map_err(|_| format!("unexpected SYNC reply {line:?}"));
    }
    Err(format!("unexpected SYNC reply {line:?}"))
}

/// What the server is being waited for, to say so when it goes silent.
#[derive(Clone, Copy)]
enum Wait {
    /// Answers to AUTH and REPLCONF, within the connect timeout.
    Login(Duration),
    /// The line announcing the snapshot, after keep-alive newlines.
    Preparing,
    /// The snapshot's bytes.
    Sending,
}

/// The replication connection.
struct Conn {
    io: BufReader<TcpStream>,
    address: String,
    idle: Duration,
}

impl Conn {
    fn limit(&self, wait: Wait) -> Duration {
        match wait {
            Wait::Login(limit) => limit,
            Wait::Preparing | Wait::Sending => self.idle,
        }
    }

    fn silent(&self, wait: Wait) -> RedisError {
        let (during, fix) = match wait {
            Wait::Login(_) => (
                "after accepting the connection (logging in)",
                "check that a Redis server listens there (not another service, or a proxy with nothing behind it)",
            ),
            Wait::Preparing => (
                "while Coffer waited for the snapshot to start (Redis sends a newline every second while it prepares one)",
                "check that it is up and not paused, overloaded or cut off by the network, then try again",
            ),
            Wait::Sending => (
                "in the middle of the snapshot",
                "check that it is up and not paused, overloaded or cut off by the network, then try again",
            ),
        };
        RedisError::Silent {
            address: self.address.clone(),
            seconds: self.limit(wait).as_secs(),
            during: during.to_owned(),
            fix,
        }
    }

    /// The connection broke after it was made: the server restarted, failed over, or was
    /// killed, not a wrong address.
    fn broken(&self, e: &std::io::Error) -> RedisError {
        self.dropped(e.to_string())
    }

    fn dropped(&self, detail: String) -> RedisError {
        RedisError::Dropped {
            address: self.address.clone(),
            command: "SYNC",
            detail,
        }
    }

    async fn send(&mut self, args: &[&str], wait: Wait) -> Result<(), RedisError> {
        let mut command = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            command.extend_from_slice(arg.as_bytes());
            command.extend_from_slice(b"\r\n");
        }
        timeout(self.limit(wait), self.io.get_mut().write_all(&command))
            .await
            .map_err(|_| self.silent(wait))?
            .map_err(|e| self.broken(&e))
    }

    /// Reads the next non-empty line (skipping keep-alive newlines), without its `\r\n`.
    /// Each line received, empty or not, restarts the wait.
    async fn reply_line(&mut self, wait: Wait) -> Result<String, RedisError> {
        loop {
            let mut line = Vec::new();
            let read = timeout(self.limit(wait), self.io.read_until(b'\n', &mut line))
                .await
                .map_err(|_| self.silent(wait))?
                .map_err(|e| self.broken(&e))?;
            if read == 0 {
                return Err(self.dropped("before the snapshot began".to_owned()));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            if !text.is_empty() {
                return Ok(text.to_owned());
            }
        }
    }

    /// Reads what is there, waiting at most the idle timeout for the first byte.
    async fn read_some(&mut self, buffer: &mut [u8]) -> Result<usize, RedisError> {
        timeout(self.idle, self.io.read(buffer))
            .await
            .map_err(|_| self.silent(Wait::Sending))?
            .map_err(|e| self.broken(&e))
    }
}

async fn receive(
    mut conn: Conn,
    mut out: DuplexStream,
    framing: Framing,
) -> Result<u64, RedisError> {
    let address = conn.address.clone();
    let broken = |detail: String| RedisError::Protocol {
        address: address.clone(),
        detail,
    };
    let total = match framing {
        Framing::Sized(len) => {
            let copied = copy_sized(&mut conn, len, &mut out).await?;
            if copied != len {
                return Err(conn.dropped(format!("after {copied} of {len} snapshot bytes")));
            }
            copied
        }
        Framing::EndMark(mark) => receive_until_mark(&mut conn, &mut out, &mark).await?,
    };
    out.shutdown()
        .await
        .map_err(|e| broken(format!("passing the snapshot on: {e}")))?;
    Ok(total)
}

/// Passes on up to `len` bytes; fewer if the connection closes first.
async fn copy_sized(conn: &mut Conn, len: u64, to: &mut DuplexStream) -> Result<u64, RedisError> {
    let mut buffer = vec![0u8; 256 << 10];
    let mut total = 0u64;
    while total < len {
        let want = usize::try_from(len - total)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let n = conn.read_some(&mut buffer[..want]).await?;
        if n == 0 {
            break;
        }
        write_on(to, &buffer[..n], &conn.address).await?;
        total += n as u64;
    }
    Ok(total)
}

async fn write_on(to: &mut DuplexStream, bytes: &[u8], address: &str) -> Result<(), RedisError> {
    to.write_all(bytes).await.map_err(|e| RedisError::Protocol {
        address: address.to_owned(),
        detail: format!("the backup stopped reading the snapshot ({e})"),
    })
}

/// Passes bytes on until the end mark, holding back the last 40 bytes until it is known
/// they are not the mark. Anything after the mark (the replication stream of servers that
/// ignore `rdb-only`) is dropped.
async fn receive_until_mark(
    conn: &mut Conn,
    out: &mut DuplexStream,
    mark: &[u8],
) -> Result<u64, RedisError> {
    let mut buffer = vec![0u8; 256 << 10];
    let mut held: Vec<u8> = Vec::with_capacity(buffer.len() + mark.len());
    let mut total = 0u64;
    loop {
        let n = conn.read_some(&mut buffer).await?;
        if n == 0 {
            return Err(conn.dropped(format!("after {total} snapshot bytes, before the end mark")));
        }
        held.extend_from_slice(&buffer[..n]);
        if let Some(at) = memchr::memmem::find(&held, mark) {
            write_on(out, &held[..at], &conn.address).await?;
            return Ok(total + at as u64);
        }
        let keep = mark.len().min(held.len());
        let ready = held.len() - keep;
        write_on(out, &held[..ready], &conn.address).await?;
        total += ready as u64;
        held.drain(..ready);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(parse_header("$1234"), Ok(Framing::Sized(1234)));
        let mark = "a".repeat(40);
        assert_eq!(
            parse_header(&format!("$EOF:{mark}")),
            Ok(Framing::EndMark(mark.into_bytes()))
        );
        assert!(parse_header("$EOF:short").is_err());
        assert!(parse_header("+FULLRESYNC abc 0").is_err());
        assert!(parse_header("$x").is_err());
    }
}
