//! Loading an archive into a server older than `pg_restore`'s own major version 17.
//!
//! From version 17 on, `pg_restore` starts every session with `SET transaction_timeout = 0`,
//! a setting servers before 17 do not know: they refuse it, and `--single-transaction`
//! (which implies `--exit-on-error`) then fails the whole restore. The image carries one
//! client version (the newest, to dump every server up to it), so for those servers
//! `pg_restore --single-transaction` writes the restore as SQL and `psql` runs it, without
//! that one line of the preamble:
//!
//! ```text
//! archive ─▶ pg_restore --single-transaction --file=- ─▶ (this relay) ─▶ psql --set ON_ERROR_STOP=1
//! ```
//!
//! The relay ([`Relay`]) holds back the script's `COMMIT` and sends it only after
//! `pg_restore` has exited successfully, which it does only after reading the whole archive
//! (its last bytes held back until they matched the manifest): input cut short, bytes that
//! did not match, or any error leave `psql` killed inside the transaction, which the server
//! then rolls back. It refuses a script that does not open its transaction (`BEGIN`) before
//! the first object or does not end with `COMMIT`, and one not fenced with `\restrict`
//! (`pg_restore` 17.6 and later): inside the fence, nothing in an archive can run a psql
//! meta-command. Memory stays bounded: only the start of each line is looked at.

use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

use super::super::error::PgError;
use super::super::process::Running;

/// The first major version of `pg_restore` that sets `transaction_timeout`.
pub const SETS_TRANSACTION_TIMEOUT: u32 = 17;

/// The line of the preamble servers before 17 refuse.
const REFUSED: &[u8] = b"SET transaction_timeout = 0;";
/// How much of a line the relay looks at; longer lines pass through unlooked-at (none of the
/// lines it acts on is that long: `\restrict` and its key are under 100 bytes).
const LOOKED_AT: usize = 256;
/// The most the relay holds back after a `COMMIT` (the blank lines, comments and
/// `\unrestrict` that end a script).
const HELD_MAX: usize = 64 << 10;

/// A script the relay will not pass to psql.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error(
        "pg_restore's SQL is not fenced with \restrict (pg_restore 17.6 or later is needed to restore through psql into a server older than 17)"
    )]
    NotRestricted,
    #[error("pg_restore's SQL does not open a transaction before its first object")]
    NoTransaction,
    #[error("pg_restore's SQL does not end with COMMIT")]
    NoCommit,
}

/// What the relay does with a line.
enum Action {
    Send,
    Drop,
    /// `COMMIT;`: held back until a line shows it was not the script's end.
    Hold,
    /// A blank line, a comment or `\unrestrict`: held after a held `COMMIT`, else sent.
    Trail,
}

/// The relay between `pg_restore`'s SQL and `psql`, as pure logic over chunks of bytes.
#[derive(Debug, Default)]
pub struct Relay {
    /// The start of the current line (up to [`LOOKED_AT`] bytes), not sent yet.
    line: Vec<u8>,
    /// The current line was longer and its start was already dealt with: the rest passes.
    passing: bool,
    /// A line other than a blank line or comment was seen (the first must be `\restrict`).
    code: bool,
    began: bool,
    preamble_over: bool,
    dropped: bool,
    /// A `COMMIT;` line and the trailing lines after it, not sent yet.
    held: Vec<u8>,
}

