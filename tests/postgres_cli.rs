//! `coffer backup / restore` for PostgreSQL against real servers: a round trip that proves
//! schema and data come back, restores into other names and over existing data, and the
//! failures a DBA meets, each one line, non-zero, storing nothing and touching nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use coffer_testenv::{PostgresServer, S3Server};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod support;
use support::cli::{fails, nothing_stored, ok, stderr};
use support::operator::eventually;
use support::pg_data::{SHOP, SHOP_ROLES, connect, connect_to, create, fingerprint, roles, schema};

/// A URL for the server as its superuser, without a database.
fn server_url(server: &PostgresServer) -> String {
    format!(
        "postgres://postgres:{}@127.0.0.1:{}",
        server.password(),
        server.port()
    )
}

async fn database_names(server: &PostgresServer) -> Vec<String> {
    support::pg_data::texts(
        server,
        "postgres",
        "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
    )
    .await
}

async fn role_exists(server: &PostgresServer, role: &str) -> bool {
    connect(server, "postgres")
        .await
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_and_a_role_round_trip_through_s3() {
    let source = PostgresServer::start().unwrap();
    let admin = connect(&source, "postgres").await;
    for sql in [
        SHOP_ROLES,
        "CREATE ROLE app_owner LOGIN PASSWORD 'owner-pw'",
        "CREATE DATABASE crm OWNER app_owner",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    create(&source, "shop", SHOP).await;
    connect(&source, "crm")
        .await
        .batch_execute(
            "CREATE TABLE notes (id serial PRIMARY KEY, body text); \
             ALTER TABLE notes OWNER TO app_owner; \
             INSERT INTO notes (body) SELECT 'note ' || i FROM generate_series(1, 100) AS i",
        )
        .await
        .unwrap();
    let s3 = S3Server::start().unwrap();
    support::s3_client(&s3)
        .create_bucket()
        .bucket("backups")
        .send()
        .await
        .unwrap();

    let (location, out) = ok(
        &[
            "backup",
            &source.url("postgres"),
            "--to",
            "s3://backups/pg",
            "--databases",
            "shop,crm",
            "--name",
            "main",
        ],
        &s3.env(),
    );
    let summary = stderr(&out);
    assert!(
        summary.contains("backed up 2 databases (") && summary.contains("and roles"),
        "{summary}"
    );
    assert!(
        !summary.contains(source.password()),
        "no password: {summary}"
    );
    assert!(location.starts_with("s3://backups/pg/main/"), "{location}");
    assert_eq!(s3.open_multipart_uploads(), 0);

    // The row counts taken in the dump's snapshot are in the manifest.
    let folder = s3.root().join(location.trim_start_matches("s3://"));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    let events = manifest["stats"]["tableRows"]["shop"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["schema"] == "sales" && t["table"] == "events")
        .cloned()
        .unwrap();
    assert_eq!(events["rows"], 1_000_000);
    assert_eq!(manifest["source"]["kind"], "postgres");
    assert!(
        manifest["source"]["tool"]
            .as_str()
            .unwrap()
            .starts_with("pg_dump "),
        "{manifest}"
    );

    // `coffer list` shows it as one complete backup, counting the objects in its
    // postgres/ sub-folder.
    let (_, out) = ok(&["list", "s3://backups/pg", "--output", "json"], &s3.env());
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "ok");
    let objects: u64 = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["storedBytes"].as_u64().unwrap())
        .sum();
    let manifest_size = std::fs::metadata(folder.join("manifest.json"))
        .unwrap()
        .len();
    assert_eq!(rows[0]["storedBytes"], objects + manifest_size);

    // A new server: the databases must be created, which needs --create, checked before
    // anything (roles included) is written.
    let target = PostgresServer::start().unwrap();
    fails(
        &[
            "restore",
            &location,
            "--to",
            &server_url(&target),
            "--globals",
        ],
        &s3.env(),
        &["does not exist on", "add --create"],
    );
    assert_eq!(database_names(&target).await, ["postgres"]);
    assert!(!role_exists(&target, "app_owner").await);

    let (line, _) = ok(
        &[
            "restore",
            &location,
            "--to",
            &server_url(&target),
            "--create",
            "--globals",
        ],
        &s3.env(),
    );
    // app_owner and the shop's two roles are new; the target's superuser exists and is kept.
    assert!(
        line.starts_with("restored 2 database(s) (2 created); verified")
            && line.ends_with("; roles: 3 created, 1 kept, 0 replaced"),
        "{line}"
    );
    // The roles came back whole: attributes, passwords, settings, comments, memberships.
    let source_roles = roles(&source);
    for held in [
        "ALTER ROLE shop_clerk WITH NOSUPERUSER INHERIT NOCREATEROLE CREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 7 PASSWORD 'SCRAM-SHA-256$",
        "' VALID UNTIL '2099-12-31 ",
        "ALTER ROLE shop_clerk SET search_path TO 'sales', 'public';",
        "ALTER ROLE shop_clerk SET statement_timeout TO '5min';",
        "COMMENT ON ROLE shop_reader IS 'Reads the shop, happy customers only';",
        "GRANT shop_reader TO shop_clerk WITH ADMIN OPTION GRANTED BY postgres;",
        "ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$",
    ] {
        assert!(
            source_roles.contains(held),
            "{held:?} not in {source_roles}"
        );
    }
    assert_eq!(source_roles, roles(&target), "roles");
    // The schema dumps compare privileges, default privileges, comments, row-level
    // security and the extension too.
    let shop_schema = schema(&source, "shop");
    for held in [
        "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;",
        "    email public.citext",
        "GRANT USAGE ON SCHEMA sales TO shop_reader;",
        "GRANT USAGE ON SCHEMA \"Données Clients\" TO shop_clerk WITH GRANT OPTION;",
        "GRANT SELECT ON TABLE sales.events TO shop_reader;",
        "GRANT SELECT ON TABLE public.customers TO shop_reader;",
        "GRANT INSERT ON TABLE public.customers TO shop_clerk;",
        "GRANT UPDATE(email) ON TABLE public.customers TO shop_clerk;",
        "GRANT USAGE ON SEQUENCE sales.invoice_no TO shop_clerk;",
        "REVOKE ALL ON FUNCTION public.\"größe\"(x integer) FROM PUBLIC;",
        "GRANT ALL ON FUNCTION public.\"größe\"(x integer) TO shop_clerk;",
        "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA sales GRANT SELECT ON TABLES  TO shop_reader;",
        "COMMENT ON SCHEMA sales IS 'Orders, and what follows from them';",
        "COMMENT ON TABLE public.customers IS 'Everyone who bought — or nearly did';",
        "COMMENT ON COLUMN public.customers.email IS 'Case-insensitive; NULL when it''s unknown';",
        "COMMENT ON FUNCTION public.\"größe\"(x integer) IS 'Doubles its argument';",
        "ALTER TABLE public.customers ENABLE ROW LEVEL SECURITY;",
        "ALTER TABLE ONLY public.customers FORCE ROW LEVEL SECURITY;",
        "CREATE POLICY happy_only ON public.customers FOR SELECT TO shop_reader USING ((mood = 'happy'::public.mood));",
        "CREATE POLICY known_email ON public.customers AS RESTRICTIVE FOR UPDATE TO shop_clerk USING ((email IS NOT NULL)) WITH CHECK ((email OPERATOR(public.~~) '%@example.com'::public.citext));",
    ] {
        assert!(
            shop_schema.contains(held),
            "{held:?} not in the shop's schema"
        );
    }
    for database in ["shop", "crm"] {
        assert_eq!(
            schema(&source, database),
            schema(&target, database),
            "schema of {database}"
        );
        assert_eq!(
            fingerprint(&connect(&source, database).await).await,
            fingerprint(&connect(&target, database).await).await,
            "data of {database}"
        );
    }
    // The role came back with its password; the target's superuser kept its own (the
    // connections above use it).
    let owner = connect_to(&format!(
        "host=127.0.0.1 port={} user=app_owner password=owner-pw dbname=crm",
        target.port()
    ))
    .await;
    let notes: i64 = owner
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes, 100);
    // shop_clerk logs in with its password, reads the customers through its membership of
    // shop_reader and sees the happy ones only, as the policy says; its setting applies.
    let clerk = connect_to(&format!(
        "host=127.0.0.1 port={} user=shop_clerk password=clerk-pw dbname=shop",
        target.port()
    ))
    .await;
    let row = clerk
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE mood = 'happy'), \
             current_setting('statement_timeout') FROM customers",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 500);
    assert_eq!(row.get::<_, i64>(1), 500);
    assert_eq!(row.get::<_, String>(2), "5min");
}

