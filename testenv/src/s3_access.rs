//! A second, read-only key for the S3 server: it may list and read, and every request that
//! would write or delete is refused with `AccessDenied`, as a bucket policy that grants only
//! `s3:GetObject` and `s3:ListBucket` would.

use s3s::access::{S3Access, S3AccessContext};
use s3s::{S3Result, s3_error};

/// Refuses writes made with `read_only_key`; any other signed request passes.
pub struct ReadOnlyKey {
    pub read_only_key: String,
}

/// Whether the operation (by its S3 name, `PutObject`) changes the store.
pub fn writes(operation: &str) -> bool {
    [
        "Put", "Delete", "Create", "Upload", "Complete", "Abort", "Copy", "Restore",
    ]
    .iter()
    .any(|verb| operation.starts_with(verb))
}

#[async_trait::async_trait]
impl S3Access for ReadOnlyKey {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        if credentials.access_key == self.read_only_key && writes(cx.s3_op().name()) {
            return Err(s3_error!(
                AccessDenied,
                "this key may only read: {} is not allowed",
                cx.s3_op().name()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::writes;

    #[test]
    fn reads_are_allowed_and_writes_are_not() {
        for op in ["GetObject", "HeadObject", "ListObjectsV2", "HeadBucket"] {
            assert!(!writes(op), "{op}");
        }
        for op in [
            "PutObject",
            "DeleteObject",
            "DeleteObjects",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "CopyObject",
        ] {
            assert!(writes(op), "{op}");
        }
    }
}
