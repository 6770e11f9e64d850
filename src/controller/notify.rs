//! Notifications, at most once each: the reconciler that sees a transition records the
//! deliveries it calls for in the object's status (state `Pending`) in the same write as
//! the transition; [`deliver`] then claims each one (`Sending`, written with a
//! resourceVersion precondition, so that two reconciles or two replicas cannot both claim
//! it), sends it, and records the sink's answer (`Sent`, `Failed`, or `Pending` again with a
//! backoff when the sink certainly did not take it). A delivery found `Sending` was being
//! sent when the operator stopped: it becomes `Unknown` and is never sent again, so that
//! nobody gets a notification twice. Who gets what ([`plan`]) is pure.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Context;
use super::error::Error;
use super::status::{self, MANAGER, set_condition};
use crate::api::{
    Backup, BackupPhase, Delivery, DeliveryState, Notifier, NotifierReference, NotifyEvent,
    RestoreRequest, SecretKeySelector,
};
use crate::notify::email::EmailSecrets;
use crate::notify::{Notice, SendError};

/// The condition that says whether the object's notifications went out.
pub const CONDITION: &str = "Notified";

/// How many times, and how far apart, a notification the sink refused is tried again.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: i32,
    /// The wait after the first refusal; doubled after each one.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// When a delivery refused `attempts` times may be tried again.
    fn next_try(&self, delivery: &Delivery) -> Option<DateTime<Utc>> {
        let last = delivery.last_attempt_time.as_ref().map(status::chrono)?;
        let doublings =
            u32::try_from(delivery.attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
        let wait = self.backoff.saturating_mul(2u32.saturating_pow(doublings));
        Some(last + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX))
    }
}

/// What one Notifier wants, as far as choosing deliveries goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Wants {
    pub name: String,
    /// `None`: the Notifier does not exist.
    pub found: Option<NotifierKind>,
}

/// A Notifier's kind and event filter.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifierKind {
    pub heartbeat: bool,
    pub events: Vec<NotifyEvent>,
    pub every_failure: bool,
}

impl From<&Notifier> for NotifierKind {
    fn from(n: &Notifier) -> Self {
        Self {
            heartbeat: n.spec.heartbeat.is_some(),
            events: n.spec.events.clone(),
            every_failure: n.spec.every_failure,
        }
    }
}

/// What happened to a Backup, for choosing deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupNews {
    /// Its worker started (heartbeats only).
    Started,
    Succeeded {
        /// The schedule's previous run failed.
        after_failure: bool,
    },
    Failed {
        /// The schedule's previous run failed too.
        again: bool,
    },
}

/// The deliveries `news` calls for, one per Notifier at most. A Notifier that does not
/// exist gets a `Failed` delivery that says so, so that the mistake is seen.
pub fn plan(news: BackupNews, notifiers: &[Wants]) -> Vec<Delivery> {
    let mut out = Vec::new();
    for wants in notifiers {
        let event = match &wants.found {
            None => match news {
                BackupNews::Started => continue,
                BackupNews::Succeeded { .. } => "succeeded",
                BackupNews::Failed { .. } => "failed",
            },
            Some(kind) if kind.heartbeat => match news {
                BackupNews::Started => "start",
                BackupNews::Succeeded { .. } => "succeeded",
                BackupNews::Failed { .. } => "failed",
            },
            Some(kind) => {
                let has = |e| kind.events.contains(&e);
                match news {
                    BackupNews::Started => continue,
                    BackupNews::Failed { again } => {
                        if !has(NotifyEvent::Failed) || (again && !kind.every_failure) {
                            continue;
                        }
                        "failed"
                    }
                    BackupNews::Succeeded {
                        after_failure: true,
                    } if has(NotifyEvent::Recovered) || has(NotifyEvent::Succeeded) => "recovered",
                    BackupNews::Succeeded { .. } if has(NotifyEvent::Succeeded) => "succeeded",
                    BackupNews::Succeeded { .. } => continue,
                }
            }
        };
        let id = format!("{event}/{}", wants.name);
        if out.iter().any(|d: &Delivery| d.id == id) {
            continue;
        }
        let (state, message) = match wants.found {
            Some(_) => (DeliveryState::Pending, None),
            None => (
                DeliveryState::Failed,
                Some(format!(
                    "Notifier {} does not exist: create it, or fix spec.notify",
                    wants.name
                )),
            ),
        };
        out.push(Delivery {
            id,
            notifier: wants.name.clone(),
            event: event.to_owned(),
            state,
            attempts: 0,
            last_attempt_time: None,
            message,
        });
    }
    out
}