impl Relay {
    /// Takes the next chunk of `pg_restore`'s SQL; appends what psql may have to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RelayError> {
        while !input.is_empty() {
            let (part, ended, rest) = match input.iter().position(|&b| b == b'\n') {
                Some(at) => (&input[..at], true, &input[at + 1..]),
                None => (input, false, &input[input.len()..]),
            };
            input = rest;
            if self.passing {
                out.extend_from_slice(part);
                if ended {
                    out.push(b'\n');
                    self.passing = false;
                }
                continue;
            }
            self.line.extend_from_slice(part);
            if self.line.len() > LOOKED_AT {
                let line = std::mem::take(&mut self.line);
                self.act(&line, false, out)?;
                if ended {
                    out.push(b'\n');
                } else {
                    self.passing = true;
                }
            } else if ended {
                let mut line = std::mem::take(&mut self.line);
                line.push(b'\n');
                self.act(&line, true, out)?;
            }
        }
        Ok(())
    }

    /// The end of the script: appends what may still go to psql before its `COMMIT` (the
    /// trailing lines), or refuses a script that did not open and end its transaction.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), RelayError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.act(&line, true, out)?;
        }
        if !self.began {
            return Err(RelayError::NoTransaction);
        }
        let Some(trailing) = self.held.strip_prefix(b"COMMIT;\n") else {
            return Err(RelayError::NoCommit);
        };
        out.extend_from_slice(trailing);
        Ok(())
    }

    /// Deals with one line: `line` is all of it (with its newline) when `whole`, else its
    /// start (the rest passes through after it).
    fn act(&mut self, line: &[u8], whole: bool, out: &mut Vec<u8>) -> Result<(), RelayError> {
        match self.decide(line, whole)? {
            Action::Drop => {}
            Action::Hold => {
                out.append(&mut self.held);
                self.held.extend_from_slice(line);
            }
            Action::Trail if !self.held.is_empty() => {
                self.held.extend_from_slice(line);
                if self.held.len() > HELD_MAX {
                    out.append(&mut self.held);
                }
            }
            Action::Trail | Action::Send => {
                out.append(&mut self.held);
                out.extend_from_slice(line);
            }
        }
        Ok(())
    }

    fn decide(&mut self, line: &[u8], whole: bool) -> Result<Action, RelayError> {
        let text = if whole {
            line.strip_suffix(b"\n").unwrap_or(line)
        } else {
            line
        };
        let blank = whole && text.iter().all(u8::is_ascii_whitespace);
        let comment = text.starts_with(b"--");
        if !blank && !comment && !self.code {
            self.code = true;
            if !text.starts_with(b"\\restrict ") {
                return Err(RelayError::NotRestricted);
            }
        }
        if !self.preamble_over {
            if text.starts_with(b"-- Name:") || text.starts_with(b"COPY ") {
                if !self.began {
                    return Err(RelayError::NoTransaction);
                }
                self.preamble_over = true;
            } else if whole && text == b"BEGIN;" {
                self.began = true;
            } else if whole && !self.dropped && text == REFUSED {
                self.dropped = true;
                return Ok(Action::Drop);
            }
        }
        if whole && text == b"COMMIT;" {
            return Ok(Action::Hold);
        }
        if blank || comment || text.starts_with(b"\\unrestrict") {
            return Ok(Action::Trail);
        }
        Ok(Action::Send)
    }
}

/// `pg_restore` and `psql`, started; [`Loading::finish_unless`] ends them.
pub struct Loading {
    pg_restore: Running,
    psql: Running,
    sql: ChildStdout,
    to_psql: ChildStdin,
}

