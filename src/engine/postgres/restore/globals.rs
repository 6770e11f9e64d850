//! The roles-and-tablespaces script of a backup (`pg_dumpall --globals-only`), read as data
//! before anything of it runs: split into statements, each recognised as one of the few
//! kinds pg_dumpall writes there, then planned against the roles and tablespaces the target
//! already has. Pure; `restore.rs` runs the plan.
//!
//! **Why it is read, not handed to `psql`.** The script comes from the bucket, and whoever
//! can write there could add psql meta-commands (`\! cmd`, `\copy … program`, `\o |cmd`,
//! `\i file`, `\set`, …) that `psql` would run on the machine doing the restore, with its
//! storage credentials. So the script never reaches `psql`: each planned statement is sent
//! on its own over the PostgreSQL protocol (the extended protocol, which also refuses more
//! than one command per message), where there are no meta-commands. On top of that a
//! script holding one is refused outright: a backslash outside string literals, quoted
//! identifiers and comments anywhere in a statement (psql reads meta-commands in the middle
//! of a line too, `SELECT 1 \! cmd`), or a line starting with one. The only exceptions are
//! `\restrict KEY` and `\unrestrict KEY` on lines of their own, which pg_dumpall 17.6, 16.10,
//! 15.14 and newer write around every script (they are dropped: they only matter to psql).
//!
//! String literals are found the way PostgreSQL finds them whatever
//! `standard_conforming_strings` says: pg_dumpall writes every string holding a backslash as
//! `E'…'`, so a backslash in a plain `'…'` string is refused rather than guessed at.
//! Dollar quotes, `U&` strings and parameters (`$1`) never occur in these scripts and are
//! refused too.
//!
//! **Residual risk.** What the script may do is limited to the statements pg_dumpall writes
//! about roles and tablespaces, but those run as the restoring role: a tampered backup can
//! still create a role of its choosing (a superuser with a password it knows, if the
//! restoring role may) or grant roles to existing ones. The databases' own dumps
//! (`pg_restore`) hold arbitrary SQL as well. Restoring roles from a bucket trusts whoever
//! can write to it; `--globals` is off by default.

use std::collections::BTreeSet;

use crate::api::restore_request::RoleConflict;
use crate::text::one_line;

/// A roles script that is not restored, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error(
        "line {line} of the backup's roles script holds the psql meta-command {command}, which pg_dumpall never writes there: the backup may have been tampered with, so no role was restored; restore without --globals, or review the script and load it yourself"
    )]
    MetaCommand { line: usize, command: String },
    #[error(
        "line {line} of the backup's roles script holds {statement}, which is not a statement pg_dumpall --globals-only writes: the backup may have been tampered with, so no role was restored; restore without --globals, or review the script and load it yourself"
    )]
    Unexpected { line: usize, statement: String },
    #[error(
        "line {line} of the backup's roles script cannot be read safely: {problem}; no role was restored: restore without --globals, or review the script and load it yourself"
    )]
    Syntax { line: usize, problem: String },
    #[error(
        "the backup's roles script is in {encoding}, not UTF-8, and holds other characters than ASCII: Coffer restores roles from UTF-8 scripts only; restore without --globals and load the script with psql yourself"
    )]
    Encoding { encoding: String },
}

/// How a token was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A keyword or an unquoted identifier; its value is lower-cased, as PostgreSQL does.
    Word,
    /// A `"quoted identifier"`; its value is the name.
    Quoted,
    /// A string literal (`'…'`, `E'…'`); its value is not decoded.
    Str,
    Number,
    Punct,
}

#[derive(Clone, Debug)]
struct Token {
    kind: Kind,
    value: String,
    /// Byte offsets in the script.
    start: usize,
    end: usize,
}

/// One statement of the script, without its `;`.
#[derive(Clone, Debug)]
struct Raw {
    /// The line it starts on, from 1.
    line: usize,
    tokens: Vec<Token>,
}

