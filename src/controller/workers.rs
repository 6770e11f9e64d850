//! Running worker Jobs: create one once, see whether it finished, and read its summary from
//! the Pod's termination message.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};

use super::context::Context;
use super::error::Error;
use crate::worker::{Failure, Summary};

/// Where a worker Job is.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// Not finished. `waiting` says why its container has not started, if it is stuck (for
    /// example a Secret key that does not exist).
    Running { waiting: Option<String> },
    /// Finished; the summary says how.
    Finished(Box<Summary>),
}

/// Gets the Job named like `job`, creating it if it does not exist. The name is the run's
/// identity: a restarted controller finds the Job it made before instead of making another.
pub async fn ensure(ctx: &Context, namespace: &str, job: &Job) -> Result<Job, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let name = job.metadata.name.clone().unwrap_or_default();
    if let Some(existing) = api.get_opt(&name).await? {
        return Ok(existing);
    }
    match api.create(&PostParams::default(), job).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get(&name).await?),
        Err(e) => Err(e.into()),
    }
}

/// The Job named `name`, if it exists.
pub async fn get(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Job>, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api.get_opt(name).await?)
}

/// Deletes a Job and its Pods (in the background).
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
            waiting: pods.last().and_then(waiting_reason),
        }),
        Some((succeeded, job_reason)) => Ok(JobState::Finished(Box::new(summary(
            succeeded,
            job_reason.as_deref(),
            pods.last(),
        )))),
    }
}

/// Why the worker container is waiting, when it is stuck on its configuration.
fn waiting_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    matches!(
        reason,
        "CreateContainerConfigError" | "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
    )
    .then(|| {
        format!(
            "{reason}: {}",
            waiting.message.as_deref().unwrap_or_default()
        )
    })
}

/// The run's summary from the finished Job and its last Pod.
fn summary(succeeded: bool, job_reason: Option<&str>, pod: Option<&Pod>) -> Summary {
    let terminated = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let message = terminated
        .and_then(|t| t.message.as_deref())
        .unwrap_or_default();
    if let Some(summary) = Summary::from_termination_message(message)
        && succeeded == summary.failure.is_none()
    {
        return summary;
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
        _ => Summary::failed(
            Failure::Internal,
            format!(
                "the worker failed without a summary (exit code {}): {}",
                terminated.map(|t| t.exit_code).unwrap_or(-1),
                crate::text::one_line(message)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
        let got = summary(false, Some("DeadlineExceeded"), None);
        assert!(
            got.message.contains("activeDeadlineSeconds"),
            "{}",
            got.message
        );
        // A successful Job never reports a failure summary as success, and vice versa.
        let got = summary(true, None, Some(&pod(&failed.to_termination_message(), 0)));
        assert_eq!(got.failure, Some(Failure::Internal));
    }
}
