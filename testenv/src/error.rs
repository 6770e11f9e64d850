use std::path::PathBuf;

/// A test service could not be started. Every message is one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TestEnvError {
    #[error(
        "{program} not found on PATH{searched}: install the Debian package {package} (apt-get install {package}), or run ./scripts/test which installs it"
    )]
    MissingProgram {
        program: String,
        package: String,
        /// Extra places that were searched, already formatted (may be empty).
        searched: String,
    },
    #[error(
        "the tests run as root and PostgreSQL refuses to, but user {user:?} does not exist: install the Debian package postgresql (it creates the user postgres) or set COFFER_PG_USER to an existing non-root user"
    )]
    NoUnprivilegedUser { user: String },
    #[error("control plane: {0}")]
    ControlPlane(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed ({status}): {output}")]
    CommandFailed {
        what: String,
        status: String,
        output: String,
    },
    #[error("{service} did not become ready within {seconds}s; its log {log:?} ends with: {tail}")]
    NotReady {
        service: &'static str,
        seconds: u64,
        log: PathBuf,
        tail: String,
    },
}

impl TestEnvError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
