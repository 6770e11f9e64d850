//! Reading what a container needs from the API: environment from Secrets, ConfigMaps and
//! the Pod itself, and volumes as host directories and files.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVarSource, KeyToPath, PersistentVolumeClaim, Pod,
    ProjectedVolumeSource, Secret, ServiceAccount, ServiceAccountTokenProjection,
};
use kube::Api;
use kube::api::PostParams;

use super::container::{Mount, expand};

/// Why a container cannot start yet. Kubernetes keeps such a Pod Pending and retries.
#[derive(Debug)]
pub(crate) struct NotReady(pub String);

/// The container's environment, in order: `envFrom` first, then `env` (later wins), with
/// `$(VAR)` references in values expanded.
pub(crate) async fn environment(
    client: &kube::Client,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, NotReady> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.secret_ref {
            let optional = r.optional.unwrap_or(false);
            if let Some(secret) = get::<Secret>(client, namespace, &r.name, optional).await? {
                for (k, v) in secret.data.unwrap_or_default() {
                    env.push((
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v.0).into_owned(),
                    ));
                }
            }
        }
        if let Some(r) = &source.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            if let Some(map) = get::<ConfigMap>(client, namespace, &r.name, optional).await? {
                env.extend(
                    map.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v)),
                );
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => Some(expand(value, &env)),
            (None, Some(from)) => value_from(client, pod, namespace, from).await?,
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            env.push((var.name.clone(), value));
        }
    }
    Ok(env)
}

async fn value_from(
    client: &kube::Client,
    pod: &Pod,
    namespace: &str,
    from: &EnvVarSource,
) -> Result<Option<String>, NotReady> {
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional.unwrap_or(false);
        let Some(secret) = get::<Secret>(client, namespace, &r.name, optional).await? else {
            return Ok(None);
        };
        return match secret.data.unwrap_or_default().get(&r.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v.0).into_owned())),
            None if optional => Ok(None),
            None => Err(NotReady(format!(
                "couldn't find key {} in Secret {namespace}/{}",
                r.key, r.name
            ))),
        };
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional.unwrap_or(false);
        let Some(map) = get::<ConfigMap>(client, namespace, &r.name, optional).await? else {
            return Ok(None);
        };
        return match map.data.unwrap_or_default().get(&r.key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(NotReady(format!(
                "couldn't find key {} in ConfigMap {namespace}/{}",
                r.key, r.name
            ))),
        };
    }
    if let Some(field) = &from.field_ref {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let value = match field.field_path.as_str() {
            "metadata.name" => meta.name.clone(),
            "metadata.namespace" => meta.namespace.clone(),
            "metadata.uid" => meta.uid.clone(),
            "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
            "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
            "status.podIP" | "status.hostIP" => Some("127.0.0.1".to_owned()),
            other => {
                return Err(NotReady(format!(
                    "the process kubelet does not support fieldRef {other}"
                )));
            }
        };
        return Ok(Some(value.unwrap_or_default()));
    }
    Err(NotReady(
        "the process kubelet does not support resourceFieldRef".to_owned(),
    ))
}

/// Gets an object; a missing one is `Ok(None)` when optional, else a reason to wait.
async fn get<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Option<K>, NotReady>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    <K as kube::Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(object)) => Ok(Some(object)),
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(NotReady(format!(
            "{} {namespace}/{name} not found",
            K::kind(&Default::default())
        ))),
        Err(e) => Err(NotReady(format!("reading {namespace}/{name}: {e}"))),
    }
}

/// Prepares the Pod's volumes on the host and returns the container's mounts.
///
/// - a PersistentVolumeClaim is the directory `<root>/volumes/<namespace>/<claim>`, shared
///   by every Pod that mounts the claim (the claim must exist);
/// - Secret and ConfigMap volumes are directories of files, one per key;
/// - emptyDir is an empty directory of the Pod;
/// - a projected volume (the one the ServiceAccount admission plugin adds to Pods that mount
///   a token) is a directory with a token from the TokenRequest API bound to the Pod, the
///   ConfigMap keys and the Pod fields it lists;
/// - others are not mounted.
pub(crate) async fn mounts(
    client: &kube::Client,
    pod: &Pod,
    container: &Container,
    root: &Path,
    pod_dir: &Path,
) -> Result<Vec<Mount>, NotReady> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut volumes: Vec<(String, PathBuf)> = Vec::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let host = if let Some(claim) = &volume.persistent_volume_claim {
            get::<PersistentVolumeClaim>(client, namespace, &claim.claim_name, false).await?;
            claim_dir(root, namespace, &claim.claim_name)
        } else if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let optional = source.optional.unwrap_or(false);
            let dir = pod_dir.join("volumes").join(&volume.name);
            let files = get::<Secret>(client, namespace, &name, optional)
                .await?
                .and_then(|s| s.data)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0));
            write_files(&dir, files)?;
            dir
        } else if let Some(source) = &volume.config_map {
            let optional = source.optional.unwrap_or(false);
            let dir = pod_dir.join("volumes").join(&volume.name);
            let files = get::<ConfigMap>(client, namespace, &source.name, optional)
                .await?
                .and_then(|m| m.data)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()));
            write_files(&dir, files)?;
            dir
        } else if let Some(projected) = &volume.projected {
            let dir = pod_dir.join("volumes").join(&volume.name);
            let files = projected_files(client, pod, projected).await?;
            write_files(&dir, files.into_iter())?;
            dir
        } else if volume.empty_dir.is_some() {
            pod_dir.join("volumes").join(&volume.name)
        } else {
            continue;
        };
        std::fs::create_dir_all(&host)
            .map_err(|e| NotReady(format!("creating {}: {e}", host.display())))?;
        volumes.push((volume.name.clone(), host));
    }
    Ok(container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let (_, host) = volumes.iter().find(|(name, _)| *name == m.name)?;
            let host = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => host.join(sub),
                _ => host.clone(),
            };
            Some(Mount {
                container_path: m.mount_path.clone(),
                host_path: host,
            })
        })
        .collect())
}

