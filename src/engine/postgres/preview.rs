//! A PostgreSQL restore's dry run: what [`super::restore`] would do, found without writing
//! anything. It makes the same checks first (every object against the manifest, the
//! databases it needs existing or `create` given, the roles script), then reads the target:
//! which databases would be created or restored into, every table of the backup with its
//! rows in the target now and after the restore, the target's tables the restore leaves
//! alone, and what would happen to the backup's roles.

use std::collections::BTreeMap;

use super::catalog::{self, connect, display_table};
use super::error::PgError;
use super::restore::{self, PgRestoreRequest};
use crate::engine::preview::{TablePreview, database_name};
use crate::pipeline::Progress;
use crate::storage::Store;
use crate::storage::manifest::{DatabaseObjects, Manifest};

/// What a restore would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgPreview {
    pub databases: Vec<DatabasePreview>,
    /// With `globals`: what would become of the backup's roles and tablespaces.
    pub roles: Option<restore::globals::Counts>,
}

/// One database of the backup and the database it would be restored into.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabasePreview {
    /// The database in the target.
    pub name: String,
    /// The database in the backup.
    pub from: String,
    /// It does not exist: the restore creates it (`create`).
    pub created: bool,
    /// Every table of the backup: its rows in the target now (`None`: no such table) and
    /// after the restore.
    pub tables: Vec<TablePreview>,
    /// Tables of the target that the backup does not hold: the restore leaves them alone.
    pub left_alone: Vec<String>,
    /// Tables, schemas, functions and views of the backup that exist in the target while
    /// `clean` is off: `pg_restore` would fail on them and roll the database's restore back.
    /// (Other objects that exist already, such as a type or a sequence of the backup's, fail
    /// it too; they are not looked for. Nor are schemas, functions and views of a backup made
    /// before Coffer listed them.)
    pub conflicts: Vec<String>,
}

/// Finds what [`restore::restore`] would do with `request`, writing nothing.
pub async fn preview(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &PgRestoreRequest,
    progress: &Progress,
) -> Result<PgPreview, PgError> {
    let target = &request.target;
    // The backup is intact, as the restore checks first.
    let restore::Checked {
        plan,
        globals: globals_object,
        ..
    } = restore::check(store, folder, manifest, request, progress).await?;
    // pg_restore can read it, as the restore checks next.
    restore::tools_for(manifest, request).await?;

    let admin = connect(target, "postgres").await?;
    let existing: Vec<String> = catalog::databases(&admin, target)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for (_, into) in &plan {
        if !existing.contains(into) && !request.create {
            return Err(PgError::NeedCreate {
                address: target.address(),
                name: into.clone(),
            });
        }
    }
    let roles = match &globals_object {
        Some(object) => {
            let script = restore::read_globals(store, object, progress).await?;
            let existing = restore::existing_globals(&admin, target).await?;
            Some(script.plan(&existing, &target.user, request.roles).counts)
        }
        None => None,
    };

    let mut databases = Vec::new();
    for (record, into) in &plan {
        let from = record.database.clone().unwrap_or_default();
        let expected: Vec<(String, u64)> = manifest
            .stats
            .table_rows
            .get(&from)
            .into_iter()
            .flatten()
            .map(|t| (display_table(&t.schema, &t.table), t.rows))
            .collect();
        let mut present: BTreeMap<String, (String, String)> = BTreeMap::new();
        let client = if existing.contains(into) {
            let client = connect(target, into).await?;
            for (schema, table) in catalog::tables(&client, target).await? {
                present.insert(display_table(&schema, &table), (schema, table));
            }
            Some(client)
        } else {
            None
        };
        let mut database = DatabasePreview {
            name: into.clone(),
            from,
            created: client.is_none(),
            ..DatabasePreview::default()
        };
        for (table, rows_after) in &expected {
            let rows_now = match (&client, present.get(table)) {
                (Some(client), Some((schema, name))) => {
                    Some(catalog::count_rows(client, target, schema, name).await?)
                }
                _ => None,
            };
            if rows_now.is_some() && !request.clean {
                database.conflicts.push(table.clone());
            }
            database.tables.push(TablePreview {
                table: table.clone(),
                rows_now,
                rows_after: *rows_after,
            });
        }
        if let (Some(client), Some(listed), false) = (
            &client,
            manifest.stats.database_objects.get(&database.from),
            request.clean,
        ) {
            // Read last: listing changes the session's search_path.
            let now = catalog::objects(client, target).await?;
            let tables: Vec<String> = present.values().map(|(s, t)| format!("{s}.{t}")).collect();
            database
                .conflicts
                .extend(existing_objects(listed, &now, &tables));
        }
        database.left_alone = present
            .into_keys()
            .filter(|t| !expected.iter().any(|(e, _)| e == t))
            .collect();
        databases.push(database);
    }
    Ok(PgPreview { databases, roles })
}

