//! Running the `coffer` binary as users do, and checking what its failures leave behind.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `coffer` with `args` and extra environment variables (`RUST_LOG` removed).
pub fn coffer(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Runs a command that must succeed; returns its stdout's last line.
pub fn ok(args: &[&str], env: &[(&str, String)]) -> (String, Output) {
    let out = coffer(args, env);
    assert!(
        out.status.success(),
        "coffer {args:?} failed: {}",
        stderr(&out)
    );
    let last = stdout(&out).lines().last().unwrap_or_default().to_owned();
    (last, out)
}

/// Runs a command that must fail with exit status 1 and a one-line message containing
/// every fragment; returns the message.
pub fn fails(args: &[&str], env: &[(&str, String)], fragments: &[&str]) -> String {
    one_line_failure(&coffer(args, env), args, fragments)
}

fn one_line_failure(out: &std::process::Output, args: &[&str], fragments: &[&str]) -> String {
    assert_eq!(out.status.code(), Some(1), "coffer {args:?}: {out:?}");
    let message = stderr(out);
    assert_eq!(message.trim_end().lines().count(), 1, "one line: {message}");
    let command = format!("coffer {}: ", args[0]);
    assert!(message.starts_with(&command), "{message}");
    for fragment in fragments {
        assert!(message.contains(fragment), "{fragment:?} not in {message}");
    }
    message
}

/// [`fails`], and `secret` is in neither its stdout nor its stderr.
pub fn fails_hiding(
    secret: &str,
    args: &[&str],
    env: &[(&str, String)],
    fragments: &[&str],
) -> String {
    let out = coffer(args, env);
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !String::from_utf8_lossy(bytes).contains(secret),
            "the secret is in coffer's {stream}: {out:?}"
        );
    }
    one_line_failure(&out, args, fragments)
}

/// Asserts that no file exists under `dest`.
pub fn nothing_stored(dest: &Path) {
    let files: Vec<_> = walk(dest);
    assert!(files.is_empty(), "files left behind: {files:?}");
}

/// Every file (not directory) under `dir`.
pub fn walk(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                vec![e.path().display().to_string()]
            }
        })
        .collect()
}

/// Runs `coffer` with `args` in a private mount namespace where `{disk}` in any argument is
/// a fresh 256 KiB tmpfs (no root needed). After the command, its exit status (`exit=N`)
/// and every file left on the small disk are appended to stderr.
pub fn on_a_full_disk(args: &[&str]) -> Output {
    let mount = tempfile::tempdir().unwrap();
    let mount = mount.path().display().to_string();
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace("{disk}", &mount).replace('\'', "'\\''")))
        .collect();
    let script = format!(
        "mount -t tmpfs -o size=256k coffer-test {mount} || exit 90; \
         \"$0\" {}; echo \"exit=$?\" >&2; find {mount} -type f -printf 'left: %p\\n' >&2",
        quoted.join(" ")
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .arg(env!("CARGO_BIN_EXE_coffer"))
        .env_remove("RUST_LOG")
        .output()
        .expect("unshare (util-linux) runs coffer in a private mount namespace");
    assert_ne!(
        out.status.code(),
        Some(90),
        "cannot mount a tmpfs in a user namespace here: {}",
        stderr(&out)
    );
    out
}

/// Runs `coffer backup SOURCE --to {disk}/store [extra...]` on a full disk and asserts what
/// every backup must do there: one message naming the full device and the fix, exit status
/// 1, and no file left behind. Returns stderr.
pub fn backup_fails_on_a_full_disk(source: &str, extra: &[&str]) -> String {
    let mut args = vec!["backup", source, "--to", "{disk}/store"];
    args.extend_from_slice(extra);
    let err = stderr(&on_a_full_disk(&args));
    assert!(
        err.contains("no space left on the device holding")
            && err.contains("choose another destination"),
        "{err}"
    );
    assert!(err.contains("exit=1"), "{err}");
    let left: Vec<&str> = err.lines().filter(|l| l.starts_with("left: ")).collect();
    assert!(left.is_empty(), "files left on the full disk: {left:?}");
    err
}

/// The number after `label` in a dry run's output (`added: 12 keys ...`).
pub fn counted(output: &str, label: &str) -> u64 {
    let line = output
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in {output}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
