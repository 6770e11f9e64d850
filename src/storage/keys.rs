//! The key object of an encrypted backup (`keys-<data key>.json`): the backup's data key, wrapped with
//! age for every recipient, and the recipients' public keys. Also the parsing of the public
//! keys (recipients) and private keys (identities) users give. Pure but for [`store`] and
//! [`unlock`], which write and read the object.
//!
//! The key object is the one object of a backup that may be written again: rewrapping a
//! backup for other recipients replaces it and leaves the data untouched. It is not listed in
//! the manifest (which is written once); what binds it to its backup is the data key's public
//! half, which the manifest records and an unwrapped key must match.

use std::io::{Read, Write};
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::secrecy::ExposeSecret;
use age::x25519;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::manifest::{EncryptionRecord, Manifest};
use super::{StorageError, Store};
use crate::pipeline::encryption::{DataKey, Seal};

/// The key object's name in a backup's folder, made from the data key's public half: every
/// attempt at a backup has its own, so two attempts on one folder never overwrite or delete
/// each other's.
pub fn keys_name(data: &x25519::Recipient) -> String {
    let public = data.to_string();
    let tag: String = public.chars().skip(4).take(12).collect();
    format!("keys-{tag}.json")
}

/// Whether `name` can be a key object's name (a plain file name in the backup's folder).
pub fn valid_keys_name(name: &str) -> bool {
    name.starts_with("keys")
        && name.ends_with(".json")
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Most recipients a message names.
const SHOWN: usize = 8;
/// The key object format this version writes and reads.
const KEYS_VERSION: u32 = 1;
/// Key objects larger than this are refused (one holds a few hundred bytes per recipient).
pub const MAX_KEYS_BYTES: u64 = 1 << 20;

/// The stored key object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyFile {
    pub format_version: u32,
    /// The public half of the data key it holds.
    pub data_recipient: String,
    /// The recipients it is wrapped for (age public keys): whose identities can open it.
    pub recipients: Vec<String>,
    /// When it was written (the backup's time, or its last rewrap).
    pub written_at: DateTime<Utc>,
    /// The data key (an age identity), encrypted with age to every recipient, ASCII-armored.
    pub wrapped: String,
}

/// A key, a key object or a recipient list that cannot be used. Every message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "line {line} of {what} is not an age public key (age1..., as `age-keygen` or `coffer keygen` print){hint}"
    )]
    BadRecipient {
        what: String,
        line: usize,
        hint: &'static str,
    },
    #[error("{what} holds no age public key (age1...): give at least one recipient")]
    NoRecipients { what: String },
    #[error(
        "line {line} of {what} is not an age private key (AGE-SECRET-KEY-1...): give the identity file `age-keygen` or `coffer keygen` wrote"
    )]
    BadIdentity { what: String, line: usize },
    #[error("{what} holds no age private key (AGE-SECRET-KEY-1...)")]
    NoIdentity { what: String },
    #[error(
        "{location} is encrypted to {recipients}: give the private key of one of them (--identity FILE, or the RestoreRequest's spec.decryption)"
    )]
    IdentityNeeded {
        location: String,
        recipients: String,
    },
    #[error(
        "none of the given private keys opens {location}: it is encrypted to {recipients}; give the identity of one of them"
    )]
    WrongIdentity {
        location: String,
        recipients: String,
    },
    #[error(
        "the key object {location} does not belong to its backup: it holds data key {found}, the manifest says {expected}"
    )]
    Foreign {
        location: String,
        found: String,
        expected: String,
    },
    #[error("the key object {location} cannot be used: {reason}")]
    Damaged { location: String, reason: String },
}

