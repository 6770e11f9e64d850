//! Runs the test S3 server (s3s-fs) until SIGTERM or Ctrl-C and prints the `AWS_*` exports
//! that point clients at it, then `ready`. For benchmarks and trying things by hand.
//! Usage: coffer-s3-server [BUCKET...] (the buckets are created).

use std::process::ExitCode;

use coffer_testenv::S3Server;

fn main() -> ExitCode {
    let buckets: Vec<String> = std::env::args().skip(1).collect();
    let server = match S3Server::start() {
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
    for (key, value) in server.env() {
        println!("export {key}={value}");
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
