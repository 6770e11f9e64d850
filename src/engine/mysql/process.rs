//! Running the MySQL/MariaDB client programs: the login through a private option file given
//! with `--defaults-file` (never the command line or the environment), the only option file
//! they read: settings in the user's own files (`~/.my.cnf`, `/etc/mysql`, `.mylogin.cnf`)
//! cannot send them to another host or change what a dump holds (`no-data`, `where`,
//! `skip-comments`...). Coffer reads the login it needs from `~/.my.cnf` itself (see
//! [`super::target`]). The end of their stderr is kept, without row data, for messages.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::error::{MyError, needed_privilege, without_row_data};
use super::target::MyTarget;
use super::tools::Flavor;
use crate::text::one_line;

/// How much of a program's stderr is kept for its error message.
const STDERR_TAIL: usize = 2048;

/// A private directory holding an option file with the login; removed when dropped.
pub struct Credentials {
    dir: tempfile::TempDir,
}

impl Credentials {
    /// The login for programs of `flavor`. TLS is off, as for the engine's own connection
    /// (Coffer has no TLS settings for sources yet): MariaDB's 11.4+ programs otherwise
    /// require it, and fail against a server without it.
    pub fn new(target: &MyTarget, flavor: Flavor) -> Result<Self, MyError> {
        let io =
            |e: std::io::Error| MyError::Internal(format!("writing a temporary option file: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("coffer-mysql-")
            .tempdir()
            .map_err(io)?;
        let mut text = format!(
            "[client]\nhost={}\nport={}\nuser={}\nprotocol=TCP\n",
            quoted(&target.host),
            target.port,
            quoted(&target.user)
        );
        if let Some(password) = &target.password {
            text.push_str(&format!("password={}\n", quoted(password)));
        }
        text.push_str(match flavor {
            Flavor::MariaDb => "skip-ssl\n",
            Flavor::MySql => "ssl-mode=DISABLED\n",
        });
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join("my.cnf"))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io)?;
        Ok(Self { dir })
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("my.cnf")
    }
}

