//! Client-side encryption: who may read a backup (`Encryption`, public keys only) and the
//! private key a restore reads it with (`Decryption`).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeySelector;

/// Encrypt every backup before it leaves the worker, with age (X25519 and
/// ChaCha20-Poly1305). Each backup gets its own random data key, wrapped for every
/// recipient and stored beside the data (`keys-….json`). The worker holds public keys only:
/// nothing in the cluster can read a backup once it is written. Keep the private keys
/// outside the cluster, and give one to a RestoreRequest (`spec.decryption`) only to restore.
/// Changing the recipients affects new backups; `coffer rewrap` changes old ones without
/// rewriting their data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.recipients) ? self.recipients.size() : 0) + (has(self.recipientsFrom) ? self.recipientsFrom.size() : 0) > 0")
    .message("encryption needs at least one recipient: list age public keys in recipients, or name a Secret or ConfigMap key in recipientsFrom"))]
pub struct Encryption {
    /// age public keys (`age1...`, from `age-keygen` or `coffer keygen`) that may read the
    /// backups.
    #[serde(default)]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "set"), inner(regex(pattern = r"^age1[02-9ac-hj-np-z]{58}$")))]
    pub recipients: Vec<String>,
    /// Keys of Secrets or ConfigMaps in the same namespace holding more age public keys, one
    /// per line (`#` starts a comment). Read by the worker when a backup starts; the operator
    /// never reads them.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub recipients_from: Vec<RecipientsSource>,
}

impl Encryption {
    /// Who may read, for messages: the inline public keys, and the keys that hold more.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.recipients.clone();
        for from in &self.recipients_from {
            if let Some(s) = &from.secret_key_ref {
                parts.push(format!("the keys in key {} of Secret {}", s.key, s.name));
            } else if let Some(m) = &from.config_map_key_ref {
                parts.push(format!("the keys in key {} of ConfigMap {}", m.key, m.name));
            }
        }
        parts.join(", ")
    }
}

/// A key holding age public keys. Set exactly one of `secretKeyRef` or `configMapKeyRef`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)")
    .message("set exactly one of secretKeyRef or configMapKeyRef"))]
pub struct RecipientsSource {
    /// A key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    /// A key of a ConfigMap (public keys are not secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeySelector>,
}

/// A key in a ConfigMap in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeySelector {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The private key that reads an encrypted backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decryption {
    /// A Secret key holding an age identity file (`AGE-SECRET-KEY-1...` lines): the private
    /// key of one of the backup's recipients. Only the restore's worker Pod reads it. Create
    /// it for the restore and delete it afterwards.
    pub identity_secret_ref: SecretKeySelector,
}
