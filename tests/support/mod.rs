#![allow(dead_code)]
//! Helpers shared by the integration tests.

pub mod cli;
pub mod mysql_data;
pub mod operator;
pub mod partition;
pub mod pg_data;
pub mod random;
pub mod redis_data;
pub mod resources;
pub mod tree;
pub mod webhook;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// Whether a test that needs root runs. The README's test command (as CI) runs as root and
/// sets `COFFER_TESTS_NEED_ROOT`: there such tests always run, and a run without root fails.
/// Elsewhere (`cargo test` as a user) they are skipped, and the test says so.
pub fn needs_root(what: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return true;
    }
    assert!(
        std::env::var_os("COFFER_TESTS_NEED_ROOT").is_none(),
        "{what} needs root, and COFFER_TESTS_NEED_ROOT says this run must run it: run the tests as root"
    );
    eprintln!("not run: {what} (needs root; the README's test command runs as root)");
    false
}

/// A secret no message could contain by chance (a random UUID after `prefix`): a test that
/// finds it nowhere has shown that it was not shown, where a word such as `wrong` could be
/// missing for other reasons.
pub fn distinctive_secret(prefix: &str) -> String {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    format!("{prefix}-{}", uuid.trim())
}

/// The openAPIV3Schema of a CRD's only version, as JSON.
pub fn openapi_schema(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("generated CRDs have a schema");
    serde_json::to_value(schema).unwrap()
}

/// The messages of the CEL rules of `crd` that `object` breaks (empty when it passes), as
/// kube's client-side CEL validator reports them. `old` is the previous object, for
/// transition rules.
pub fn cel_errors(
    crd: &CustomResourceDefinition,
    object: &Value,
    old: Option<&Value>,
) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(&openapi_schema(crd), object, old) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// An S3 client for `server` with its credentials, for test setup (creating buckets).
pub fn s3_client(server: &coffer_testenv::S3Server) -> aws_sdk_s3::Client {
    client_for(&server.endpoint(), server.access_key(), server.secret_key())
}

/// An S3 client for the second S3 server (versitygw).
pub fn versity_client(server: &coffer_testenv::VersityServer) -> aws_sdk_s3::Client {
    client_for(&server.endpoint(), server.access_key(), server.secret_key())
}

fn client_for(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let credentials = Credentials::new(access_key, secret_key, None, None, "test");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Deterministic incompressible bytes (xorshift), so neither Redis' LZF nor zstd shrink them.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
