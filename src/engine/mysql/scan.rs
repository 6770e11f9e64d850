//! Reading a `mariadb-dump`/`mysqldump` stream as it passes to the store, without keeping it:
//! the rows of every table (counted from the dump itself, so they match it exactly), the
//! binary-log position the dump was taken at, and whether the dump ended with its
//! completion trailer (`-- Dump completed`). Pure; memory is bounded by [`LINE_KEPT`].
//!
//! What is read: lines at the start of a statement (`-- Dumping data for table`, `DELIMITER`,
//! the position comments, the trailer) and the `INSERT INTO ... VALUES (...),(...);`
//! statements the dump program writes for table data, whose rows are the tuples at the top
//! level of the statement, outside quoted strings. Inside `DELIMITER ;;` blocks (routines,
//! triggers, events) nothing is counted: their bodies are the user's SQL.

use std::collections::BTreeMap;

/// The most of a line kept to recognise it.
const LINE_KEPT: usize = 512;

/// What a dump said about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpFacts {
    /// Rows per table, in the order the tables were dumped.
    pub rows: Vec<(String, u64)>,
    /// The binary-log file and position or GTID position written as comments, if any.
    pub position: Vec<String>,
    /// Whether the last line was the completion trailer.
    pub completed: bool,
}

#[derive(Debug, Default)]
enum State {
    /// At some point of a line outside an INSERT.
    #[default]
    Line,
    /// In `INSERT INTO `, reading the table's name.
    Name { name: Vec<u8>, in_quotes: bool },
    /// After the name of an INSERT: before `VALUES` and in its tuples.
    Values {
        table: String,
        seen_values: bool,
        window: [u8; 6],
        depth: u32,
        quote: Option<u8>,
        escaped: bool,
    },
}

/// Feed it the dump's bytes in any chunks; [`DumpScanner::finish`] gives the facts.
#[derive(Debug, Default)]
pub struct DumpScanner {
    state: State,
    /// The start of the current line (at most [`LINE_KEPT`] bytes).
    line: Vec<u8>,
    /// The current line started outside any statement's string or INSERT.
    line_at_start: bool,
    delimited: bool,
    rows: BTreeMap<String, u64>,
    order: Vec<String>,
    position: Vec<String>,
    last_line: Vec<u8>,
}

const INSERT: &[u8] = b"INSERT INTO ";

impl DumpScanner {
    pub fn new() -> Self {
        Self {
            line_at_start: true,
            ..Self::default()
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            // Inside a quoted value (most of a dump's bytes), only its closing quote or a
            // backslash matters: skip to the next one.
            if let State::Values {
                quote: Some(q),
                escaped: false,
                ..
            } = self.state
                && b != q
                && b != b'\\'
            {
                let next = if q == b'`' {
                    memchr::memchr(q, bytes)
                } else {
                    memchr::memchr2(q, b'\\', bytes)
                };
                match next {
                    Some(at) => {
                        bytes = &bytes[at..];
                        continue;
                    }
                    None => return,
                }
            }
            self.byte(b);
            bytes = rest;
        }
    }