/// The deliveries of a schedule's turning stale at `since` (unique per episode), for the
/// Notifiers that listen for `stale`. Heartbeats do not: they report runs.
pub fn plan_stale(since: DateTime<Utc>, notifiers: &[Wants]) -> Vec<Delivery> {
    plan_event(NotifyEvent::Stale, since, notifiers)
}

/// The deliveries of a schedule's `event` (`stale`, `preflightFailed`) that happened at
/// `at` (unique per occurrence), for the Notifiers that listen for it.
pub fn plan_event(event: NotifyEvent, at: DateTime<Utc>, notifiers: &[Wants]) -> Vec<Delivery> {
    let since = at;
    let mut out: Vec<Delivery> = Vec::new();
    for wants in notifiers {
        let (state, message) = match &wants.found {
            Some(kind) if kind.heartbeat || !kind.events.contains(&event) => continue,
            Some(_) => (DeliveryState::Pending, None),
            None => (
                DeliveryState::Failed,
                Some(format!(
                    "Notifier {} does not exist: create it, or fix spec.notify",
                    wants.name
                )),
            ),
        };
        let id = format!("{}-{}/{}", event.as_str(), since.timestamp(), wants.name);
        if out.iter().any(|d| d.id == id) {
            continue;
        }
        out.push(Delivery {
            id,
            notifier: wants.name.clone(),
            event: event.as_str().to_owned(),
            state,
            attempts: 0,
            last_attempt_time: None,
            message,
        });
    }
    out
}

/// How many deliveries an object's status keeps.
pub const KEPT: usize = 20;

/// Adds planned deliveries to an object's (keeping [`KEPT`]); returns what the ones planned
/// as failed say (a Notifier that does not exist), for an Event once the status is written.
pub fn add_planned(deliveries: &mut Vec<Delivery>, planned: Vec<Delivery>) -> Vec<String> {
    let problems = planned.iter().filter_map(|d| d.message.clone()).collect();
    append_bounded(deliveries, planned, KEPT);
    problems
}

/// Appends `new` to `deliveries`, keeping at most `keep`: the oldest settled ones go first,
/// never one still to be sent.
pub fn append_bounded(deliveries: &mut Vec<Delivery>, new: Vec<Delivery>, keep: usize) {
    for d in new {
        if !deliveries.iter().any(|e| e.id == d.id) {
            deliveries.push(d);
        }
    }
    while deliveries.len() > keep {
        match deliveries
            .iter()
            .position(|d| !matches!(d.state, DeliveryState::Pending | DeliveryState::Sending))
        {
            Some(i) => {
                deliveries.remove(i);
            }
            None => break,
        }
    }
}

/// The Notifiers named in `refs`, as they are now.
pub async fn lookup(
    ctx: &Context,
    namespace: &str,
    refs: &[NotifierReference],
) -> Result<Vec<Wants>, Error> {
    let api: Api<Notifier> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let found = api.get_opt(&r.name).await?;
        out.push(Wants {
            name: r.name.clone(),
            found: found.as_ref().map(NotifierKind::from),
        });
    }
    Ok(out)
}

/// Whether a schedule's run before `backup`, which completed at `mine` (the worker's clock,
/// like every run's completion time), failed: from the watched history, and from what the
/// schedule remembers of runs retention has deleted since.
pub fn previous_run_failed(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
    mine: DateTime<Utc>,
    schedule: Option<&crate::api::BackupScheduleStatus>,
) -> bool {
    let name = super::backup::schedule_name(backup);
    if name.is_empty() {
        return false;
    }
    let this = backup.uid();
    let watched: Vec<(DateTime<Utc>, BackupPhase)> = ctx
        .scheduled_backups
        .state()
        .iter()
        .filter(|b| b.namespace().as_deref() == Some(namespace) && b.uid() != this)
        .filter(|b| super::backup::schedule_name(b) == name)
        .filter_map(|b| {
            let status = b.status.as_ref()?;
            let done = status.completion_time.as_ref().map(status::chrono)?;
            let phase = status.phase?;
            matches!(phase, BackupPhase::Succeeded | BackupPhase::Failed).then_some((done, phase))
        })
        .collect();
    previous_failed(&watched, schedule, mine)
}

