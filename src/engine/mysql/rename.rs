//! Loading a database's dump under another name.
//!
//! A dump of one database names no database but in one kind of line: around each routine,
//! event and trigger whose collation differs from the database's, `mariadb-dump` and
//! `mysqldump` switch the database's default character set for the object's creation and
//! back (`ALTER DATABASE `shop` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;`). Loaded
//! into another database as they are, those lines alter the original (on the target server
//! it may be a live database, or missing, which fails the restore) and the routine gets the
//! wrong database collation. [`Renaming`] rewrites exactly those lines, at the start of a
//! line, to name the target database; everything else passes through unchanged. Memory stays
//! bounded: only the start of each line is looked at.

use super::client::ident;

/// The statement's words before the database's quoted name.
const ALTER: &str = "ALTER DATABASE ";
/// The words after it, with the space that ends the name.
const AFTER: &str = " CHARACTER SET ";

/// The filter between a dump and the client program, as pure logic over chunks of bytes.
#[derive(Debug)]
pub struct Renaming {
    /// `ALTER DATABASE `old` CHARACTER SET `: the start of a line that is rewritten.
    from: Vec<u8>,
    /// The same start naming the target database.
    to: Vec<u8>,
    /// The start of the current line (shorter than `from`), not sent yet.
    line: Vec<u8>,
    /// The current line's start was dealt with: the rest passes until its newline.
    passing: bool,
    /// Lines rewritten so far.
    pub rewritten: u64,
}

impl Renaming {
    /// A filter for a dump of database `from` loaded into `into`, or `None` when the names
    /// are the same.
    pub fn new(from: &str, into: &str) -> Option<Self> {
        (from != into).then(|| Self {
            from: format!("{ALTER}{}{AFTER}", ident(from)).into_bytes(),
            to: format!("{ALTER}{}{AFTER}", ident(into)).into_bytes(),
            line: Vec::new(),
            passing: false,
            rewritten: 0,
        })
    }

    /// Takes the next chunk of the dump; appends what goes to the client to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            let (part, ended, rest) = match memchr::memchr(b'\n', input) {
                Some(at) => (&input[..=at], true, &input[at + 1..]),
                None => (input, false, &input[input.len()..]),
            };
            input = rest;
            if self.passing {
                out.extend_from_slice(part);
                self.passing = !ended;
                continue;
            }
            let wanted = self.from.len() - self.line.len();
            if part.len() < wanted && !ended {
                // Not enough of the line yet to tell.
                self.line.extend_from_slice(part);
                continue;
            }
            let (head, tail) = part.split_at(wanted.min(part.len()));
            self.line.extend_from_slice(head);
            if self.line == self.from {
                out.extend_from_slice(&self.to);
                self.rewritten += 1;
            } else {
                out.extend_from_slice(&self.line);
            }
            self.line.clear();
            out.extend_from_slice(tail);
            self.passing = !ended;
        }
    }

    /// The end of the dump: appends a last line shorter than what is looked for.
    pub fn finish(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.line);
    }
}

/// A `GRANT` (or `REVOKE`) on a database restored under another name, made to name the
/// database it was restored into: `ON `from`.*` (also written `` `from\_x` `` with its
/// wildcards escaped), a table `ON `from`.`t``, a routine `ON PROCEDURE `from`.`p``. A
/// database-level grant's new name gets `_` and `%` escaped, so it never becomes a wildcard
/// over other databases. Accounts restored with renamed databases get their privileges on
/// the databases as restored, not on the original names (which on the target may be another
/// database, or none). `None`: the statement is left out, because it names a database that a
/// renamed one was restored into (the backup's own database of that name, not restored
/// there: its grants would reach the renamed data). Any other statement is kept as it is.
pub fn grant_renamed(line: &str, renames: &[(String, String)]) -> Option<String> {
    let Some(on) = line.find(" ON ") else {
        return Some(line.to_owned());
    };
    let mut start = on + " ON ".len();
    for kind in [
        "PROCEDURE ",
        "FUNCTION ",
        "PACKAGE BODY ",
        "PACKAGE ",
        "TABLE ",
    ] {
        if line[start..].starts_with(kind) {
            start += kind.len();
            break;
        }
    }
    let Some((quoted, rest)) = quoted_name(&line[start..]) else {
        return Some(line.to_owned());
    };
    let Some(rest) = rest.strip_prefix('.') else {
        return Some(line.to_owned());
    };
    let whole_database = rest.starts_with('*');
    let name = if whole_database {
        unescape_wildcards(&quoted)
    } else {
        quoted
    };
    if let Some((_, into)) = renames.iter().find(|(from, _)| *from == name) {
        let into = if whole_database {
            escape_wildcards(into)
        } else {
            into.clone()
        };
        return Some(format!("{}{}.{rest}", &line[..start], ident(&into)));
    }
    if renames.iter().any(|(_, into)| *into == name) {
        return None;
    }
    Some(line.to_owned())
}

/// A backquoted name at the start of `text` (`` ` `` doubled inside), unquoted, and what
/// follows it.
fn quoted_name(text: &str) -> Option<(String, &str)> {
    let mut rest = text.strip_prefix('`')?;
    let mut name = String::new();
    loop {
        let at = rest.find('`')?;
        name.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        match rest.strip_prefix('`') {
            Some(after) => {
                name.push('`');
                rest = after;
            }
            None => return Some((name, rest)),
        }
    }
}

