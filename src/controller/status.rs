//! Conditions, timestamps and status writes shared by the reconcilers.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::Error;

/// The field manager of every write the controller makes.
pub const MANAGER: &str = "coffer-controller";

/// A chrono time as a Kubernetes `Time`.
pub fn time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::from_millisecond(t.timestamp_millis()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A Kubernetes `Time` as a chrono time.
pub fn chrono(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0.as_millisecond()).unwrap_or_default()
}

/// Sets the condition of `type_`, keeping its transition time when its status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status = if ok { "True" } else { "False" };
    let message = crate::text::one_line(message);
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let transition = existing
        .map(|i| &conditions[i])
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time(Utc::now()));
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: transition,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The condition of `type_`, if set.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Writes `status` with server-side apply, as the controller's one field manager; skipped
/// when nothing changed.
pub async fn apply<K, S>(api: &Api<K>, object: &K, old: Option<&S>, status: &S) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    write(api, object, old, status, None).await
}

/// [`apply`], only if the object is still at the resourceVersion this reconcile read: a
/// reconcile that read stale status (a watch lagging behind its own write) fails with a
/// conflict instead of recording a transition twice, so the Events and metrics that follow
/// a transition happen once. For the writes that record a run's start when its Job was
/// found, and those that end a run (the first write of their reconcile: a second one would
/// conflict with the first).
pub async fn apply_fresh<K, S>(
    api: &Api<K>,
    object: &K,
    old: Option<&S>,
    status: &S,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    write(api, object, old, status, object.resource_version()).await
}

async fn write<K, S>(
    api: &Api<K>,
    object: &K,
    old: Option<&S>,
    status: &S,
    resource_version: Option<String>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == Some(status) {
        return Ok(());
    }
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(version) = resource_version {
        patch["metadata"] = serde_json::json!({"resourceVersion": version});
    }
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// `1m32s`, `4s`, `2h3m`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Ready",
            false,
            "SecretNotFound",
            "a\nb",
            Some(1),
        );
        let first = conditions[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        set_condition(
            &mut conditions,
            "Ready",
            false,
            "ClaimNotFound",
            "c",
            Some(2),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].reason, "ClaimNotFound");
        set_condition(&mut conditions, "Ready", true, "Scheduled", "ok", Some(2));
        assert_ne!(conditions[0].last_transition_time, first);
        assert_eq!(
            condition(&conditions, "Ready").map(|c| c.status.as_str()),
            Some("True")
        );
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(duration(4), "4s");
        assert_eq!(duration(92), "1m32s");
        assert_eq!(duration(7380), "2h3m");
    }
}