impl Loading {
    /// Starts both programs; returns them and `pg_restore`'s stdin (the archive goes there).
    pub fn start(
        mut pg_restore: Command,
        mut psql: Command,
        subject: &str,
    ) -> Result<(Self, ChildStdin), PgError> {
        pg_restore
            .args(["--single-transaction", "--file=-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        psql.args(["--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let mut restoring = Running::spawn(pg_restore, "pg_restore", subject.to_owned())?;
        let mut loading = Running::spawn(psql, "psql", subject.to_owned())?;
        let missing = |what: &str| PgError::Internal(format!("{what} is not a pipe"));
        let stdin = restoring
            .child
            .stdin
            .take()
            .ok_or_else(|| missing("pg_restore's stdin"))?;
        let sql = restoring
            .child
            .stdout
            .take()
            .ok_or_else(|| missing("pg_restore's stdout"))?;
        let to_psql = loading
            .child
            .stdin
            .take()
            .ok_or_else(|| missing("psql's stdin"))?;
        Ok((
            Self {
                pg_restore: restoring,
                psql: loading,
                sql,
                to_psql,
            },
            stdin,
        ))
    }

    /// Relays the SQL until `pg_restore` is done, then commits, unless `stop` was sent first
    /// (the archive did not match) or anything failed: then `psql` is killed before it can
    /// commit.
    pub async fn finish_unless(self, stop: oneshot::Receiver<()>) -> Result<(), PgError> {
        let Self {
            pg_restore,
            mut psql,
            sql,
            mut to_psql,
        } = self;
        let relayed = relay(sql, &mut to_psql);
        let (relayed, restored) = tokio::join!(relayed, pg_restore.finish_unless(stop));
        if let (Ok(()), Ok(_)) = (&relayed, &restored) {
            let committed = to_psql.write_all(b"COMMIT;\n").await;
            drop(to_psql);
            let loaded = psql.finish().await.map(|_| ());
            return loaded
                .and(committed.map_err(|e| PgError::Internal(format!("writing to psql: {e}"))));
        }
        // psql never gets a COMMIT. If it stopped on its own, its error explains the rest
        // (pg_restore then could not write to it).
        drop(to_psql);
        let psql_failed = matches!(psql.child.try_wait(), Ok(Some(status)) if !status.success());
        if !psql_failed {
            let _ = psql.child.start_kill();
        }
        let loaded = psql.finish().await;
        if psql_failed {
            loaded?;
        }
        restored?;
        relayed
    }
}

/// Copies `pg_restore`'s SQL to `psql` through a [`Relay`], all of it but the final
/// `COMMIT`.
async fn relay(mut sql: ChildStdout, to_psql: &mut ChildStdin) -> Result<(), PgError> {
    let failed =
        |e: std::io::Error| PgError::Internal(format!("relaying pg_restore's SQL to psql: {e}"));
    let refused = |e: RelayError| PgError::Internal(e.to_string());
    let mut relay = Relay::default();
    let mut chunk = vec![0; 64 << 10];
    let mut out = Vec::with_capacity(chunk.len() + LOOKED_AT);
    loop {
        let read = sql.read(&mut chunk).await.map_err(failed)?;
        if read == 0 {
            break;
        }
        relay.push(&chunk[..read], &mut out).map_err(refused)?;
        to_psql.write_all(&out).await.map_err(failed)?;
        out.clear();
    }
    relay.finish(&mut out).map_err(refused)?;
    to_psql.write_all(&out).await.map_err(failed)?;
    to_psql.flush().await.map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "\\restrict Qx9kT2mZ8rB4vN7cL1pW5sD3fH6jG0aYeU8iO2tR4yM7nK9bV3cX5zA1sF6gJ";

    /// The script as `pg_restore --single-transaction --file=-` (17.6+) writes it, with `body`
    /// as its objects.
    fn script(body: &str) -> String {
        format!(
            "--\n-- PostgreSQL database dump\n--\n\n{KEY}\n\nSET statement_timeout = 0;\n\
             SET lock_timeout = 0;\nSET transaction_timeout = 0;\nSET client_encoding = 'UTF8';\n\n\
             BEGIN;\n\n{body}COMMIT;\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict Qx9k\n\n"
        )
    }

    /// What the relay sends, fed `input` in chunks of `size` bytes.
    fn relayed(input: &str, size: usize) -> Result<String, RelayError> {
        let mut relay = Relay::default();
        let mut out = Vec::new();
        for chunk in input.as_bytes().chunks(size) {
            relay.push(chunk, &mut out)?;
        }
        relay.finish(&mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    const BODY: &str = "--\n-- Name: t; Type: TABLE\n--\n\nCREATE TABLE t (x text);\n\n\
                        COPY public.t (x) FROM stdin;\nSET transaction_timeout = 0;\nCOMMIT;\n\n-- a row\nlast\n\\.\n\n";

    #[test]
    fn everything_but_the_refused_setting_and_the_final_commit_goes_to_psql() {
        for size in [1, 7, 64, 100_000] {
            let out = relayed(&script(BODY), size).unwrap();
            let expected = script(BODY)
                .replacen("SET transaction_timeout = 0;\n", "", 1)
                .replacen(
                    "COMMIT;\n\n--\n-- PostgreSQL database dump complete",
                    "\n--\n-- PostgreSQL database dump complete",
                    1,
                );
            assert_eq!(out, expected, "chunks of {size}");
            // Rows that look like the lines the relay acts on stay, in their order.
            assert!(
                out.contains(
                    "FROM stdin;\nSET transaction_timeout = 0;\nCOMMIT;\n\n-- a row\nlast\n"
                ),
                "{out}"
            );
            assert!(!out.ends_with("COMMIT;\n"), "{out}");
        }
    }

    #[test]
    fn a_script_cut_short_is_refused() {
        // Up to its data, a cut script has no COMMIT to hold. (Past a row that reads
        // `COMMIT;` the relay cannot tell: there the COMMIT is only ever sent when pg_restore
        // exited successfully, after its whole input matched; see `Loading`.)
        let full = script(BODY);
        let data = full.find("COPY ").unwrap();
        for cut in 0..data {
            assert!(
                relayed(&full[..cut], 5).is_err(),
                "cut at {cut}: {:?}",
                &full[..cut]
            );
        }
    }

    #[test]
    fn scripts_without_fence_or_transaction_are_refused() {
        let unfenced = script(BODY).replace(KEY, "");
        assert_eq!(relayed(&unfenced, 10), Err(RelayError::NotRestricted));
        let no_begin = script(BODY).replace("BEGIN;\n", "");
        assert_eq!(relayed(&no_begin, 10), Err(RelayError::NoTransaction));
    }

    #[test]
    fn long_lines_pass_through_unlooked_at() {
        let long = "x".repeat(10 * LOOKED_AT);
        let body = format!("-- Name: t\nCOPY t (x) FROM stdin;\n{long}\n\\.\n");
        let out = relayed(&script(&body), 97).unwrap();
        assert!(out.contains(&format!("\n{long}\n")));
    }
}