/// What a statement does, as far as the restore cares.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    /// `SET` of one of the session settings pg_dumpall writes; run first.
    Set,
    /// `SET client_encoding = '…'`: checked, not run (the connection speaks UTF-8).
    ClientEncoding(String),
    /// `CREATE ROLE name`.
    CreateRole(String),
    /// `ALTER ROLE name WITH|SET|RESET|IN DATABASE …`, `COMMENT ON ROLE`,
    /// `SECURITY LABEL … ON ROLE`: what the role is, which `Keep` leaves alone.
    RoleAttributes(String),
    /// Role memberships (`GRANT role TO role …`) and privileges on configuration
    /// parameters: they only add.
    Grant,
    /// `CREATE TABLESPACE name [OWNER owner] LOCATION '…'`.
    CreateTablespace {
        name: String,
        /// `CREATE TABLESPACE name LOCATION '…'`, as written in the script.
        create: String,
        /// The owner as written in the script.
        owner: Option<String>,
    },
    /// `ALTER TABLESPACE`, `GRANT`/`REVOKE … ON TABLESPACE`, `COMMENT ON TABLESPACE`,
    /// `SECURITY LABEL … ON TABLESPACE`: applied with a tablespace this restore creates.
    TablespaceAttributes(String),
}

#[derive(Clone, Debug)]
struct Statement {
    line: usize,
    /// The statement as written, without the comments before it and its `;`.
    sql: String,
    /// How messages name it: its start up to the role or tablespace, never a password.
    head: String,
    action: Action,
}

/// A roles script that passed every check.
#[derive(Clone, Debug)]
pub struct Script {
    statements: Vec<Statement>,
}

/// One statement to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub sql: String,
    pub head: String,
}

/// What the target already has.
#[derive(Clone, Debug, Default)]
pub struct Existing {
    pub roles: BTreeSet<String>,
    pub tablespaces: BTreeSet<String>,
}

/// What the restore of the roles does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub roles_created: u64,
    /// Roles that exist in the target and are left as they are (`Keep`, and always the
    /// role the restore logs in as).
    pub roles_kept: u64,
    /// Roles that exist in the target and get the backup's attributes (`Replace`).
    pub roles_replaced: u64,
    pub tablespaces_created: u64,
    /// Tablespaces that exist in the target; they are always left as they are.
    pub tablespaces_kept: u64,
}

/// The statements to run, in the order to run them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Session settings, run first.
    pub settings: Vec<Step>,
    /// `CREATE TABLESPACE` (without `OWNER`), which cannot run in a transaction: run one by
    /// one before it, and dropped again if anything after them fails. Named by tablespace.
    pub tablespaces: Vec<(String, Step)>,
    /// Everything else, in the script's order, in one transaction; the owners of the new
    /// tablespaces are set where their `CREATE TABLESPACE` was.
    pub transaction: Vec<Step>,
    pub counts: Counts,
}

impl Script {
    /// Reads and checks a whole script; refuses it if any statement is not one pg_dumpall
    /// writes about roles and tablespaces.
    pub fn parse(bytes: &[u8]) -> Result<Self, ScriptError> {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Err(ScriptError::Encoding {
                encoding: declared_encoding(&String::from_utf8_lossy(bytes))
                    .unwrap_or_else(|| "another encoding".to_owned()),
            });
        };
        let statements = split(text)?
            .into_iter()
            .map(|raw| classify(text, &raw))
            .collect::<Result<Vec<_>, _>>()?;
        let declared = statements.iter().find_map(|s| match &s.action {
            Action::ClientEncoding(encoding) => Some(encoding.clone()),
            _ => None,
        });
        if !text.is_ascii()
            && let Some(encoding) = declared
            && !matches!(
                encoding
                    .to_ascii_uppercase()
                    .replace(['-', '_'], "")
                    .as_str(),
                "UTF8" | "UNICODE"
            )
        {
            return Err(ScriptError::Encoding { encoding });
        }
        Ok(Self { statements })
    }

    /// The steps that restore the script into a target that has `existing`, logged in as
    /// `own_role` (never changed), with `roles` deciding what happens to existing roles.
    pub fn plan(&self, existing: &Existing, own_role: &str, roles: RoleConflict) -> Plan {
        let mut plan = Plan::default();
        // A role is counted once, whatever the script says about it.
        let mut counted = BTreeSet::new();
        let left_alone = |role: &str| {
            role == own_role || (roles == RoleConflict::Keep && existing.roles.contains(role))
        };
        for statement in &self.statements {
            let step = || Step {
                line: statement.line,
                sql: statement.sql.clone(),
                head: statement.head.clone(),
            };
            match &statement.action {
                Action::Set => plan.settings.push(step()),
                Action::ClientEncoding(_) => {}
                Action::CreateRole(role) => {
                    let first = counted.insert(role.clone());
                    if left_alone(role) {
                        plan.counts.roles_kept += u64::from(first);
                    } else if existing.roles.contains(role) {
                        // Replaced by the statements that follow; it cannot be created.
                        plan.counts.roles_replaced += u64::from(first);
                    } else {
                        plan.counts.roles_created += u64::from(first);
                        plan.transaction.push(step());
                    }
                }
                Action::RoleAttributes(role) => {
                    if !left_alone(role) {
                        plan.transaction.push(step());
                    }
                }
                Action::Grant => plan.transaction.push(step()),
                Action::CreateTablespace {
                    name,
                    create,
                    owner,
                } => {
                    if existing.tablespaces.contains(name) {
                        plan.counts.tablespaces_kept += 1;
                        continue;
                    }
                    plan.counts.tablespaces_created += 1;
                    plan.tablespaces.push((
                        name.clone(),
                        Step {
                            sql: create.clone(),
                            ..step()
                        },
                    ));
                    if let Some(owner) = owner {
                        let quoted = crate::engine::postgres::catalog::quote_ident(name);
                        plan.transaction.push(Step {
                            sql: format!("ALTER TABLESPACE {quoted} OWNER TO {owner}"),
                            ..step()
                        });
                    }
                }
                Action::TablespaceAttributes(name) => {
                    if !existing.tablespaces.contains(name) {
                        plan.transaction.push(step());
                    }
                }
            }
        }
        plan
    }
}

