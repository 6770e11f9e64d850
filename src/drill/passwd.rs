//! A passwd entry for a scratch server's user when `/etc/passwd` has none.
//!
//! `initdb` looks its user up by UID and refuses to run without an entry. A Pod may run as
//! any UID (`jobTemplate.runAsUser`, OpenShift's random UIDs), and the image's read-only
//! `/etc/passwd` lists only its own. The postmaster itself never looks its user up, but it
//! gets the same environment. nss_wrapper (Debian's `libnss-wrapper`), preloaded,
//! answers those lookups from files the drill writes into its scratch directory, as the
//! PostgreSQL images do for arbitrary users.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::DrillError;

/// The file name of nss_wrapper's library.
const LIBRARY: &str = "libnss_wrapper.so";

/// Whether `passwd` (the text of a passwd file) has an entry for `uid`.
fn has_entry(passwd: &str, uid: u32) -> bool {
    passwd
        .lines()
        .filter_map(|line| line.split(':').nth(2))
        .any(|field| field.parse() == Ok(uid))
}

/// Whether the system knows `uid`: asked of NSS through `getent` (which also sees users of
/// LDAP, sssd or systemd), else read from `/etc/passwd`.
fn known(uid: u32) -> bool {
    match std::process::Command::new("getent")
        .args(["passwd", &uid.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(status) => status.success(),
        Err(_) => has_entry(
            &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
            uid,
        ),
    }
}

/// The passwd and group files that name `uid` and `gid` `coffer` (no home: initdb needs
/// only the name).
fn files(uid: u32, gid: u32) -> (String, String) {
    (
        format!("coffer:x:{uid}:{gid}:Coffer drill:/nonexistent:/usr/sbin/nologin\n"),
        format!("coffer:x:{gid}:\n"),
    )
}

/// nss_wrapper's library for this machine's architecture (`/usr/lib/<arch>-linux-gnu/`),
/// else in `/usr/lib/` or `/usr/lib64/`, if installed.
fn library() -> Option<PathBuf> {
    [
        format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH),
        "/usr/lib64".to_owned(),
        "/usr/lib".to_owned(),
    ]
    .iter()
    .map(|dir| Path::new(dir).join(LIBRARY))
    .find(|path| path.is_file())
}

/// The environment that gives `uid` (group `gid`) a passwd entry for `program`, with its
/// files written into `dir`: nothing when the system knows `uid`.
pub fn entry_for(
    uid: u32,
    gid: u32,
    dir: &Path,
    program: &str,
) -> Result<Vec<(&'static str, OsString)>, DrillError> {
    if known(uid) {
        return Ok(Vec::new());
    }
    let library = library().ok_or_else(|| DrillError::Scratch {
        what: format!("running {program} as UID {uid}"),
        detail: format!(
            "UID {uid} has no passwd entry, which {program} needs, and nss_wrapper is not installed: install libnss-wrapper, or run the drill as a user the system knows"
        ),
    })?;
    let (passwd, group) = files(uid, gid);
    let (passwd_file, group_file) = (dir.join("passwd"), dir.join("group"));
    for (path, text) in [(&passwd_file, passwd), (&group_file, group)] {
        std::fs::write(path, text).map_err(|e| DrillError::Scratch {
            what: format!("writing {}", path.display()),
            detail: e.to_string(),
        })?;
    }
    Ok(vec![
        ("LD_PRELOAD", library.into_os_string()),
        ("NSS_WRAPPER_PASSWD", passwd_file.into_os_string()),
        ("NSS_WRAPPER_GROUP", group_file.into_os_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_found_by_uid_only() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      coffer:x:65532:65532:coffer:/nonexistent:/usr/sbin/nologin\n\
                      broken line\n";
        assert!(has_entry(passwd, 0));
        assert!(has_entry(passwd, 65532));
        assert!(!has_entry(passwd, 4242));
        assert!(!has_entry(passwd, 65533), "a group ID is not a user ID");
        assert!(!has_entry("", 0));
    }

    #[test]
    fn the_files_name_the_user_and_its_group() {
        let (passwd, group) = files(4242, 4343);
        assert_eq!(
            passwd,
            "coffer:x:4242:4343:Coffer drill:/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(group, "coffer:x:4343:\n");
        assert!(has_entry(&passwd, 4242));
    }

    #[test]
    fn the_system_knows_root_and_not_an_unused_uid() {
        assert!(known(0));
        assert!(!known(3_999_999_999));
    }
}
