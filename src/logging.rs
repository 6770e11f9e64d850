//! Logging with `tracing`: level from `RUST_LOG`, format `text` or `json`, always on stderr
//! (stdout carries command output such as `coffer crds`).

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The filter used when `RUST_LOG` is not set. The AWS SDK's configuration loader warns,
/// at length, about every metadata service it cannot reach; only its errors are shown.
pub const DEFAULT_FILTER: &str = "info,aws_config=error";

/// Installs the global subscriber. An invalid `RUST_LOG` falls back to [`DEFAULT_FILTER`]
/// with a warning rather than silencing the program.
pub fn init(format: LogFormat) {
    let (filter, bad_filter) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(e) if std::env::var_os("RUST_LOG").is_some() => {
            (EnvFilter::new(DEFAULT_FILTER), Some(e.to_string()))
        }
        Err(_) => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_err() {
        return; // already installed (tests); keep the first one
    }
    if let Some(e) = bad_filter {
        tracing::warn!("RUST_LOG is not a valid filter ({e}); using {DEFAULT_FILTER:?}");
    }
}
