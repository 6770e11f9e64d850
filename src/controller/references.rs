//! Checks that what a spec refers to exists before a Job is made: Secrets (by metadata only,
//! so their values never reach the controller) and PersistentVolumeClaims. Also makes the
//! worker ServiceAccount of a namespace.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

use super::context::Context;
use super::error::Error;
use crate::api::{BackupSource, BackupStorage};

/// Something a spec refers to is missing: the `Ready` condition's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    /// Marks `Ready` False with this problem's reason and message.
    pub fn mark_not_ready(
        &self,
        conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
        generation: Option<i64>,
    ) {
        super::status::set_condition(
            conditions,
            "Ready",
            false,
            self.reason,
            &self.message,
            generation,
        );
    }
}

/// The Secrets and claims that `source` and `storage` name, by kind.
fn referenced(
    source: Option<&BackupSource>,
    storage: &BackupStorage,
) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut claims = Vec::new();
    let none = BackupSource {
        redis: None,
        postgres: None,
        mysql: None,
        volume: None,
    };
    let source = source.unwrap_or(&none);
    if let Some(r) = source
        .redis
        .as_ref()
        .and_then(|r| r.password_secret_ref.as_ref())
    {
        secrets.push(r.name.clone());
    }
    if let Some(p) = source
        .postgres
        .as_ref()
        .and_then(|p| p.password_secret_ref.as_ref())
    {
        secrets.push(p.name.clone());
    }
    if let Some(m) = source
        .mysql
        .as_ref()
        .and_then(|m| m.password_secret_ref.as_ref())
    {
        secrets.push(m.name.clone());
    }
    if let Some(v) = &source.volume {
        claims.push(v.claim_name.clone());
    }
    if let Some(s) = storage
        .s3
        .as_ref()
        .and_then(|s| s.credentials_secret_ref.as_ref())
    {
        secrets.push(s.name.clone());
    }
    if let Some(f) = &storage.filesystem {
        claims.push(f.claim_name.clone());
    }
    (secrets, claims)
}

/// The first missing Secret or claim, or `None` when everything exists.
pub async fn check(
    ctx: &Context,
    namespace: &str,
    source: &BackupSource,
    storage: &BackupStorage,
) -> Result<Option<Problem>, Error> {
    check_refs(ctx, namespace, Some(source), storage).await
}

/// The versions of the Secrets `source` and `storage` name (`name=resourceVersion`, or
/// `name=-` for a missing one): it changes when any of them is edited, which is what makes a
/// schedule check itself again.
pub async fn secret_versions(
    ctx: &Context,
    namespace: &str,
    source: &BackupSource,
    storage: &BackupStorage,
) -> Result<String, Error> {
    let (secrets, _) = referenced(Some(source), storage);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = Vec::new();
    for name in secrets {
        let version = api
            .get_metadata_opt(&name)
            .await?
            .and_then(|m| m.metadata.resource_version)
            .unwrap_or_else(|| "-".to_owned());
        out.push(format!("{name}={version}"));
    }
    Ok(out.join(","))
}

/// [`check`] for the store alone (deleting or inspecting a backup needs no source).
pub async fn check_storage(
    ctx: &Context,
    namespace: &str,
    storage: &BackupStorage,
) -> Result<Option<Problem>, Error> {
    check_refs(ctx, namespace, None, storage).await
}

/// Whether the Secret `name` exists (read by its metadata only).
pub async fn check_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Problem>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api
        .get_metadata_opt(name)
        .await?
        .is_none()
        .then(|| Problem {
            reason: "SecretNotFound",
            message: format!(
                "Secret {namespace}/{name} does not exist: create it, or fix the reference"
            ),
        }))
}

async fn check_refs(
    ctx: &Context,
    namespace: &str,
    source: Option<&BackupSource>,
    storage: &BackupStorage,
) -> Result<Option<Problem>, Error> {
    let (secrets, claims) = referenced(source, storage);
    let secret_api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for name in secrets {
        if secret_api.get_metadata_opt(&name).await?.is_none() {
            return Ok(Some(Problem {
                reason: "SecretNotFound",
                message: format!(
                    "Secret {namespace}/{name} does not exist: create it, or fix the reference"
                ),
            }));
        }
    }
    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    for name in claims {
        if claim_api.get_metadata_opt(&name).await?.is_none() {
            return Ok(Some(Problem {
                reason: "ClaimNotFound",
                message: format!(
                    "PersistentVolumeClaim {namespace}/{name} does not exist: create it, or fix claimName"
                ),
            }));
        }
    }
    Ok(None)
}

/// Makes the worker ServiceAccount in `namespace` if it is missing: no permissions are bound
/// to it and its token is not mounted. Looked up before every Job (a Job is rare): a
/// namespace deleted and made again, or the account deleted, gets it back. (It was
/// remembered per namespace name once, and a namespace made again under the same name left
/// every Job without Pods, "serviceaccount coffer-worker not found": found by the real-node
/// suite, whose tests reuse namespace names.)
pub async fn ensure_worker_account(ctx: &Context, namespace: &str) -> Result<(), Error> {
    let name = &ctx.settings.worker.service_account;
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    if api.get_metadata_opt(name).await?.is_none() {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "coffer".to_owned(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
