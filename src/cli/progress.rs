//! Progress while data moves: a live line on a terminal, a log line every 10 seconds
//! otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pipeline::Progress;
use crate::units;

/// A running progress display; [`Display::finish`] removes it.
pub struct Display {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Display {
    /// Shows `what` (for example "backing up redis://host:6379") and the bytes counted by
    /// `progress`.
    pub fn start(what: String, progress: Progress) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            if std::io::stderr().is_terminal() {
                let bar = ProgressBar::new_spinner();
                if let Ok(style) = ProgressStyle::with_template(
                    "{spinner} {msg}: {binary_bytes} ({binary_bytes_per_sec}), {elapsed}",
                ) {
                    bar.set_style(style);
                }
                bar.set_message(what);
                loop {
                    bar.set_position(progress.get());
                    tokio::select! {
                        _ = &mut stopped => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                bar.finish_and_clear();
            } else {
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        _ = tokio::time::sleep(Duration::from_secs(10)) => {
                            let elapsed = started.elapsed();
                            let done = progress.get();
                            tracing::info!(
                                "{what}: {} read ({}), {} elapsed",
                                units::bytes(done),
                                units::rate(done, elapsed),
                                units::duration(elapsed)
                            );
                        }
                    }
                }
            }
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
