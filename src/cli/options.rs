//! Options shared by several subcommands: S3 settings and value names.

use clap::{Args, ValueEnum};

use crate::api::{Compression, RedisConflict};
use crate::engine::redis::Mode;
use crate::storage::S3Options;

/// How to reach S3. Credentials and anything not given here come from the standard
/// `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, ...) and files.
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// Endpoint URL of an S3-compatible store (default: AWS_ENDPOINT_URL, else AWS S3).
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Region of the bucket (default: AWS_REGION, else us-east-1).
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Address buckets as <endpoint>/<bucket> (default: on when an endpoint is set).
    #[arg(long, value_name = "BOOL")]
    pub s3_path_style: Option<bool>,
    /// Request checksums: when-supported (the SDK's default) or when-required, for
    /// S3-compatible stores that reject the SDK's checksum trailers.
    #[arg(long, value_enum, default_value_t = Checksums::WhenSupported)]
    pub s3_checksums: Checksums,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Checksums {
    WhenSupported,
    WhenRequired,
}

impl S3Args {
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            force_path_style: self.s3_path_style,
            checksums_when_required: self.s3_checksums == Checksums::WhenRequired,
            ..S3Options::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    Zstd,
    Gzip,
    None,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::Zstd => Self::Zstd,
            CompressionArg::Gzip => Self::Gzip,
            CompressionArg::None => Self::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// A point-in-time RDB over the replication protocol (like redis-cli --rdb).
    Snapshot,
    /// SCAN + DUMP of every key, for servers that refuse SYNC (not point-in-time).
    Keys,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Snapshot => Self::Snapshot,
            ModeArg::Keys => Self::Keys,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConflictArg {
    /// Leave existing keys alone and count them.
    Skip,
    /// Replace existing keys.
    Overwrite,
    /// Empty each restored database first.
    Flush,
}

impl From<ConflictArg> for RedisConflict {
    fn from(c: ConflictArg) -> Self {
        match c {
            ConflictArg::Skip => Self::Skip,
            ConflictArg::Overwrite => Self::Overwrite,
            ConflictArg::Flush => Self::Flush,
        }
    }
}
