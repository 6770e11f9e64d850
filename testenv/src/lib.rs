//! Real services for Coffer's tests, started on free loopback ports in temporary directories
//! and stopped when their handle is dropped (also when a test panics, as unwinding drops it).
//!
//! - [`RedisServer`]: a `redis-server` process.
//! - [`PostgresServer`]: a PostgreSQL cluster made with `initdb` and run with `pg_ctl`, as a
//!   non-root user when the tests run as root.
//! - [`S3Server`]: an S3-compatible server (`s3s-fs`, plus ListMultipartUploads) in this
//!   process, serving real HTTP.
//! - [`VersityServer`]: a second, independent S3 server (versitygw, built from its Go module)
//!   that enforces object lock and versioning.
//! - [`SmtpServer`]: Debian's aiosmtpd with STARTTLS and AUTH, keeping every message.
//! - [`ControlPlane`]: etcd, kube-apiserver and kube-controller-manager built from their Go
//!   modules (`tools/k8s/build`), with the [`ProcessKubelet`] running Pods as processes, or
//!   a [`RealNode`] (containerd, runc, CNI, kubelet, kube-proxy, CoreDNS) running them in
//!   containers.
//!
//! No mocks: every service speaks its real protocol over TCP.

#![forbid(unsafe_code)]

mod control_plane;
mod error;
mod kubelet;
mod mariadb;
mod node;
mod postgres;
mod process;
mod redis;
mod s3;
mod s3_access;
mod s3_hold;
mod s3_journal;
mod s3_tamper;
mod s3_uploads;
mod smtp;
mod versitygw;

pub use control_plane::{
    ControlPlane, ControlPlaneOptions, NODE_NAME, TEST_NAMESPACE_LABEL, TestNamespace, USERS,
    bin_dir as k8s_bin_dir,
};
pub use error::TestEnvError;
pub use kubelet::{KubeletOptions, ProcessKubelet};
pub use mariadb::MariaDbServer;
pub use node::{
    RealNode, built_images, config as node_config, fixed_places, leftovers as node_leftovers, links,
};
pub use postgres::PostgresServer;
pub use process::find_program;
pub use redis::RedisServer;
pub use s3::S3Server;
pub use s3_hold::Held;
pub use smtp::SmtpServer;
pub use versitygw::VersityServer;

/// Results of this crate.
pub type Result<T, E = TestEnvError> = std::result::Result<T, E>;
