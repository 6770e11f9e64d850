//! The command line: every subcommand works or fails in one line that says why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use coffer_testenv::{PostgresServer, S3Server};

mod support;

fn coffer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn worker(dir: &std::path::Path, plan: Option<&str>) -> (Output, serde_json::Value) {
    let term = dir.join("termination-log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
    command
        .args(["worker", "--termination-log"])
        .arg(&term)
        .arg("--source-dir")
        .arg(dir.join("source"))
        .arg("--store-dir")
        .arg(dir.join("store"))
        .env_remove("RUST_LOG")
        .env_remove("COFFER_PLAN");
    if let Some(plan) = plan {
        command.env("COFFER_PLAN", plan);
    }
    let out = command.output().unwrap();
    let summary = serde_json::from_slice(&std::fs::read(&term).unwrap()).unwrap();
    (out, summary)
}

#[test]
fn the_worker_reports_a_missing_or_unknown_plan_in_one_line_and_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    for (plan, says) in [
        (None, "COFFER_PLAN is not set"),
        (
            Some(r#"{"operation":"teleport"}"#),
            "COFFER_PLAN is not a plan this worker understands",
        ),
    ] {
        let (out, summary) = worker(dir.path(), plan);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("coffer worker: InvalidPlan: "),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert_eq!(summary["failure"], "InvalidPlan");
    }
}

#[test]
fn the_worker_runs_a_plan_and_deletes_what_it_made() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("source/sub")).unwrap();
    std::fs::write(dir.path().join("source/sub/a.txt"), "coffer").unwrap();
    let plan = serde_json::json!({
        "operation": "backup",
        "source": {"volume": {"claimName": "data"}},
        "storage": {"filesystem": {"claimName": "store"}},
        "folder": "shop/data/20261201T160000Z/",
        "name": "data",
        "compression": "zstd",
    });
    let (out, summary) = worker(dir.path(), Some(&plan.to_string()));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(summary.get("failure"), None, "{summary}");
    assert_eq!(summary["folder"], "shop/data/20261201T160000Z/");
    assert_eq!(summary["backup"]["files"], 2, "{summary}");
    assert_eq!(summary["manifestSha256"].as_str().unwrap().len(), 64);
    let manifest = dir
        .path()
        .join("store/shop/data/20261201T160000Z/manifest.json");
    assert!(manifest.is_file());
    // The same folder again: refused, nothing overwritten.
    let (out, summary) = worker(dir.path(), Some(&plan.to_string()));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(summary["failure"], "AlreadyExists", "{summary}");
    let delete = serde_json::json!({
        "operation": "delete",
        "storage": {"filesystem": {"claimName": "store"}},
        "folder": "shop/data/20261201T160000Z/",
    });
    let (out, summary) = worker(dir.path(), Some(&delete.to_string()));
    assert!(out.status.success(), "{out:?}");
    assert!(
        summary["message"]
            .as_str()
            .unwrap()
            .starts_with("deleted 2 objects"),
        "{summary}"
    );
    assert!(!manifest.exists());
}

#[test]
fn the_controller_without_an_api_server_says_so_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["controller", "--metrics-address", "127.0.0.1:0"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("coffer controller: cannot reach the Kubernetes API server"),
        "{stderr}"
    );
}

#[test]
fn unknown_sources_and_targets_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().display().to_string();
    for (args, says) in [
        (
            &["backup", "mongodb://u@h/db", "--to", &dest][..],
            "mongodb is not a source Coffer knows",
        ),
        (
            &["restore", &dest, "--to", "mongodb://u@h/db"],
            "is not a restore target",
        ),
    ] {
        let out = coffer(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was written"
    );
}

#[test]
fn version_prints_the_crate_version() {
    let out = coffer(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("coffer {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = coffer(&["--version"]);
    assert!(out.status.success());
}

#[test]
fn usage_errors_exit_2_with_help() {
    let out = coffer(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
    let out = coffer(&["--log-format", "xml", "version"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn json_logs_go_to_stderr_one_object_per_line() {
    // An invalid RUST_LOG is reported as a warning, which exercises the logger.
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["--log-format", "json", "version"])
        .env("RUST_LOG", "coffer=notalevel")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let line = stderr.lines().next().expect("a warning line");
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["level"], "WARN");
    assert!(event["message"].as_str().unwrap().contains("RUST_LOG"));
    // Text format says the same in plain words.
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["version"])
        .env("RUST_LOG", "coffer=notalevel")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("WARN") && stderr.contains("RUST_LOG is not a valid filter"),
        "{stderr}"
    );
}

/// The order that makes a backup exist only when whole, observed at the S3 server: every
/// data object is written before the manifest, and a deletion removes the manifest before
/// any data object (so that an interrupted deletion never leaves a manifest that lists
/// missing objects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_write_the_manifest_last_and_deletions_remove_it_first() {
    let s3 = S3Server::start().unwrap();
    support::s3_client(&s3)
        .create_bucket()
        .bucket("order")
        .send()
        .await
        .unwrap();
    let server = PostgresServer::start().unwrap();
    support::pg_data::create(
        &server,
        "app",
        "CREATE TABLE t (n int); INSERT INTO t VALUES (1);",
    )
    .await;
    let env = s3.env();
    let (location, _) = support::cli::ok(
        &["backup", &server.url("app"), "--to", "s3://order/pg"],
        &env,
    );
    let folder = format!("order/{}", location.strip_prefix("s3://order/").unwrap());
    let written: Vec<String> = s3
        .journal()
        .into_iter()
        .filter_map(|e| e.strip_prefix("put ").map(str::to_owned))
        .filter(|key| key.starts_with(&folder))
        .collect();
    // The roles script, two databases' dumps, then the manifest.
    assert_eq!(written.len(), 4, "{written:?}");
    assert_eq!(
        written.last(),
        Some(&format!("{folder}manifest.json")),
        "{written:?}"
    );

    support::cli::ok(&["delete", &location], &env);
    let deleted: Vec<String> = s3
        .journal()
        .into_iter()
        .filter_map(|e| e.strip_prefix("delete ").map(str::to_owned))
        .collect();
    assert_eq!(deleted.len(), 4, "{deleted:?}");
    assert_eq!(
        deleted.first(),
        Some(&format!("{folder}manifest.json")),
        "{deleted:?}"
    );
}
