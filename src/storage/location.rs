//! Where backups go: `s3://bucket/prefix` or a directory (`file://` optional). Pure parsing.

use std::path::PathBuf;

/// A store and a folder inside it, as the user wrote it on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// An S3 bucket and a key prefix ("" or ending in `/`).
    S3 { bucket: String, prefix: String },
    /// A local directory (or a mounted volume).
    Dir(PathBuf),
}

/// The destination could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a backup destination: {reason}; use s3://bucket/prefix or a directory")]
pub struct DestinationError {
    input: String,
    reason: &'static str,
}

impl Destination {
    /// Parses `s3://bucket[/prefix]`, `file:///path`, or a plain path.
    pub fn parse(input: &str) -> Result<Self, DestinationError> {
        let error = |reason| DestinationError {
            input: input.to_owned(),
            reason,
        };
        if let Some(rest) = input.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(error("the bucket name is missing"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: normalize_prefix(prefix),
            });
        }
        let path = match input.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => path,
            Some(_) => {
                return Err(error(
                    "a file:// URL needs an absolute path (file:///backups)",
                ));
            }
            None => input,
        };
        if path.is_empty() {
            return Err(error("it is empty"));
        }
        if input.contains("://") && !input.starts_with("file://") {
            return Err(error("only s3:// and file:// URLs are supported"));
        }
        Ok(Self::Dir(PathBuf::from(path)))
    }

    /// The same destination one folder deeper (`name` is a relative key prefix).
    pub fn join(&self, name: &str) -> Self {
        let name = normalize_prefix(name);
        match self {
            Self::S3 { bucket, prefix } => Self::S3 {
                bucket: bucket.clone(),
                prefix: format!("{prefix}{name}"),
            },
            Self::Dir(dir) => Self::Dir(dir.join(name.trim_end_matches('/'))),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::Dir(dir) => {
                let shown = dir.display().to_string();
                if shown.ends_with('/') {
                    write!(f, "{shown}")
                } else {
                    write!(f, "{shown}/")
                }
            }
        }
    }
}

/// A key prefix without leading slashes and with one trailing slash (or empty).
fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(
            Destination::parse("s3://backups/prod").unwrap(),
            Destination::S3 {
                bucket: "backups".into(),
                prefix: "prod/".into()
            }
        );
        assert_eq!(
            Destination::parse("s3://backups").unwrap(),
            Destination::S3 {
                bucket: "backups".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Destination::parse("s3://backups//a/b/").unwrap(),
            Destination::S3 {
                bucket: "backups".into(),
                prefix: "a/b/".into()
            }
        );
        assert!(Destination::parse("s3:///prefix").is_err());
    }

    #[test]
    fn directories_with_or_without_file_scheme() {
        assert_eq!(
            Destination::parse("./coffer-backups").unwrap(),
            Destination::Dir("./coffer-backups".into())
        );
        assert_eq!(
            Destination::parse("file:///var/backups").unwrap(),
            Destination::Dir("/var/backups".into())
        );
        let err = Destination::parse("file://relative")
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute path"), "{err}");
        let err = Destination::parse("gs://bucket").unwrap_err().to_string();
        assert!(
            err.contains("only s3:// and file://") && err.contains("use s3://bucket/prefix"),
            "{err}"
        );
        assert!(Destination::parse("").is_err());
    }

    #[test]
    fn join_and_display() {
        let s3 = Destination::parse("s3://b/prod")
            .unwrap()
            .join("redis-main/20261201T160000Z");
        assert_eq!(s3.to_string(), "s3://b/prod/redis-main/20261201T160000Z/");
        let dir = Destination::parse("/backups").unwrap().join("x/y/");
        assert_eq!(dir.to_string(), "/backups/x/y/");
        assert_eq!(Destination::parse("s3://b").unwrap().to_string(), "s3://b/");
    }
}
