//! Finding the dump and load programs (`mariadb-dump` and `mariadb`, or MySQL's `mysqldump`
//! and `mysql`) that suit a server, and checking their version against it.

use std::path::{Path, PathBuf};

use super::error::MyError;

/// MariaDB or MySQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Self::MariaDb => "MariaDB",
            Self::MySql => "MySQL",
        }
    }
}

/// A server's or program's flavor and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub flavor: Flavor,
    /// Major and minor, for example (10, 11).
    pub major: u32,
    pub minor: u32,
    /// As reported, for example `10.11.19`.
    pub text: String,
}

impl Version {
    /// A server's `SELECT VERSION()`: `10.11.19-MariaDB-0+deb12u1-log`, `8.0.36`.
    pub fn of_server(version: &str) -> Option<Self> {
        let flavor = if version.contains("MariaDB") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        // Old MariaDB servers prefix `5.5.5-` for old clients' sake.
        let version = version.strip_prefix("5.5.5-").unwrap_or(version);
        Self::numbers(flavor, version)
    }

    /// A client program's `--version`: `mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB,
    /// for ...`, `mariadb-dump from 11.4.2-MariaDB, client 10.19 ...`, `mysqldump  Ver 8.0.36
    /// for Linux on x86_64 (MySQL Community Server - GPL)`.
    pub fn of_program(output: &str) -> Option<Self> {
        let flavor = if output.contains("MariaDB") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        let words: Vec<&str> = output.split_whitespace().collect();
        let after = |marker: &str| {
            words
                .iter()
                .position(|w| *w == marker)
                .and_then(|i| words.get(i + 1))
        };
        let version = after("Distrib")
            .or_else(|| after("from"))
            .or_else(|| after("Ver"))?;
        Self::numbers(flavor, version.trim_end_matches(','))
    }

    fn numbers(flavor: Flavor, text: &str) -> Option<Self> {
        let numeric: String = text
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = numeric.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        Some(Self {
            flavor,
            major,
            minor,
            text: numeric.trim_end_matches('.').to_owned(),
        })
    }
}

/// The programs chosen for one server.
#[derive(Clone, Debug)]
pub struct MyTools {
    /// `mariadb-dump` or `mysqldump`.
    pub dump: PathBuf,
    /// `mariadb` or `mysql`.
    pub client: PathBuf,
    pub version: Version,
}

impl MyTools {
    /// The dump program's name and version, for the manifest.
    pub fn describe(&self) -> String {
        let name = self
            .dump
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(
            "{name} {} ({})",
            self.version.text,
            self.version.flavor.name()
        )
    }

    /// The programs in `bin_dir`, or else on `PATH`, that suit `server`: the server's own
    /// flavor preferred; a MariaDB server needs MariaDB's programs. A program older than the
    /// server's major version is refused, naming both.
    pub async fn find(bin_dir: Option<&Path>, server: &Version) -> Result<Self, MyError> {
        let dirs: Vec<PathBuf> = match bin_dir {
            Some(dir) => vec![dir.to_owned()],
            None => std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        };
        let mut found: Vec<Self> = Vec::new();
        for dir in &dirs {
            for (dump, client) in [("mariadb-dump", "mariadb"), ("mysqldump", "mysql")] {
                let dump = dir.join(dump);
                let client = dir.join(client);
                if !(dump.is_file() && client.is_file()) {
                    continue;
                }
                let Ok(output) = crate::engine::child_command(&dump)
                    .arg("--version")
                    .output()
                    .await
                else {
                    continue;
                };
                if let Some(version) = Version::of_program(&String::from_utf8_lossy(&output.stdout))
                {
                    found.push(Self {
                        dump,
                        client,
                        version,
                    });
                }
            }
        }
        choose(found, server)
    }
}

/// The newest suitable programs among `found`, or why none suits.
fn choose(found: Vec<MyTools>, server: &Version) -> Result<MyTools, MyError> {
    let usable =
        |t: &MyTools| server.flavor == Flavor::MySql || t.version.flavor == Flavor::MariaDb;
    let mut candidates: Vec<MyTools> = found.into_iter().filter(usable).collect();
    // Same flavor first, then the newest, then MariaDB's own names (Debian links
    // `mysqldump` to `mariadb-dump`), then the first on PATH.
    candidates.reverse();
    candidates.sort_by_key(|t| {
        (
            t.version.flavor == server.flavor,
            t.version.major,
            t.version.minor,
            t.dump.ends_with("mariadb-dump"),
        )
    });
    let best = candidates.pop().ok_or(MyError::ToolMissing {
        tool: "mariadb-dump",
    })?;
    // Only a program of the server's own flavor has a version to compare.
    if best.version.flavor == server.flavor && best.version.major < server.major {
        return Err(MyError::ToolTooOld {
            tool: best
                .dump
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            found: best.version.text.clone(),
            server: format!("{} {}", server.flavor.name(), server.text),
            flavor: server.flavor.name(),
            needed: format!("{}.{}", server.major, server.minor),
        });
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn versions_of_servers_and_programs() {
        let v = Version::of_server("10.11.19-MariaDB-0+deb12u1-log").unwrap();
        assert_eq!((v.flavor, v.major, v.minor), (Flavor::MariaDb, 10, 11));
        assert_eq!(v.text, "10.11.19");
        let v = Version::of_server("8.0.36").unwrap();
        assert_eq!((v.flavor, v.major, v.minor), (Flavor::MySql, 8, 0));
        let v = Version::of_program(
            "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)\n",
        )
        .unwrap();
        assert_eq!((v.flavor, v.text.as_str()), (Flavor::MariaDb, "10.11.19"));
        let v = Version::of_program("mariadb-dump from 11.4.2-MariaDB, client 10.19 for Linux")
            .unwrap();
        assert_eq!((v.flavor, v.major, v.minor), (Flavor::MariaDb, 11, 4));
        let v = Version::of_program(
            "mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)",
        )
        .unwrap();
        assert_eq!((v.flavor, v.major), (Flavor::MySql, 8));
    }

    fn tools(program: &str) -> MyTools {
        MyTools {
            dump: PathBuf::from("/usr/bin/mariadb-dump"),
            client: PathBuf::from("/usr/bin/mariadb"),
            version: Version::of_program(program).unwrap(),
        }
    }

    #[test]
    fn an_older_client_is_refused_naming_both() {
        let mariadb_10 = "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for Linux";
        let server = Version::of_server("11.4.2-MariaDB").unwrap();
        let e = choose(vec![tools(mariadb_10)], &server)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("10.11.19") && e.contains("MariaDB 11.4.2") && e.contains("11.4"),
            "{e}"
        );
        let server = Version::of_server("10.6.1-MariaDB").unwrap();
        assert!(choose(vec![tools(mariadb_10)], &server).is_ok());
        // MySQL's programs never dump MariaDB.
        let mysql_8 = "mysqldump  Ver 8.4.0 for Linux on x86_64 (MySQL Community Server - GPL)";
        assert!(choose(vec![tools(mysql_8)], &server).is_err());
        // A MySQL server prefers MySQL's programs, and takes MariaDB's without them.
        let server = Version::of_server("8.0.36").unwrap();
        let chosen = choose(vec![tools(mariadb_10), tools(mysql_8)], &server).unwrap();
        assert_eq!(chosen.version.flavor, Flavor::MySql);
        assert!(choose(vec![tools(mariadb_10)], &server).is_ok());
        let mysql_57 = "mysqldump  Ver 5.7.40 for Linux on x86_64 (MySQL Community Server - GPL)";
        assert!(choose(vec![tools(mysql_57)], &server).is_err());
    }
}
