//! Adding and removing the controller's finalizers, only on the version of the object this
//! reconcile read: a reconcile that read a stale copy fails with a conflict (and looks
//! again) instead of letting an object go on what it no longer says.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::error::Error;

/// Whether `object` carries the finalizer `name`.
pub fn has<K: Resource>(object: &K, name: &str) -> bool {
    object.finalizers().iter().any(|f| f == name)
}

/// Adds the finalizer `name` (nothing when it is there already).
pub async fn add<K>(api: &Api<K>, object: &K, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if has(object, name) {
        return Ok(());
    }
    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(name.to_owned());
    set(api, object, finalizers).await
}

/// Removes the finalizer `name`: once no other holds it, the object goes.
pub async fn remove<K>(api: &Api<K>, object: &K, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if !has(object, name) {
        return Ok(());
    }
    let finalizers = object
        .finalizers()
        .iter()
        .filter(|f| *f != name)
        .cloned()
        .collect();
    set(api, object, finalizers).await
}

/// Replaces the finalizers, failing if the object changed since it was read.
async fn set<K>(api: &Api<K>, object: &K, finalizers: Vec<String>) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": object.resource_version(),
        }
    });
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