/// A database name as a database-level grant matches it literally: `_` and `%` escaped.
fn escape_wildcards(name: &str) -> String {
    name.replace('\\', "\\\\")
        .replace('_', "\\_")
        .replace('%', "\\%")
}

/// The name a database-level grant's escaped pattern stands for.
fn unescape_wildcards(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(next) = chars.next()
        {
            out.push(next);
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_on_a_renamed_database_name_the_database_it_was_restored_into() {
        let renames = [
            ("shop".to_owned(), "shop_copy".to_owned()),
            ("we`ird".to_owned(), "plain".to_owned()),
        ];
        for (line, expected) in [
            (
                "GRANT SELECT, INSERT ON `shop`.* TO `app`@`%`;",
                Some("GRANT SELECT, INSERT ON `shop\\_copy`.* TO `app`@`%`;"),
            ),
            (
                "GRANT SELECT (`a`, `b`) ON `shop`.`t` TO 'app'@'%';",
                Some("GRANT SELECT (`a`, `b`) ON `shop_copy`.`t` TO 'app'@'%';"),
            ),
            (
                "GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `app`@`%`;",
                Some("GRANT EXECUTE ON PROCEDURE `shop_copy`.`p` TO `app`@`%`;"),
            ),
            (
                "GRANT EXECUTE ON FUNCTION `we``ird`.`f` TO `app`@`%`;",
                Some("GRANT EXECUTE ON FUNCTION `plain`.`f` TO `app`@`%`;"),
            ),
            (
                "REVOKE INSERT ON `shop`.* FROM `app`@`%`;",
                Some("REVOKE INSERT ON `shop\\_copy`.* FROM `app`@`%`;"),
            ),
            // A grant written with the wildcards escaped names the same database.
            (
                "GRANT SELECT ON `we``ird`.* TO `a`@`%`;",
                Some("GRANT SELECT ON `plain`.* TO `a`@`%`;"),
            ),
            // The backup's own database of the new name: its grants would reach the copy.
            ("GRANT ALL PRIVILEGES ON `shop\\_copy`.* TO `x`@`%`;", None),
            ("GRANT SELECT ON `shop_copy`.`t` TO `x`@`%`;", None),
            // Other databases, every database, roles and accounts stay as they are.
            (
                "GRANT SELECT ON `shop2`.* TO `app`@`%`;",
                Some("GRANT SELECT ON `shop2`.* TO `app`@`%`;"),
            ),
            (
                "GRANT USAGE ON *.* TO `app`@`%`;",
                Some("GRANT USAGE ON *.* TO `app`@`%`;"),
            ),
            (
                "GRANT `reader` TO `app`@`%`;",
                Some("GRANT `reader` TO `app`@`%`;"),
            ),
            (
                "CREATE USER `shop`@`%` IDENTIFIED BY PASSWORD '*ABC';",
                Some("CREATE USER `shop`@`%` IDENTIFIED BY PASSWORD '*ABC';"),
            ),
        ] {
            assert_eq!(grant_renamed(line, &renames).as_deref(), expected, "{line}");
        }
        let escaped = [("shop_x".to_owned(), "new".to_owned())];
        assert_eq!(
            grant_renamed("GRANT SELECT ON `shop\\_x`.* TO `a`@`%`;", &escaped).as_deref(),
            Some("GRANT SELECT ON `new`.* TO `a`@`%`;")
        );
    }

    const DUMP: &str = "-- dump of `shop`\n\
        INSERT INTO `t` VALUES ('ALTER DATABASE `shop` CHARACTER SET x');\n\
        ALTER DATABASE `shop` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n\
        CREATE PROCEDURE p() SELECT 1 ;;\n\
        ALTER DATABASE `shop` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci ;;\n\
        ALTER DATABASE `shop2` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n\
        ALTER DATABASE `other` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n\
        ALTER DATABASE `shop`";

    fn renamed(input: &str, chunk: usize) -> (String, u64) {
        let mut renaming = Renaming::new("shop", "shop-copy").unwrap();
        let mut out = Vec::new();
        for part in input.as_bytes().chunks(chunk) {
            renaming.push(part, &mut out);
        }
        let rewritten = renaming.rewritten;
        renaming.finish(&mut out);
        (String::from_utf8(out).unwrap(), rewritten)
    }

    #[test]
    fn only_the_alter_database_lines_of_the_dumped_database_are_renamed_in_any_chunking() {
        let expected = DUMP
            .replace(
                "\nALTER DATABASE `shop` CHARACTER SET latin1",
                "\nALTER DATABASE `shop-copy` CHARACTER SET latin1",
            )
            .replace(
                "\nALTER DATABASE `shop` CHARACTER SET utf8mb4",
                "\nALTER DATABASE `shop-copy` CHARACTER SET utf8mb4",
            );
        assert_ne!(expected, DUMP);
        for chunk in 1..=DUMP.len() {
            assert_eq!(
                renamed(DUMP, chunk),
                (expected.clone(), 2),
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn names_are_quoted_as_the_dump_quotes_them() {
        let mut renaming = Renaming::new("we`ird", "new").unwrap();
        let mut out = Vec::new();
        renaming.push(
            b"ALTER DATABASE `we``ird` CHARACTER SET latin1 COLLATE latin1_bin ;\n",
            &mut out,
        );
        assert_eq!(
            out,
            b"ALTER DATABASE `new` CHARACTER SET latin1 COLLATE latin1_bin ;\n"
        );
    }

    #[test]
    fn the_same_name_needs_no_filter() {
        assert!(Renaming::new("shop", "shop").is_none());
    }
}
