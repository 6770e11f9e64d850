//! A PostgreSQL server named by `postgres://user[:password]@host:port[/db]`, completed from
//! the `PG*` environment variables and a password file (`PGPASSFILE` or `~/.pgpass`) as libpq
//! does. Pure: the environment and the password file are passed in.

use std::collections::HashMap;
use std::str::FromStr;

/// Where a PostgreSQL server is and how to log in. The password never appears in `Display`
/// or `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// The database in the URL (or `PGDATABASE`), if any.
    pub database: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown} is not a PostgreSQL URL: {reason}; use postgres://user[:password]@host:port[/db]")]
pub struct PgUrlError {
    shown: String,
    reason: String,
}

impl PgTarget {
    /// Parses `input`, filling what it leaves out from `env` (`PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGPASSWORD`, `PGDATABASE`) and, for the password, from `passfile` (the contents of a
    /// `.pgpass` file).
    pub fn parse(
        input: &str,
        env: &HashMap<String, String>,
        passfile: Option<&str>,
    ) -> Result<Self, PgUrlError> {
        let error = |reason: String| PgUrlError {
            shown: crate::text::redact_url(input),
            reason,
        };
        if !(input.starts_with("postgres://") || input.starts_with("postgresql://")) {
            return Err(error(
                "the scheme is not postgres:// or postgresql://".to_owned(),
            ));
        }
        let config = tokio_postgres::Config::from_str(input).map_err(|e| error(e.to_string()))?;
        let var = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        let host = match config.get_hosts() {
            [] => var("PGHOST").unwrap_or_else(|| "localhost".to_owned()),
            [tokio_postgres::config::Host::Tcp(host)] => host.clone(),
            [_] => {
                return Err(error(
                    "Unix-socket hosts are not supported; use a host name".to_owned(),
                ));
            }
            _ => return Err(error("give a single host".to_owned())),
        };
        let port = match config.get_ports() {
            [] => var("PGPORT")
                .map(|p| {
                    p.parse::<u16>()
                        .map_err(|_| error(format!("PGPORT {p:?} is not a port")))
                })
                .transpose()?
                .unwrap_or(5432),
            [port] => *port,
            _ => return Err(error("give a single port".to_owned())),
        };
        let user = config
            .get_user()
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .or_else(|| var("PGUSER"))
            .ok_or_else(|| error("the user is missing (put it in the URL or PGUSER)".to_owned()))?;
        let database = config
            .get_dbname()
            .map(str::to_owned)
            .or_else(|| var("PGDATABASE"));
        let password = match config.get_password() {
            Some(bytes) => Some(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| error("the password is not UTF-8".to_owned()))?,
            ),
            None => var("PGPASSWORD").or_else(|| {
                passfile.and_then(|text| {
                    lookup_passfile(text, &host, port, database.as_deref().unwrap_or("*"), &user)
                })
            }),
        };
        Ok(Self {
            host,
            port,
            user,
            password,
            database,
        })
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A `tokio-postgres` configuration for `database`.
    pub fn config(&self, database: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(database)
            .application_name("coffer")
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }
}

impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "postgres://{}@{}", self.user, self.address())?;
        if let Some(db) = &self.database {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// The password for a connection in `.pgpass` format (`host:port:db:user:password`, `*`
/// matching anything, `\\:` and `\\\\` escapes), first match wins.
pub fn lookup_passfile(
    text: &str,
    host: &str,
    port: u16,
    database: &str,
    user: &str,
) -> Option<String> {
    let port = port.to_string();
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .find_map(|line| {
            let fields = split_passfile_line(line);
            let [h, p, d, u, password] = fields.as_slice() else {
                return None;
            };
            let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
            (matches(h, host) && matches(p, &port) && matches(d, database) && matches(u, user))
                .then(|| password.clone())
        })
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(field)) = (chars.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_url_wins_then_the_environment_then_the_passfile() {
        let t = PgTarget::parse(
            "postgres://app:s%40cret@db.shop.svc:5433/shop",
            &env(&[]),
            None,
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("db.shop.svc", 5433, "app")
        );
        assert_eq!(
            (t.password.as_deref(), t.database.as_deref()),
            (Some("s@cret"), Some("shop"))
        );
        assert_eq!(t.to_string(), "postgres://app@db.shop.svc:5433/shop");
        assert!(!format!("{t:?}").contains("cret"));

        let vars = env(&[
            ("PGHOST", "pg"),
            ("PGPORT", "6432"),
            ("PGUSER", "ops"),
            ("PGDATABASE", "x"),
        ]);
        let t = PgTarget::parse("postgres://", &vars, Some("pg:6432:x:ops:from-file\n")).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("pg", 6432, "ops")
        );
        assert_eq!(t.password.as_deref(), Some("from-file"));
        let with_password = env(&[("PGUSER", "ops"), ("PGPASSWORD", "from-env")]);
        let t = PgTarget::parse("postgres://h", &with_password, Some("*:*:*:*:from-file")).unwrap();
        assert_eq!(t.password.as_deref(), Some("from-env"));
    }

    #[test]
    fn passfile_lines_match_with_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:ops:no\n*:5432:*:ops:p\\:w\\\\d:x\n";
        assert_eq!(
            lookup_passfile(text, "h", 5432, "db", "ops").as_deref(),
            Some("p:w\\d:x")
        );
        assert_eq!(lookup_passfile(text, "h", 5433, "db", "ops"), None);
    }

    #[test]
    fn refuses_what_it_cannot_use_without_leaking_the_password() {
        for (url, fragment) in [
            ("mysql://u:pw@h/db", "scheme"),
            ("postgres://:pw@h/db", "user is missing"),
            ("postgres://u:pw@h1,h2/db", "single host"),
        ] {
            let err = PgTarget::parse(url, &env(&[]), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(fragment), "{url}: {err}");
            assert!(!err.contains(":pw@"), "password leaked: {err}");
        }
    }
}
