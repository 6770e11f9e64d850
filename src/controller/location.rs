//! Where a Backup's data lives: its folder in the store and the location shown in status.
//! Pure.

use chrono::{DateTime, Utc};

use crate::api::BackupStorage;

/// The annotation a schedule puts on its Backups with the time the run was due.
pub const SCHEDULED_TIME_ANNOTATION: &str = "coffer.dev/scheduled-time";
/// The label a schedule puts on its Backups with its name.
pub const SCHEDULE_LABEL: &str = "coffer.dev/schedule";

/// `<namespace>/<schedule or backup name>/<UTC timestamp>/`, relative to the store's prefix.
pub fn folder(namespace: &str, group: &str, time: DateTime<Utc>) -> String {
    format!("{namespace}/{group}/{}/", time.format("%Y%m%dT%H%M%SZ"))
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
        let f = folder("shop", "shop-redis", t);
        assert_eq!(f, "shop/shop-redis/20261201T160000Z/");
        let s3 = BackupStorage {
            s3: Some(S3Storage {
                bucket: "backups".into(),
                prefix: "prod/".into(),
                endpoint: None,
                region: "us-east-1".into(),
                force_path_style: false,
                credentials_secret_ref: None,
            }),
            filesystem: None,
        };
        assert_eq!(
            display(&s3, &f),
            "s3://backups/prod/shop/shop-redis/20261201T160000Z/"
        );
        let fs = BackupStorage {
            s3: None,
            filesystem: Some(FilesystemStorage {
                claim_name: "store".into(),
            }),
        };
        assert_eq!(
            display(&fs, &f),
            "pvc://store/shop/shop-redis/20261201T160000Z/"
        );
    }
}
