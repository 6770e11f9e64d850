//! What every reconcile shares: the client, the operator's settings, events and metrics.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::Backup;

use super::error::Error;
use super::job::WorkerSettings;
use super::metrics::Metrics;

/// The operator's settings, from its command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub worker: WorkerSettings,
    /// Watch only this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// How long a deleted Backup tries to delete its data before leaving it (with an Event).
    pub deletion_timeout: std::time::Duration,
    /// How refused notifications are tried again.
    pub notify_retry: super::notify::RetryPolicy,
    /// The wait before a failed copy is tried again; doubled after each failure, up to an
    /// hour.
    pub copy_backoff: std::time::Duration,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    /// Every Backup made by a schedule, kept current by a watch (schedules read their
    /// history here instead of listing it on each reconcile).
    pub scheduled_backups: Store<Backup>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Default freshness limits by (cron expression, time zone), with when each was
    /// computed: working one out walks up to a year of runs.
    pub default_max_ages: std::sync::Mutex<DefaultMaxAges>,
    recorder: Recorder,
}

/// See [`Context::default_max_ages`].
pub type DefaultMaxAges =
    std::collections::HashMap<(String, String), (chrono::DateTime<chrono::Utc>, chrono::Duration)>;

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: String,
        scheduled_backups: Store<Backup>,
    ) -> Self {
        let reporter = Reporter {
            controller: "coffer-controller".to_owned(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            scheduled_backups,
            settings,
            metrics,
            default_max_ages: Default::default(),
        }
    }

    /// Records an Event on `object`. Events are best effort: a failure is logged, not
    /// returned.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        warning: bool,
        reason: &str,
        note: impl Into<String>,
    ) {
        self.event_about(object, None, warning, reason, note).await;
    }

    /// Records an Event on `object` about a `related` object (a schedule's Backup): events
    /// with the same reason about different objects are kept apart instead of folded into one
    /// series.
    pub async fn event_about<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        related: Option<ObjectReference>,
        warning: bool,
        reason: &str,
        note: impl Into<String>,
    ) {
        let note = crate::text::one_line(&note.into());
        // Every Event is also a log line, so the operator's log tells the story on its own.
        let kind = K::kind(&());
        let namespace = object.meta().namespace.as_deref().unwrap_or_default();
        let name = object.meta().name.as_deref().unwrap_or_default();
        if warning {
            tracing::warn!(%kind, namespace, name, reason, "{note}");
        } else {
            tracing::info!(%kind, namespace, name, reason, "{note}");
        }
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(reason, "cannot record an event: {e}");
        }
    }

    /// The object's name, namespace and an API handle for its kind in that namespace: how
    /// every reconcile starts.
    pub fn scope<K>(&self, object: &K) -> Result<(String, String, Api<K>), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let name = object.name_any();
        let namespace = object
            .namespace()
            .ok_or_else(|| Error::NoNamespace(name.clone()))?;
        let api = Api::namespaced(self.client.clone(), &namespace);
        Ok((name, namespace, api))
    }
}