    fn byte(&mut self, b: u8) {
        match &mut self.state {
            State::Line => {
                if b == b'\n' {
                    self.end_line();
                    return;
                }
                if self.line.len() < LINE_KEPT {
                    self.line.push(b);
                }
                if self.line_at_start && !self.delimited && self.line == INSERT {
                    self.state = State::Name {
                        name: Vec::new(),
                        in_quotes: false,
                    };
                }
            }
            State::Name { name, in_quotes } => {
                if !*in_quotes {
                    if b == b'`' && name.is_empty() {
                        *in_quotes = true;
                    } else if b == b'`' {
                        // A doubled backquote inside the name.
                        name.push(b'`');
                        *in_quotes = true;
                    } else {
                        let table = String::from_utf8_lossy(name).into_owned();
                        self.state = State::Values {
                            table,
                            seen_values: false,
                            window: [0; 6],
                            depth: 0,
                            quote: None,
                            escaped: false,
                        };
                        self.byte(b);
                    }
                } else if b == b'`' {
                    *in_quotes = false;
                } else if name.len() < LINE_KEPT {
                    name.push(b);
                }
            }
            State::Values {
                table,
                seen_values,
                window,
                depth,
                quote,
                escaped,
            } => {
                if let Some(q) = *quote {
                    if *escaped {
                        *escaped = false;
                    } else if b == b'\\' && q != b'`' {
                        *escaped = true;
                    } else if b == q {
                        *quote = None;
                    }
                    return;
                }
                match b {
                    // Strings, and names in a column list (a doubled quote closes and opens
                    // again, which comes to the same).
                    b'\'' | b'"' | b'`' => *quote = Some(b),
                    b'(' => {
                        if *depth == 0 && *seen_values {
                            *self.rows.entry(table.clone()).or_insert_with(|| {
                                self.order.push(table.clone());
                                0
                            }) += 1;
                        }
                        *depth += 1;
                    }
                    b')' => *depth = depth.saturating_sub(1),
                    b';' if *depth == 0 => {
                        self.state = State::Line;
                        self.line.clear();
                        self.line_at_start = false;
                        return;
                    }
                    _ => {}
                }
                if !*seen_values && *depth == 0 {
                    window.rotate_left(1);
                    window[5] = b.to_ascii_uppercase();
                    *seen_values = window == b"VALUES";
                }
            }
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let at_start = self.line_at_start;
        self.line_at_start = true;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        if !text.trim().is_empty() {
            self.last_line = line.clone();
        }
        if !at_start {
            return;
        }
        if text == "DELIMITER ;;" {
            self.delimited = true;
        } else if text == "DELIMITER ;" {
            self.delimited = false;
        }
        if self.delimited {
            return;
        }
        if let Some(rest) = text.strip_prefix("-- Dumping data for table `") {
            let name = rest.strip_suffix('`').unwrap_or(rest).replace("``", "`");
            if !self.rows.contains_key(&name) {
                self.order.push(name.clone());
                self.rows.insert(name, 0);
            }
        } else if [
            "-- CHANGE MASTER TO ",
            "-- CHANGE REPLICATION SOURCE TO ",
            "-- SET GLOBAL gtid_slave_pos",
        ]
        .iter()
        .any(|p| text.starts_with(p))
            && self.position.len() < 4
        {
            self.position.push(
                text.trim_start_matches("-- ")
                    .trim_end_matches(';')
                    .to_owned(),
            );
        }
    }

    pub fn finish(mut self) -> DumpFacts {
        if !self.line.is_empty() {
            self.end_line();
        }
        let completed = matches!(self.state, State::Line)
            && String::from_utf8_lossy(&self.last_line).starts_with("-- Dump completed");
        let rows = self
            .order
            .iter()
            .map(|t| (t.clone(), self.rows.get(t).copied().unwrap_or(0)))
            .collect();
        DumpFacts {
            rows,
            position: self.position,
            completed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB
--
-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000002', MASTER_LOG_POS=1234;
-- SET GLOBAL gtid_slave_pos='0-1-17';

DROP TABLE IF EXISTS `items`;
CREATE TABLE `items` (
  `id` int(11) NOT NULL,
  `note` varchar(20) DEFAULT 'a;(b)',
  PRIMARY KEY (`id`)
) ENGINE=InnoDB;

--
-- Dumping data for table `items`
--

LOCK TABLES `items` WRITE;
INSERT INTO `items` VALUES (1,'it\\'s (one);'),(2,'x\\\\'),(3,NULL);
INSERT INTO `named` (`a'b`, `c(d``)`) VALUES (1,2),(3,4);
INSERT INTO `items` VALUES
(4,'line\\nINSERT INTO `items` VALUES (9);'),
(5,0x00FF);
UNLOCK TABLES;

--
-- Dumping data for table `empty``one`
--

DELIMITER ;;
CREATE PROCEDURE p() BEGIN
INSERT INTO `items` VALUES (7),(8);
END ;;
DELIMITER ;
-- Dump completed on 2026-11-30 15:00:00
";

    #[test]
    fn rows_position_and_trailer_are_read_in_any_chunks() {
        for chunk in [1, 3, 7, 4096] {
            let mut scanner = DumpScanner::new();
            for part in DUMP.as_bytes().chunks(chunk) {
                scanner.feed(part);
            }
            let facts = scanner.finish();
            assert_eq!(
                facts.rows,
                [
                    ("items".to_owned(), 5),
                    ("named".to_owned(), 2),
                    ("empty`one".to_owned(), 0)
                ],
                "chunks of {chunk}"
            );
            assert_eq!(
                facts.position,
                [
                    "CHANGE MASTER TO MASTER_LOG_FILE='binlog.000002', MASTER_LOG_POS=1234",
                    "SET GLOBAL gtid_slave_pos='0-1-17'"
                ]
            );
            assert!(facts.completed);
        }
    }

    #[test]
    fn a_dump_cut_short_has_no_trailer() {
        let cut = &DUMP[..DUMP.find("-- Dump completed").unwrap_or(0)];
        let mut scanner = DumpScanner::new();
        scanner.feed(cut.as_bytes());
        assert!(!scanner.finish().completed);
        // Cut inside an INSERT (a string holding the trailer's words).
        let mut scanner = DumpScanner::new();
        scanner.feed(b"INSERT INTO `t` VALUES (1,'\n-- Dump completed on x\n");
        assert!(!scanner.finish().completed);
    }
}