/// A value for an option file: double-quoted, with `\` and `"` escaped.
fn quoted(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

/// A program ready to run with the credentials; `MYSQL_PWD` and `MYSQL_HOST` are taken out of
/// its environment so the option file decides.
pub fn command(program: &Path, credentials: &Credentials) -> Command {
    let mut command = crate::engine::child_command(program);
    command
        .env_remove("MYSQL_PWD")
        .env_remove("MYSQL_HOST")
        .env_remove("MYSQL_TCP_PORT")
        .env_remove("MYSQL_HOME")
        .env_remove("MYSQL_TEST_LOGIN_FILE")
        // MySQL's programs read `~/.mylogin.cnf` even with --defaults-file.
        .env("HOME", credentials.dir.path())
        .arg(format!("--defaults-file={}", credentials.file().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A running program and the collector of its stderr.
pub struct Running {
    pub child: Child,
    stderr: JoinHandle<String>,
    tool: String,
    subject: String,
    address: String,
    user: String,
}

impl Running {
    pub fn spawn(
        mut command: Command,
        target: &MyTarget,
        subject: String,
    ) -> Result<Self, MyError> {
        let tool = command
            .as_std()
            .get_program()
            .to_string_lossy()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut child = command.spawn().map_err(|e| MyError::Tool {
            tool: tool.clone(),
            subject: subject.clone(),
            status: "could not start".to_owned(),
            stderr: e.to_string(),
        })?;
        let stderr = child.stderr.take();
        let collector = tokio::spawn(async move {
            let mut tail = String::new();
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).split(b'\n');
                while let Ok(Some(line)) = lines.next_segment().await {
                    tail.push_str(&without_row_data(&String::from_utf8_lossy(&line)));
                    tail.push('\n');
                    if tail.len() > 4 * STDERR_TAIL {
                        let mut start = tail.len() - STDERR_TAIL;
                        while !tail.is_char_boundary(start) {
                            start += 1;
                        }
                        tail.drain(..start);
                    }
                }
            }
            tail
        });
        Ok(Self {
            child,
            stderr: collector,
            tool,
            subject,
            address: target.address(),
            user: target.user.clone(),
        })
    }

    /// Like [`Running::finish`], but kills the program when `stop` is sent before it exited
    /// (so that it never sees the end of its input).
    pub async fn finish_unless(
        mut self,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<String, MyError> {
        tokio::select! {
            Ok(()) = stop => {
                let _ = self.child.start_kill();
            }
            _ = self.child.wait() => {}
        }
        self.finish().await
    }

    /// Waits for the program; a failure says why in one line. Returns what it said.
    pub async fn finish(mut self) -> Result<String, MyError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| MyError::Internal(format!("waiting for {}: {e}", self.tool)))?;
        let said = self.stderr.await.unwrap_or_default();
        if status.success() {
            return Ok(said);
        }
        Err(classify(
            &self.tool,
            &self.subject,
            &self.address,
            &self.user,
            &status.to_string(),
            &said,
        ))
    }
}

/// What a failed program's stderr means.
fn classify(
    tool: &str,
    subject: &str,
    address: &str,
    user: &str,
    status: &str,
    said: &str,
) -> MyError {
    let text = without_row_data(&one_line(said));
    // A refused login (1045 when connecting); the same code for a statement (`ERROR 1045
    // ... at line N`, a GRANT beyond the account's privileges) is not about the password.
    let login_refused = ["ERROR 1045", "error: 1045", "Got error: 1045"]
        .iter()
        .any(|m| text.contains(m))
        && !text.contains(" at line ");
    if login_refused {
        return MyError::Auth {
            address: address.to_owned(),
            user: user.to_owned(),
            detail: text,
        };
    }
    if let Some(privilege) = needed_privilege(&text) {
        let alternative = "use an account that has it".to_owned();
        return MyError::Privilege {
            address: address.to_owned(),
            user: user.to_owned(),
            privilege,
            what: format!("{tool} {subject}"),
            alternative,
        };
    }
    if [
        "Can't connect to",
        "Unknown MySQL server host",
        "Unknown server host",
    ]
    .iter()
    .any(|m| text.contains(m))
    {
        return MyError::Connect {
            address: address.to_owned(),
            detail: text,
        };
    }
    if [
        "Lost connection to",
        "server has gone away",
        "Got error: 2013",
        "Error 2013",
        "Error 2006",
    ]
    .iter()
    .any(|m| text.contains(m))
    {
        return MyError::Dropped {
            address: address.to_owned(),
            what: format!("running {tool} {subject}"),
            detail: text,
        };
    }
    // `mariadb-dump --system=users` meeting an account for a host name on a server with
    // skip-name-resolve: the account cannot be shown, so it cannot be backed up.
    if text.contains("SHOW CREATE USER") && text.contains("(1133)") {
        return MyError::Usage(format!(
            "{tool} {subject} failed: the server has an account it cannot show ({}): with skip-name-resolve, accounts for host names are dead; drop them (DROP USER), or back up without users",
            text.split("SHOW CREATE USER ")
                .nth(1)
                .and_then(|rest| rest.split('\'').nth(1).zip(rest.split('\'').nth(3)))
                .map(|(u, h)| format!("{u}@{h}"))
                .unwrap_or_else(|| "an account".to_owned())
        ));
    }
    let stderr = if text.len() > STDERR_TAIL {
        let mut start = text.len() - STDERR_TAIL;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!("…{}", &text[start..])
    } else if text.is_empty() {
        "no message".to_owned()
    } else {
        text
    };
    MyError::Tool {
        tool: tool.to_owned(),
        subject: subject.to_owned(),
        status: status.to_owned(),
        stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_file_values_are_quoted() {
        assert_eq!(quoted(r#"p"a\ss#;x"#), r#""p\"a\\ss#;x""#);
    }

    #[test]
    fn failures_are_classified() {
        let e = classify(
            "mariadb-dump",
            "of database \"shop\"",
            "db:3306",
            "app",
            "exit status: 2",
            "mariadb-dump: Couldn't execute 'FLUSH TABLES WITH READ LOCK': Access denied; you need (at least one of) the RELOAD privilege(s) for this operation (1227)\n",
        )
        .to_string();
        assert!(e.contains("lacks the RELOAD privilege"), "{e}");
        let e = classify(
            "mariadb-dump",
            "x",
            "db:3306",
            "app",
            "exit status: 2",
            "mariadb-dump: Got error: 2013: \"Lost connection to server during query\" when dumping table `t` at row: 5",
        );
        assert!(matches!(e, MyError::Dropped { .. }), "{e}");
        let e = classify(
            "mariadb",
            "x",
            "db:3306",
            "app",
            "exit status: 1",
            "ERROR 1062 (23000) at line 40: Duplicate entry 'jane' for key 'PRIMARY'",
        )
        .to_string();
        assert!(!e.contains("jane") && e.contains("line 40"), "{e}");
        let e = classify(
            "mariadb-dump",
            "of the accounts at db:3306",
            "db:3306",
            "backup",
            "exit status: 2",
            "mariadb-dump: Couldn't execute 'SHOW CREATE USER 'root'@'mysql-0'': Can't find any matching row in the user table (1133)",
        )
        .to_string();
        assert!(
            e.contains("(root@mysql-0)") && e.contains("back up without users"),
            "{e}"
        );
    }
}