/// Parses recipients: age X25519 public keys, one per line or separated by spaces or commas;
/// `#` starts a comment. `what` names where they came from, for errors, which name the line
/// and never its text (it may come from a Secret that holds something else).
pub fn parse_recipients(text: &str, what: &str) -> Result<Vec<x25519::Recipient>, KeyError> {
    let mut recipients = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        for word in line.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
            let recipient =
                x25519::Recipient::from_str(word).map_err(|_| KeyError::BadRecipient {
                    what: what.to_owned(),
                    line: n + 1,
                    hint: if word.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
                        ": it is a private key; give its public key instead, and keep the private one out of the cluster"
                    } else {
                        ""
                    },
                })?;
            if !recipients.contains(&recipient) {
                recipients.push(recipient);
            }
        }
    }
    if recipients.is_empty() {
        return Err(KeyError::NoRecipients {
            what: what.to_owned(),
        });
    }
    Ok(recipients)
}

/// Recipients gathered from several places, each once, in the order first given.
pub fn unique(all: Vec<x25519::Recipient>) -> Vec<x25519::Recipient> {
    let mut unique: Vec<x25519::Recipient> = Vec::new();
    for recipient in all {
        if !unique.contains(&recipient) {
            unique.push(recipient);
        }
    }
    unique
}

/// Parses an identity file: age X25519 private keys, one per line; blank lines and lines
/// starting with `#` are skipped. Errors name the line, never its contents.
pub fn parse_identities(text: &str, what: &str) -> Result<Vec<x25519::Identity>, KeyError> {
    let mut identities = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = x25519::Identity::from_str(line).map_err(|_| KeyError::BadIdentity {
            what: what.to_owned(),
            line: n + 1,
        })?;
        identities.push(identity);
    }
    if identities.is_empty() {
        return Err(KeyError::NoIdentity {
            what: what.to_owned(),
        });
    }
    Ok(identities)
}

/// A new data key for one backup, wrapped for `recipients`: the seal its objects are
/// encrypted with, and the key object to store in its folder before them.
pub fn seal_new(recipients: &[x25519::Recipient]) -> Result<(Seal, KeyFile), KeyError> {
    let key = DataKey::generate();
    let file = wrap(&key, recipients)?;
    let seal = Seal::new(
        key.public(),
        file.recipients.clone(),
        keys_name(&key.public()),
    );
    Ok((seal, file))
}

/// The key object holding `key` for `recipients`.
pub fn wrap(key: &DataKey, recipients: &[x25519::Recipient]) -> Result<KeyFile, KeyError> {
    let damaged = |reason: String| KeyError::Damaged {
        location: keys_name(&key.public()),
        reason,
    };
    if recipients.is_empty() {
        return Err(KeyError::NoRecipients {
            what: "the recipient list".to_owned(),
        });
    }
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| damaged(e.to_string()))?;
    let mut armored = Vec::new();
    let sealed = (|| -> std::io::Result<()> {
        let out = ArmoredWriter::wrap_output(&mut armored, Format::AsciiArmor)?;
        let mut writer = encryptor.wrap_output(out)?;
        writer.write_all(key.identity().to_string().expose_secret().as_bytes())?;
        writer.finish()?.finish()?;
        Ok(())
    })();
    sealed.map_err(|e| damaged(e.to_string()))?;
    Ok(KeyFile {
        format_version: KEYS_VERSION,
        data_recipient: key.public().to_string(),
        recipients: recipients.iter().map(ToString::to_string).collect(),
        written_at: Utc::now(),
        wrapped: String::from_utf8(armored).map_err(|e| damaged(e.to_string()))?,
    })
}

impl KeyFile {
    /// Pretty JSON, ending with a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses a key object read from `location`.
    pub fn from_json(bytes: &[u8], location: &str) -> Result<Self, KeyError> {
        let file: Self = serde_json::from_slice(bytes).map_err(|e| KeyError::Damaged {
            location: location.to_owned(),
            reason: format!("it is not a Coffer key object ({e})"),
        })?;
        if file.format_version != KEYS_VERSION {
            return Err(KeyError::Damaged {
                location: location.to_owned(),
                reason: format!(
                    "it has format version {}; this Coffer reads version {KEYS_VERSION}: upgrade Coffer",
                    file.format_version
                ),
            });
        }
        Ok(file)
    }

