//! Running PostgreSQL's client programs: credentials through a private password file (never
//! the command line or the environment), and the end of their stderr kept for messages.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::error::PgError;
use super::target::PgTarget;
use crate::text::one_line;

/// How much of a program's stderr is kept for its error message.
const STDERR_TAIL: usize = 2048;

/// What a tool's failure adds when it said the server dropped the connection.
pub const DROPPED_HINT: &str = ": the server dropped the connection (a restart, a failover, a killed backend); check its log, then run it again";

/// A private directory holding a `.pgpass` for one target; removed when dropped.
pub struct Credentials {
    dir: tempfile::TempDir,
}

impl Credentials {
    pub fn new(target: &PgTarget) -> Result<Self, PgError> {
        let io = |e: std::io::Error| {
            PgError::Internal(format!("writing a temporary password file: {e}"))
        };
        let dir = tempfile::Builder::new()
            .prefix("coffer-pg-")
            .tempdir()
            .map_err(io)?;
        let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        let line = format!(
            "{}:{}:*:{}:{}\n",
            escape(&target.host),
            target.port,
            escape(&target.user),
            escape(target.password.as_deref().unwrap_or_default())
        );
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join("pgpass"))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(io)?;
        Ok(Self { dir })
    }

    fn passfile(&self) -> std::path::PathBuf {
        self.dir.path().join("pgpass")
    }
}

/// A libpq connection string (no password) for `database`.
pub fn conninfo(target: &PgTarget, database: &str) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    format!(
        "host={} port={} user={} dbname={} connect_timeout=10 application_name=coffer",
        quote(&target.host),
        target.port,
        quote(&target.user),
        quote(database)
    )
}

/// A program ready to run with the credentials, its environment cleaned of `PG*` variables.
pub fn command(program: &Path, credentials: &Credentials) -> Command {
    let mut command = crate::engine::child_command(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(&key);
        }
    }
    command
        .env("PGPASSFILE", credentials.passfile())
        .arg("--no-password")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// What a program said on stderr: the end of it, and its `ERROR:` lines sorted into those
/// about objects that already exist (counted) and the others (the first few kept).
#[derive(Clone, Debug, Default)]
pub struct Said {
    pub tail: String,
    pub already_exists: u64,
    pub other_errors: u64,
    pub first_errors: Vec<String>,
    /// Whether it said the server dropped the connection.
    pub dropped: bool,
    after_detail: bool,
}

impl Said {
    const KEPT_ERRORS: usize = 5;

    fn line(&mut self, raw: &str) {
        self.dropped |= dropped(raw);
        let known = LINE_STARTS.iter().any(|p| raw.trim_start().starts_with(p));
        if self.after_detail && !known {
            return;
        }
        self.after_detail = is_detail(raw);
        let line = &without_row_data(raw);
        if line.contains("ERROR:") {
            if line.contains("already exists") {
                self.already_exists += 1;
            } else {
                self.other_errors += 1;
                if self.first_errors.len() < Self::KEPT_ERRORS {
                    self.first_errors.push(one_line(line));
                }
            }
        }
        self.tail.push_str(line);
        self.tail.push('\n');
        if self.tail.len() > 4 * STDERR_TAIL {
            let mut start = self.tail.len() - STDERR_TAIL;
            while !self.tail.is_char_boundary(start) {
                start += 1;
            }
            self.tail.drain(..start);
        }
    }
}

/// Whether a tool's stderr says the server went away under it.
fn dropped(said: &str) -> bool {
    [
        "server closed the connection unexpectedly",
        "terminating connection due to",
        "could not receive data from server",
        "no connection to the server",
    ]
    .iter()
    .any(|m| said.contains(m))
}

/// The beginnings of the lines PostgreSQL's tools and server messages start with; any other
/// line after a `DETAIL:` or `CONTEXT:` line continues a value quoted there (a newline in
/// the data) and is left out.
const LINE_STARTS: [&str; 13] = [
    "pg_dump:",
    "pg_restore:",
    "pg_dumpall:",
    "psql:",
    "ERROR:",
    "DETAIL:",
    "CONTEXT:",
    "HINT:",
    "WARNING:",
    "FATAL:",
    "STATEMENT:",
    "Command was:",
    "LINE ",
];

/// Whether a line is a server's `DETAIL:`/`CONTEXT:` (or a tool's `detail:`), the lines that
/// quote table data.
fn is_detail(line: &str) -> bool {
    ["DETAIL:", "CONTEXT:", "detail:"]
        .iter()
        .any(|m| line.contains(m))
}

/// A line of a PostgreSQL tool's stderr without the table data some messages quote (the
/// row a COPY failed at, a failing row, a key's values, a value that is not valid): errors
/// end up in logs, status and Events, and the data may be personal. What follows the first
/// `(`, `=` or `"` of a `DETAIL:`/`CONTEXT:` line, and what follows `: "` anywhere, is left
/// out; identifiers (`relation "x"`) and the rest of the message stay.
fn without_row_data(line: &str) -> String {
    const LEFT_OUT: &str = "(data left out)";
    let mut line = line.to_owned();
    if let Some(at) = line.find(": \"") {
        line = format!("{}: {LEFT_OUT}", &line[..at]);
    }
    let marker = ["DETAIL:", "CONTEXT:", "detail:"]
        .iter()
        .filter_map(|m| line.find(m).map(|at| at + m.len()))
        .min();
    if let Some(after) = marker
        && let Some(cut) = line[after..].find(['(', '=', '"'])
    {
        line = format!("{}{LEFT_OUT}", &line[..after + cut]);
    }
    line
}

