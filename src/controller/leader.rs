//! Leader election on a coordination.k8s.io Lease, so that two replicas are safe: only the
//! holder reconciles. The holder renews the Lease; if it cannot renew within the Lease's
//! duration it has lost it, and the process exits rather than act without it.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use super::status;

/// Which Lease, and who this process is.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
}

/// Why the process stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum LeaseLost {
    #[error("the Lease {0} is now held by {1}")]
    TakenBy(String, String),
    #[error("the Lease {0} could not be renewed for {1:?}: {2}")]
    NotRenewed(String, Duration, String),
}

fn micro_now() -> MicroTime {
    MicroTime(status::time(Utc::now()).0)
}

/// Tries once to take or renew the Lease. `Ok(true)`: this process holds it now.
pub async fn try_acquire(client: &Client, settings: &LeaseSettings) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let seconds = i32::try_from(settings.duration.as_secs()).unwrap_or(15);
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(micro_now()),
                renew_time: Some(micro_now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mine = holder == settings.identity;
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        let renewed = status::chrono(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.0));
        let lasts = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
        renewed + chrono::Duration::seconds(lasts) < Utc::now()
    });
    if !(mine || holder.is_empty() || expired) {
        return Ok(false);
    }
    let mut new_spec = spec.clone();
    new_spec.holder_identity = Some(settings.identity.clone());
    new_spec.lease_duration_seconds = Some(seconds);
    new_spec.renew_time = Some(micro_now());
    if !mine {
        new_spec.acquire_time = Some(micro_now());
        new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    lease.spec = Some(new_spec);
    // The resourceVersion makes this a compare-and-swap: of two replicas, one wins.
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this process holds the Lease.
pub async fn acquire(client: &Client, settings: &LeaseSettings) {
    let mut said = false;
    loop {
        match try_acquire(client, settings).await {
            Ok(true) => {
                tracing::info!(lease = %settings.name, identity = %settings.identity, "leading");
                return;
            }
            Ok(false) if !said => {
                tracing::info!(lease = %settings.name, "another replica leads; standing by");
                said = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(lease = %settings.name, "cannot read the Lease: {e}"),
        }
        tokio::time::sleep(settings.renew_every).await;
    }
}

/// How long before its Lease could expire a holder that could not renew stops acting: the
/// clocks of two replicas and the time a request takes are never exact, and another replica
/// may take over the moment the Lease expires by its own clock. Pure.
pub fn safety_margin(duration: Duration) -> Duration {
    (duration / 5).max(Duration::from_secs(1)).min(duration / 2)
}

/// Renews the Lease until it is lost; returns why. Each renewal has its own timeout, and the
/// Lease counts as lost [`safety_margin`] before it could expire (counted from when the last
/// successful renewal was sent), so this replica stops before another can start.
pub async fn hold(client: &Client, settings: &LeaseSettings) -> LeaseLost {
    let valid_for = settings.duration - safety_margin(settings.duration);
    let mut renewed = tokio::time::Instant::now();
    let mut next = renewed + settings.renew_every;
    let mut last_error = String::new();
    loop {
        // Never sleep past the moment the Lease stops being safe to hold.
        let deadline = renewed + valid_for;
        tokio::time::sleep_until(next.min(deadline)).await;
        let sent = tokio::time::Instant::now();
        if sent >= deadline {
            return LeaseLost::NotRenewed(settings.name.clone(), settings.duration, last_error);
        }
        let attempt = tokio::time::timeout(
            settings.renew_every.min(deadline - sent),
            try_acquire(client, settings),
        )
        .await;
        match attempt {
            Ok(Ok(true)) => renewed = sent,
            Ok(Ok(false)) => {
                let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
                let holder =
                    tokio::time::timeout(settings.renew_every, api.get_opt(&settings.name))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten()
                        .and_then(|l| l.spec?.holder_identity)
                        .unwrap_or_default();
                return LeaseLost::TakenBy(settings.name.clone(), holder);
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "the renewal timed out".to_owned(),
        }
        next = sent + settings.renew_every;
    }
}

/// Gives the Lease up at shutdown so that a standby replica takes over at once.
pub async fn release(client: &Client, settings: &LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    if let Err(e) = api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        tracing::warn!("cannot release the Lease: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_stops_before_its_lease_can_expire() {
        for seconds in [3, 6, 15, 60, 137] {
            let duration = Duration::from_secs(seconds);
            let margin = safety_margin(duration);
            assert!(margin >= Duration::from_secs(1), "{seconds}: {margin:?}");
            // Renewing every third of the duration still leaves time to renew twice.
            assert!(
                duration - margin >= duration / 3 * 2,
                "{seconds}: {margin:?}"
            );
        }
        assert_eq!(
            safety_margin(Duration::from_secs(15)),
            Duration::from_secs(3)
        );
    }
}