/// Whether the newest outcome before `mine` is a failure: among the runs still there (up to
/// `mine`, others than this one) and the schedule's record of its last success and failure
/// (strictly before `mine`: this run may already be recorded there). Pure.
pub fn previous_failed(
    runs: &[(DateTime<Utc>, BackupPhase)],
    schedule: Option<&crate::api::BackupScheduleStatus>,
    mine: DateTime<Utc>,
) -> bool {
    let recorded = schedule.into_iter().flat_map(|s| {
        [
            (s.last_successful_time.as_ref(), BackupPhase::Succeeded),
            (s.last_failed_time.as_ref(), BackupPhase::Failed),
        ]
        .into_iter()
        .filter_map(|(t, phase)| Some((status::chrono(t?), phase)))
        .filter(|(done, _)| *done < mine)
    });
    runs.iter()
        .copied()
        .filter(|(done, _)| *done <= mine)
        .chain(recorded)
        // On a tie, a success wins: never call a recovery a repeated failure.
        .max_by_key(|(done, phase)| (*done, *phase == BackupPhase::Succeeded))
        .is_some_and(|(_, phase)| phase == BackupPhase::Failed)
}

/// An object whose status holds deliveries and conditions.
pub trait Notified:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
{
    type Status: Serialize + Clone + Default + PartialEq;
    fn notified_status(&self) -> Option<&Self::Status>;
    fn deliveries(status: &mut Self::Status) -> &mut Vec<Delivery>;
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition>;
    /// What the delivery says about this object.
    fn notice(&self, delivery: &Delivery) -> Notice;
}

impl Notified for Backup {
    type Status = crate::api::BackupStatus;
    fn notified_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn deliveries(status: &mut Self::Status) -> &mut Vec<Delivery> {
        &mut status.notifications
    }
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn notice(&self, delivery: &Delivery) -> Notice {
        backup_notice(self, delivery)
    }
}

impl Notified for crate::api::BackupSchedule {
    type Status = crate::api::BackupScheduleStatus;
    fn notified_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn deliveries(status: &mut Self::Status) -> &mut Vec<Delivery> {
        &mut status.notifications
    }
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn notice(&self, delivery: &Delivery) -> Notice {
        let status = self.status.clone().unwrap_or_default();
        let about = if delivery.event == "preflightFailed" {
            ["SourceReachable", "StorageWritable"]
                .iter()
                .filter_map(|t| status::condition(&status.conditions, t))
                .find(|c| c.status == "False")
        } else {
            status::condition(&status.conditions, "Fresh")
        };
        // Sent after a retry, the news may have cleared since it was recorded: said so.
        let (reason, message) = match about {
            Some(c) if c.status == "False" => (c.reason.clone(), c.message.clone()),
            cleared => (
                if delivery.event == "preflightFailed" {
                    "PreflightFailed"
                } else {
                    "Stale"
                }
                .to_owned(),
                match cleared {
                    Some(c) => format!("it has cleared since: {}", c.message),
                    None => "it has cleared since".to_owned(),
                },
            ),
        };
        Notice {
            event: delivery.event.clone(),
            id: format!("{}/{}", self.uid().unwrap_or_default(), delivery.id),
            namespace: self.namespace().unwrap_or_default(),
            kind: "BackupSchedule".to_owned(),
            name: self.name_any(),
            schedule: Some(self.name_any()),
            source_kind: self
                .spec
                .source
                .kind()
                .map(|k| super::backup::kind_word(Some(k)).to_owned()),
            action: crate::notify::action_for(&reason).to_owned(),
            reason,
            message,
            last_success_time: status.last_successful_time.as_ref().map(status::chrono),
            ..Notice::default()
        }
    }
}

impl Notified for RestoreRequest {
    type Status = crate::api::RestoreRequestStatus;
    fn notified_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn deliveries(status: &mut Self::Status) -> &mut Vec<Delivery> {
        &mut status.notifications
    }
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn notice(&self, delivery: &Delivery) -> Notice {
        restore_notice(self, delivery)
    }
}

