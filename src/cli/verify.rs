//! `coffer verify BACKUP`: re-read every object and check it against the manifest.

use clap::Args;

use super::options::S3Args;
use super::{CliError, open_store, read_manifest};
use crate::pipeline;
use crate::units;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup: a location `coffer backup` printed.
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    #[command(flatten)]
    pub s3: S3Args,
}

pub async fn run(args: VerifyArgs) -> Result<(), CliError> {
    let (store, destination) = open_store(&args.backup, &args.s3).await?;
    let manifest = read_manifest(&store, "").await?;
    for object in &manifest.objects {
        pipeline::verify_object(&store, &object.name, object, manifest.compression, true)
            .await
            .map_err(CliError::from_display)?;
        println!(
            "ok {} ({} stored, {} raw, sha256 {})",
            object.name,
            units::bytes(object.stored_bytes),
            units::bytes(object.raw_bytes),
            object.sha256
        );
    }
    eprintln!(
        "{destination} is intact: {} object(s) match the manifest",
        manifest.objects.len()
    );
    Ok(())
}
