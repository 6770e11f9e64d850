//! Where a Backup's data lives: its folder in the store and the location shown in status.
//! Pure.

use chrono::{DateTime, Utc};

use crate::api::BackupStorage;

/// The annotation a schedule puts on its Backups with the time the run was due.
pub const SCHEDULED_TIME_ANNOTATION: &str = "coffer.dev/scheduled-time";
/// The label a schedule puts on its Backups with its name.
pub const SCHEDULE_LABEL: &str = "coffer.dev/schedule";

/// `<namespace>/<schedule or backup name>/<UTC timestamp>-<UID prefix>/`, relative to the
/// store's prefix. The Backup's UID makes it unique to one run: two Backups of one schedule in
/// the same second (or a copied object with the same scheduled time) never share a folder, so
/// deleting one can never touch the other's data.
pub fn folder(namespace: &str, group: &str, time: DateTime<Utc>, uid: &str) -> String {
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    format!(
        "{namespace}/{group}/{}-{short}/",
        time.format("%Y%m%dT%H%M%SZ")
    )
}

/// How a user deletes a backup's data by hand (a Backup whose finalizer gave up): a
/// `coffer delete` command line for S3, or the folder to delete on a claim.
pub fn delete_hint(storage: &BackupStorage, folder: &str, owner_uid: &str) -> String {
    match (&storage.s3, &storage.filesystem) {
        (Some(s3), _) => {
            let mut command = format!(
                "coffer delete {} --owner-uid {owner_uid}",
                display(storage, folder)
            );
            if let Some(endpoint) = &s3.endpoint {
                command.push_str(&format!(" --s3-endpoint {endpoint}"));
            }
            command.push_str(&format!(
                " --s3-region {} --s3-path-style {}",
                s3.region, s3.force_path_style
            ));
            format!("delete it with `{command}` and the store's credentials")
        }
        (None, Some(fs)) => format!(
            "delete the folder {folder} of PersistentVolumeClaim {} (or run `coffer delete <mount point>/{folder} --owner-uid {owner_uid}` where it is mounted)",
            fs.claim_name
        ),
        (None, None) => format!("delete the folder {folder}"),
    }
}

/// The folder as users see it: `s3://bucket/prefix/folder` or `pvc://claim/folder`.
pub fn display(storage: &BackupStorage, folder: &str) -> String {
    match (&storage.s3, &storage.filesystem) {
        (Some(s3), _) => {
            let prefix = s3.prefix.trim_matches('/');
            if prefix.is_empty() {
                format!("s3://{}/{folder}", s3.bucket)
            } else {
                format!("s3://{}/{prefix}/{folder}", s3.bucket)
            }
        }
        (None, Some(fs)) => format!("pvc://{}/{folder}", fs.claim_name),
        (None, None) => folder.to_owned(),
    }
}

/// The folder in `location` (as [`display`] wrote it) if that location is in `storage`: how
/// a Backup made before `status.resolved` existed finds its folder again.
pub fn folder_in(storage: &BackupStorage, location: &str) -> Option<String> {
    let folder = location.strip_prefix(&display(storage, ""))?;
    (!folder.is_empty()).then(|| folder.to_owned())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::api::{FilesystemStorage, S3Storage};

    #[test]
    fn folders_and_locations() {
        let t = Utc
            .with_ymd_and_hms(2026, 12, 1, 16, 0, 0)
            .single()
            .unwrap_or_default();
        let f = folder(
            "shop",
            "shop-redis",
            t,
            "3F6C2A1E-5b7d-4c1e-9a2b-0c4d5e6f7a8b",
        );
        assert_eq!(f, "shop/shop-redis/20261201T160000Z-3f6c2a1e/");
        // Two runs of the same second never share a folder.
        assert_ne!(f, folder("shop", "shop-redis", t, "77aa0000-0000"));
        let s3 = BackupStorage {
            s3: Some(S3Storage {
                bucket: "backups".into(),
                prefix: "prod/".into(),
                endpoint: None,
                region: "us-east-1".into(),
                force_path_style: false,
                credentials_secret_ref: None,
                object_lock: None,
            }),
            filesystem: None,
        };
        assert_eq!(
            display(&s3, &f),
            "s3://backups/prod/shop/shop-redis/20261201T160000Z-3f6c2a1e/"
        );
        let fs = BackupStorage {
            s3: None,
            filesystem: Some(FilesystemStorage {
                claim_name: "store".into(),
            }),
        };
        assert_eq!(
            display(&fs, &f),
            "pvc://store/shop/shop-redis/20261201T160000Z-3f6c2a1e/"
        );
        // A recorded location gives its folder back, in the same store only.
        let old = "shop/shop-redis/20261201T160000Z/";
        assert_eq!(folder_in(&s3, &display(&s3, old)).as_deref(), Some(old));
        assert_eq!(folder_in(&fs, &display(&s3, old)), None);
        assert_eq!(folder_in(&s3, "s3://backups/prod/"), None);
    }
}