/// The notice about a RestoreRequest: its result, from its `Ready` condition.
pub fn restore_notice(request: &RestoreRequest, delivery: &Delivery) -> Notice {
    let status = request.status.clone().unwrap_or_default();
    let ready = status::condition(&status.conditions, "Ready");
    let reason = ready.map(|c| c.reason.clone()).unwrap_or_default();
    let started = status.start_time.as_ref().map(status::chrono);
    let completed = status.completion_time.as_ref().map(status::chrono);
    Notice {
        event: delivery.event.clone(),
        id: format!("{}/{}", request.uid().unwrap_or_default(), delivery.id),
        namespace: request.namespace().unwrap_or_default(),
        kind: "RestoreRequest".to_owned(),
        name: request.name_any(),
        schedule: None,
        backup: request.spec.backup_ref.as_ref().map(|b| b.name.clone()),
        restore: Some(request.name_any()),
        source_kind: request
            .spec
            .target
            .as_ref()
            .and_then(crate::api::BackupSource::kind)
            .map(|k| super::backup::kind_word(Some(k)).to_owned()),
        phase: status.phase.map(|p| format!("{p:?}")),
        action: if delivery.event == "restoreFailed" {
            crate::notify::action_for(&reason).to_owned()
        } else {
            String::new()
        },
        reason,
        message: ready.map(|c| c.message.clone()).unwrap_or_default(),
        location: status.location.clone(),
        duration_seconds: match (started, completed) {
            (Some(s), Some(c)) => Some((c - s).num_seconds()),
            _ => None,
        },
        start_time: started,
        completion_time: completed,
        ..Notice::default()
    }
}

/// The notice about a Backup.
pub fn backup_notice(backup: &Backup, delivery: &Delivery) -> Notice {
    let status = backup.status.clone().unwrap_or_default();
    let ready = status::condition(&status.conditions, "Ready");
    let started = status.start_time.as_ref().map(status::chrono);
    let completed = status.completion_time.as_ref().map(status::chrono);
    let schedule = super::backup::schedule_name(backup);
    let copied = status::condition(&status.conditions, "Copied");
    let (reason, message) = match delivery.event.as_str() {
        "start" => ("Started".to_owned(), "the worker started".to_owned()),
        // Sent after a retry, the copy may have succeeded since: the condition says so.
        "copyFailed" => (
            copied.map(|c| c.reason.clone()).unwrap_or_default(),
            copied.map(|c| c.message.clone()).unwrap_or_default(),
        ),
        "drillFailed" => status
            .verification
            .as_ref()
            .map(|v| {
                let reason = match v.phase {
                    crate::api::VerificationPhase::VerificationFailed => "VerificationFailed",
                    _ => "DrillNotRun",
                };
                (reason.to_owned(), v.message.clone())
            })
            .unwrap_or_default(),
        _ => (
            ready.map(|c| c.reason.clone()).unwrap_or_default(),
            ready.map(|c| c.message.clone()).unwrap_or_default(),
        ),
    };
    Notice {
        event: delivery.event.clone(),
        id: format!("{}/{}", backup.uid().unwrap_or_default(), delivery.id),
        namespace: backup.namespace().unwrap_or_default(),
        kind: "Backup".to_owned(),
        name: backup.name_any(),
        schedule: (!schedule.is_empty()).then_some(schedule),
        backup: Some(backup.name_any()),
        restore: None,
        source_kind: status
            .source_kind
            .map(|k| super::backup::kind_word(Some(k)).to_owned()),
        phase: status.phase.map(|p| format!("{p:?}")),
        action: crate::notify::action_for(&reason).to_owned(),
        reason,
        message,
        location: status.location.clone(),
        raw_bytes: status.raw_bytes,
        stored_bytes: status.stored_bytes,
        duration_seconds: match (started, completed) {
            (Some(s), Some(c)) => Some((c - s).num_seconds()),
            _ => None,
        },
        start_time: started,
        completion_time: completed,
        last_success_time: None,
    }
}

/// What [`deliver`] did.
#[derive(Debug, Default)]
pub struct Delivered {
    /// It wrote the object's status: the reconcile should end and read it again.
    pub wrote: bool,
    /// A delivery waits for its next attempt: look again after this long.
    pub wake: Option<Duration>,
}

/// Whether `deliveries` has anything to do.
pub fn outstanding(deliveries: &[Delivery]) -> bool {
    deliveries
        .iter()
        .any(|d| matches!(d.state, DeliveryState::Pending | DeliveryState::Sending))
}

/// Whether a delivery is to be sent (or judged) now, not waiting for its next attempt.
pub fn due(deliveries: &[Delivery], policy: RetryPolicy) -> bool {
    let now = Utc::now();
    deliveries.iter().any(|d| match d.state {
        DeliveryState::Sending => true,
        DeliveryState::Pending => policy.next_try(d).is_none_or(|t| t <= now),
        _ => false,
    })
}

