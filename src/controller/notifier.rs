//! The Notifier reconciler: sends a test notification when a Notifier is annotated with
//! `coffer.dev/test-notification=<a new value>`, once per value, recorded in its status
//! and delivered like every other notification ([`super::notify`]).

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::context::Context;
use super::error::Error;
use super::notify::{self, Notified};
use super::status;
use crate::api::{Delivery, DeliveryState, Notifier, NotifierStatus};
use crate::notify::Notice;

/// The annotation that asks for a test notification; each new value sends one.
pub const TEST_ANNOTATION: &str = "coffer.dev/test-notification";

/// The delivery id of the test asked for with `value`.
pub fn test_id(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    format!("test-{clean}")
}

pub async fn reconcile(notifier: Arc<Notifier>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (_, _, api) = ctx.scope(notifier.as_ref())?;
    let old = notifier.status.clone();
    let mut status = old.clone().unwrap_or_default();
    if notify::outstanding(&status.notifications) {
        let delivered = notify::deliver(&ctx, notifier.as_ref()).await?;
        return Ok(match (delivered.wrote, delivered.wake) {
            (true, _) => Action::requeue(Duration::from_millis(500)),
            (false, Some(wake)) => Action::requeue(wake),
            (false, None) => Action::await_change(),
        });
    }
    let Some(value) = notifier.annotations().get(TEST_ANNOTATION) else {
        return Ok(Action::await_change());
    };
    let id = test_id(value);
    if status.notifications.iter().any(|d| d.id == id) {
        return Ok(Action::await_change());
    }
    let delivery = Delivery {
        id,
        notifier: notifier.name_any(),
        event: "test".to_owned(),
        state: DeliveryState::Pending,
        attempts: 0,
        last_attempt_time: None,
        message: None,
    };
    notify::append_bounded(&mut status.notifications, vec![delivery], 10);
    status::apply_fresh(&api, notifier.as_ref(), old.as_ref(), &status).await?;
    Ok(Action::await_change())
}

impl Notified for Notifier {
    type Status = NotifierStatus;
    fn notified_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn deliveries(status: &mut Self::Status) -> &mut Vec<Delivery> {
        &mut status.notifications
    }
    fn conditions(
        status: &mut Self::Status,
    ) -> &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        &mut status.conditions
    }
    fn notice(&self, delivery: &Delivery) -> Notice {
        let namespace = self.namespace().unwrap_or_default();
        Notice {
            event: "test".to_owned(),
            id: format!("{}/{}", self.uid().unwrap_or_default(), delivery.id),
            kind: "Notifier".to_owned(),
            name: self.name_any(),
            reason: "Test".to_owned(),
            message: format!(
                "a test notification from Coffer: Notifier {namespace}/{} works",
                self.name_any()
            ),
            namespace,
            ..Notice::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids_are_safe_and_bounded() {
        assert_eq!(test_id("now"), "test-now");
        assert_eq!(test_id("2026-12-01T10:00"), "test-2026-12-01T10_00");
        assert_eq!(test_id(&"x".repeat(100)).len(), 5 + 63);
    }
}