/// A running program and the collector of its stderr.
pub struct Running {
    pub child: Child,
    stderr: JoinHandle<Said>,
    tool: &'static str,
    subject: String,
}

impl Running {
    pub fn spawn(
        mut command: Command,
        tool: &'static str,
        subject: String,
    ) -> Result<Self, PgError> {
        let mut child = command.spawn().map_err(|e| PgError::Tool {
            tool,
            subject: subject.clone(),
            status: "could not start".to_owned(),
            stderr: e.to_string(),
        })?;
        let stderr = child.stderr.take();
        let collector = tokio::spawn(async move {
            let mut said = Said::default();
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).split(b'\n');
                while let Ok(Some(line)) = lines.next_segment().await {
                    said.line(&String::from_utf8_lossy(&line));
                }
            }
            said
        });
        Ok(Self {
            child,
            stderr: collector,
            tool,
            subject,
        })
    }

    /// Like [`Running::finish`], but kills the program when `stop` is sent before it exited
    /// (so that it never sees the end of its input).
    pub async fn finish_unless(
        mut self,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<Said, PgError> {
        tokio::select! {
            Ok(()) = stop => {
                let _ = self.child.start_kill();
            }
            _ = self.child.wait() => {}
        }
        self.finish().await
    }

    /// Waits for the program; a failure carries the end of its stderr. Returns what it said.
    pub async fn finish(mut self) -> Result<Said, PgError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| PgError::Internal(format!("waiting for {}: {e}", self.tool)))?;
        let said = self.stderr.await.unwrap_or_default();
        if status.success() {
            return Ok(said);
        }
        let text = one_line(&said.tail);
        let tail = if text.len() > STDERR_TAIL {
            let mut start = text.len() - STDERR_TAIL;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            format!("…{}", &text[start..])
        } else {
            text
        };
        let hint = if said.dropped { DROPPED_HINT } else { "" };
        Err(PgError::Tool {
            tool: self.tool,
            subject: self.subject,
            status: status.to_string(),
            stderr: if tail.is_empty() {
                "no message".to_owned()
            } else {
                format!("{tail}{hint}")
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_data_is_left_out_of_what_a_tool_said() {
        let mut said = Said::default();
        for line in [
            "pg_restore: error: COPY failed for table \"events\": FATAL: terminating connection",
            "CONTEXT:  COPY events, line 82042: \"82042\tjane@example.com\"",
            "CONTEXT:  COPY t, line 3, column email: \"jane@example.com\"",
            "DETAIL:  Failing row contains (1, jane@example.com).",
            "DETAIL:  Key (email)=(jane@example.com) already exists.",
            "DETAIL:  Key (name)=(Smith) Jr) already exists.",
            "DETAIL:  Key (period)=([2026-01-01,2026-02-01)) conflicts with existing key (period)=([2026-01-15,2026-03-01)).",
            "DETAIL:  Partition key of the failing row contains (email) = (jane@example.com).",
            "DETAIL:  Failing row contains (1, first line of a secret",
            "second secret line).",
            "pg_restore: error: could not execute query: ERROR:  invalid input syntax for type integer: \"jane\"",
            "pg_dump: detail: Error message from server: server closed the connection unexpectedly",
        ] {
            said.line(line);
        }
        for secret in ["jane", "Jr", "2026-01-15", "second secret", "82042\t"] {
            assert!(!said.tail.contains(secret), "{secret} in {}", said.tail);
        }
        // What helps stays: the table, the line, the column names' owner, the cause.
        assert!(
            said.tail.contains("COPY events, line 82042"),
            "{}",
            said.tail
        );
        assert!(said.tail.contains("relation") || said.tail.contains("integer"));
        assert!(
            said.tail.contains("server closed the connection"),
            "{}",
            said.tail
        );
        assert!(said.dropped);
        assert!(dropped(
            "pg_dump: detail: server closed the connection unexpectedly"
        ));
        assert!(!dropped("ERROR:  relation \"x\" already exists"));
        let plain =
            "pg_restore: error: could not execute query: ERROR:  relation \"x\" already exists";
        assert_eq!(without_row_data(plain), plain);
    }

    #[test]
    fn conninfo_quotes_values() {
        let target = PgTarget {
            host: "db".into(),
            port: 5432,
            user: "o'brien".into(),
            password: Some("secret".into()),
            database: None,
        };
        let info = conninfo(&target, "my db");
        assert_eq!(
            info,
            "host='db' port=5432 user='o\\'brien' dbname='my db' connect_timeout=10 application_name=coffer"
        );
        assert!(!info.contains("secret"));
    }

    #[test]
    fn stderr_errors_are_sorted_and_the_tail_is_bounded() {
        let mut said = Said::default();
        for i in 0..2000 {
            said.line(&format!("psql:-:{i}: ERROR:  role \"r{i}\" already exists"));
        }
        said.line("psql:-:9: ERROR:  could not set permissions on directory \"/x\"");
        said.line("NOTICE: fine");
        assert_eq!((said.already_exists, said.other_errors), (2000, 1));
        assert!(said.first_errors[0].contains("could not set permissions"));
        assert!(said.tail.len() <= 4 * STDERR_TAIL && said.tail.ends_with("NOTICE: fine\n"));
    }
}