/// The schemas, functions and views of the backup (`listed`) that the target database holds
/// already (`now`), which `pg_restore` without `clean` fails on: `schema sales`,
/// `function sales.total(integer)`, `view sales.daily`. Not the `public` schema, which every
/// database has and a dump does not create; not a materialized view counted as a table
/// (`tables`, named there already).
fn existing_objects(
    listed: &DatabaseObjects,
    now: &DatabaseObjects,
    tables: &[String],
) -> Vec<String> {
    let both = |kind: &str, listed: &[String], now: &[String]| -> Vec<String> {
        listed
            .iter()
            .filter(|o| now.contains(o) && !tables.contains(o))
            .filter(|o| !(kind == "schema" && o.as_str() == "public"))
            .map(|o| format!("{kind} {o}"))
            .collect()
    };
    [
        both("schema", &listed.schemas, &now.schemas),
        both("function", &listed.functions, &now.functions),
        both("view", &listed.views, &now.views),
    ]
    .concat()
}

impl PgPreview {
    /// The preview for people: each database with its tables now and after, then the
    /// roles; `clean` as the restore was asked.
    pub fn lines(&self, clean: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for db in &self.databases {
            let fate = match (db.created, clean) {
                (true, _) => "created",
                (false, true) => {
                    "exists: the backup's objects are dropped and created again (clean)"
                }
                (false, false) => "exists: restored into as it is",
            };
            lines.push(format!("{}: {fate}", database_name(&db.name, &db.from)));
            lines.extend(db.tables.iter().map(TablePreview::line));
            if !db.left_alone.is_empty() {
                lines.push(format!(
                    "  left alone (not in the backup): {}",
                    db.left_alone.join(", ")
                ));
            }
            if !db.conflicts.is_empty() {
                lines.push(format!(
                    "  the restore would fail and change nothing in {:?}: {} already exist (restore with clean to replace them)",
                    db.name,
                    db.conflicts.join(", ")
                ));
            }
        }
        // What a failure leaves: each database (and the roles) is restored in a transaction
        // of its own, one after another.
        if let Some(first) = self.databases.iter().position(|d| !d.conflicts.is_empty()) {
            let mut left = Vec::new();
            if self.roles.is_some() {
                left.push("the roles would stay restored");
            }
            if first > 0 {
                left.push("the databases before it would stay restored");
            }
            if first + 1 < self.databases.len() {
                left.push("the databases after it would not be restored");
            }
            if !left.is_empty() {
                lines.push(format!(
                    "the restore would stop at database {:?}: {}",
                    self.databases[first].name,
                    left.join(", ")
                ));
            }
        }
        if let Some(r) = &self.roles {
            lines.push(format!(
                "roles: {} created, {} kept as they are, {} replaced",
                r.roles_created, r.roles_kept, r.roles_replaced
            ));
            if r.tablespaces_created + r.tablespaces_kept > 0 {
                lines.push(format!(
                    "tablespaces: {} created, {} kept as they are",
                    r.tablespaces_created, r.tablespaces_kept
                ));
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_of_the_backup_that_exist_are_conflicts_but_public_and_counted_tables_are_not() {
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let listed = DatabaseObjects {
            schemas: list(&["public", "sales"]),
            functions: list(&["public.twice(x integer)", "sales.total()"]),
            views: list(&["sales.daily", "sales.open"]),
            ..DatabaseObjects::default()
        };
        let now = DatabaseObjects {
            schemas: list(&["public", "sales"]),
            functions: list(&["public.twice(x integer)"]),
            views: list(&["sales.daily", "sales.open"]),
            ..DatabaseObjects::default()
        };
        // sales.daily is a populated materialized view, named with the tables already.
        assert_eq!(
            existing_objects(&listed, &now, &list(&["sales.daily"])),
            [
                "schema sales",
                "function public.twice(x integer)",
                "view sales.open"
            ]
        );
        assert!(existing_objects(&listed, &DatabaseObjects::default(), &[]).is_empty());
    }
}