    /// The recipients, for messages: only what parses as a public key (the object comes
    /// from the bucket), at most a few.
    pub fn recipients_shown(&self) -> String {
        let valid: Vec<String> = self
            .recipients
            .iter()
            .filter(|r| x25519::Recipient::from_str(r).is_ok())
            .cloned()
            .collect();
        shown(&valid)
    }

    /// Checks that this key object belongs to the backup whose manifest has `record`.
    pub fn check(&self, record: &EncryptionRecord, location: &str) -> Result<(), KeyError> {
        if self.data_recipient != record.data_recipient {
            return Err(KeyError::Foreign {
                location: location.to_owned(),
                found: shorten_key(&self.data_recipient),
                expected: record.data_recipient.clone(),
            });
        }
        Ok(())
    }

    /// Unwraps the data key with the first of `identities` that can, and checks that it is
    /// the key `record` (the manifest's) names.
    pub fn open(
        &self,
        identities: &[x25519::Identity],
        record: &EncryptionRecord,
        location: &str,
    ) -> Result<DataKey, KeyError> {
        if identities.is_empty() {
            return Err(KeyError::IdentityNeeded {
                location: location.to_owned(),
                recipients: self.recipients_shown(),
            });
        }
        let damaged = |reason: String| KeyError::Damaged {
            location: location.to_owned(),
            reason,
        };
        let decryptor =
            age::Decryptor::new_buffered(ArmoredReader::new(self.wrapped.as_bytes()))
                .map_err(|e| damaged(format!("its wrapped key is not an age file ({e})")))?;
        let reader = match decryptor.decrypt(identities.iter().map(|i| i as &dyn age::Identity)) {
            Ok(reader) => reader,
            Err(age::DecryptError::NoMatchingKeys) => {
                return Err(KeyError::WrongIdentity {
                    location: location.to_owned(),
                    recipients: self.recipients_shown(),
                });
            }
            Err(e) => return Err(damaged(format!("its wrapped key cannot be opened ({e})"))),
        };
        let mut secret = zeroize::Zeroizing::new(String::with_capacity(128));
        reader
            .take(1024)
            .read_to_string(&mut secret)
            .map_err(|e| damaged(format!("its wrapped key cannot be opened ({e})")))?;
        let identity = x25519::Identity::from_str(secret.trim())
            .map_err(|_| damaged("its wrapped key is not an age private key".to_owned()))?;
        let key = DataKey::from_identity(identity);
        let found = key.public().to_string();
        self.check(record, location)?;
        if found != record.data_recipient {
            return Err(KeyError::Foreign {
                location: location.to_owned(),
                found,
                expected: record.data_recipient.clone(),
            });
        }
        Ok(key)
    }
}

/// A backup's key could not be read or opened.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Starts an encrypted backup in `folder`: a new data key, wrapped for `recipients` and
/// stored as the folder's first object. The seal encrypts the data objects.
pub async fn store(
    store: &Store,
    folder: &str,
    recipients: &[x25519::Recipient],
) -> Result<Seal, UnlockError> {
    let (seal, file) = seal_new(recipients)?;
    store
        .put_bytes(&format!("{folder}{}", seal.record().keys), &file.to_json())
        .await?;
    Ok(seal)
}

