//! Commands that clean up after themselves when they are stopped (SIGTERM, or SIGINT from
//! Ctrl-C) instead of dying with their work half done.

/// Runs `work` until it ends, or until the command is told to stop: then `work` is dropped
/// at once (its own cleanup runs as it drops) and the signal's name is returned.
pub async fn until_stopped<T>(
    work: impl std::future::Future<Output = T>,
) -> Result<T, &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return Ok(work.await);
    };
    tokio::select! {
        done = work => Ok(done),
        _ = term.recv() => Err("SIGTERM"),
        _ = int.recv() => Err("SIGINT"),
    }
}

/// The exit status of a command stopped by `signal`, as a shell reports it (128 + its number).
pub fn exit_code(signal: &str) -> u8 {
    match signal {
        "SIGINT" => 130,
        _ => 143,
    }
}
