//! Finding `pg_dump`, `pg_dumpall`, `pg_restore` and `psql`, and checking their version.

use std::path::{Path, PathBuf};

use super::error::PgError;

/// The client programs of one PostgreSQL installation.
#[derive(Clone, Debug)]
pub struct PgTools {
    pub pg_dump: PathBuf,
    pub pg_dumpall: PathBuf,
    pub pg_restore: PathBuf,
    pub psql: PathBuf,
    /// The major version of these programs, for example 15.
    pub major: u32,
    /// `pg_dump --version`'s version, for example `15.18`.
    pub version: String,
}

impl PgTools {
    /// The programs in `bin_dir`, or else the newest installation found on `PATH` or in
    /// Debian's `/usr/lib/postgresql/<version>/bin`, whose major version is at least
    /// `at_least` (the server's, for a backup; the archive's, for a restore).
    pub async fn find(
        bin_dir: Option<&Path>,
        at_least: u32,
        what: &'static str,
    ) -> Result<Self, PgError> {
        let candidates: Vec<PathBuf> = match bin_dir {
            Some(dir) => vec![dir.to_owned()],
            None => candidate_dirs(),
        };
        let mut newest: Option<Self> = None;
        for dir in candidates {
            let Some(tools) = Self::in_dir(&dir).await else {
                continue;
            };
            if newest.as_ref().is_none_or(|n| tools.major > n.major) {
                newest = Some(tools);
            }
        }
        let tools = newest.ok_or(PgError::ToolMissing { tool: "pg_dump" })?;
        if tools.major < at_least {
            return Err(PgError::ToolTooOld {
                tool: "pg_dump",
                found: tools.major,
                needed: at_least,
                what,
            });
        }
        Ok(tools)
    }

    async fn in_dir(dir: &Path) -> Option<Self> {
        let pick = |name: &str| {
            let path = dir.join(name);
            path.is_file().then_some(path)
        };
        let pg_dump = pick("pg_dump")?;
        let output = crate::engine::child_command(&pg_dump)
            .arg("--version")
            .output()
            .await
            .ok()?;
        let (major, version) = parse_version(&String::from_utf8_lossy(&output.stdout))?;
        Some(Self {
            pg_dumpall: pick("pg_dumpall")?,
            pg_restore: pick("pg_restore")?,
            psql: pick("psql")?,
            pg_dump,
            major,
            version,
        })
    }
}

/// Directories that may hold the programs: every `PATH` entry with `pg_dump`, then
/// `/usr/lib/postgresql/*/bin`.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        dirs.extend(entries.flatten().map(|e| e.path().join("bin")));
    }
    dirs.retain(|d| d.join("pg_dump").is_file());
    dirs
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → (15, "15.18").
pub fn parse_version(text: &str) -> Option<(u32, String)> {
    let version = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let major = version.split(['.', 'b', 'r']).next()?.parse().ok()?;
    Some((major, version.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some((15, "15.18".into()))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 17.2"),
            Some((17, "17.2".into()))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 18beta1"),
            Some((18, "18beta1".into()))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 9.6.24"),
            Some((9, "9.6.24".into()))
        );
        assert_eq!(parse_version("nothing here"), None);
    }
}
