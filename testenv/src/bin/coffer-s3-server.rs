//! Runs the test S3 server (s3s-fs) until SIGTERM or Ctrl-C and prints the `AWS_*` exports
//! that point clients at it, then `ready`. For benchmarks and trying things by hand.
//! Usage: coffer-s3-server [BUCKET...] (the buckets are created).
//!
//! In a container (the real node's tests), `COFFER_S3_LISTEN` (for example `0.0.0.0:9000`),
//! `COFFER_S3_ROOT` (the store's directory, kept) and the keys in `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY` say where and how to serve.

use std::process::ExitCode;

use coffer_testenv::S3Server;

/// The server `COFFER_S3_LISTEN` and friends ask for, if they are set.
fn in_container() -> Option<coffer_testenv::Result<S3Server>> {
    let listen = std::env::var("COFFER_S3_LISTEN").ok()?;
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    Some(match listen.parse() {
        Ok(listen) => S3Server::start_in(
            listen,
            std::path::Path::new(&var("COFFER_S3_ROOT")),
            &var("AWS_ACCESS_KEY_ID"),
            &var("AWS_SECRET_ACCESS_KEY"),
        ),
        Err(e) => Err(coffer_testenv::TestEnvError::ControlPlane(format!(
            "COFFER_S3_LISTEN={listen:?} is not an address and port: {e}"
        ))),
    })
}

fn main() -> ExitCode {
    let buckets: Vec<String> = std::env::args().skip(1).collect();
    let server = match in_container().unwrap_or_else(S3Server::start) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("coffer-s3-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    for bucket in &buckets {
        if let Err(e) = std::fs::create_dir_all(server.root().join(bucket)) {
            eprintln!("coffer-s3-server: creating bucket {bucket}: {e}");
            return ExitCode::FAILURE;
        }
    }
    // In a container the keys came from its environment: never print them to its log.
    if std::env::var_os("COFFER_S3_LISTEN").is_none() {
        for (key, value) in server.env() {
            println!("export {key}={value}");
        }
    }
    println!("# ready");
    let waited = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|runtime| {
            runtime.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            })
        });
    drop(server);
    match waited {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coffer-s3-server: {e}");
            ExitCode::FAILURE
        }
    }
}