/// Sends what is due of `object`'s recorded deliveries, one claim at a time (see the
/// module's documentation).
pub async fn deliver<K: Notified>(ctx: &Context, object: &K) -> Result<Delivered, Error> {
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut current = object.clone();
    let mut status = current.notified_status().cloned().unwrap_or_default();
    let mut done = Delivered::default();
    let generation = object.meta().generation;

    // Claimed by a reconcile that never recorded the outcome: perhaps sent. Never again.
    let interrupted: Vec<usize> = K::deliveries(&mut status)
        .iter()
        .enumerate()
        .filter(|(_, d)| d.state == DeliveryState::Sending)
        .map(|(i, _)| i)
        .collect();
    if !interrupted.is_empty() {
        let mut notes = Vec::new();
        for i in interrupted {
            let d = &mut K::deliveries(&mut status)[i];
            d.state = DeliveryState::Unknown;
            d.message = Some(
                "the operator stopped while sending this notification; it may have arrived, so it is not sent again"
                    .to_owned(),
            );
            notes.push(format!("{} to Notifier {}", d.event, d.notifier));
        }
        let message = format!(
            "not known whether {} arrived (the operator stopped while sending); not sent again, so that nobody gets it twice",
            notes.join(", ")
        );
        set_condition(
            K::conditions(&mut status),
            CONDITION,
            false,
            "NotificationUnknown",
            &message,
            generation,
        );
        // A conflict here means this reconcile read an old copy (the claim's reconcile may
        // have finished since): nothing is marked, and the next reconcile reads again.
        write(&api, &current, &status).await?;
        ctx.event(object, true, "NotificationUnknown", &message)
            .await;
        done.wrote = true;
        return Ok(done);
    }

    let now = Utc::now();
    let policy = ctx.settings.notify_retry;
    // By id: a write that lands between two sends may have added or dropped records.
    let pending: Vec<String> = K::deliveries(&mut status)
        .iter()
        .filter(|d| d.state == DeliveryState::Pending)
        .map(|d| d.id.clone())
        .collect();
    for id in pending {
        let Some(i) = K::deliveries(&mut status).iter().position(|d| d.id == id) else {
            continue;
        };
        let delivery = K::deliveries(&mut status)[i].clone();
        if delivery.state != DeliveryState::Pending {
            continue;
        }
        if let Some(next) = policy.next_try(&delivery).filter(|next| *next > now) {
            let wait = (next - now).to_std().unwrap_or_default();
            done.wake = Some(done.wake.map_or(wait, |w| w.min(wait)));
            continue;
        }
        // The claim.
        {
            let d = &mut K::deliveries(&mut status)[i];
            d.state = DeliveryState::Sending;
            d.attempts += 1;
            d.last_attempt_time = Some(status::time(Utc::now()));
        }
        current = write(&api, &current, &status).await?;
        done.wrote = true;
        let notice = object.notice(&delivery);
        let outcome = send(ctx, &namespace, &delivery.notifier, &notice).await;
        let attempts = K::deliveries(&mut status)[i].attempts;
        let (reason, note, warning) = {
            let d = &mut K::deliveries(&mut status)[i];
            match outcome {
                Ok(answer) => {
                    d.state = DeliveryState::Sent;
                    d.message = Some(answer.clone());
                    (
                        "Notified",
                        format!(
                            "sent the {} notification to Notifier {} ({answer})",
                            d.event, d.notifier
                        ),
                        false,
                    )
                }
                Err(e) if e.retryable && attempts < policy.attempts => {
                    d.state = DeliveryState::Pending;
                    d.message = Some(e.message.clone());
                    let next = policy
                        .next_try(d)
                        .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
                        .unwrap_or(policy.backoff);
                    done.wake = Some(done.wake.map_or(next, |w| w.min(next)));
                    (
                        "NotificationRetrying",
                        format!(
                            "the {} notification to Notifier {} was not delivered (attempt {attempts} of {}), trying again in {}: {}",
                            d.event,
                            d.notifier,
                            policy.attempts,
                            status::duration(i64::try_from(next.as_secs()).unwrap_or(i64::MAX)),
                            e.message
                        ),
                        true,
                    )
                }
                Err(e) => {
                    d.state = DeliveryState::Failed;
                    d.message = Some(e.message.clone());
                    (
                        "NotificationFailed",
                        format!(
                            "the {} notification to Notifier {} was not delivered after {attempts} attempt(s): {}",
                            d.event, d.notifier, e.message
                        ),
                        true,
                    )
                }
            }
        };
        let all = K::deliveries(&mut status).clone();
        mark(K::conditions(&mut status), &all, generation);
        let outcome = K::deliveries(&mut status)[i].clone();
        current = record(&api, &current, &status, &outcome, generation).await?;
        status = current.notified_status().cloned().unwrap_or_default();
        ctx.event(object, warning, reason, &note).await;
    }
    // Deliveries planned as failed (a Notifier that does not exist) show in the condition
    // even when nothing was sent.
    let before = status.clone();
    let all = K::deliveries(&mut status).clone();
    mark(K::conditions(&mut status), &all, generation);
    if status != before {
        write(&api, &current, &status).await?;
        done.wrote = true;
    }
    Ok(done)
}