/// The encoding named by the script's `SET client_encoding = '…'`, if any.
fn declared_encoding(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("SET client_encoding = '")?;
        Some(rest.split('\'').next()?.to_owned())
    })
}

/// Splits a script into statements of tokens, refusing meta-commands and anything whose
/// extent PostgreSQL could read differently.
fn split(script: &str) -> Result<Vec<Raw>, ScriptError> {
    let b = script.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut statements = Vec::new();
    let mut tokens: Vec<Token> = Vec::new();
    let mut first_line = 1;
    let mut line = 1;
    let mut i = 0;
    let syntax = |line: usize, problem: &str| ScriptError::Syntax {
        line,
        problem: problem.to_owned(),
    };
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b'\n' => {
                line += 1;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | 0x0b | 0x0c => {
                i += 1;
                continue;
            }
            b'-' if at(i + 1) == b'-' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if at(i + 1) == b'*' => {
                let opened = line;
                let mut depth = 0usize;
                loop {
                    match (at(i), at(i + 1)) {
                        (0, _) if i >= b.len() => {
                            return Err(syntax(opened, "a /* comment is never closed"));
                        }
                        (b'/', b'*') => {
                            depth += 1;
                            i += 2;
                        }
                        (b'*', b'/') => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (b'\n', _) => {
                            line += 1;
                            i += 1;
                        }
                        _ => i += 1,
                    }
                }
                continue;
            }
            b';' => {
                if !tokens.is_empty() {
                    statements.push(Raw {
                        line: first_line,
                        tokens: std::mem::take(&mut tokens),
                    });
                }
                i += 1;
                continue;
            }
            b'\\' => {
                // psql's command names: a run of letters and digits, or one other character.
                let after = &script[i + 1..];
                let length = match after.chars().next() {
                    Some(c) if c.is_ascii_alphanumeric() || c == '_' => after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len()),
                    Some(c) => c.len_utf8(),
                    None => 0,
                };
                let end = i + 1 + length;
                let command = &script[i..end];
                let line_start = script[..i].rfind('\n').map_or(0, |p| p + 1);
                let rest_of_line = script[end..].split('\n').next().unwrap_or_default();
                let key = rest_of_line.trim();
                let alone = tokens.is_empty() && script[line_start..i].trim().is_empty();
                if alone
                    && (command == "\\restrict" || command == "\\unrestrict")
                    && rest_of_line.starts_with([' ', '\t'])
                    && !key.is_empty()
                    && key.bytes().all(|c| c.is_ascii_alphanumeric())
                {
                    i = end + rest_of_line.len();
                    continue;
                }
                return Err(ScriptError::MetaCommand {
                    line,
                    command: command
                        .chars()
                        .take(32)
                        .map(|c| if c.is_control() { '?' } else { c })
                        .collect(),
                });
            }
            b'\'' => {
                let opened = line;
                i = string(b, i + 1, false, &mut line).map_err(|p| syntax(opened, p))?;
                Kind::Str
            }
            b'e' | b'E' if at(i + 1) == b'\'' => {
                let opened = line;
                i = string(b, i + 2, true, &mut line).map_err(|p| syntax(opened, p))?;
                Kind::Str
            }
            b'u' | b'U' if at(i + 1) == b'&' && matches!(at(i + 2), b'\'' | b'"') => {
                return Err(syntax(line, "U& escapes are not written by pg_dumpall"));
            }
            b'$' => {
                return Err(syntax(
                    line,
                    "a dollar quote or parameter ($) is not written by pg_dumpall",
                ));
            }
            b'"' => {
                i += 1;
                loop {
                    match at(i) {
                        0 if i >= b.len() => {
                            return Err(syntax(line, "a quoted name never ends"));
                        }
                        b'"' if at(i + 1) == b'"' => i += 2,
                        b'"' => break,
                        b'\n' => {
                            line += 1;
                            i += 1;
                        }
                        _ => i += 1,
                    }
                }
                i += 1;
                Kind::Quoted
            }
            b'0'..=b'9' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                Kind::Number
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'$') || b[i] >= 0x80)
                {
                    i += 1;
                }
                Kind::Word
            }
            c if c.is_ascii_punctuation() => {
                i += 1;
                Kind::Punct
            }
            _ => return Err(syntax(line, "it holds a control character")),
        };
        let text = &script[start..i];
        let value = match kind {
            Kind::Word => text.to_ascii_lowercase(),
            Kind::Quoted => text[1..text.len() - 1].replace("\"\"", "\""),
            _ => text.to_owned(),
        };
        if kind == Kind::Quoted && value.is_empty() {
            return Err(syntax(line, "a quoted name is empty"));
        }
        if tokens.is_empty() {
            first_line = line - text.matches('\n').count();
        }
        tokens.push(Token {
            kind,
            value,
            start,
            end: i,
        });
    }
    if !tokens.is_empty() {
        statements.push(Raw {
            line: first_line,
            tokens,
        });
    }
    Ok(statements)
}

