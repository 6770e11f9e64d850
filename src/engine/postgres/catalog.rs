//! What a PostgreSQL server holds, read with `tokio-postgres`.

use tokio_postgres::Client;

use super::error::PgError;
use super::target::PgTarget;
use crate::storage::manifest::DatabaseObjects;

/// A logged-in connection to `database`; the connection task runs until the client drops.
pub async fn connect(target: &PgTarget, database: &str) -> Result<Client, PgError> {
    let (client, connection) = target
        .config(database)
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| connect_error(target, database, &e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn connect_error(target: &PgTarget, database: &str, e: &tokio_postgres::Error) -> PgError {
    if e.as_db_error().map(|d| d.code())
        == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
    {
        return PgError::MissingDatabase {
            address: target.address(),
            name: database.to_owned(),
            existing: "see \\l in psql".to_owned(),
        };
    }
    PgError::from_pg(&target.address(), &target.user, "connecting", e)
}

/// The server's major version and full version (`SHOW server_version`).
pub async fn server_version(client: &Client, target: &PgTarget) -> Result<(u32, String), PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
            &[],
        )
        .await
        .map_err(|e| {
            PgError::from_pg(
                &target.address(),
                &target.user,
                "reading the server version",
                &e,
            )
        })?;
    let number: i32 = row.get(0);
    let text: String = row.get(1);
    Ok((u32::try_from(number / 10_000).unwrap_or(0), text))
}

/// Every database that is not a template and accepts connections, with its size in bytes.
pub async fn databases(client: &Client, target: &PgTarget) -> Result<Vec<(String, u64)>, PgError> {
    let rows = client
        .query(
            "SELECT datname, pg_database_size(datname) FROM pg_database \
             WHERE NOT datistemplate AND datallowconn ORDER BY datname",
            &[],
        )
        .await
        .map_err(|e| PgError::from_pg(&target.address(), &target.user, "listing databases", &e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
            )
        })
        .collect())
}

/// Whether the logged-in role is a superuser (only superusers can read role passwords).
pub async fn is_superuser(client: &Client, target: &PgTarget) -> Result<bool, PgError> {
    let row = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| PgError::from_pg(&target.address(), &target.user, "reading the role", &e))?;
    Ok(row.get(0))
}

/// The tables (and populated materialized views) whose rows are counted, as
/// `(schema, name)`: partitions count, partitioned parents (which hold no rows) do not.
pub async fn tables(client: &Client, target: &PgTarget) -> Result<Vec<(String, String)>, PgError> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated)) \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| PgError::from_pg(&target.address(), &target.user, "listing tables", &e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// What a database holds besides its tables' rows: its schemas, functions and procedures,
/// and views, each sorted. Types in function signatures are named with their schema
/// (the session's `search_path` is set to `pg_catalog` first), so that the lists of two
/// servers compare whatever their settings; objects of extensions are left out (the
/// extension makes them). Changes the session's `search_path`.
pub async fn objects(client: &Client, target: &PgTarget) -> Result<DatabaseObjects, PgError> {
    let fail = |e: tokio_postgres::Error| {
        PgError::from_pg(
            &target.address(),
            &target.user,
            "listing schemas and functions",
            &e,
        )
    };
    client
        .batch_execute("SET search_path = pg_catalog")
        .await
        .map_err(fail)?;
    let user = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";
    let not_extension = |class: &str, oid: &str| {
        format!(
            "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{class}'::regclass \
             AND d.objid = {oid} AND d.deptype = 'e')"
        )
    };
    let list = |sql: String| async move {
        let rows = client.query(&sql, &[]).await.map_err(fail)?;
        // Sorted here, not by the server's collation, which differs between servers. A
        // NULL name is an object dropped since the snapshot was taken (the catalog
        // functions read the current catalog): pg_dump sees it too, or fails.
        let mut names: Vec<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
            .collect();
        names.sort();
        Ok::<_, PgError>(names)
    };
    let schemas = list(format!(
        "SELECT n.nspname FROM pg_namespace n WHERE {user} AND {} ORDER BY 1",
        not_extension("pg_namespace", "n.oid")
    ))
    .await?;
    let functions = list(format!(
        "SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {user} AND {} ORDER BY 1",
        not_extension("pg_proc", "p.oid")
    ))
    .await?;
    let views = list(format!(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('v', 'm') AND {user} AND {} ORDER BY 1",
        not_extension("pg_class", "c.oid")
    ))
    .await?;
    Ok(DatabaseObjects {
        schemas,
        functions,
        views,
        ..DatabaseObjects::default()
    })
}

/// The rows of one table (without its inheritance children).
pub async fn count_rows(
    client: &Client,
    target: &PgTarget,
    schema: &str,
    table: &str,
) -> Result<u64, PgError> {
    let sql = format!(
        "SELECT count(*) FROM ONLY {}.{}",
        quote_ident(schema),
        quote_ident(table)
    );
    let row = client.query_one(&sql, &[]).await.map_err(|e| {
        PgError::from_pg(
            &target.address(),
            &target.user,
            &format!("counting {}", display_table(schema, table)),
            &e,
        )
    })?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// `"schema"."table"` quoting for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How a table is named in manifests and messages: `schema.table`, each part quoted only
/// when it needs to be.
pub fn display_table(schema: &str, table: &str) -> String {
    let part = |s: &str| {
        let plain = !s.is_empty()
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain { s.to_owned() } else { quote_ident(s) }
    };
    format!("{}.{}", part(schema), part(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(display_table("public", "orders"), "public.orders");
        assert_eq!(
            display_table("Sales", "naïve table"),
            "\"Sales\".\"naïve table\""
        );
    }
}
