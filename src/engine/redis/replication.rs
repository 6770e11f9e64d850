//! A point-in-time RDB over the replication protocol, the way `redis-cli --rdb` takes one:
//! `AUTH`, `REPLCONF capa eof`, `REPLCONF rdb-only 1`, `SYNC`; then either `$<len>` and that
//! many bytes, or `$EOF:<40-byte mark>` and bytes up to the mark (diskless replication).
//! Bare newlines the server sends while it prepares the snapshot are skipped.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::error::RedisError;
use super::target::RedisTarget;
use crate::text::one_line;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The server sends a newline every second while it prepares the snapshot; a minute of
/// silence means it is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
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
pub async fn start(target: &RedisTarget) -> Result<Snapshot, RedisError> {
    let address = target.address();
    let connect_error = |detail: String| RedisError::Connect {
        address: address.clone(),
        detail,
    };
    let stream = timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| connect_error(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
    .map_err(|e| connect_error(e.to_string()))?;
    let mut conn = BufReader::with_capacity(256 << 10, stream);

    if let Some(password) = &target.password {
        let mut args = vec!["AUTH"];
        if let Some(user) = &target.username {
            args.push(user);
        }
        args.push(password);
        send(&mut conn, &args, &address).await?;
        let reply = read_reply_line(&mut conn, &address).await?;
        if reply.starts_with('-') {
            return Err(RedisError::Auth {
                address,
                detail: reply.trim_start_matches('-').to_owned(),
            });
        }
    }
    for args in [["REPLCONF", "capa", "eof"], ["REPLCONF", "rdb-only", "1"]] {
        send(&mut conn, &args, &address).await?;
        let reply = read_reply_line(&mut conn, &address).await?;
        // Servers before 7.0 do not know rdb-only; that only means the replication stream
        // follows the snapshot, which the end-mark reader stops before.
        if reply.starts_with("-NOPERM") || reply.starts_with("-NOAUTH") {
            return Err(refused(&address, &reply));
        }
    }
    send(&mut conn, &["SYNC"], &address).await?;
    let header = read_reply_line(&mut conn, &address).await?;
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
    let task = tokio::spawn(receive(conn, writer, framing.clone(), address));
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

async fn send(
    conn: &mut BufReader<TcpStream>,
    args: &[&str],
    address: &str,
) -> Result<(), RedisError> {
    let mut command = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg.as_bytes());
        command.extend_from_slice(b"\r\n");
    }
    conn.get_mut()
        .write_all(&command)
        .await
        .map_err(|e| RedisError::Connect {
            address: address.to_owned(),
            detail: e.to_string(),
        })
}

/// Reads the next non-empty line (skipping keep-alive newlines), without its `\r\n`.
async fn read_reply_line(
    conn: &mut BufReader<TcpStream>,
    address: &str,
) -> Result<String, RedisError> {
    loop {
        let mut line = Vec::new();
        let read = timeout(IDLE_TIMEOUT, conn.read_until(b'\n', &mut line))
            .await
            .map_err(|_| RedisError::Protocol {
                address: address.to_owned(),
                detail: format!("no answer within {}s", IDLE_TIMEOUT.as_secs()),
            })?
            .map_err(|e| RedisError::Connect {
                address: address.to_owned(),
                detail: e.to_string(),
            })?;
        if read == 0 {
            return Err(RedisError::Connect {
                address: address.to_owned(),
                detail: "the server closed the connection".to_owned(),
            });
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if !text.is_empty() {
            return Ok(text.to_owned());
        }
    }
}

async fn receive(
    mut conn: BufReader<TcpStream>,
    mut out: DuplexStream,
    framing: Framing,
    address: String,
) -> Result<u64, RedisError> {
    let broken = |detail: String| RedisError::Protocol {
        address: address.clone(),
        detail,
    };
    let total = match framing {
        Framing::Sized(len) => {
            let copied =
                copy_with_idle_timeout(&mut (&mut conn).take(len), &mut out, &address).await?;
            if copied != len {
                return Err(broken(format!(
                    "the connection closed after {copied} of {len} snapshot bytes"
                )));
            }
            copied
        }
        Framing::EndMark(mark) => receive_until_mark(&mut conn, &mut out, &mark, &address).await?,
    };
    out.shutdown()
        .await
        .map_err(|e| broken(format!("passing the snapshot on: {e}")))?;
    Ok(total)
}

async fn copy_with_idle_timeout(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut DuplexStream,
    address: &str,
) -> Result<u64, RedisError> {
    let mut buffer = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = read_some(from, &mut buffer, address).await?;
        if n == 0 {
            return Ok(total);
        }
        write_on(to, &buffer[..n], address).await?;
        total += n as u64;
    }
}

async fn read_some(
    from: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8],
    address: &str,
) -> Result<usize, RedisError> {
    timeout(IDLE_TIMEOUT, from.read(buffer))
        .await
        .map_err(|_| RedisError::Protocol {
            address: address.to_owned(),
            detail: format!("the snapshot stalled for {}s", IDLE_TIMEOUT.as_secs()),
        })?
        .map_err(|e| RedisError::Connect {
            address: address.to_owned(),
            detail: e.to_string(),
        })
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
    conn: &mut BufReader<TcpStream>,
    out: &mut DuplexStream,
    mark: &[u8],
    address: &str,
) -> Result<u64, RedisError> {
    let mut buffer = vec![0u8; 256 << 10];
    let mut held: Vec<u8> = Vec::with_capacity(buffer.len() + mark.len());
    let mut total = 0u64;
    loop {
        let n = read_some(conn, &mut buffer, address).await?;
        if n == 0 {
            return Err(RedisError::Protocol {
                address: address.to_owned(),
                detail: format!(
                    "the connection closed after {total} snapshot bytes, before the end mark"
                ),
            });
        }
        held.extend_from_slice(&buffer[..n]);
        if let Some(at) = memchr::memmem::find(&held, mark) {
            write_on(out, &held[..at], address).await?;
            return Ok(total + at as u64);
        }
        let keep = mark.len().min(held.len());
        let ready = held.len() - keep;
        write_on(out, &held[..ready], address).await?;
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
