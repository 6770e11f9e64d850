//! The engines that read sources and write them back.

pub mod mysql;
pub mod pipe;
pub mod postgres;
pub mod preview;
pub mod probe;
pub mod redis;
pub mod volume;

/// A child program's command with what only Coffer needs left out of its environment: the
/// plan and the passwords and keys the worker was given (`COFFER_*`, the restore's age
/// identity among them) and the store's credentials (`AWS_*`). Database tools get their
/// own credentials from the files the engines write for them.
pub fn child_command(program: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("COFFER_") || name.starts_with("AWS_") {
            command.env_remove(&key);
        }
    }
    command
}
