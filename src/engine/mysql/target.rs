//! A MySQL or MariaDB server named by `mysql://user[:password]@host[:port][/db]` (or
//! `mariadb://`), completed the way the server's own client programs do: the password from
//! `MYSQL_PWD`, else from the `[client]` group of an option file (`~/.my.cnf`); the host from
//! `MYSQL_HOST`, the port from `MYSQL_TCP_PORT`. Pure: the environment and the option file
//! are passed in.

use std::collections::HashMap;

/// Where a MySQL/MariaDB server is and how to log in. The password never appears in
/// `Display` or `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct MyTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// The database in the URL, if any.
    pub database: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown} is not a MySQL URL: {reason}; use mysql://user[:password]@host:port[/db]")]
pub struct MyUrlError {
    shown: String,
    reason: String,
}

/// The port MySQL and MariaDB listen on by default.
pub const DEFAULT_PORT: u16 = 3306;

impl MyTarget {
    /// Parses `input`, filling what it leaves out from `env` and, for the user and the
    /// password, from `option_file` (the text of a `my.cnf`).
    pub fn parse(
        input: &str,
        env: &HashMap<String, String>,
        option_file: Option<&str>,
    ) -> Result<Self, MyUrlError> {
        let error = |reason: &str| MyUrlError {
            shown: crate::text::redact_url(input),
            reason: reason.to_owned(),
        };
        if !(input.starts_with("mysql://") || input.starts_with("mariadb://")) {
            return Err(error("the scheme is not mysql:// or mariadb://"));
        }
        let url = url::Url::parse(input).map_err(|e| error(&e.to_string()))?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| error("a part of it is not UTF-8 once decoded"))
        };
        let var = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        let options = option_file.map(client_options).unwrap_or_default();
        let host = match url.host_str().filter(|h| !h.is_empty()) {
            Some(host) => host.trim_matches(['[', ']']).to_owned(),
            None => var("MYSQL_HOST").unwrap_or_else(|| "localhost".to_owned()),
        };
        let port = match url.port() {
            Some(port) => port,
            None => match var("MYSQL_TCP_PORT") {
                Some(p) => p
                    .parse()
                    .map_err(|_| error(&format!("MYSQL_TCP_PORT {p:?} is not a port")))?,
                None => DEFAULT_PORT,
            },
        };
        let user = match url.username() {
            "" => options.get("user").cloned().ok_or_else(|| {
                error("the user is missing (put it in the URL or in ~/.my.cnf's [client] group)")
            })?,
            user => decode(user)?,
        };
        let password = match url.password() {
            Some(p) => Some(decode(p)?),
            None => var("MYSQL_PWD").or_else(|| options.get("password").cloned()),
        };
        let database = match url.path().trim_start_matches('/') {
            "" => None,
            path if path.contains('/') => return Err(error("give at most one database")),
            path => Some(decode(path)?),
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
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same server with another default database.
    pub fn with_database(&self, database: Option<&str>) -> Self {
        Self {
            database: database.map(str::to_owned),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for MyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mysql://{}@{}", self.user, self.address())?;
        if let Some(db) = &self.database {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for MyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MyTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .finish()
    }
}

/// `user` and `password` from the `[client]`, `[client-server]` and `[client-mariadb]`
/// groups of an option file, the later ones winning as the client programs read them.
/// Values may be quoted; `!include` lines are not followed.
pub fn client_options(text: &str) -> HashMap<String, String> {
    let mut options = HashMap::new();
    let mut in_client = false;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(group) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_client = matches!(
                group.trim(),
                "client" | "client-server" | "client-mariadb" | "mysql" | "mariadb-client"
            );
            continue;
        }
        if !in_client {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().replace('_', "-");
        if key != "user" && key != "password" {
            continue;
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| value.to_owned());
        options.insert(key, value);
    }
    options
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn urls_with_everything() {
        let t =
            MyTarget::parse("mysql://app:p%40ss@db.shop.svc:3307/shop", &env(&[]), None).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("db.shop.svc", 3307, "app")
        );
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.database.as_deref(), Some("shop"));
        assert_eq!(t.to_string(), "mysql://app@db.shop.svc:3307/shop");
        assert!(!format!("{t:?}").contains("p@ss"));
    }

    #[test]
    fn the_password_comes_from_mysql_pwd_then_the_option_file() {
        let cnf = "[mysqld]\npassword=server\n[client]\nuser = cli\npassword = \"from file\"\n";
        let t = MyTarget::parse("mysql://h", &env(&[]), Some(cnf)).unwrap();
        assert_eq!(t.user, "cli");
        assert_eq!(t.password.as_deref(), Some("from file"));
        assert_eq!(t.port, DEFAULT_PORT);
        let t = MyTarget::parse("mysql://u@h", &env(&[("MYSQL_PWD", "env")]), Some(cnf)).unwrap();
        assert_eq!((t.user.as_str(), t.password.as_deref()), ("u", Some("env")));
        let t = MyTarget::parse("mysql://u:url@h", &env(&[("MYSQL_PWD", "env")]), None).unwrap();
        assert_eq!(t.password.as_deref(), Some("url"));
    }

    #[test]
    fn bad_urls_say_what_to_write_without_the_password() {
        let e = MyTarget::parse("postgres://u:secret@h", &env(&[]), None).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(e.to_string().contains("mysql://user"), "{e}");
        let e = MyTarget::parse("mysql://h", &env(&[]), None).unwrap_err();
        assert!(e.to_string().contains("the user is missing"), "{e}");
        let e = MyTarget::parse("mysql://u@h/a/b", &env(&[]), None).unwrap_err();
        assert!(e.to_string().contains("at most one database"), "{e}");
    }
}