/// Sets the `Notified` condition from the deliveries.
pub fn mark(conditions: &mut Vec<Condition>, deliveries: &[Delivery], generation: Option<i64>) {
    if deliveries.is_empty() {
        return;
    }
    let failed: Vec<String> = deliveries
        .iter()
        .filter(|d| matches!(d.state, DeliveryState::Failed | DeliveryState::Unknown))
        .map(|d| {
            format!(
                "{} to Notifier {}: {}",
                d.event,
                d.notifier,
                d.message.as_deref().unwrap_or("not delivered")
            )
        })
        .collect();
    let waiting = deliveries
        .iter()
        .filter(|d| d.state == DeliveryState::Pending && d.attempts > 0)
        .map(|d| {
            format!(
                "{} to Notifier {} (attempt {} failed: {})",
                d.event,
                d.notifier,
                d.attempts,
                d.message.as_deref().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>();
    let sent = deliveries
        .iter()
        .filter(|d| d.state == DeliveryState::Sent)
        .count();
    if !failed.is_empty() {
        let unknown_only = deliveries.iter().all(|d| d.state != DeliveryState::Failed);
        set_condition(
            conditions,
            CONDITION,
            false,
            if unknown_only {
                "NotificationUnknown"
            } else {
                "NotificationFailed"
            },
            &failed.join("; "),
            generation,
        );
    } else if !waiting.is_empty() {
        set_condition(
            conditions,
            CONDITION,
            false,
            "NotificationRetrying",
            &format!("retrying {}", waiting.join("; ")),
            generation,
        );
    } else if sent > 0 {
        set_condition(
            conditions,
            CONDITION,
            true,
            "Sent",
            &format!("{sent} notification(s) sent"),
            generation,
        );
    }
}

/// Records the outcome of a send made after the claim that wrote `current`. When the object
/// changed meanwhile (a label, a spec edit, a deletion starting), the outcome goes into the
/// newest copy instead, as long as that copy still holds this very claim; otherwise the
/// delivery stays `Sending` and becomes `Unknown`, which never sends twice.
async fn record<K: Notified>(
    api: &Api<K>,
    current: &K,
    status: &K::Status,
    outcome: &Delivery,
    generation: Option<i64>,
) -> Result<K, Error> {
    match write(api, current, status).await {
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => {
            let fresh = api.get(&current.name_any()).await?;
            let mut fresh_status = fresh.notified_status().cloned().unwrap_or_default();
            let deliveries = K::deliveries(&mut fresh_status);
            let Some(claim) = deliveries.iter_mut().find(|d| {
                d.id == outcome.id
                    && d.state == DeliveryState::Sending
                    && d.attempts == outcome.attempts
            }) else {
                return Err(Error::Kube(kube::Error::Api(e)));
            };
            *claim = outcome.clone();
            let all = deliveries.clone();
            mark(K::conditions(&mut fresh_status), &all, generation);
            write(api, &fresh, &fresh_status).await
        }
        other => other,
    }
}

/// Writes `status` if `current` is still the latest version, returning the new version.
async fn write<K: Notified>(api: &Api<K>, current: &K, status: &K::Status) -> Result<K, Error> {
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"resourceVersion": current.resource_version()},
        "status": status,
    });
    Ok(api
        .patch_status(
            &current.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?)
}

/// Reads the Notifier and its Secrets, and sends. Every error is one line without secrets.
async fn send(
    ctx: &Context,
    namespace: &str,
    name: &str,
    notice: &Notice,
) -> Result<String, SendError> {
    let api: Api<Notifier> = Api::namespaced(ctx.client.clone(), namespace);
    let notifier = match api.get_opt(name).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Err(SendError::fatal(format!(
                "Notifier {namespace}/{name} does not exist: create it, or fix spec.notify"
            )));
        }
        Err(e) => {
            return Err(SendError::refused(format!(
                "cannot read Notifier {name}: {e}"
            )));
        }
    };
    let secrets = Secrets { ctx, namespace };
    let spec = &notifier.spec;
    if let Some(hook) = &spec.webhook {
        let url = secrets.value(&hook.url_secret_ref).await?;
        let key = match &hook.signing_secret_ref {
            Some(r) => Some(secrets.value(r).await?),
            None => None,
        };
        let result = crate::notify::webhook::send(
            &url,
            hook.format,
            key.as_deref().map(str::as_bytes),
            notice,
        )
        .await;
        let hidden: Vec<&str> = [Some(url.as_str()), key.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        return result.map_err(|e| e.scrubbed(&hidden));
    }
    if let Some(beat) = &spec.heartbeat {
        let url = secrets.value(&beat.url_secret_ref).await?;
        return crate::notify::heartbeat::send(&url, notice)
            .await
            .map_err(|e| e.scrubbed(&[&url]));
    }
    if let Some(email) = &spec.email {
        let mut values = EmailSecrets::default();
        if let Some(r) = &email.username_secret_ref {
            values.username = Some(secrets.value(r).await?);
        }
        if let Some(r) = &email.password_secret_ref {
            values.password = Some(secrets.value(r).await?);
        }
        if let Some(r) = &email.ca_secret_ref {
            values.ca_pem = Some(secrets.value(r).await?.into_bytes());
        }
        return crate::notify::email::send(email, &values, notice).await;
    }
    Err(SendError::fatal(format!(
        "Notifier {name} has no webhook, email or heartbeat: fix it"
    )))
}

