//! The checks a user adds to a drill, beside the built-in ones: a SQL query that must return
//! true, a Redis command whose reply must match, a path that must exist. Pure parsing and
//! comparison; the engines run them against their scratch instance.

use std::path::{Component, Path};

/// A user's check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserCheck {
    /// `DATABASE: QUERY`: the query, run in the database, returns one value that is true.
    Sql { database: String, query: String },
    /// `COMMAND ARG... => REPLY`: the command's reply, as text, is `reply`.
    Redis { command: Vec<String>, reply: String },
    /// A path of the restored tree (relative to its root) that must exist.
    Path(String),
}

impl UserCheck {
    pub fn parse_sql(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some((database, query)) if !database.trim().is_empty() && !query.trim().is_empty() => {
                Ok(Self::Sql {
                    database: database.trim().to_owned(),
                    query: query.trim().to_owned(),
                })
            }
            _ => Err(format!(
                "--check-sql {text:?} is not DATABASE: QUERY (for example \"app: SELECT count(*) > 0 FROM users\")"
            )),
        }
    }

    pub fn parse_redis(text: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "--check-redis {text:?} is not COMMAND ARG... => REPLY (for example \"GET config:version => 3\")"
            )
        };
        let (command, reply) = text.split_once("=>").ok_or_else(usage)?;
        let command: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if command.is_empty() {
            return Err(usage());
        }
        Ok(Self::Redis {
            command,
            reply: reply.trim().to_owned(),
        })
    }

    pub fn parse_path(text: &str) -> Result<Self, String> {
        let path = Path::new(text);
        let plain = !text.is_empty()
            && path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if plain {
            Ok(Self::Path(text.to_owned()))
        } else {
            Err(format!(
                "--check-path {text:?} is not a relative path inside the restored tree (no leading /, no ..)"
            ))
        }
    }

    /// How the check is named in a report.
    pub fn name(&self) -> String {
        match self {
            Self::Sql { database, query } => format!("sql {database}: {query}"),
            Self::Redis { command, reply } => format!("redis {} => {reply}", command.join(" ")),
            Self::Path(path) => format!("path {path}"),
        }
    }

    /// Which kind of backup the check applies to.
    pub fn fits(&self, kind: &str) -> bool {
        match self {
            Self::Sql { .. } => kind == "postgres" || kind == "mysql",
            Self::Redis { .. } => kind == "redis",
            Self::Path(_) => kind == "volume",
        }
    }
}

/// Whether a SQL check's value is true: a boolean, or the text a client shows for one
/// (`t`, `true`, `1`, any case).
pub fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "t" | "true" | "1"
    )
}

/// The built-in checks of a SQL database's objects besides its tables: for each kind the
/// backup listed (`expected`), whether every one is in what the scratch server holds
/// (`found`, or why it could not be read).
pub fn object_checks(
    database: &str,
    expected: &crate::storage::manifest::DatabaseObjects,
    found: Result<crate::storage::manifest::DatabaseObjects, String>,
) -> Vec<crate::drill::CheckResult> {
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            let name = format!("the objects of database {database}");
            return vec![crate::drill::CheckResult::failed(name, e)];
        }
    };
    expected
        .kinds()
        .into_iter()
        .zip(found.kinds())
        .filter(|((_, expected), _)| !expected.is_empty())
        .map(|((kind, expected), (_, found))| all_present(kind, database, expected, found))
        .collect()
}

/// The built-in check that every object of `kind` (`schemas`, `functions`, ...) database
/// `database` held when backed up is there after the restore. Objects the scratch server has
/// besides (its own `public` schema) do not fail it.
pub fn all_present(
    kind: &str,
    database: &str,
    expected: &[String],
    found: &[String],
) -> crate::drill::CheckResult {
    let name = format!("{kind} of database {database}");
    let found: std::collections::BTreeSet<&str> = found.iter().map(String::as_str).collect();
    let missing: Vec<&str> = expected
        .iter()
        .map(String::as_str)
        .filter(|e| !found.contains(e))
        .collect();
    if missing.is_empty() {
        return crate::drill::CheckResult::passed(
            name,
            format!("{}, as in the backup", expected.len()),
        );
    }
    let shown: Vec<&str> = missing.iter().take(5).copied().collect();
    let more = missing.len() - shown.len();
    crate::drill::CheckResult::failed(
        name,
        format!(
            "{} of {} missing: {}{}",
            missing.len(),
            expected.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_parse_or_say_what_they_should_look_like() {
        assert_eq!(
            UserCheck::parse_sql("app: SELECT count(*) > 0 FROM users").unwrap(),
            UserCheck::Sql {
                database: "app".to_owned(),
                query: "SELECT count(*) > 0 FROM users".to_owned()
            }
        );
        assert!(
            UserCheck::parse_sql("SELECT 1")
                .unwrap_err()
                .contains("is not DATABASE: QUERY")
        );
        assert_eq!(
            UserCheck::parse_redis("HGET user:1 name => Zoë 🐘").unwrap(),
            UserCheck::Redis {
                command: vec!["HGET".to_owned(), "user:1".to_owned(), "name".to_owned()],
                reply: "Zoë 🐘".to_owned()
            }
        );
        assert!(UserCheck::parse_redis("GET x").is_err());
        assert!(UserCheck::parse_redis(" => 1").is_err());
        assert_eq!(
            UserCheck::parse_path("data/PG_VERSION").unwrap(),
            UserCheck::Path("data/PG_VERSION".to_owned())
        );
        for bad in ["", "/etc/passwd", "../x", "a/../../b"] {
            assert!(UserCheck::parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sql_truth() {
        for yes in ["t", "true", "TRUE", "1", " t "] {
            assert!(is_true(yes), "{yes}");
        }
        for no in ["f", "false", "0", "", "2", "yes"] {
            assert!(!is_true(no), "{no}");
        }
    }

    #[test]
    fn every_object_backed_up_must_be_there_and_extras_do_not_fail() {
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let expected = list(&["app", "audit"]);
        let ok = all_present(
            "schemas",
            "shop",
            &expected,
            &list(&["app", "audit", "public"]),
        );
        assert!(ok.passed, "{ok:?}");
        assert_eq!(ok.message, "2, as in the backup");
        let lost = all_present("schemas", "shop", &expected, &list(&["public", "app"]));
        assert!(!lost.passed);
        assert_eq!(lost.name, "schemas of database shop");
        assert_eq!(lost.message, "1 of 2 missing: audit");
        let many: Vec<String> = (0..7).map(|i| format!("f{i}()")).collect();
        let none = all_present("functions", "shop", &many, &[]);
        assert_eq!(
            none.message,
            "7 of 7 missing: f0(), f1(), f2(), f3(), f4() and 2 more"
        );
    }
}
