//! A restore's dry run in the worker (`RestoreRequest.spec.dryRun`): the engine's preview
//! of the restore the plan asks for, with nothing written. Every line goes to the log; the
//! summary carries as many as its termination message holds.

use super::{
    Environment, Outcome, RestorePlan, Summary, fail, my_request, pg_request, redis_request,
    volume_request,
};
use crate::engine::{mysql, postgres, redis, volume};
use crate::pipeline::Progress;
use crate::pipeline::encryption::DataKey;
use crate::storage::Store;
use crate::storage::manifest::Manifest;

/// The preview of the backup `at` (its store, folder and location) that `plan` restores.
pub(super) async fn preview(
    plan: &RestorePlan,
    env: &Environment,
    at: (&Store, &str, &str),
    manifest: &Manifest,
    key: Option<DataKey>,
    from_copy: Option<(String, String)>,
) -> Outcome {
    let (store, folder, location) = at;
    let progress = Progress::default();
    let lines = if plan.target.redis.is_some() {
        let request = redis_request(plan, env, key)?;
        redis::preview(store, "", manifest, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?
            .lines(request.conflict == crate::api::RedisConflict::Flush)
    } else if plan.target.postgres.is_some() {
        let request = pg_request(plan, env, key)?;
        postgres::preview::preview(store, "", manifest, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?
            .lines(request.clean)
    } else if plan.target.mysql.is_some() {
        let request = my_request(plan, env, key)?;
        mysql::preview::preview(store, "", manifest, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?
            .lines()
    } else {
        let request = volume_request(plan, env, key);
        volume::preview::preview(store, "", manifest, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?
            .lines()
    };
    for line in &lines {
        tracing::info!("dry run: {line}");
    }
    Ok(Summary {
        message: match &from_copy {
            None => format!(
                "dry run: nothing was written; what a restore of {location} would do is in status.preview"
            ),
            Some((name, why)) => format!(
                "dry run: nothing was written; what a restore would do is in status.preview: it would read copy {name:?} at {location}, because the backup itself cannot be used: {why}"
            ),
        },
        restored_from_copy: from_copy.map(|(name, _)| name),
        folder: Some(folder.to_owned()),
        raw_bytes: Some(manifest.raw_bytes()),
        stored_bytes: Some(manifest.stored_bytes()),
        preview: lines,
        ..Summary::default()
    })
}
