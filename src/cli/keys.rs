//! Encryption on the command line: `--recipient` for backups, `--identity` for what reads
//! them, `coffer keygen` and `coffer rewrap BACKUP...`.

use std::io::Write;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use age::x25519;
use clap::Args;

use super::options::S3Args;
use super::{CliError, open_store, read_manifest};
use crate::pipeline::encryption::DataKey;
use crate::storage::Store;
use crate::storage::keys::{self, KeyError};
use crate::storage::manifest::Manifest;

/// Who may read a new backup.
#[derive(Debug, Clone, Default, Args)]
pub struct RecipientArgs {
    /// Encrypt the backup to this age public key (age1...; repeat for more). Only the
    /// matching private keys can restore it; this machine needs none of them.
    #[arg(long = "recipient", value_name = "KEY")]
    pub recipients: Vec<String>,
    /// Encrypt the backup to the age public keys in FILE (one per line, `#` comments).
    #[arg(long = "recipients-file", value_name = "FILE")]
    pub recipients_files: Vec<PathBuf>,
}

impl RecipientArgs {
    /// The recipients given, none when the backup is not to be encrypted.
    pub fn parse(&self) -> Result<Vec<x25519::Recipient>, CliError> {
        let mut all = Vec::new();
        for given in &self.recipients {
            all.extend(keys::parse_recipients(given, "--recipient").map_err(usage)?);
        }
        for file in &self.recipients_files {
            let what = format!("--recipients-file {}", file.display());
            let text = read(file, &what)?;
            all.extend(keys::parse_recipients(&text, &what).map_err(usage)?);
        }
        Ok(keys::unique(all))
    }
}

/// Who reads an encrypted backup.
#[derive(Debug, Clone, Default, Args)]
pub struct IdentityArgs {
    /// An age identity file (AGE-SECRET-KEY-1... lines, as `age-keygen` or `coffer keygen`
    /// write): the private key of one of the backup's recipients. Repeat for more.
    #[arg(long = "identity", short = 'i', value_name = "FILE")]
    pub identities: Vec<PathBuf>,
}

impl IdentityArgs {
    pub fn parse(&self) -> Result<Vec<x25519::Identity>, CliError> {
        let mut all = Vec::new();
        for file in &self.identities {
            let what = format!("--identity {}", file.display());
            let text = read(file, &what)?;
            all.extend(keys::parse_identities(&text, &what).map_err(usage)?);
        }
        Ok(all)
    }
}

/// The data key of the backup in `folder` (none when it is not encrypted), before anything
/// else is done with it.
pub async fn unlock(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    identities: &[x25519::Identity],
) -> Result<Option<DataKey>, CliError> {
    keys::unlock(store, folder, manifest, identities)
        .await
        .map_err(CliError::from_display)
}

fn read(file: &Path, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(file).map_err(|e| CliError::usage(format!("cannot read {what}: {e}")))
}

fn usage(e: KeyError) -> CliError {
    CliError::usage(e.to_string())
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the identity (private key) to FILE, created readable by its owner only, and
    /// print the public key. Without it, the identity goes to stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `coffer keygen`: a new age X25519 key pair, as `age-keygen` makes.
pub fn keygen(args: KeygenArgs) -> Result<(), CliError> {
    let identity = x25519::Identity::generate();
    let public = identity.to_public();
    let text = format!(
        "# created: {}\n# public key: {public}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_string().expose_secret()
    );
    match &args.output {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| {
                    CliError::failed(format!(
                        "cannot create {} ({e}); it must not exist yet",
                        path.display()
                    ))
                })?;
            file.write_all(text.as_bytes())
                .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
            eprintln!("wrote the private key to {}", path.display());
            println!("{public}");
        }
        None => {
            eprintln!("Public key: {public}");
            print!("{text}");
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// The encrypted backups: locations `coffer backup` or `coffer list` printed.
    #[arg(value_name = "BACKUP", required = true)]
    pub backups: Vec<String>,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub recipients: RecipientArgs,
    /// Rewrap even when none of the --identity keys is among the new recipients (the keys
    /// you hold will no longer open the backups).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub s3: S3Args,
}

/// `coffer rewrap BACKUP... --identity OLD --recipient NEW...`: the backups' data keys,
/// wrapped for the new recipients only. Rewrites each backup's key object, never its data.
pub async fn rewrap(args: RewrapArgs) -> Result<(), CliError> {
    let recipients = args.recipients.parse()?;
    if recipients.is_empty() {
        return Err(CliError::usage(
            "give the new recipients with --recipient or --recipients-file (every recipient that should read the backups afterwards, including those that already could)",
        ));
    }
    let identities = args.identity.parse()?;
    if !args.force
        && !identities
            .iter()
            .any(|i| recipients.contains(&i.to_public()))
    {
        return Err(CliError::usage(
            "none of the keys given with --identity is among the new recipients: afterwards they would not open these backups; add one of their public keys with --recipient, or give --force if another key holder will open them",
        ));
    }
    for backup in &args.backups {
        let (store, destination) = open_store(backup, &args.s3).await?;
        let manifest = read_manifest(&store, "").await?;
        let Some(record) = &manifest.encryption else {
            return Err(CliError::failed(format!(
                "{destination} is not encrypted: there is no key to rewrap (a backup cannot be encrypted after it was taken)"
            )));
        };
        let (file, location) = keys::read(&store, "", record)
            .await
            .map_err(CliError::from_display)?;
        let key = file
            .open(&identities, record, &destination.to_string())
            .map_err(CliError::from_display)?;
        let rewrapped = keys::wrap(&key, &recipients).map_err(CliError::from_display)?;
        let bytes = rewrapped.to_json();
        store
            .put_bytes(&record.keys, &bytes)
            .await
            .map_err(CliError::from_display)?;
        // Read back what the store now serves before saying it worked.
        let stored = store
            .get_bytes(&record.keys, keys::MAX_KEYS_BYTES)
            .await
            .map_err(CliError::from_display)?;
        if stored != bytes {
            return Err(CliError::failed(format!(
                "{location} reads back other bytes than were written: check the store, and rewrap again"
            )));
        }
        eprintln!(
            "rewrapped {location}: was for {}, now for {}",
            file.recipients_shown(),
            rewrapped.recipients_shown()
        );
    }
    Ok(())
}