/// The host directory standing in for a PersistentVolumeClaim.
pub(crate) fn claim_dir(root: &Path, namespace: &str, claim: &str) -> PathBuf {
    root.join("volumes").join(namespace).join(claim)
}

/// The files of a projected volume: ServiceAccount tokens (bound to the Pod, as a kubelet
/// asks for them), ConfigMap and Secret keys, and downward-API fields.
async fn projected_files(
    client: &kube::Client,
    pod: &Pod,
    projected: &ProjectedVolumeSource,
) -> Result<Vec<(String, Vec<u8>)>, NotReady> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut files = Vec::new();
    for source in projected.sources.iter().flatten() {
        if let Some(token) = &source.service_account_token {
            files.push((
                token.path.clone(),
                pod_token(client, pod, token).await?.into_bytes(),
            ));
        }
        if let Some(map) = &source.config_map {
            let optional = map.optional.unwrap_or(false);
            let data = get::<ConfigMap>(client, namespace, &map.name, optional)
                .await?
                .and_then(|m| m.data)
                .unwrap_or_default();
            files.extend(select_keys(
                data.into_iter().map(|(k, v)| (k, v.into_bytes())),
                map.items.as_deref(),
            ));
        }
        if let Some(secret) = &source.secret {
            let optional = secret.optional.unwrap_or(false);
            let data = get::<Secret>(client, namespace, &secret.name, optional)
                .await?
                .and_then(|s| s.data)
                .unwrap_or_default();
            files.extend(select_keys(
                data.into_iter().map(|(k, v)| (k, v.0)),
                secret.items.as_deref(),
            ));
        }
        for item in source
            .downward_api
            .iter()
            .flat_map(|d| d.items.iter().flatten())
        {
            let Some(field) = &item.field_ref else {
                continue;
            };
            let value = match field.field_path.as_str() {
                "metadata.namespace" => pod.metadata.namespace.clone(),
                "metadata.name" => pod.metadata.name.clone(),
                "metadata.uid" => pod.metadata.uid.clone(),
                other => {
                    return Err(NotReady(format!(
                        "the process kubelet does not support downward API field {other}"
                    )));
                }
            };
            files.push((item.path.clone(), value.unwrap_or_default().into_bytes()));
        }
    }
    Ok(files)
}

/// The keys a volume lists (renamed to their paths), or all of them.
fn select_keys(
    data: impl Iterator<Item = (String, Vec<u8>)>,
    items: Option<&[KeyToPath]>,
) -> Vec<(String, Vec<u8>)> {
    match items {
        None => data.collect(),
        Some(items) => {
            let data: Vec<_> = data.collect();
            items
                .iter()
                .filter_map(|item| {
                    let (_, value) = data.iter().find(|(k, _)| *k == item.key)?;
                    Some((item.path.clone(), value.clone()))
                })
                .collect()
        }
    }
}

/// A token for the Pod's ServiceAccount, bound to the Pod, from the TokenRequest API.
async fn pod_token(
    client: &kube::Client,
    pod: &Pod,
    projection: &ServiceAccountTokenProjection,
) -> Result<String, NotReady> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: projection.audience.iter().cloned().collect(),
            expiration_seconds: projection.expiration_seconds,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            NotReady(format!(
                "requesting a token for ServiceAccount {account}: {e}"
            ))
        })?
        .status
        .map(|s| s.token)
        .ok_or_else(|| NotReady(format!("no token issued for ServiceAccount {account}")))
}

fn write_files(dir: &Path, files: impl Iterator<Item = (String, Vec<u8>)>) -> Result<(), NotReady> {
    std::fs::create_dir_all(dir)
        .map_err(|e| NotReady(format!("creating {}: {e}", dir.display())))?;
    for (name, bytes) in files {
        let path = dir.join(&name);
        std::fs::write(&path, bytes)
            .map_err(|e| NotReady(format!("writing {}: {e}", path.display())))?;
    }
    Ok(())
}
