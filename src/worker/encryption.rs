//! The worker's side of encryption: the recipients a backup is sealed for (from the plan
//! and the Job's environment), and key problems as failures.

use super::{Environment, Failed, Failure, fail};
use crate::storage::keys;

/// The recipients a backup is encrypted to, from the plan and the environment; none when it
/// is not to be encrypted.
pub(super) fn recipients(
    encryption: Option<&crate::api::Encryption>,
    env: &Environment,
) -> Result<Vec<age::x25519::Recipient>, Failed> {
    let Some(encryption) = encryption else {
        return Ok(Vec::new());
    };
    let key_error = |e: keys::KeyError| fail(Failure::EncryptionKeyError, e);
    let mut all = Vec::new();
    if !encryption.recipients.is_empty() {
        let inline = encryption.recipients.join("\n");
        all.extend(
            keys::parse_recipients(&inline, "spec.encryption.recipients").map_err(key_error)?,
        );
    }
    for (n, from) in encryption.recipients_from.iter().enumerate() {
        let what = match (&from.secret_key_ref, &from.config_map_key_ref) {
            (Some(s), _) => format!("key {} of Secret {}", s.key, s.name),
            (None, Some(m)) => format!("key {} of ConfigMap {}", m.key, m.name),
            (None, None) => format!("spec.encryption.recipientsFrom[{n}]"),
        };
        let text = env.recipients.get(&n).ok_or_else(|| {
            fail(
                Failure::EncryptionKeyError,
                format!(
                    "spec.encryption.recipientsFrom names the {what}, which does not exist: create it with the recipients' age public keys, one per line"
                ),
            )
        })?;
        all.extend(keys::parse_recipients(text, &what).map_err(key_error)?);
    }
    let unique = keys::unique(all);
    if unique.is_empty() {
        return Err(key_error(keys::KeyError::NoRecipients {
            what: "spec.encryption".to_owned(),
        }));
    }
    Ok(unique)
}

/// A key problem, or the store failing to hold or serve the key object.
pub(super) fn unlock_failure(e: &keys::UnlockError) -> Failed {
    match e {
        keys::UnlockError::Key(k) => fail(Failure::EncryptionKeyError, k),
        keys::UnlockError::Storage(s) => fail(s, s),
    }
}
