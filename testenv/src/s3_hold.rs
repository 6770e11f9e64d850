//! A store that answers late: the test S3 server can hold back its answer to the write of an
//! object, after the object is stored (or to the start of a multipart upload, after the
//! upload is open), until the test lets it go. A test then knows the writer is still waiting
//! for that answer, however loaded the machine is, and can kill it in the narrowest window
//! there is: its object stored or its upload open, and that not yet known to it. It can also
//! hold its answer to a read of an object, before sending any of it: the reader is then
//! known to be in the middle of its work.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest an answer is held if the test never lets it go.
const MOST: Duration = Duration::from_secs(120);

/// Which answer a rule holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// To PutObject or CompleteMultipartUpload, after the object is stored.
    Write,
    /// To CreateMultipartUpload, after the upload is open.
    UploadStart,
    /// To GetObject, before anything of the object is sent: its reader waits in the middle
    /// of its work.
    Read,
}

/// One held answer: the first one, from now on, about an object whose key ends with `suffix`.
#[derive(Debug)]
struct Rule {
    answer: Answer,
    suffix: String,
    taken: bool,
    stored: Arc<Notify>,
    release: Arc<Notify>,
}

/// The rules, shared by the server's restarts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shared(Arc<Mutex<Vec<Rule>>>);

/// A write the server will hold, or holds; see [`crate::S3Server::hold_answer`]. Dropping it
/// lets the answer go.
#[derive(Debug)]
pub struct Held {
    stored: Arc<Notify>,
    release: Arc<Notify>,
}

impl Held {
    /// Waits until the object was stored and its writer is waiting for the answer (for a
    /// held read: until the object was asked for).
    pub async fn stored(&self) {
        self.stored.notified().await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release.notify_one();
    }
}

impl Shared {
    /// Holds the next `answer` about an object whose key ends with `suffix`.
    pub(crate) fn add(&self, answer: Answer, suffix: &str) -> Held {
        let (stored, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Rule {
                answer,
                suffix: suffix.to_owned(),
                taken: false,
                stored: stored.clone(),
                release: release.clone(),
            });
        Held { stored, release }
    }

    /// `answer` about `bucket/key` is ready (the object stored, the upload open): if a rule
    /// holds it, says so and waits to be let go.
    pub(crate) async fn ready(&self, answer: Answer, bucket: &str, key: &str) {
        let path = format!("{bucket}/{key}");
        let release = {
            let mut rules = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(rule) = rules
                .iter_mut()
                .find(|rule| !rule.taken && rule.answer == answer && path.ends_with(&rule.suffix))
            else {
                return;
            };
            rule.taken = true;
            rule.stored.notify_one();
            rule.release.clone()
        };
        let _ = tokio::time::timeout(MOST, release.notified()).await;
    }
}