/// Reads the key object of the encrypted backup in `folder`.
pub async fn read(
    store: &Store,
    folder: &str,
    record: &EncryptionRecord,
) -> Result<(KeyFile, String), UnlockError> {
    if !valid_keys_name(&record.keys) {
        return Err(KeyError::Damaged {
            location: store.location(folder),
            reason: "its manifest names a key object that is not a file in its folder".to_owned(),
        }
        .into());
    }
    let key = format!("{folder}{}", record.keys);
    let location = store.location(&key);
    let bytes = match store.get_bytes(&key, MAX_KEYS_BYTES).await {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound { .. }) => {
            return Err(KeyError::Damaged {
                location,
                reason: format!(
                    "it is missing, and without it nobody can decrypt the backup (it was encrypted to {}); restore the object from a copy of the backup",
                    shown(&record.recipients)
                ),
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    Ok((KeyFile::from_json(&bytes, &location)?, location))
}

/// The data key of the backup in `folder` described by `manifest`, unwrapped with
/// `identities`; none when the backup is not encrypted. Fails before anything is restored
/// when no identity opens it.
pub async fn unlock(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    identities: &[x25519::Identity],
) -> Result<Option<DataKey>, UnlockError> {
    let Some(record) = &manifest.encryption else {
        return Ok(None);
    };
    let (file, location) = read(store, folder, record).await?;
    let location = location
        .strip_suffix(&record.keys)
        .unwrap_or(&location)
        .to_owned();
    Ok(Some(file.open(identities, record, &location)?))
}

/// Without a key: that the key object of the encrypted backup in `folder` is there, reads,
/// and belongs to the backup. Without it nobody can decrypt the backup, whatever else is
/// intact. Returns it, or none when the backup is not encrypted.
pub async fn check(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
) -> Result<Option<KeyFile>, UnlockError> {
    let Some(record) = &manifest.encryption else {
        return Ok(None);
    };
    let (file, location) = read(store, folder, record).await?;
    file.check(record, &location)?;
    Ok(Some(file))
}

/// Removes the key object of a backup that failed, unless a manifest turned up in its
/// folder after all (a write reported as failed that took effect): then the backup exists
/// and needs it.
pub async fn discard(store: &Store, folder: &str, seal: &Seal) {
    let manifest = format!("{folder}{}", super::manifest::MANIFEST);
    match store.list(folder).await {
        Ok(objects) if objects.iter().all(|o| o.key != manifest) => {}
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(
                "left the key object of the failed backup in {folder} ({e}); the sweep removes it"
            );
            return;
        }
    }
    let key = format!("{folder}{}", seal.record().keys);
    if let Err(e) = store.delete(&key).await {
        tracing::warn!("could not remove {key} of the failed backup: {e}");
    }
}

/// Public keys for a message: `age1abc…, age1def…` (in full: they are what users compare
/// with their key list), at most [`SHOWN`] of them.
pub fn shown(recipients: &[String]) -> String {
    match recipients.len() {
        0 => "no recipient".to_owned(),
        n if n > SHOWN => format!("{} and {} more", recipients[..SHOWN].join(", "), n - SHOWN),
        _ => recipients.join(", "),
    }
}

/// A key from the bucket, for a message: at most a public key's length.
fn shorten_key(key: &str) -> String {
    key.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(seal: &Seal) -> EncryptionRecord {
        seal.record().clone()
    }

    #[test]
    fn either_recipient_opens_the_key_and_nobody_else() {
        let alice = x25519::Identity::generate();
        let bob = x25519::Identity::generate();
        let (seal, file) = seal_new(&[alice.to_public(), bob.to_public()]).unwrap();
        let file = KeyFile::from_json(&file.to_json(), "k").unwrap();
        assert_eq!(file.recipients.len(), 2);
        let a = file.open(&[alice], &record(&seal), "k").unwrap();
        let b = file.open(&[bob], &record(&seal), "k").unwrap();
        assert_eq!(a.public().to_string(), seal.record().data_recipient);
        assert_eq!(b.public().to_string(), seal.record().data_recipient);
        let err = file
            .open(&[x25519::Identity::generate()], &record(&seal), "k")
            .unwrap_err();
        assert!(matches!(err, KeyError::WrongIdentity { .. }), "{err}");
        // The message names the recipients, so the user knows which key to look for.
        assert!(err.to_string().contains(&file.recipients[0]), "{err}");
        let err = file.open(&[], &record(&seal), "k").unwrap_err();
        assert!(err.to_string().contains("--identity"), "{err}");
    }

    #[test]
    fn each_data_key_has_its_own_key_object_name() {
        let (a, _) = seal_new(&[x25519::Identity::generate().to_public()]).unwrap();
        let (b, _) = seal_new(&[x25519::Identity::generate().to_public()]).unwrap();
        assert_ne!(a.record().keys, b.record().keys);
        assert!(valid_keys_name(&a.record().keys), "{}", a.record().keys);
        for bad in [
            "../keys.json",
            "/etc/keys.json",
            "keys/../../x.json",
            "manifest.json",
        ] {
            assert!(!valid_keys_name(bad), "{bad}");
        }
        let many: Vec<String> = (0..12).map(|i| format!("age1k{i}")).collect();
        assert!(shown(&many).ends_with("and 4 more"), "{}", shown(&many));
    }

    #[test]
    fn a_key_object_from_another_backup_is_refused() {
        let alice = x25519::Identity::generate();
        let (seal, _) = seal_new(&[alice.to_public()]).unwrap();
        let (_, other) = seal_new(&[alice.to_public()]).unwrap();
        let err = other.open(&[alice], &record(&seal), "k").unwrap_err();
        assert!(matches!(err, KeyError::Foreign { .. }), "{err}");
    }

    #[test]
    fn rewrapping_keeps_the_data_key_and_changes_who_can_open_it() {
        let old = x25519::Identity::generate();
        let new = x25519::Identity::generate();
        let (seal, file) = seal_new(&[old.to_public()]).unwrap();
        let key = file
            .open(std::slice::from_ref(&old), &record(&seal), "k")
            .unwrap();
        let rewrapped = wrap(&key, &[new.to_public()]).unwrap();
        assert_eq!(rewrapped.data_recipient, file.data_recipient);
        assert!(rewrapped.open(&[new], &record(&seal), "k").is_ok());
        assert!(rewrapped.open(&[old], &record(&seal), "k").is_err());
    }

    #[test]
    fn recipients_and_identities_parse_with_errors_that_name_the_place() {
        let a = x25519::Identity::generate();
        let b = x25519::Identity::generate();
        let text = format!(
            "# team keys\n{} # ops\n{}, {}\n",
            a.to_public(),
            b.to_public(),
            a.to_public()
        );
        assert_eq!(parse_recipients(&text, "r").unwrap().len(), 2);
        let err = parse_recipients("age1nope", "--recipient").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line 1 of --recipient is not an age public key"),
            "{err}"
        );
        assert!(parse_recipients("# none\n", "r").is_err());
        // A private key given as a recipient is refused without being echoed.
        let secret = a.to_string().expose_secret().to_owned();
        let err = parse_recipients(&format!("# x\n{secret}"), "r")
            .unwrap_err()
            .to_string();
        assert!(!err.contains(&secret[15..25]), "{err}");
        assert!(
            err.contains("line 2") && err.contains("it is a private key"),
            "{err}"
        );
        // Something else (a password in the wrong Secret) is never echoed either.
        let err = parse_recipients("hunter2", "r").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");

        let ids = format!(
            "# created\n{}\n\n{}\n",
            a.to_string().expose_secret(),
            b.to_string().expose_secret()
        );
        assert_eq!(parse_identities(&ids, "f").unwrap().len(), 2);
        let Err(err) = parse_identities("# c\nAGE-SECRET-KEY-1BAD\n", "key.txt") else {
            panic!("a bad identity parsed");
        };
        assert_eq!(
            err.to_string(),
            "line 2 of key.txt is not an age private key (AGE-SECRET-KEY-1...): give the identity file `age-keygen` or `coffer keygen` wrote"
        );
        assert!(parse_identities("", "f").is_err());
    }
}
