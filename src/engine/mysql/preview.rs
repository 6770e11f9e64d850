//! A MySQL/MariaDB restore's dry run: what [`super::restore`] would do, found without
//! writing anything. It makes the same checks first (the request against the backup, the
//! client programs against the server, every object against the manifest, the target's
//! databases), then reads the target: which databases would be created, dropped and created
//! again (`clean`) or loaded into, every table of the backup with its rows in the target now
//! and after the restore, the target's other tables (left alone, or dropped with their
//! database), and which accounts would be created or get grants added.

use super::client::Client;
use super::error::MyError;
use super::restore::{self, MyRestoreRequest};
use crate::engine::preview::{TablePreview, database_name};
use crate::pipeline::Progress;
use crate::storage::Store;
use crate::storage::manifest::Manifest;

/// What a restore would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MyPreview {
    pub databases: Vec<DatabasePreview>,
    /// With `users`: what would become of the backup's accounts.
    pub accounts: Option<AccountsPreview>,
}

/// One database of the backup and the database it would be restored into.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabasePreview {
    /// The database in the target.
    pub name: String,
    /// The database in the backup.
    pub from: String,
    /// What happens to the target's database.
    pub fate: DatabaseFate,
    /// Every table of the backup: its rows in the target now (`None`: no such table) and
    /// after the restore.
    pub tables: Vec<TablePreview>,
    /// Tables of the target that the backup does not hold: left alone, or (with `clean`)
    /// dropped with their database.
    pub others: Vec<String>,
}

/// What happens to a target database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DatabaseFate {
    /// It does not exist and is created.
    #[default]
    Created,
    /// It exists and is dropped and created again (`clean`): its other tables go.
    Recreated,
    /// It exists and the dump is loaded into it: the backup's tables are replaced, the
    /// others left alone.
    LoadedInto,
}

/// The backup's accounts against the target's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountsPreview {
    /// Created with the backup's password and grants, as `user@host`.
    pub created: Vec<String>,
    /// Existing: they keep their password and get the backup's grants added.
    pub existing: Vec<String>,
    /// Never changed (the server's own, `root`, the restoring account).
    pub left_out: Vec<String>,
}

/// Finds what [`restore::restore`] would do with `request`, writing nothing.
pub async fn preview(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &MyRestoreRequest,
    progress: &Progress,
) -> Result<MyPreview, MyError> {
    let target = &request.target;
    // The backup is intact, as the restore checks first.
    let restore::Checked {
        plan,
        users: users_object,
        ..
    } = restore::check(store, folder, manifest, request, progress).await?;

    let mut client = Client::connect(target).await?;
    let mut databases = Vec::new();
    for planned in &plan {
        let expected: Vec<(String, u64)> = manifest
            .stats
            .table_rows
            .get(&planned.from)
            .into_iter()
            .flatten()
            .map(|t| (t.table.clone(), t.rows))
            .collect();
        let present: Vec<String> = if planned.exists {
            client
                .tables(&planned.into)
                .await?
                .into_iter()
                .map(|t| t.name)
                .collect()
        } else {
            Vec::new()
        };
        let mut database = DatabasePreview {
            name: planned.into.clone(),
            from: planned.from.clone(),
            fate: match (planned.exists, request.clean) {
                (false, _) => DatabaseFate::Created,
                (true, true) => DatabaseFate::Recreated,
                (true, false) => DatabaseFate::LoadedInto,
            },
            ..DatabasePreview::default()
        };
        for (table, rows_after) in &expected {
            let rows_now = if present.contains(table) {
                Some(client.count(&planned.into, table).await?)
            } else {
                None
            };
            database.tables.push(TablePreview {
                table: table.clone(),
                rows_now,
                rows_after: *rows_after,
            });
        }
        database.others = present
            .into_iter()
            .filter(|t| !expected.iter().any(|(e, _)| e == t))
            .collect();
        databases.push(database);
    }
    let accounts = match &users_object {
        Some(object) => {
            let script = restore::read_accounts(store, object, progress).await?;
            let existing = client.accounts().await?;
            let renames: Vec<(String, String)> = plan
                .iter()
                .filter(|p| p.from != p.into)
                .map(|p| (p.from.clone(), p.into.clone()))
                .collect();
            let script = restore::accounts_script(&script, &target.user, &existing, &renames);
            Some(AccountsPreview {
                created: script.created,
                existing: script.existing,
                left_out: script.left_out,
            })
        }
        None => None,
    };
    client.close().await;
    Ok(MyPreview {
        databases,
        accounts,
    })
}

impl MyPreview {
    /// The preview for people: each database with its tables now and after, then the
    /// accounts.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for db in &self.databases {
            let fate = match db.fate {
                DatabaseFate::Created => "created",
                DatabaseFate::Recreated => "exists: dropped and created again (clean)",
                DatabaseFate::LoadedInto => "exists: the backup's tables are replaced",
            };
            lines.push(format!("{}: {fate}", database_name(&db.name, &db.from)));
            lines.extend(db.tables.iter().map(TablePreview::line));
            if !db.others.is_empty() {
                let what = if db.fate == DatabaseFate::Recreated {
                    "dropped with the database (not in the backup)"
                } else {
                    "left alone (not in the backup)"
                };
                lines.push(format!("  {what}: {}", db.others.join(", ")));
            }
        }
        if let Some(a) = &self.accounts {
            let list = |names: &[String]| {
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names.join(", "))
                }
            };
            lines.push(format!(
                "accounts: {} created{}, {} existing get the backup's grants added{}, {} never changed{}",
                a.created.len(),
                list(&a.created),
                a.existing.len(),
                list(&a.existing),
                a.left_out.len(),
                list(&a.left_out)
            ));
        }
        lines
    }
}
