//! Running worker Jobs: find one by name and owner UID, create it once, see whether it
//! finished or why it is stuck, and read its summary from the Pod's termination message.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};

use super::context::Context;
use super::error::Error;
use super::job::{OPERATION_LABEL, OWNER_UID_LABEL};
use crate::worker::{Failure, Summary};

/// Where a worker Job is.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// Not finished. `waiting` says why the worker has not started, if it is stuck (for
    /// example a Secret key that does not exist, or a Pod that cannot be scheduled).
    Running { waiting: Option<String> },
    /// Finished; the summary says how.
    Finished(Box<Summary>),
}

/// A Job looked up by name, told apart by the UID label of the object it works for.
#[derive(Clone, Debug)]
pub enum Found {
    /// No Job of that name.
    None,
    /// The Job this object made.
    Mine(Box<Job>),
    /// A Job of that name made for another object (an earlier one of the same name): never
    /// read as this object's result.
    Foreign(Box<Job>),
}

/// The Job named `name`, told apart by whether it works for the object with `uid`.
pub async fn find(ctx: &Context, namespace: &str, name: &str, uid: &str) -> Result<Found, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(match api.get_opt(name).await? {
        None => Found::None,
        Some(job) if owned_by(&job, uid) => Found::Mine(Box::new(job)),
        Some(job) => Found::Foreign(Box::new(job)),
    })
}

/// Whether the Job works for the object with `uid`: it carries that owner UID label, or
/// (a Job made before the label existed) an owner reference with that UID.
pub fn owned_by(job: &Job, uid: &str) -> bool {
    let labelled = job
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OWNER_UID_LABEL));
    match labelled {
        Some(label) => label == uid,
        None => job
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|refs| refs.iter().any(|r| r.uid == uid)),
    }
}

/// What became of a Job the controller asked for.
#[derive(Clone, Debug)]
pub enum Created {
    Job(Box<Job>),
    /// The API server refused it for good (admission, quota, an invalid object): retrying at
    /// once would only repeat the refusal. `terminating`: the namespace is being deleted.
    Refused {
        terminating: bool,
        message: String,
    },
}

/// Creates the Job. A Job of the same name made for the same object meanwhile (another
/// replica made it an instant ago) is returned instead; one made for another object is an
/// error, retried.
pub async fn create(ctx: &Context, namespace: &str, job: &Job) -> Result<Created, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let name = job.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), job).await {
        Ok(created) => Ok(Created::Job(Box::new(created))),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&name).await?;
            let uid = job
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(OWNER_UID_LABEL))
                .map(String::as_str)
                .unwrap_or_default();
            if owned_by(&existing, uid) {
                Ok(Created::Job(Box::new(existing)))
            } else {
                // An earlier object's Job, still being deleted: never taken for this one's.
                Err(Error::JobBusy(name))
            }
        }
        Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
            // Logged at every attempt (the Event and condition say it once).
            tracing::info!(%namespace, job = %name, reason = %e.message, "the API server refused the worker Job; tried again later");
            Ok(Created::Refused {
                terminating: e.code == 403 && e.message.contains("being terminated"),
                message: format!(
                    "the API server refused the worker Job {name}: {}",
                    e.message
                ),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Clears the way of a Job that belongs to another object so that this object's own can be
/// made: deletes it, unless it is a deletion still running (it removes an earlier Backup's
/// data and is left to finish). The caller looks again later.
pub async fn clear_foreign(ctx: &Context, namespace: &str, job: &Job) -> Result<(), Error> {
    let operation = job
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OPERATION_LABEL))
        .map(String::as_str);
    if operation == Some("delete") && finished(job).is_none() {
        return Ok(());
    }
    if job.metadata.deletion_timestamp.is_none() {
        delete(
            ctx,
            namespace,
            job.metadata.name.as_deref().unwrap_or_default(),
        )
        .await?;
    }
    Ok(())
}

