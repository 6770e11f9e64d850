//! `coffer check SOURCE --to DEST`: the pre-flight check from the command line. Connects to
//! the source with its credentials and checks the privileges a backup needs, then writes,
//! reads back and deletes a small object in the store. Prints one line per check; exits 1
//! when a backup would fail.

use clap::Args;

use super::options::S3Args;
use super::{CliError, my_target, open_store, pg_target};
use crate::engine::probe::{self, Finding};
use crate::engine::redis::RedisTarget;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The source, as `coffer backup` takes it: redis://…, postgres://…, mysql://…, or a
    /// directory.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// The store, as `coffer backup` takes it: s3://bucket/prefix or a directory.
    #[arg(long, value_name = "DEST", default_value = "./coffer-backups")]
    pub to: String,
    /// PostgreSQL: the databases to log in to, comma-separated (default: postgres).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub databases: Vec<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

pub async fn run(args: CheckArgs) -> Result<(), CliError> {
    let source = &args.source;
    let found = if source.starts_with("redis://") || source.starts_with("rediss://") {
        let target = RedisTarget::parse(source).map_err(CliError::from_display)?;
        probe::redis(&target).await
    } else if source.starts_with("postgres://") || source.starts_with("postgresql://") {
        let target = pg_target(source)?;
        let mut databases = args.databases.clone();
        if databases.is_empty() {
            databases.extend(target.database.clone());
        }
        probe::postgres(&target, &databases).await
    } else if source.starts_with("mysql://") || source.starts_with("mariadb://") {
        probe::mysql(&my_target(source)?).await
    } else if source.contains("://") {
        return Err(CliError::usage(format!(
            "{source}: unknown kind of source; use redis://, postgres://, mysql:// or a directory"
        )));
    } else {
        probe::directory(std::path::Path::new(source))
    };
    let (store, _) = open_store(&args.to, &args.s3).await?;
    let stored = probe::storage(&store, &args.to).await;
    let failed: Vec<&Finding> = [&found, &stored].into_iter().filter(|f| !f.ok).collect();
    for finding in [&found, &stored] {
        println!(
            "{} {}: {}",
            if finding.ok { "ok  " } else { "FAIL" },
            finding.subject,
            finding.message
        );
    }
    match failed.as_slice() {
        [] => Ok(()),
        [one] => Err(CliError::failed(format!(
            "{} check failed: {}",
            one.subject, one.message
        ))),
        _ => Err(CliError::failed(
            "source and storage checks failed (see above)".to_owned(),
        )),
    }
}