/// Secret values, read when a notification is sent and never kept.
struct Secrets<'a> {
    ctx: &'a Context,
    namespace: &'a str,
}

impl Secrets<'_> {
    async fn value(&self, selector: &SecretKeySelector) -> Result<String, SendError> {
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let (name, key) = (&selector.name, &selector.key);
        let secret = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(SendError::fatal(format!(
                    "Secret {}/{name} does not exist: create it, or fix the Notifier",
                    self.namespace
                )));
            }
            Err(e) => {
                return Err(SendError::refused(format!(
                    "cannot read Secret {name}: {e}"
                )));
            }
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            });
        let Some(bytes) = bytes else {
            return Err(SendError::fatal(format!(
                "Secret {}/{name} has no key {key}: add it, or fix the Notifier",
                self.namespace
            )));
        };
        String::from_utf8(bytes)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|_| {
                SendError::fatal(format!(
                    "key {key} of Secret {name} is not UTF-8 text: fix the Secret"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_notice_says_when_its_news_has_cleared_by_the_time_it_is_sent() {
        let mut schedule: crate::api::BackupSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "coffer.dev/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": "shop", "namespace": "ns"},
            "spec": {"schedule": "0 2 * * *", "source": {"redis": {"host": "redis"}},
                "storage": {"s3": {"bucket": "b"}}}}))
        .unwrap_or_else(|e| panic!("{e}"));
        let delivery = plan_event(
            NotifyEvent::PreflightFailed,
            Utc::now(),
            &[hook("ops", &[NotifyEvent::PreflightFailed], false)],
        )
        .remove(0);
        let mut status = crate::api::BackupScheduleStatus::default();
        set_condition(
            &mut status.conditions,
            "SourceReachable",
            false,
            "SourceCheckFailed",
            "wrong password",
            None,
        );
        schedule.status = Some(status.clone());
        let failing = schedule.notice(&delivery);
        assert_eq!(
            (failing.reason.as_str(), failing.message.as_str()),
            ("SourceCheckFailed", "wrong password")
        );
        set_condition(
            &mut status.conditions,
            "SourceReachable",
            true,
            "Reachable",
            "Redis 7",
            None,
        );
        schedule.status = Some(status);
        let cleared = schedule.notice(&delivery);
        assert_eq!(cleared.reason, "PreflightFailed");
        assert_eq!(cleared.message, "it has cleared since");
    }

    #[test]
    fn a_failure_series_is_seen_after_retention_deleted_the_failed_runs() {
        let at = |minute: i64| {
            DateTime::<Utc>::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap_or_default()
        };
        let schedule =
            |success: Option<i64>, failure: Option<i64>| crate::api::BackupScheduleStatus {
                last_successful_time: success.map(|m| status::time(at(m))),
                last_failed_time: failure.map(|m| status::time(at(m))),
                ..Default::default()
            };
        // Nothing before: the first failure.
        assert!(!previous_failed(&[], None, at(10)));
        // keepFailed: 0 left no failed run, but the schedule remembers one.
        let remembered = schedule(Some(1), Some(5));
        assert!(previous_failed(
            &[(at(1), BackupPhase::Succeeded)],
            Some(&remembered),
            at(10)
        ));
        // A success since.
        let recovered = schedule(Some(7), Some(5));
        assert!(!previous_failed(&[], Some(&recovered), at(10)));
        // This very run already recorded by the schedule does not count as its own past.
        let itself = schedule(Some(1), Some(10));
        assert!(!previous_failed(&[], Some(&itself), at(10)));
        // The runs still there decide when they are newer than the record.
        assert!(previous_failed(
            &[(at(8), BackupPhase::Failed)],
            Some(&recovered),
            at(10)
        ));
    }

    fn hook(name: &str, events: &[NotifyEvent], every_failure: bool) -> Wants {
        Wants {
            name: name.to_owned(),
            found: Some(NotifierKind {
                heartbeat: false,
                events: events.to_vec(),
                every_failure,
            }),
        }
    }

    fn beat(name: &str) -> Wants {
        Wants {
            name: name.to_owned(),
            found: Some(NotifierKind {
                heartbeat: true,
                events: vec![],
                every_failure: false,
            }),
        }
    }

    fn ids(deliveries: &[Delivery]) -> Vec<String> {
        deliveries.iter().map(|d| d.id.clone()).collect()
    }

    const DEFAULT: [NotifyEvent; 2] = [NotifyEvent::Failed, NotifyEvent::Recovered];

    #[test]
    fn the_first_failure_notifies_and_a_repeated_one_does_not_unless_asked() {
        let notifiers = [
            hook("slack", &DEFAULT, false),
            hook("pager", &DEFAULT, true),
        ];
        let first = plan(BackupNews::Failed { again: false }, &notifiers);
        assert_eq!(ids(&first), ["failed/slack", "failed/pager"]);
        assert!(first.iter().all(|d| d.state == DeliveryState::Pending));
        let again = plan(BackupNews::Failed { again: true }, &notifiers);
        assert_eq!(ids(&again), ["failed/pager"]);
    }

    #[test]
    fn a_success_after_failures_is_a_recovery_and_plain_successes_are_off_by_default() {
        let notifiers = [
            hook("slack", &DEFAULT, false),
            hook("audit", &[NotifyEvent::Succeeded], false),
        ];
        let recovered = plan(
            BackupNews::Succeeded {
                after_failure: true,
            },
            &notifiers,
        );
        assert_eq!(ids(&recovered), ["recovered/slack", "recovered/audit"]);
        let plain = plan(
            BackupNews::Succeeded {
                after_failure: false,
            },
            &notifiers,
        );
        assert_eq!(ids(&plain), ["succeeded/audit"]);
    }

    #[test]
    fn heartbeats_get_every_start_success_and_failure() {
        let notifiers = [beat("hc"), hook("slack", &DEFAULT, false)];
        assert_eq!(ids(&plan(BackupNews::Started, &notifiers)), ["start/hc"]);
        assert_eq!(
            ids(&plan(BackupNews::Failed { again: true }, &notifiers)),
            ["failed/hc"]
        );
        assert_eq!(
            ids(&plan(
                BackupNews::Succeeded {
                    after_failure: false
                },
                &notifiers
            )),
            ["succeeded/hc"]
        );
    }

    #[test]
    fn a_missing_notifier_is_recorded_as_failed_with_the_fix() {
        let missing = Wants {
            name: "gone".to_owned(),
            found: None,
        };
        let planned = plan(
            BackupNews::Failed { again: false },
            &[missing.clone(), missing],
        );
        assert_eq!(planned.len(), 1, "one delivery per Notifier");
        assert_eq!(planned[0].state, DeliveryState::Failed);
        assert_eq!(
            planned[0].message.as_deref(),
            Some("Notifier gone does not exist: create it, or fix spec.notify")
        );
    }

    #[test]
    fn retries_back_off_by_doubling() {
        let policy = RetryPolicy {
            attempts: 5,
            backoff: Duration::from_secs(10),
        };
        let at = Utc::now();
        let mut d = Delivery {
            id: "failed/x".to_owned(),
            notifier: "x".to_owned(),
            event: "failed".to_owned(),
            state: DeliveryState::Pending,
            attempts: 0,
            last_attempt_time: None,
            message: None,
        };
        assert_eq!(policy.next_try(&d), None, "never tried: due now");
        d.last_attempt_time = Some(status::time(at));
        d.attempts = 1;
        let first = policy
            .next_try(&d)
            .map(|t| (t - status::chrono(&status::time(at))).num_seconds());
        assert_eq!(first, Some(10));
        d.attempts = 3;
        let third = policy
            .next_try(&d)
            .map(|t| (t - status::chrono(&status::time(at))).num_seconds());
        assert_eq!(third, Some(40));
    }
}