/// How many Pods of the Job named `name` may still run: every Pod that has not ended
/// (Succeeded or Failed), including those being deleted.
pub async fn pods_left(ctx: &Context, namespace: &str, name: &str) -> Result<usize, Error> {
    let selector = format!("batch.kubernetes.io/job-name={name}");
    Ok(running_pods(ctx, namespace, &selector).await?.len())
}

/// The Pods matching the label `selector` that may still run (those being deleted
/// included; those that ended stay until collected, and run nothing).
pub async fn running_pods(
    ctx: &Context,
    namespace: &str,
    selector: &str,
) -> Result<Vec<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .filter(may_run)
        .collect())
}

/// Whether a Pod has not ended (Succeeded or Failed, such as Evicted): it may still run.
pub fn may_run(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Deletes a Job and its Pods (in the background).
/// Whether the namespace is being deleted, found by a dry run of a Job's creation (it refuses
/// everything new; the controller may not read namespaces).
pub async fn namespace_terminating(ctx: &Context, namespace: &str) -> Result<bool, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let probe = Job {
        metadata: kube::api::ObjectMeta {
            name: Some("coffer-namespace-check".to_owned()),
            ..kube::api::ObjectMeta::default()
        },
        ..Job::default()
    };
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    Ok(matches!(
        api.create(&params, &probe).await,
        Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("being terminated")
    ))
}

pub async fn delete(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `Some(true)` when the Job completed, `Some(false)` when it failed, `None` while it runs.
pub fn finished(job: &Job) -> Option<(bool, Option<String>)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some((true, None)),
            "Failed" => Some((false, c.reason.clone())),
            _ => None,
        })
}

/// Where the Job is; for a finished Job, the summary of its last Pod.
pub async fn observe(ctx: &Context, namespace: &str, job: &Job) -> Result<JobState, Error> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await?;
    let mut pods = list.items;
    pods.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    match finished(job) {
        None => Ok(JobState::Running {
            waiting: stuck(job, pods.last(), Utc::now()),
        }),
        Some((succeeded, job_reason)) => Ok(JobState::Finished(Box::new(summary(
            succeeded,
            job_reason.as_deref(),
            pods.last(),
        )))),
    }
}

/// How long a Job may be without a Pod, or a Pod wait for a node or its volumes, before the
/// wait is reported.
pub const SLOW_START: chrono::TimeDelta = chrono::TimeDelta::seconds(45);

fn age(meta: &ObjectMeta, now: DateTime<Utc>) -> chrono::TimeDelta {
    meta.creation_timestamp
        .as_ref()
        .map_or(chrono::TimeDelta::zero(), |t| {
            now - super::status::chrono(t)
        })
}

