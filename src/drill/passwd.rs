//! A passwd entry for a scratch server's user when `/etc/passwd` has none.
//!
//! `initdb` looks its user up by UID and refuses to run without an entry. A Pod may run as
//! any UID (`jobTemplate.runAsUser`, OpenShift's random UIDs), and the image's read-only
//! `/etc/passwd` lists only its own. nss_wrapper (Debian's `libnss-wrapper`), preloaded,
//! answers those lookups from files the drill writes into its scratch directory, as the
//! PostgreSQL images do for arbitrary users.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::DrillError;

/// The file name of nss_wrapper's library.
const LIBRARY: &str = "libnss_wrapper.so";

/// Whether `passwd` (the text of `/etc/passwd`) has an entry for `uid`.
fn has_entry(passwd: &str, uid: u32) -> bool {
    passwd
        .lines()
        .filter_map(|line| line.split(':').nth(2))
        .any(|field| field.parse() == Ok(uid))
}

/// The passwd and group files that name `uid` and `gid` `coffer`, home `home`.
fn files(uid: u32, gid: u32, home: &Path) -> (String, String) {
    (
        format!(
            "coffer:x:{uid}:{gid}:Coffer drill:{}:/usr/sbin/nologin\n",
            home.display()
        ),
        format!("coffer:x:{gid}:\n"),
    )
}

/// nss_wrapper's library in the usual places (`/usr/lib/<triplet>/`, `/usr/lib/`,
/// `/usr/lib64/`), if installed.
fn library() -> Option<PathBuf> {
    let multiarch = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join(LIBRARY));
    ["/usr/lib", "/usr/lib64"]
        .iter()
        .map(|dir| Path::new(dir).join(LIBRARY))
        .chain(multiarch)
        .find(|path| path.is_file())
}

/// The environment that gives `uid` (group `gid`) a passwd entry for `program`, with its
/// files written into `home`: nothing when `/etc/passwd` has one.
pub fn entry_for(
    uid: u32,
    gid: u32,
    home: &Path,
    program: &str,
) -> Result<Vec<(&'static str, OsString)>, DrillError> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if has_entry(&passwd, uid) {
        return Ok(Vec::new());
    }
    let library = library().ok_or_else(|| DrillError::Scratch {
        what: format!("running {program} as UID {uid}"),
        detail: format!(
            "UID {uid} has no entry in /etc/passwd, which {program} needs, and nss_wrapper is not installed: install libnss-wrapper, or run the drill as a user /etc/passwd lists"
        ),
    })?;
    let (passwd, group) = files(uid, gid, home);
    let (passwd_file, group_file) = (home.join("passwd"), home.join("group"));
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
        let (passwd, group) = files(4242, 4343, Path::new("/scratch/postgres"));
        assert_eq!(
            passwd,
            "coffer:x:4242:4343:Coffer drill:/scratch/postgres:/usr/sbin/nologin\n"
        );
        assert_eq!(group, "coffer:x:4343:\n");
        assert!(has_entry(&passwd, 4242));
    }
}
