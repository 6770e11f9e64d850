//! What the engines' restore previews (dry runs) share: how their findings read as lines for
//! people (the CLI prints them, a RestoreRequest's `status.preview` holds them).

/// A table of the backup, in the target now and after the restore.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TablePreview {
    pub table: String,
    /// `None`: the target has no such table.
    pub rows_now: Option<u64>,
    pub rows_after: u64,
}

impl TablePreview {
    /// `  public.items: 50 rows now, 50 rows after`.
    pub fn line(&self) -> String {
        let now = self
            .rows_now
            .map_or_else(|| "no such table".to_owned(), |n| format!("{n} rows"));
        format!(
            "  {}: {now} now, {} rows after",
            self.table, self.rows_after
        )
    }
}

/// ` (for example a, b)` after a count, or nothing when there is no example.
pub fn examples(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (for example {})", names.join(", "))
    }
}

/// How a dry run names a database: `database "copy" (from "app")`.
pub fn database_name(name: &str, from: &str) -> String {
    if name == from {
        format!("database {name:?}")
    } else {
        format!("database {name:?} (from {from:?})")
    }
}