/// Why the worker has not started, when it is stuck: no Pod (a quota or an admission policy
/// refuses it), a Pod that cannot be scheduled or waits for its volumes, or a container that
/// cannot be created (a missing Secret key, an image that cannot be pulled). Pure.
pub fn stuck(job: &Job, pod: Option<&Pod>, now: DateTime<Utc>) -> Option<String> {
    let job_name = job.metadata.name.as_deref().unwrap_or_default();
    let Some(pod) = pod else {
        let waited = age(&job.metadata, now);
        return (waited > SLOW_START).then(|| {
            format!(
                "the Job {job_name} has no Pod after {}s: a quota or an admission policy may refuse it (kubectl describe job {job_name})",
                waited.num_seconds()
            )
        });
    };
    let status = pod.status.as_ref()?;
    if let Some(waiting) = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
    {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if matches!(
            reason,
            "CreateContainerConfigError"
                | "CreateContainerError"
                | "ErrImagePull"
                | "ImagePullBackOff"
                | "InvalidImageName"
        ) {
            return Some(format!(
                "{reason}: {}",
                waiting.message.as_deref().unwrap_or_default()
            ));
        }
    }
    let waited = age(&pod.metadata, now);
    if status.phase.as_deref() != Some("Pending") || waited <= SLOW_START {
        return None;
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let unscheduled = status.conditions.as_ref().and_then(|c| {
        c.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    });
    Some(match unscheduled {
        Some(c) => format!(
            "{}: {} (kubectl describe pod {pod_name})",
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message.as_deref().unwrap_or_default()
        ),
        None => format!(
            "the Pod {pod_name} has been starting for {}s, usually waiting for a volume to attach or mount (kubectl describe pod {pod_name})",
            waited.num_seconds()
        ),
    })
}

/// The run's summary from the finished Job and its last Pod: the worker's own, or one the
/// controller makes (marked `unreported`) when the worker left none.
fn summary(succeeded: bool, job_reason: Option<&str>, pod: Option<&Pod>) -> Summary {
    let terminated = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == super::job::CONTAINER))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let message = terminated
        .and_then(|t| t.message.as_deref())
        .unwrap_or_default();
    // A worker stopped by its deadline says it was interrupted: the deadline is the cause.
    if let Some(mut summary) = Summary::from_termination_message(message)
        && succeeded == summary.failure.is_none()
        && !(job_reason == Some("DeadlineExceeded")
            && summary.failure == Some(Failure::Interrupted))
    {
        // The worker survived the OOM killer (it killed pg_dump, say) and reported: its
        // message alone would not say that memory was the cause.
        if summary.failure.is_some()
            && terminated.and_then(|t| t.reason.as_deref()) == Some("OOMKilled")
        {
            summary.message.push_str(
                "; the container ran out of memory (OOMKilled): raise jobTemplate.resources.limits.memory",
            );
        }
        return summary;
    }
    Summary {
        unreported: true,
        ..unreported(succeeded, job_reason, pod.is_some(), terminated, message)
    }
}

/// What the controller says of a run whose worker left no usable summary.
fn unreported(
    succeeded: bool,
    job_reason: Option<&str>,
    has_pod: bool,
    terminated: Option<&ContainerStateTerminated>,
    message: &str,
) -> Summary {
    // The Pod, and the result with it, is gone (deleted, or collected) while the Job stays:
    // not a failure of the run, a result that cannot be read. Backups then look in storage.
    if !has_pod && job_reason != Some("DeadlineExceeded") {
        return Summary::failed(
            Failure::WorkerVanished,
            format!(
                "the worker's Pod is gone, and its result with it (its Job reports that it {})",
                if succeeded { "completed" } else { "failed" }
            ),
        );
    }
    if succeeded {
        return Summary::failed(
            Failure::Internal,
            "the worker exited successfully without a summary: check the worker image's version",
        );
    }
    match job_reason {
        Some("DeadlineExceeded") => Summary::failed(
            Failure::Internal,
            "the worker did not finish within activeDeadlineSeconds: raise jobTemplate.activeDeadlineSeconds",
        ),
        _ => match terminated.and_then(killed) {
            Some(how) => Summary::failed(
                Failure::WorkerKilled,
                format!("the worker was killed before it reported a result, {how}"),
            ),
            None => Summary::failed(
                Failure::Internal,
                format!(
                    "the worker failed without a summary (exit code {}): {}",
                    terminated.map(|t| t.exit_code).unwrap_or(-1),
                    crate::text::one_line(message)
                ),
            ),
        },
    }
}

