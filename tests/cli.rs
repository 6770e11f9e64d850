//! The command line: what is built works, what is not refuses honestly with status 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn coffer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn what_is_not_built_yet_exits_2_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["controller"][..], &["worker"]] {
        let out = coffer(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!("coffer {}: not implemented yet", args[0])),
            "{stderr}"
        );
        assert!(stderr.contains("nothing was done"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was written"
    );
}

#[test]
fn unknown_sources_and_targets_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().display().to_string();
    for (args, says) in [
        (
            &["backup", "mysql://u@h/db", "--to", &dest][..],
            "mysql is not a source Coffer knows",
        ),
        (
            &["restore", &dest, "--to", "mysql://u@h/db"],
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