const APP: &str = "CREATE TABLE items (id int PRIMARY KEY, name text); \
                   INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 50) AS i; \
                   CREATE TABLE tags (item int REFERENCES items (id), tag text);\
                   INSERT INTO tags SELECT i, 'tag' FROM generate_series(1, 50, 2) AS i; \
                   CREATE VIEW tagged AS SELECT DISTINCT item FROM tags; \
                   CREATE FUNCTION twice(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2';";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_another_database_and_over_existing_data() {
    let server = PostgresServer::start().unwrap();
    create(&server, "app", APP).await;
    create(&server, "other", APP).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let (location, _) = ok(&["backup", &server.url("postgres"), "--to", &dest], &[]);
    let expected = fingerprint(&connect(&server, "app").await).await;

    // A backup with several databases goes into one named database only when one is chosen.
    fails(
        &["restore", &location, "--to", &server.url("copy")],
        &[],
        &["choose one with --databases"],
    );
    let (line, _) = ok(
        &[
            "restore",
            &location,
            "--to",
            &server.url("copy"),
            "--databases",
            "app",
            "--create",
        ],
        &[],
    );
    assert!(
        line.starts_with("restored 1 database(s) (1 created)"),
        "{line}"
    );
    let copy = connect(&server, "copy").await;
    let copy_url = server.url("copy");
    // `coffer restore` of the backup's database "app" into "copy", with `extra` flags.
    let into_copy = |extra: &[&'static str]| -> Vec<&str> {
        let mut args = vec![
            "restore",
            location.as_str(),
            "--to",
            &copy_url,
            "--databases",
            "app",
        ];
        args.extend_from_slice(extra);
        args
    };
    assert_eq!(fingerprint(&copy).await, expected);

    // Over existing objects without --clean, pg_restore fails in its single transaction:
    // the database is left exactly as it was. The dry run says so first, and writes nothing.
    copy.batch_execute(
        "DELETE FROM tags; UPDATE items SET name = 'changed'; \
         CREATE TABLE notes (n int); INSERT INTO notes VALUES (1), (2)",
    )
    .await
    .unwrap();
    let changed = fingerprint(&copy).await;
    let databases = database_names(&server).await;
    let preview = |extra: &[&'static str]| -> Vec<String> {
        let mut args = into_copy(extra);
        args.push("--dry-run");
        let (_, out) = ok(&args, &[]);
        let said = support::cli::stdout(&out);
        assert!(!said.contains(server.password()), "{said}");
        said.lines().map(str::to_owned).collect()
    };
    let said = preview(&[]);
    assert!(
        said[0].starts_with("dry run: nothing was written to postgres://"),
        "{said:?}"
    );
    assert_eq!(
        said[1..],
        [
            "database \"copy\" (from \"app\"): exists: restored into as it is",
            "  public.items: 50 rows now, 50 rows after",
            "  public.tags: 0 rows now, 25 rows after",
            "  left alone (not in the backup): public.notes",
            "  the restore would fail and change nothing in \"copy\": public.items, public.tags, function public.twice(x integer), view public.tagged already exist (restore with clean to replace them)",
        ],
        "{said:?}"
    );
    assert_eq!(fingerprint(&copy).await, changed, "the dry run wrote");
    let message = fails(
        &into_copy(&[]),
        &[],
        &[
            "pg_restore into database \"copy\" at 127.0.0.1:",
            "failed",
            "already exists",
        ],
    );
    assert!(!message.contains(server.password()), "{message}");
    assert_eq!(fingerprint(&copy).await, changed, "rolled back");

    // --clean drops and re-creates what the backup holds, as its dry run says; the other
    // table is left alone. A dry run into a database that does not exist creates nothing.
    let said = preview(&["--clean"]);
    assert_eq!(
        said[1..],
        [
            "database \"copy\" (from \"app\"): exists: the backup's objects are dropped and created again (clean)",
            "  public.items: 50 rows now, 50 rows after",
            "  public.tags: 0 rows now, 25 rows after",
            "  left alone (not in the backup): public.notes",
        ],
        "{said:?}"
    );
    let (_, out) = ok(
        &[
            "restore",
            &location,
            "--to",
            &server.url("fresh"),
            "--databases",
            "app",
            "--create",
            "--dry-run",
        ],
        &[],
    );
    let said: Vec<String> = support::cli::stdout(&out)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        said[1..],
        [
            "database \"fresh\" (from \"app\"): created",
            "  public.items: no such table now, 50 rows after",
            "  public.tags: no such table now, 25 rows after",
        ],
        "{said:?}"
    );
    assert_eq!(fingerprint(&copy).await, changed, "the dry run wrote");
    assert_eq!(
        database_names(&server).await,
        databases,
        "the dry run created"
    );
    ok(&into_copy(&["--clean"]), &[]);
    let notes = copy
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap();
    assert_eq!(notes.get::<_, i64>(0), 2);
    copy.batch_execute("DROP TABLE notes").await.unwrap();
    assert_eq!(fingerprint(&copy).await, expected);

    // A restore whose row counts differ from the backup's fails, naming the table.
    let manifest_path = Path::new(&location).join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for table in manifest["stats"]["tableRows"]["app"]
        .as_array_mut()
        .unwrap()
    {
        if table["table"] == "tags" {
            table["rows"] = Value::from(26);
        }
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    fails(
        &into_copy(&["--clean"]),
        &[],
        &["table public.tags of database \"copy\" has 25 rows; the backup counted 26"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_one_line_store_nothing_and_touch_nothing() {
    let server = PostgresServer::start().unwrap();
    create(&server, "app", APP).await;
    let dir = tempfile::tempdir().unwrap();
    let dest_path = dir.path().join("d");
    let dest = dest_path.display().to_string();
    let port = server.port();

    let refused = support::distinctive_secret("pg-pw");
    let message = support::cli::fails_hiding(
        &refused,
        &[
            "backup",
            &format!("postgres://postgres:{refused}@127.0.0.1:{port}/app"),
            "--to",
            &dest,
        ],
        &[],
        &["refused user \"postgres\"", "check the user and password"],
    );
    assert!(!message.contains(&refused), "{message}");
    fails(
        &[
            "backup",
            "postgres://postgres@127.0.0.1:1/app",
            "--to",
            &dest,
        ],
        &[],
        &[
            "cannot connect to PostgreSQL at 127.0.0.1:1",
            "check the host and port",
        ],
    );
    fails(
        &[
            "backup",
            &server.url("postgres"),
            "--to",
            &dest,
            "--databases",
            "app,nope",
        ],
        &[],
        &[&format!(
            "database \"nope\" does not exist on 127.0.0.1:{port} (it has: app, postgres)"
        )],
    );
    fails(
        &["backup", &server.url("nope"), "--to", &dest],
        &[],
        &["database \"nope\" does not exist"],
    );
    nothing_stored(&dest_path);

    // The password may come from PGPASSWORD or a private password file instead of the URL;
    // a password file others can read is ignored, as libpq does.
    let bare = format!("postgres://postgres@127.0.0.1:{port}/app");
    let env_dest = dir.path().join("from-env").display().to_string();
    ok(
        &["backup", &bare, "--to", &env_dest],
        &[("PGPASSWORD", server.password().to_owned())],
    );
    let passfile = dir.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!("127.0.0.1:{port}:*:postgres:{}\n", server.password()),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let passfile_env = [("PGPASSFILE", passfile.display().to_string())];
    ok(&["backup", &bare, "--to", &env_dest], &passfile_env);
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = support::cli::coffer(&["backup", &bare, "--to", &env_dest], &passfile_env);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let message = stderr(&out);
    assert!(
        message.contains("because others can read it (chmod 600 it)"),
        "{message}"
    );
    assert!(message.contains("check the user and password"), "{message}");

    // pg_dump fails halfway: the backup role may read every table but one that row-level
    // security guards, which comes after the others in the dump.
    let admin = connect(&server, "postgres").await;
    for sql in [
        "CREATE ROLE dumper LOGIN PASSWORD 'dumper-pw'",
        "CREATE DATABASE halfway OWNER dumper",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    connect_to(&format!(
        "host=127.0.0.1 port={port} user=dumper password=dumper-pw dbname=halfway"
    ))
    .await
    .batch_execute(
        "CREATE TABLE big AS SELECT i, md5(i::text) FROM generate_series(1, 200000) AS i; \
         CREATE TABLE zz_guarded (owner text, secret text); \
         INSERT INTO zz_guarded VALUES ('someone', 'x'); \
         ALTER TABLE zz_guarded ENABLE ROW LEVEL SECURITY; \
         ALTER TABLE zz_guarded FORCE ROW LEVEL SECURITY; \
         CREATE POLICY mine ON zz_guarded USING (owner = current_user)",
    )
    .await
    .unwrap();
    fails(
        &[
            "backup",
            &format!("postgres://dumper:dumper-pw@127.0.0.1:{port}/halfway"),
            "--databases",
            "halfway",
            "--to",
            &dest,
            "--compression",
            "none",
        ],
        &[],
        &[
            "pg_dump of database \"halfway\" at 127.0.0.1:",
            "failed",
            "row-level security policy for table \"zz_guarded\"",
        ],
    );
    nothing_stored(&dest_path);

    // A pg_dump older than the server is refused before anything runs.
    let old = tempfile::tempdir().unwrap();
    for tool in ["pg_dump", "pg_dumpall", "pg_restore", "psql"] {
        let path = old.path().join(tool);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{tool} (PostgreSQL) 9.6.24'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    fails(
        &[
            "backup",
            &server.url("app"),
            "--to",
            &dest,
            "--pg-bin-dir",
            &old.path().display().to_string(),
        ],
        &[],
        &[
            "pg_dump 9 is older than the server (",
            "install postgresql-client-",
        ],
    );
    nothing_stored(&dest_path);

    // A damaged backup is refused before the target is touched.
    let (location, _) = ok(&["backup", &server.url("app"), "--to", &dest], &[]);
    let object = Path::new(&location).join("postgres/app.dump.zst");
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&object, &bytes).unwrap();
    let target = PostgresServer::start().unwrap();
    fails(
        &[
            "restore",
            &location,
            "--to",
            &server_url(&target),
            "--create",
            "--globals",
        ],
        &[],
        &["app.dump.zst is damaged"],
    );
    assert_eq!(database_names(&target).await, ["postgres"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_backup_and_leaves_no_file() {
    let server = PostgresServer::start().unwrap();
    create(
        &server,
        "app",
        "CREATE TABLE t AS SELECT i, md5(i::text) FROM generate_series(1, 20000) AS i",
    )
    .await;
    support::cli::backup_fails_on_a_full_disk(&server.url("app"), &["--compression", "none"]);
}

/// Whether `user` can log in to `server` with `password`.
async fn logs_in(server: &PostgresServer, user: &str, password: &str) -> bool {
    tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=postgres",
            server.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .is_ok()
}

/// One boolean about the target, by SQL.
async fn check(server: &PostgresServer, sql: &str) -> bool {
    connect(server, "postgres")
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_roles_keep_their_password_unless_replaced() {
    let source = PostgresServer::start().unwrap();
    create(&source, "app", APP).await;
    connect(&source, "postgres")
        .await
        .batch_execute(
            "CREATE ROLE keeper LOGIN PASSWORD 'backup-pw'; \
             CREATE ROLE newbie LOGIN PASSWORD 'newbie-pw'; \
             CREATE ROLE readers; GRANT readers TO keeper",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let (location, _) = ok(
        &[
            "backup",
            &source.url("postgres"),
            "--databases",
            "app",
            "--to",
            &dest,
        ],
        &[],
    );

    // The target has its own keeper, with another password and CREATEDB.
    let target = PostgresServer::start().unwrap();
    connect(&target, "postgres")
        .await
        .batch_execute("CREATE ROLE keeper LOGIN CREATEDB PASSWORD 'target-pw'")
        .await
        .unwrap();
    let url = server_url(&target);

    // --roles needs --globals.
    let out = support::cli::coffer(
        &["restore", &location, "--to", &url, "--roles", "replace"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("add --globals"), "{}", stderr(&out));

    // By default existing roles are kept: keeper keeps its password and attributes, the
    // missing roles are created, and the membership (which only adds) is granted.
    let (line, _) = ok(
        &["restore", &location, "--to", &url, "--create", "--globals"],
        &[],
    );
    assert!(
        line.ends_with("; roles: 2 created, 2 kept, 0 replaced"),
        "{line}"
    );
    assert!(logs_in(&target, "keeper", "target-pw").await);
    assert!(!logs_in(&target, "keeper", "backup-pw").await);
    assert!(
        check(
            &target,
            "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'keeper'"
        )
        .await
    );
    assert!(logs_in(&target, "newbie", "newbie-pw").await);
    assert!(check(&target, "SELECT pg_has_role('keeper', 'readers', 'MEMBER')").await);

    // --roles replace gives existing roles the backup's password and attributes; the role
    // the restore logs in as keeps its own.
    let (line, _) = ok(
        &[
            "restore",
            &location,
            "--to",
            &format!("{url}/second"),
            "--create",
            "--globals",
            "--roles",
            "replace",
        ],
        &[],
    );
    assert!(
        line.ends_with("; roles: 0 created, 1 kept, 3 replaced"),
        "{line}"
    );
    assert!(logs_in(&target, "keeper", "backup-pw").await);
    assert!(!logs_in(&target, "keeper", "target-pw").await);
    assert!(
        !check(
            &target,
            "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'keeper'"
        )
        .await
    );
    assert!(logs_in(&target, "postgres", target.password()).await);
}

/// Replaces the roles script of an uncompressed backup in a directory and fixes the
/// manifest's sizes and SHA-256 so that the integrity checks pass: what anyone who can
/// write to the bucket can do.
fn forge_globals(location: &str, script: &str) {
    let folder = Path::new(location);
    let manifest_path = folder.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let object = manifest["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|o| o["format"] == "pg-globals-sql")
        .unwrap();
    std::fs::write(folder.join(object["name"].as_str().unwrap()), script).unwrap();
    let sha = hex::encode(Sha256::digest(script.as_bytes()));
    object["rawBytes"] = Value::from(script.len());
    object["storedBytes"] = Value::from(script.len());
    object["rawSha256"] = Value::from(sha.clone());
    object["sha256"] = Value::from(sha);
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

/// `script` with `extra` inserted before its `\unrestrict` line (or at the end).
fn with_before_unrestrict(script: &str, extra: &str) -> String {
    match script.find("\n\\unrestrict ") {
        Some(at) => format!("{}\n{extra}{}", &script[..at], &script[at..]),
        None => format!("{script}{extra}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_roles_script_is_refused_and_a_failing_one_changes_nothing() {
    let source = PostgresServer::start().unwrap();
    create(&source, "app", APP).await;
    connect(&source, "postgres")
        .await
        .batch_execute("CREATE ROLE newbie LOGIN PASSWORD 'newbie-pw'")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let (location, _) = ok(
        &[
            "backup",
            &source.url("postgres"),
            "--databases",
            "app",
            "--to",
            &dest,
            "--compression",
            "none",
        ],
        &[],
    );
    let original =
        std::fs::read_to_string(Path::new(&location).join("postgres/globals.sql")).unwrap();
    let lines = original.lines().count();
    let target = PostgresServer::start().unwrap();
    let restore = [
        "restore",
        location.as_str(),
        "--to",
        &server_url(&target),
        "--create",
        "--globals",
    ];
    let untouched = async || {
        assert_eq!(database_names(&target).await, ["postgres"]);
        assert!(!role_exists(&target, "newbie").await);
    };

    // A shell command after the script's end: refused before anything runs.
    let marker = dir.path().join("pwned");
    forge_globals(
        &location,
        &format!("{original}\\! touch {}\n", marker.display()),
    );
    fails(
        &restore,
        &[],
        &[
            &format!(
                "line {} of the backup's roles script holds the psql meta-command \\!,",
                lines + 1
            ),
            "restore without --globals",
        ],
    );
    assert!(!marker.exists(), "the meta-command ran");
    untouched().await;

    // Also in the middle of a line, and other meta-commands.
    for (extra, command) in [
        (
            format!("CREATE ROLE x; \\! touch {}\n", marker.display()),
            "\\!",
        ),
        (format!("\\o |touch {}\n", marker.display()), "\\o"),
        ("\\copy (select 1) to program 'sh'\n".to_owned(), "\\copy"),
    ] {
        forge_globals(&location, &with_before_unrestrict(&original, &extra));
        fails(&restore, &[], &[&format!("psql meta-command {command},")]);
    }
    assert!(!marker.exists(), "a meta-command ran");

    // SQL that pg_dumpall does not write about roles is refused as well.
    forge_globals(
        &location,
        &with_before_unrestrict(
            &original,
            &format!("COPY (SELECT 1) TO PROGRAM 'touch {}';\n", marker.display()),
        ),
    );
    fails(
        &restore,
        &[],
        &["holds COPY (SELECT, which is not a statement pg_dumpall --globals-only writes"],
    );
    assert!(!marker.exists());
    untouched().await;

    // A statement the server refuses: the whole roles transaction is rolled back, and the
    // error names the statement.
    forge_globals(
        &location,
        &with_before_unrestrict(&original, "GRANT nobody_here TO newbie;\n"),
    );
    fails(
        &restore,
        &[],
        &[
            "(GRANT nobody_here TO newbie): role \"nobody_here\" does not exist",
            "no role or tablespace was changed",
        ],
    );
    untouched().await;

    // The script as pg_dumpall wrote it restores.
    forge_globals(&location, &original);
    let (line, _) = ok(&restore, &[]);
    assert!(
        line.ends_with("; roles: 1 created, 1 kept, 0 replaced"),
        "{line}"
    );
    assert!(logs_in(&target, "newbie", "newbie-pw").await);
}

/// A directory for a tablespace of `server`, owned by the user the server runs as.
fn tablespace_dir(server: &PostgresServer, name: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(server.dir()).unwrap();
    let dir = server.dir().join(name);
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(owner.uid()), Some(owner.gid())).unwrap();
    dir.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tablespaces_are_created_with_the_roles_or_not_at_all() {
    let source = PostgresServer::start().unwrap();
    create(&source, "app", APP).await;
    let source_dir = tablespace_dir(&source, "fast");
    let admin = connect(&source, "postgres").await;
    admin
        .batch_execute(&format!("CREATE TABLESPACE fast LOCATION '{source_dir}'"))
        .await
        .unwrap();
    admin
        .batch_execute(
            "CREATE ROLE space_owner; CREATE ROLE newbie; \
             ALTER TABLESPACE fast OWNER TO space_owner; \
             ALTER TABLESPACE fast SET (random_page_cost = 1.1); \
             GRANT CREATE ON TABLESPACE fast TO newbie",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let (location, _) = ok(
        &[
            "backup",
            &source.url("postgres"),
            "--databases",
            "app",
            "--to",
            &dest,
            "--compression",
            "none",
        ],
        &[],
    );
    let original =
        std::fs::read_to_string(Path::new(&location).join("postgres/globals.sql")).unwrap();
    let target = PostgresServer::start().unwrap();
    let url = server_url(&target);
    let restore = |into: &'static str| {
        vec![
            "restore".to_owned(),
            location.clone(),
            "--to".to_owned(),
            format!("{url}/{into}"),
            "--create".to_owned(),
            "--globals".to_owned(),
        ]
    };
    let has_fast = "SELECT count(*) = 1 FROM pg_tablespace WHERE spcname = 'fast'";

    // The source's directory is in use: CREATE TABLESPACE fails first, and nothing is left.
    fails(
        &strs(&restore("one")),
        &[],
        &[
            "(CREATE TABLESPACE fast …)",
            "no role or tablespace was changed",
        ],
    );
    assert!(!check(&target, has_fast).await);
    assert!(!role_exists(&target, "newbie").await);

    // The tablespace is created, then a role statement fails: it is dropped again.
    let target_dir = tablespace_dir(&target, "fast");
    let moved = original.replace(&source_dir, &target_dir);
    forge_globals(
        &location,
        &with_before_unrestrict(&moved, "GRANT nobody_here TO newbie;\n"),
    );
    fails(
        &strs(&restore("one")),
        &[],
        &[
            "role \"nobody_here\" does not exist",
            "no role or tablespace was changed",
        ],
    );
    assert!(!check(&target, has_fast).await);
    assert!(!role_exists(&target, "newbie").await);

    // Restored: owned by its owner, with its options and privileges.
    forge_globals(&location, &moved);
    let (line, _) = ok(&strs(&restore("one")), &[]);
    assert!(
        line.ends_with("; roles: 2 created, 1 kept, 0 replaced; tablespaces: 1 created, 0 kept"),
        "{line}"
    );
    assert!(
        check(
            &target,
            "SELECT pg_get_userbyid(spcowner) = 'space_owner' \
             AND spcoptions = '{random_page_cost=1.1}' FROM pg_tablespace WHERE spcname = 'fast'"
        )
        .await
    );
    assert!(
        check(
            &target,
            "SELECT has_tablespace_privilege('newbie', 'fast', 'CREATE')"
        )
        .await
    );

    // Restored again, the tablespace exists and is kept.
    let (line, _) = ok(&strs(&restore("two")), &[]);
    assert!(
        line.ends_with("; roles: 0 created, 3 kept, 0 replaced; tablespaces: 0 created, 1 kept"),
        "{line}"
    );
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

const ACCOUNTS: i64 = 1000;
const OPENING_BALANCE: i64 = 1000;

/// The transfers `bank` holds (committed ones, as of now).
async fn transfers(bank: &tokio_postgres::Client) -> i64 {
    bank.query_one("SELECT count(*) FROM transfers", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_the_backup_restore_as_one_snapshot_with_the_counted_rows() {
    let server = PostgresServer::start().unwrap();
    create(
        &server,
        "bank",
        &format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL); \
             INSERT INTO accounts SELECT i, {OPENING_BALANCE} FROM generate_series(1, {ACCOUNTS}) AS i; \
             CREATE TABLE archive AS SELECT i AS id, md5(i::text) AS note FROM generate_series(1, 100000) AS i; \
             CREATE TABLE transfers (id bigserial PRIMARY KEY, \
                 source bigint NOT NULL REFERENCES accounts, target bigint NOT NULL REFERENCES accounts, \
                 amount bigint NOT NULL)"
        ),
    )
    .await;

    // A writer moves money between accounts, the total staying the same, and logs each
    // transfer, one transaction each, until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let client = connect(&server, "bank").await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n: i64 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                // 6n + 3 is odd, never a multiple of ACCOUNTS: source and target differ.
                let (source, target) = (1 + n % ACCOUNTS, 1 + (7 * n + 3) % ACCOUNTS);
                let amount = 1 + n % 50;
                client
                    .batch_execute(&format!(
                        "BEGIN; \
                         UPDATE accounts SET balance = balance - {amount} WHERE id = {source}; \
                         UPDATE accounts SET balance = balance + {amount} WHERE id = {target}; \
                         INSERT INTO transfers (source, target, amount) VALUES ({source}, {target}, {amount}); \
                         COMMIT"
                    ))
                    .await
                    .unwrap();
            }
            n
        })
    };
    let watcher = connect(&server, "bank").await;
    let watcher = &watcher;
    eventually(
        Duration::from_secs(30),
        "the writer's first transfers",
        || async { (transfers(watcher).await >= 100).then_some(()) },
    )
    .await;

    // Someone holds a lock on archive (a migration, say): the backup takes its snapshot,
    // then waits to count archive's rows, while the transfers go on. This makes sure writes
    // commit between the snapshot and the dump, whatever the machine's speed.
    let locker = connect(&server, "bank").await;
    locker
        .batch_execute("BEGIN; LOCK TABLE archive IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let before = transfers(watcher).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let backup = {
        let args = [
            "backup".to_owned(),
            server.url("postgres"),
            "--databases".to_owned(),
            "bank".to_owned(),
            "--to".to_owned(),
            dest,
        ];
        tokio::task::spawn_blocking(move || ok(&strs(&args), &[]).0)
    };
    eventually(
        Duration::from_secs(60),
        "the backup to wait for archive's lock",
        || async {
            assert!(!backup.is_finished(), "the backup ended before archive's lock");
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'archive'::regclass \
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (waiting > 0).then_some(())
        },
    )
    .await;
    // The snapshot was taken before the wait began: it holds at most these transfers.
    let at_most = transfers(watcher).await;
    eventually(
        Duration::from_secs(30),
        "transfers after the snapshot",
        || async { (transfers(watcher).await >= at_most + 100).then_some(()) },
    )
    .await;
    locker.batch_execute("COMMIT").await.unwrap();
    let location = backup.await.unwrap();
    let after = transfers(watcher).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    let last = transfers(watcher).await;
    assert_eq!(last, written);
    assert!(
        after - before >= 100,
        "{} transfers during the backup",
        after - before
    );

    let (line, _) = ok(
        &[
            "restore",
            &location,
            "--to",
            &server.url("copy"),
            "--databases",
            "bank",
            "--create",
        ],
        &[],
    );
    assert!(
        line.starts_with("restored 1 database(s) (1 created)"),
        "{line}"
    );
    let copy = connect(&server, "copy").await;

    // Every table holds the rows the backup counted in its snapshot.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&location).join("manifest.json")).unwrap())
            .unwrap();
    let counted: Vec<(String, i64)> = manifest["stats"]["tableRows"]["bank"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                format!(
                    "{}.{}",
                    t["schema"].as_str().unwrap(),
                    t["table"].as_str().unwrap()
                ),
                t["rows"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut restored = Vec::new();
    for row in copy
        .query(
            "SELECT format('%s.%s', schemaname, relname) FROM pg_stat_user_tables ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
    {
        let table: String = row.get(0);
        let rows: i64 = copy
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        restored.push((table, rows));
    }
    assert_eq!(restored, counted);
    assert_eq!(
        restored.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["public.accounts", "public.archive", "public.transfers"]
    );

    // One snapshot: the money is all there, each balance is what the restored transfers
    // made of it, and the transfers are the first ones, without a gap.
    let row = copy
        .query_one(
            &format!(
                "SELECT (SELECT sum(balance) FROM accounts)::bigint, \
                 (SELECT count(*) FROM accounts a WHERE balance <> {OPENING_BALANCE} \
                    - coalesce((SELECT sum(amount) FROM transfers WHERE source = a.id), 0) \
                    + coalesce((SELECT sum(amount) FROM transfers WHERE target = a.id), 0)), \
                 (SELECT count(*) FROM transfers), \
                 (SELECT coalesce(max(id), 0) FROM transfers)"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), ACCOUNTS * OPENING_BALANCE, "total");
    assert_eq!(
        row.get::<_, i64>(1),
        0,
        "accounts that disagree with the transfers"
    );
    let restored_transfers: i64 = row.get(2);
    assert_eq!(
        row.get::<_, i64>(3),
        restored_transfers,
        "a gap in the transfers"
    );
    // What was written before the backup began is in it; what was written after its
    // snapshot is not.
    assert!(
        before <= restored_transfers && restored_transfers <= at_most && at_most + 100 <= last,
        "before the backup {before}, restored {restored_transfers}, at most {at_most}, in the end {last}"
    );
}

/// `coffer download` writes the `pg_dump -Fc` archives and the roles SQL as files that
/// PostgreSQL's own `pg_restore` restores, without Coffer; a tampered archive is refused and
/// nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_writes_archives_that_pg_restore_restores() {
    let server = PostgresServer::start().unwrap();
    create(&server, "app", APP).await;
    let expected = fingerprint(&connect(&server, "app").await).await;
    let expected_schema = schema(&server, "app");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let (location, _) = ok(&["backup", &server.url("postgres"), "--to", &dest], &[]);

    let into = dir.path().join("download");
    let (_, out) = ok(
        &["download", &location, "--to", &into.display().to_string()],
        &[],
    );
    let listed = support::cli::stdout(&out);
    for file in ["postgres/app.dump", "postgres/globals.sql"] {
        assert!(into.join(file).is_file(), "{file} is downloaded: {listed}");
    }
    assert!(into.join("manifest.json").is_file());
    let globals = std::fs::read_to_string(into.join("postgres/globals.sql")).unwrap();
    assert!(globals.contains("CREATE ROLE"), "{globals}");

    // pg_restore, as a DBA without Coffer would run it, into a new database.
    connect(&server, "postgres")
        .await
        .batch_execute("CREATE DATABASE by_hand")
        .await
        .unwrap();
    let restored = std::process::Command::new(server.bin_dir().join("pg_restore"))
        .args(["--no-owner", "--exit-on-error", "--dbname"])
        .arg(server.connection_string("by_hand"))
        .arg(into.join("postgres/app.dump"))
        .output()
        .unwrap();
    assert!(restored.status.success(), "pg_restore: {restored:?}");
    assert_eq!(
        fingerprint(&connect(&server, "by_hand").await).await,
        expected
    );
    assert_eq!(schema(&server, "by_hand"), expected_schema);

    // One object to stdout, chosen by name; several objects need --object.
    fails_usage(
        &["download", &location, "--to", "-"],
        &["holds 3 objects", "give --object NAME"],
    );
    let piped = support::cli::coffer(
        &[
            "download",
            &location,
            "--to",
            "-",
            "--object",
            "postgres/app.dump",
        ],
        &[],
    );
    assert!(piped.status.success(), "{piped:?}");
    assert!(piped.stdout == std::fs::read(into.join("postgres/app.dump")).unwrap());

    // A directory in the way that is a symbolic link is never written through.
    let linked = dir.path().join("linked");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&linked).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, linked.join("postgres")).unwrap();
    fails(
        &["download", &location, "--to", &linked.display().to_string()],
        &[],
        &["postgres is in the way", "nothing of it was kept"],
    );
    nothing_stored(&elsewhere);
    assert!(!linked.join("manifest.json").exists());

    // A tampered archive is refused; nothing of the download is kept.
    let object = Path::new(&location).join("postgres/app.dump.zst");
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let other = dir.path().join("tampered");
    fails(
        &["download", &location, "--to", &other.display().to_string()],
        &[],
        &["postgres/app.dump.zst is damaged", "nothing of it was kept"],
    );
    nothing_stored(&other);
}

/// Runs a command that must fail with a usage error (exit status 2) naming every fragment.
fn fails_usage(args: &[&str], fragments: &[&str]) {
    let out = support::cli::coffer(args, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let message = stderr(&out);
    for fragment in fragments {
        assert!(message.contains(fragment), "{fragment:?} not in {message}");
    }
}