/// The end (one past the closing quote) of a string literal whose body starts at `i`.
/// A backslash in a plain string is refused: its meaning depends on
/// `standard_conforming_strings`, and pg_dumpall writes such strings as `E'…'`.
fn string(b: &[u8], mut i: usize, escapes: bool, line: &mut usize) -> Result<usize, &'static str> {
    loop {
        match *b.get(i).ok_or("a string never ends")? {
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Ok(i + 1),
            b'\\' if !escapes => {
                return Err(
                    "a string holds a backslash but is not written E'…' as pg_dumpall writes it",
                );
            }
            b'\\' => {
                if b.get(i + 1) == Some(&b'\n') {
                    *line += 1;
                }
                i += 2;
            }
            b'\n' => {
                *line += 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// Words that are not role names when unquoted: `ALTER ROLE CURRENT_USER …` would change
/// the restoring role itself.
const NOT_NAMES: [&str; 7] = [
    "current_user",
    "current_role",
    "session_user",
    "user",
    "all",
    "public",
    "none",
];

/// Recognises a statement, or refuses it.
fn classify(script: &str, raw: &Raw) -> Result<Statement, ScriptError> {
    let t = &raw.tokens;
    let word = |i: usize| {
        t.get(i)
            .filter(|t| t.kind == Kind::Word)
            .map(|t| t.value.as_str())
    };
    let words = |at: usize, expected: &[&str]| {
        expected
            .iter()
            .enumerate()
            .all(|(k, w)| word(at + k) == Some(w))
    };
    let name = |i: usize| {
        t.get(i)
            .filter(|t| {
                t.kind == Kind::Quoted
                    || (t.kind == Kind::Word && !NOT_NAMES.contains(&t.value.as_str()))
            })
            .map(|t| t.value.clone())
    };
    let text = |from: usize, to: usize| script[t[from].start..t[to].end].to_owned();
    let last = t.len() - 1;
    let unexpected = || {
        let shown = one_line(&text(0, last.min(2)));
        ScriptError::Unexpected {
            line: raw.line,
            statement: if shown.chars().count() > 60 {
                format!("{}…", shown.chars().take(60).collect::<String>())
            } else {
                shown
            },
        }
    };
    let statement = |head_to: usize, action: Action| Statement {
        line: raw.line,
        sql: text(0, last),
        head: {
            let head = one_line(&text(0, head_to));
            let head = if head.chars().count() > 100 {
                format!("{}…", head.chars().take(100).collect::<String>())
            } else {
                head
            };
            if head_to < last && !head.ends_with('…') {
                format!("{head} …")
            } else {
                head
            }
        },
        action,
    };
    // The position of the first top-level word `w` from `from`.
    let find = |from: usize, w: &str| (from..t.len()).find(|&i| word(i) == Some(w));

    if words(0, &["set"]) {
        let setting = word(1).ok_or_else(unexpected)?;
        let assigned = t.len() == 4
            && (t[2].value == "=" || word(2) == Some("to"))
            && matches!(t[3].kind, Kind::Str | Kind::Word | Kind::Number);
        return match setting {
            "client_encoding" if assigned && t[3].kind == Kind::Str => {
                let quoted = &t[3].value;
                let encoding = quoted.get(1..quoted.len() - 1).unwrap_or_default();
                Ok(statement(1, Action::ClientEncoding(encoding.to_owned())))
            }
            "default_transaction_read_only"
            | "standard_conforming_strings"
            | "escape_string_warning"
                if assigned =>
            {
                Ok(statement(1, Action::Set))
            }
            _ => Err(unexpected()),
        };
    }
    if words(0, &["create", "role"]) && t.len() == 3 {
        let role = name(2).ok_or_else(unexpected)?;
        return Ok(statement(2, Action::CreateRole(role)));
    }
    if words(0, &["alter", "role"])
        && let Some(role) = name(2)
        && let Some(next) = word(3)
    {
        let settings = matches!(next, "with" | "set" | "reset")
            || (next == "in" && words(4, &["database"]) && name(5).is_some());
        if settings {
            return Ok(statement(2, Action::RoleAttributes(role)));
        }
        return Err(unexpected());
    }
    // COMMENT ON ROLE|TABLESPACE name IS …; SECURITY LABEL [FOR provider] ON … name IS …
    let on = if words(0, &["comment", "on"]) {
        Some(2)
    } else if words(0, &["security", "label", "on"]) {
        Some(3)
    } else if words(0, &["security", "label", "for"]) && name(3).is_some() && words(4, &["on"]) {
        Some(5)
    } else {
        None
    };
    if let Some(on) = on {
        let object = name(on + 1).filter(|_| words(on + 2, &["is"]));
        return match (word(on), object) {
            (Some("role"), Some(role)) => Ok(statement(on + 1, Action::RoleAttributes(role))),
            (Some("tablespace"), Some(space)) => {
                Ok(statement(on + 1, Action::TablespaceAttributes(space)))
            }
            _ => Err(unexpected()),
        };
    }
    if words(0, &["grant"]) || words(0, &["revoke"]) {
        let grant = words(0, &["grant"]);
        let to = find(1, if grant { "to" } else { "from" }).ok_or_else(unexpected)?;
        return match find(1, "on").filter(|&on| on < to) {
            // GRANT role[, …] TO role[, …] [WITH …] [GRANTED BY …]
            None if grant => Ok(statement(last, Action::Grant)),
            Some(on) if grant && words(on + 1, &["parameter"]) => {
                Ok(statement(last, Action::Grant))
            }
            Some(on) if words(on + 1, &["tablespace"]) && to == on + 3 => {
                let space = name(on + 2).ok_or_else(unexpected)?;
                Ok(statement(last, Action::TablespaceAttributes(space)))
            }
            _ => Err(unexpected()),
        };
    }
    if words(0, &["create", "tablespace"]) {
        let space = name(2).ok_or_else(unexpected)?;
        let (owner, location) = if words(3, &["owner"]) {
            name(4).ok_or_else(unexpected)?;
            (Some(text(4, 4)), 5)
        } else {
            (None, 3)
        };
        if !(words(location, &["location"])
            && t.get(location + 1).is_some_and(|t| t.kind == Kind::Str)
            && location + 1 == last)
        {
            return Err(unexpected());
        }
        let create = format!("{} {}", text(0, 2), text(location, last));
        return Ok(statement(
            2,
            Action::CreateTablespace {
                name: space,
                create,
                owner,
            },
        ));
    }
    if words(0, &["alter", "tablespace"])
        && let Some(space) = name(2)
        && matches!(word(3), Some("set" | "reset" | "owner"))
    {
        return Ok(statement(2, Action::TablespaceAttributes(space)));
    }
    Err(unexpected())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pg_dumpall --globals-only` of a PostgreSQL 15.18 server as a superuser, with
    /// `\restrict`, a role name that needs quotes, a comment holding a backslash and a
    /// semicolon, settings, a membership, a parameter privilege and a tablespace.
    const DUMPALL_15: &str = r#"--
-- PostgreSQL database cluster dump
--

\restrict 0q3QQYsHg3owYwoiEgHHdJLemYPp82UYrjXj3ObbBbaBFB1i3m2nsb2DQlIPkYG

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "We'ird Role";
ALTER ROLE "We'ird Role" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:Npvlr4KEvndwSqORFNp4Cg==$mtAY77V2xzgJ0g6CBchyeOirNfjszYbiE7Sgp0ALseY=:QdFM6+JkULHzDWBDtMVDYXQCKsIeeobnWF74t2PvpJQ=';
COMMENT ON ROLE app IS E'the app\\! ; role';
CREATE ROLE grp;
ALTER ROLE grp WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE "x;y";
ALTER ROLE "x;y" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS VALID UNTIL '2030-01-01 00:00:00+00';

--
-- User Configurations
--

--
-- User Config "app"
--

ALTER ROLE app SET search_path TO 'a', 'b';


--
-- Role memberships
--

GRANT grp TO app WITH ADMIN OPTION GRANTED BY postgres;


--
-- Role privileges on configuration parameters
--

GRANT SET ON PARAMETER work_mem TO app;


--
-- Tablespaces
--

CREATE TABLESPACE fast OWNER postgres LOCATION '/tmp/pgx/ts';
ALTER TABLESPACE fast SET (random_page_cost=1.1);
GRANT ALL ON TABLESPACE fast TO app;
COMMENT ON TABLESPACE fast IS 'ssd';


\unrestrict 0q3QQYsHg3owYwoiEgHHdJLemYPp82UYrjXj3ObbBbaBFB1i3m2nsb2DQlIPkYG

--
-- PostgreSQL database cluster dump complete
--

"#;

    fn existing(roles: &[&str], tablespaces: &[&str]) -> Existing {
        Existing {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            tablespaces: tablespaces.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn sql(steps: &[Step]) -> Vec<&str> {
        steps.iter().map(|s| s.sql.as_str()).collect()
    }

    #[test]
    fn a_real_script_is_understood() {
        let script = Script::parse(DUMPALL_15.as_bytes()).unwrap();
        let plan = script.plan(
            &existing(&["postgres"], &[]),
            "postgres",
            RoleConflict::Keep,
        );
        assert_eq!(
            sql(&plan.settings),
            [
                "SET default_transaction_read_only = off",
                "SET standard_conforming_strings = on"
            ]
        );
        assert_eq!(
            plan.tablespaces,
            [(
                "fast".to_owned(),
                Step {
                    line: 57,
                    sql: "CREATE TABLESPACE fast LOCATION '/tmp/pgx/ts'".to_owned(),
                    head: "CREATE TABLESPACE fast …".to_owned(),
                }
            )]
        );
        let steps = sql(&plan.transaction);
        assert_eq!(steps[0], "CREATE ROLE \"We'ird Role\"");
        assert!(steps.contains(&"COMMENT ON ROLE app IS E'the app\\\\! ; role'"));
        assert!(steps.contains(&"CREATE ROLE \"x;y\""));
        assert!(steps.contains(&"GRANT grp TO app WITH ADMIN OPTION GRANTED BY postgres"));
        assert!(steps.contains(&"GRANT SET ON PARAMETER work_mem TO app"));
        assert!(steps.contains(&"ALTER TABLESPACE \"fast\" OWNER TO postgres"));
        assert!(steps.contains(&"COMMENT ON TABLESPACE fast IS 'ssd'"));
        assert!(
            !steps.iter().any(|s| s.contains("ROLE postgres")),
            "{steps:?}"
        );
        assert_eq!(
            plan.counts,
            Counts {
                roles_created: 4,
                roles_kept: 1,
                roles_replaced: 0,
                tablespaces_created: 1,
                tablespaces_kept: 0,
            }
        );
        // Messages name a statement by its start, never its password.
        let alter = plan
            .transaction
            .iter()
            .find(|s| s.sql.starts_with("ALTER ROLE app WITH"))
            .unwrap();
        assert_eq!((alter.line, alter.head.as_str()), (19, "ALTER ROLE app …"));
    }

    #[test]
    fn existing_roles_are_kept_or_replaced_and_the_own_role_is_never_touched() {
        let script = Script::parse(DUMPALL_15.as_bytes()).unwrap();
        let target = existing(&["postgres", "app"], &["fast"]);
        let keep = script.plan(&target, "postgres", RoleConflict::Keep);
        let steps = sql(&keep.transaction);
        assert!(!steps.iter().any(|s| s.contains("ROLE app")), "{steps:?}");
        // Memberships and privileges only add, and are applied.
        assert!(steps.contains(&"GRANT grp TO app WITH ADMIN OPTION GRANTED BY postgres"));
        // An existing tablespace is left alone, its grants included.
        assert!(keep.tablespaces.is_empty());
        assert!(!steps.iter().any(|s| s.contains("TABLESPACE")), "{steps:?}");
        assert_eq!((keep.counts.roles_created, keep.counts.roles_kept), (3, 2));
        assert_eq!(keep.counts.tablespaces_kept, 1);

        let replace = script.plan(&target, "postgres", RoleConflict::Replace);
        let steps = sql(&replace.transaction);
        assert!(!steps.contains(&"CREATE ROLE app"));
        assert!(steps.iter().any(|s| s.starts_with("ALTER ROLE app WITH")));
        assert!(steps.contains(&"ALTER ROLE app SET search_path TO 'a', 'b'"));
        assert!(steps.contains(&"COMMENT ON ROLE app IS E'the app\\\\! ; role'"));
        assert!(
            !steps.iter().any(|s| s.contains("ROLE postgres")),
            "{steps:?}"
        );
        assert_eq!(
            (
                replace.counts.roles_created,
                replace.counts.roles_kept,
                replace.counts.roles_replaced
            ),
            (3, 1, 1)
        );
        // Logged in as another role, `postgres` is replaced like any other.
        let other = script.plan(&target, "app", RoleConflict::Replace);
        assert!(
            sql(&other.transaction)
                .iter()
                .any(|s| s.starts_with("ALTER ROLE postgres WITH"))
        );
        assert!(
            !sql(&other.transaction)
                .iter()
                .any(|s| s.starts_with("ALTER ROLE app"))
        );
    }

    fn refused(script: &str) -> ScriptError {
        Script::parse(script.as_bytes()).unwrap_err()
    }

    #[test]
    fn meta_commands_are_refused_wherever_psql_would_run_them() {
        for (script, line, command) in [
            ("CREATE ROLE a;\n\\! touch /tmp/x\n", 2, "\\!"),
            ("\\copy t from program 'id'\n", 1, "\\copy"),
            ("\\o |sh\n", 1, "\\o"),
            ("\\i /etc/passwd\n", 1, "\\i"),
            ("\\set ON_ERROR_STOP 0\n", 1, "\\set"),
            ("  \\connect other\n", 1, "\\connect"),
            ("CREATE ROLE a; \\! id\n", 1, "\\!"),
            ("CREATE ROLE a \\g\n", 1, "\\g"),
            ("CREATE ROLE a\n\\gexec\n", 2, "\\gexec"),
            ("CREATE ROLE \"a\"\\!id;", 1, "\\!"),
            ("\\restrict\n", 1, "\\restrict"),
            ("\\restrict key; \\! id\n", 1, "\\restrict"),
            ("CREATE ROLE a; \\restrict abc\n", 1, "\\restrict"),
            ("\\", 1, "\\"),
        ] {
            assert_eq!(
                refused(script),
                ScriptError::MetaCommand {
                    line,
                    command: command.to_owned()
                },
                "{script:?}"
            );
        }
        let message = refused("\\! touch /tmp/x\n").to_string();
        assert!(
            message.starts_with(
                "line 1 of the backup's roles script holds the psql meta-command \\!,"
            ) && message.contains("restore without --globals"),
            "{message}"
        );
    }

    #[test]
    fn backslashes_inside_literals_names_and_comments_are_data() {
        let script = "-- a comment \\! id\n/* and \\! /* nested */ one */\n\
                      COMMENT ON ROLE \"a\\!b\" IS E'x\\' \\! y';\n\
                      \\restrict abcDEF123\n\\unrestrict abcDEF123\n";
        let plan = Script::parse(script.as_bytes()).unwrap().plan(
            &Existing::default(),
            "postgres",
            RoleConflict::Keep,
        );
        assert_eq!(
            sql(&plan.transaction),
            ["COMMENT ON ROLE \"a\\!b\" IS E'x\\' \\! y'"]
        );
        assert_eq!(plan.transaction[0].line, 3);
        // A plain string's backslash means different things under different settings.
        assert!(matches!(
            refused("COMMENT ON ROLE a IS 'x\\'; \\! id --';"),
            ScriptError::Syntax { line: 1, .. }
        ));
        for script in [
            "COMMENT ON ROLE a IS 'never ends;",
            "CREATE ROLE \"a;",
            "/* never ends",
            "COMMENT ON ROLE a IS $$x$$;",
            "COMMENT ON ROLE a IS U&'\\0041';",
            "CREATE ROLE a\u{1};",
        ] {
            assert!(
                matches!(refused(script), ScriptError::Syntax { .. }),
                "{script:?}"
            );
        }
    }

    #[test]
    fn only_statements_about_roles_and_tablespaces_are_accepted() {
        for script in [
            "COPY (SELECT 1) TO PROGRAM 'id';",
            "DO 'begin end';",
            "ALTER SYSTEM SET archive_command = 'x';",
            "SET search_path = evil;",
            "SET client_encoding = 'UTF8', x;",
            "CREATE ROLE a SUPERUSER;",
            "ALTER ROLE CURRENT_USER WITH PASSWORD 'x';",
            "ALTER ROLE a RENAME TO b;",
            "CREATE TABLESPACE t LOCATION '/x' WITH (seq_page_cost=1);",
            "ALTER TABLESPACE t RENAME TO u;",
            "GRANT ALL ON DATABASE d TO a;",
            "REVOKE a FROM b;",
            "COMMENT ON DATABASE d IS 'x';",
            "DROP ROLE a;",
            "SELECT 1; CREATE ROLE a;",
        ] {
            let error = refused(script);
            assert!(
                matches!(error, ScriptError::Unexpected { line: 1, .. }),
                "{script:?}: {error:?}"
            );
        }
        let message = refused("\n\nALTER ROLE a RENAME TO \"very secret name\";").to_string();
        assert!(
            message.starts_with("line 3 of the backup's roles script holds ALTER ROLE a,"),
            "{message}"
        );
    }

    #[test]
    fn scripts_in_other_encodings_are_refused_unless_plain_ascii() {
        let latin1 = b"SET client_encoding = 'LATIN1';\nCREATE ROLE \"caf\xe9\";\n";
        assert_eq!(
            Script::parse(latin1).unwrap_err(),
            ScriptError::Encoding {
                encoding: "LATIN1".to_owned()
            }
        );
        let mislabelled = "SET client_encoding = 'LATIN1';\nCREATE ROLE \"café\";\n";
        assert!(matches!(
            Script::parse(mislabelled.as_bytes()).unwrap_err(),
            ScriptError::Encoding { .. }
        ));
        let ascii = "SET client_encoding = 'SQL_ASCII';\nCREATE ROLE cafe;\n";
        assert!(Script::parse(ascii.as_bytes()).is_ok());
        let utf8 = "SET client_encoding = 'UTF8';\nCREATE ROLE \"café\";\n";
        let plan = Script::parse(utf8.as_bytes()).unwrap().plan(
            &Existing::default(),
            "postgres",
            RoleConflict::Keep,
        );
        assert_eq!(sql(&plan.transaction), ["CREATE ROLE \"café\""]);
    }

    #[test]
    fn unquoted_names_fold_to_lower_case_like_postgresql() {
        let script = Script::parse(b"CREATE ROLE App;\nALTER ROLE App WITH LOGIN;\n").unwrap();
        let plan = script.plan(&existing(&["app"], &[]), "postgres", RoleConflict::Keep);
        assert!(plan.transaction.is_empty());
        let plan = script.plan(&existing(&["App"], &[]), "postgres", RoleConflict::Keep);
        assert_eq!(plan.transaction.len(), 2);
    }
}
