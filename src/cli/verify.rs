//! `coffer verify BACKUP`: re-read every object and check it against the manifest.

use clap::Args;

use super::keys::{self, IdentityArgs};
use super::options::S3Args;
use super::{CliError, open_store, read_manifest};
use crate::pipeline::{self, Codec};
use crate::units;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup: a location `coffer backup` printed.
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

pub async fn run(args: VerifyArgs) -> Result<(), CliError> {
    let identities = args.identity.parse()?;
    let (store, destination) = open_store(&args.backup, &args.s3).await?;
    let manifest = read_manifest(&store, "").await?;
    // Without a key, an encrypted backup's stored bytes are checked; with one, what they
    // decrypt and decompress to as well.
    let encrypted = manifest.encryption.is_some();
    if !encrypted && !identities.is_empty() {
        return Err(CliError::failed(format!(
            "{destination} is not encrypted, but --identity was given: if it was meant to be encrypted, it was replaced or taken without encryption"
        )));
    }
    // The key object is checked either way: without it nobody can decrypt the backup.
    let key_file = crate::storage::keys::check(&store, "", &manifest)
        .await
        .map_err(CliError::from_display)?;
    let key = if encrypted && identities.is_empty() {
        None
    } else {
        keys::unlock(&store, "", &manifest, &identities).await?
    };
    let contents = !encrypted || key.is_some();
    let codec = Codec {
        compression: manifest.compression,
        key,
    };
    for object in &manifest.objects {
        pipeline::verify_object(&store, &object.name, object, &codec, contents)
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
        "{destination} is intact: {} object(s) match the manifest{}",
        manifest.objects.len(),
        match &manifest.encryption {
            None => String::new(),
            Some(_) if contents => " (decrypted and checked)".to_owned(),
            Some(_) => format!(
                " (stored bytes and key object only: it is encrypted to {}; give --identity to check what they decrypt to)",
                key_file.map(|f| f.recipients_shown()).unwrap_or_default()
            ),
        }
    );
    Ok(())
}