/// How a worker that left no summary was killed, if a signal ended it: the container runtime
/// reports 128 + the signal's number, or `OOMKilled`.
fn killed(terminated: &ContainerStateTerminated) -> Option<String> {
    let code = terminated.exit_code;
    if terminated.reason.as_deref() == Some("OOMKilled") {
        return Some(format!(
            "for using more memory than its limit (OOMKilled, exit code {code}): raise jobTemplate.resources.limits.memory"
        ));
    }
    match code {
        137 => Some(format!(
            "by signal 9 (exit code {code}): the node's out-of-memory killer, the node going away or a person; see `kubectl describe pod` and the node's events, and raise jobTemplate.resources.limits.memory if it ran out of memory"
        )),
        143 => Some(format!(
            "by signal 15 (exit code {code}) before it could report: a drain, an eviction or a deletion of its Pod"
        )),
        // Other signals (SIGSEGV, SIGABRT, …) are crashes of the worker itself: not a kill.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn pod(message: &str, exit_code: i32) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [{
                "name": "worker", "image": "coffer", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "message": message}},
            }]},
        }))
        .unwrap()
    }

    /// `pod` with its worker's termination reason `OOMKilled`.
    fn oom_killed(mut pod: Pod) -> Pod {
        if let Some(t) = pod
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
            .and_then(|c| c[0].state.as_mut())
            .and_then(|s| s.terminated.as_mut())
        {
            t.reason = Some("OOMKilled".into());
        }
        pod
    }

    fn job(condition: &str, reason: Option<&str>) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"},
            "status": {"conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": condition, "status": "True", "reason": reason},
            ]},
        }))
        .unwrap()
    }

    fn created(seconds_ago: i64) -> serde_json::Value {
        json!((Utc::now() - chrono::TimeDelta::seconds(seconds_ago)).to_rfc3339())
    }

    #[test]
    fn a_stuck_worker_says_why_and_a_starting_one_does_not() {
        let now = Utc::now();
        let job: Job = serde_json::from_value(
            json!({"metadata": {"name": "j", "creationTimestamp": created(120)}}),
        )
        .unwrap();
        let young: Job = serde_json::from_value(
            json!({"metadata": {"name": "j", "creationTimestamp": created(5)}}),
        )
        .unwrap();
        // No Pod: refused by a quota or admission, said after a while.
        assert!(stuck(&young, None, now).is_none());
        assert!(stuck(&job, None, now).unwrap().contains("has no Pod"));
        let pending = |age: i64, conditions: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "creationTimestamp": created(age)},
                "status": {"phase": "Pending", "conditions": conditions},
            }))
            .unwrap()
        };
        let unschedulable = json!([{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/1 nodes are available"}]);
        let got = stuck(&job, Some(&pending(120, unschedulable.clone())), now).unwrap();
        assert!(got.starts_with("Unschedulable: 0/1 nodes"), "{got}");
        assert!(stuck(&job, Some(&pending(5, unschedulable)), now).is_none());
        let got = stuck(&job, Some(&pending(120, json!([]))), now).unwrap();
        assert!(got.contains("waiting for a volume"), "{got}");
        // A container that cannot be created is reported at once.
        let config: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": created(1)},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "worker", "image": "coffer", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "CreateContainerConfigError",
                "message": "couldn't find key password in Secret shop/redis-auth"}}}]},
        }))
        .unwrap();
        let got = stuck(&job, Some(&config), now).unwrap();
        assert!(got.contains("couldn't find key password"), "{got}");
        // A running Pod is not stuck.
        let running: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": created(600)},
            "status": {"phase": "Running"},
        }))
        .unwrap();
        assert!(stuck(&job, Some(&running), now).is_none());
    }

    #[test]
    fn foreign_jobs_are_told_apart_by_the_owner_uid_label() {
        let job: Job = serde_json::from_value(
            json!({"metadata": {"name": "j", "labels": {OWNER_UID_LABEL: "uid-1"}}}),
        )
        .unwrap();
        assert!(owned_by(&job, "uid-1"));
        assert!(!owned_by(&job, "uid-2"));
        assert!(!owned_by(&Job::default(), "uid-1"));
        // A Job from before the label: its owner reference says whose it is.
        let unlabelled: Job = serde_json::from_value(json!({"metadata": {"name": "j",
            "ownerReferences": [{"apiVersion": "coffer.dev/v1alpha1", "kind": "Backup",
                "name": "b", "uid": "uid-1"}]}}))
        .unwrap();
        assert!(owned_by(&unlabelled, "uid-1"));
        assert!(!owned_by(&unlabelled, "uid-2"));
    }

    #[test]
    fn finished_jobs_are_told_apart() {
        assert_eq!(finished(&job("Complete", None)), Some((true, None)));
        assert_eq!(
            finished(&job("Failed", Some("DeadlineExceeded"))),
            Some((false, Some("DeadlineExceeded".into())))
        );
        assert_eq!(finished(&Job::default()), None);
    }

    #[test]
    fn the_summary_comes_from_the_termination_message() {
        let ok = Summary {
            message: "backed up".into(),
            raw_bytes: Some(10),
            ..Summary::default()
        };
        let got = summary(true, None, Some(&pod(&ok.to_termination_message(), 0)));
        assert_eq!(got.raw_bytes, Some(10));
        let failed = Summary::failed(Failure::AuthenticationFailed, "wrong password");
        let got = summary(false, None, Some(&pod(&failed.to_termination_message(), 1)));
        assert_eq!(got.failure, Some(Failure::AuthenticationFailed));
        // A crash leaves the log's tail instead of a summary.
        let got = summary(false, None, Some(&pod("thread 'main' panicked", 101)));
        assert_eq!(got.failure, Some(Failure::Internal));
        assert!(got.message.contains("exit code 101") && got.message.contains("panicked"));
        // A worker stopped by the deadline: the deadline is named, not the SIGTERM.
        let interrupted = Summary::failed(Failure::Interrupted, "stopped");
        let got = summary(
            false,
            Some("DeadlineExceeded"),
            Some(&pod(&interrupted.to_termination_message(), 1)),
        );
        assert!(
            got.message.contains("activeDeadlineSeconds"),
            "{}",
            got.message
        );
        // A Pod that is gone is a lost result, not a failed run.
        let got = summary(true, None, None);
        assert_eq!(got.failure, Some(Failure::WorkerVanished));
        assert!(got.message.contains("completed"), "{}", got.message);
        let got = summary(false, Some("DeadlineExceeded"), None);
        assert!(
            got.message.contains("activeDeadlineSeconds"),
            "{}",
            got.message
        );
        // A worker killed by a signal (SIGKILL: 137) or the OOM killer says so.
        let got = summary(false, None, Some(&pod("", 137)));
        assert_eq!(got.failure, Some(Failure::WorkerKilled));
        assert!(got.message.contains("signal 9"), "{}", got.message);
        let oom = oom_killed(pod("", 137));
        let got = summary(false, None, Some(&oom));
        assert!(got.message.contains("limits.memory"), "{}", got.message);
        // The deadline's kill names the deadline.
        let got = summary(false, Some("DeadlineExceeded"), Some(&pod("", 137)));
        assert_eq!(got.failure, Some(Failure::Internal));
        assert!(got.unreported);
        // A crash is not a kill; SIGTERM before a report is.
        assert_eq!(
            summary(false, None, Some(&pod("", 139))).failure,
            Some(Failure::Internal)
        );
        assert_eq!(
            summary(false, None, Some(&pod("", 143))).failure,
            Some(Failure::WorkerKilled)
        );
        // The worker reported, but the OOM killer took a child: memory is named.
        let survived = oom_killed(pod(&failed.to_termination_message(), 1));
        let got = summary(false, None, Some(&survived));
        assert_eq!(got.failure, Some(Failure::AuthenticationFailed));
        assert!(!got.unreported);
        assert!(got.message.contains("OOMKilled"), "{}", got.message);
        // The worker's container is read, whatever sidecar comes first.
        let mut with_sidecar = pod(&ok.to_termination_message(), 0);
        if let Some(statuses) = with_sidecar
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
        {
            let mut sidecar = statuses[0].clone();
            sidecar.name = "istio-proxy".into();
            sidecar.state = None;
            statuses.insert(0, sidecar);
        }
        assert_eq!(summary(true, None, Some(&with_sidecar)).raw_bytes, Some(10));
        // A successful Job never reports a failure summary as success, and vice versa.
        let got = summary(true, None, Some(&pod(&failed.to_termination_message(), 0)));
        assert_eq!(got.failure, Some(Failure::Internal));
    }
}
