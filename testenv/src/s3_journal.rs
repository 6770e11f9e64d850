//! What the test S3 server saw, for tests that assert an order or a size rather than only
//! an end state: every object written (PutObject, CompleteMultipartUpload, CopyObject) and
//! deleted, in the order the server finished them, and the size of every part uploaded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The server's record, shared by its restarts.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    events: Vec<String>,
    parts: HashMap<String, Vec<u64>>,
}

/// A handle on the server's [`Journal`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Shared(Arc<Mutex<Journal>>);

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Journal) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `bucket/key` was written.
    pub(crate) fn written(&self, bucket: &str, key: &str) {
        self.with(|j| j.events.push(format!("put {bucket}/{key}")));
    }

    /// `bucket/key` was deleted.
    pub(crate) fn deleted(&self, bucket: &str, key: &str) {
        self.with(|j| j.events.push(format!("delete {bucket}/{key}")));
    }

    /// A part of `size` bytes was uploaded to `bucket/key`.
    pub(crate) fn part(&self, bucket: &str, key: &str, size: u64) {
        self.with(|j| {
            j.parts
                .entry(format!("{bucket}/{key}"))
                .or_default()
                .push(size)
        });
    }

    /// Every write and delete so far, as `put bucket/key` or `delete bucket/key`.
    pub(crate) fn events(&self) -> Vec<String> {
        self.with(|j| j.events.clone())
    }

    /// The sizes of the parts uploaded to objects whose `bucket/key` ends with `suffix`.
    pub(crate) fn part_sizes(&self, suffix: &str) -> Vec<u64> {
        self.with(|j| {
            j.parts
                .iter()
                .filter(|(key, _)| key.ends_with(suffix))
                .flat_map(|(_, sizes)| sizes.clone())
                .collect()
        })
    }
}
