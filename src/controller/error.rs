//! The controller's errors, with a bounded category for metrics.

/// A reconcile failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot write the worker plan: {0}")]
    Plan(#[from] serde_json::Error),
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("{0} has no UID")]
    NoUid(String),
    #[error("the Job {0} of an earlier object of the same name is still being deleted")]
    JobBusy(String),
    #[error("the watch of {0} has not listed them yet")]
    NotSynced(&'static str),
}

impl Error {
    /// The metric label of this error: one of a few fixed words, never its text.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(_)) => "api",
            Self::Kube(_) => "transport",
            Self::Plan(_) => "plan",
            Self::NoNamespace(_) | Self::NoUid(_) => "invalid_object",
            Self::NotSynced(_) => "not_synced",
            Self::JobBusy(_) => "job_busy",
        }
    }
}
