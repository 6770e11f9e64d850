//! Loading an archive into a server older than `pg_restore`'s own major version 17.
//!
//! From version 17 on, `pg_restore` starts every session with `SET transaction_timeout = 0`,
//! a setting servers before 17 do not know: they refuse it, and `--single-transaction`
//! (which implies `--exit-on-error`) then fails the whole restore. The image carries one
//! client version (the newest, to dump every server up to it), so for those servers
//! `pg_restore` writes the restore as SQL and `psql` runs it, without that one line of the
//! preamble:
//!
//! ```text
//! archive ─▶ pg_restore --file=- ─▶ (this relay) ─▶ psql --set ON_ERROR_STOP=1
//! ```
//!
//! The relay opens the transaction itself (`BEGIN`) and commits it (`COMMIT`) only after
//! `pg_restore` has exited successfully, which it does only after reading the whole archive
//! (its last bytes held back until they matched the manifest): input cut short, bytes that
//! did not match, or any error leave `psql` killed with the transaction open, so the server
//! rolls it back. The SQL that `pg_restore` (17.6 and later) writes is fenced with
//! `\restrict`, so that nothing in an archive can run a psql meta-command.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

use super::super::error::PgError;
use super::super::process::Running;

/// The first major version of `pg_restore` that sets `transaction_timeout`.
pub const SETS_TRANSACTION_TIMEOUT: u32 = 17;

/// The line of the preamble servers before 17 refuse.
const REFUSED: &[u8] = b"SET transaction_timeout = 0;";

/// Which lines of `pg_restore`'s SQL the relay leaves out: the refused setting, and only in
/// the preamble (before the first object, `-- Name:`, and before any data, `COPY`), where
/// it cannot be a row of a table or a line of a function's body.
#[derive(Debug, Default)]
pub struct Preamble {
    over: bool,
    dropped: bool,
}

impl Preamble {
    /// Whether `line` (without its newline) is left out.
    pub fn leaves_out(&mut self, line: &[u8]) -> bool {
        if self.over {
            return false;
        }
        if line.starts_with(b"-- Name:") || line.starts_with(b"COPY ") {
            self.over = true;
            return false;
        }
        if !self.dropped && line == REFUSED {
            self.dropped = true;
            return true;
        }
        false
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
            .arg("--file=-")
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
        relayed.map_err(|e| PgError::Internal(format!("relaying pg_restore's SQL to psql: {e}")))
    }
}

/// Copies `pg_restore`'s SQL to `psql` after a `BEGIN`, leaving out what [`Preamble`] says.
async fn relay(sql: ChildStdout, to_psql: &mut ChildStdin) -> std::io::Result<()> {
    let mut preamble = Preamble::default();
    to_psql.write_all(b"BEGIN;\n").await?;
    let mut lines = BufReader::new(sql);
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await? == 0 {
            return to_psql.flush().await;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if !preamble.leaves_out(text) {
            to_psql.write_all(&line).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(script: &str) -> String {
        let mut preamble = Preamble::default();
        script
            .lines()
            .filter(|l| !preamble.leaves_out(l.as_bytes()))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn only_the_preambles_transaction_timeout_is_left_out() {
        let script = "\\restrict k\nSET statement_timeout = 0;\nSET lock_timeout = 0;\n\
                      SET transaction_timeout = 0;\nSET client_encoding = 'UTF8';\n\
                      --\n-- Name: t; Type: TABLE\n--\nCREATE TABLE t (x text);\n\
                      COPY public.t (x) FROM stdin;\nSET transaction_timeout = 0;\n\\.\n";
        let out = kept(script);
        assert_eq!(
            out.matches("SET transaction_timeout = 0;").count(),
            1,
            "{out}"
        );
        assert!(
            out.contains("COPY public.t (x) FROM stdin;\nSET transaction_timeout = 0;\n"),
            "a row of a table stays: {out}"
        );
        assert!(out.starts_with(
            "\\restrict k\nSET statement_timeout = 0;\nSET lock_timeout = 0;\nSET client_encoding"
        ));
    }

    #[test]
    fn a_second_occurrence_before_any_object_stays() {
        let out = kept("SET transaction_timeout = 0;\nSET transaction_timeout = 0;\n");
        assert_eq!(out, "SET transaction_timeout = 0;\n");
    }

    #[test]
    fn data_before_any_object_ends_the_preamble() {
        let out = kept("COPY t (x) FROM stdin;\nSET transaction_timeout = 0;\n");
        assert!(out.contains("SET transaction_timeout"), "{out}");
    }
}
