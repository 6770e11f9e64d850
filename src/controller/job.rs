//! The worker Job for a backup, a restore or a deletion: a pure function of the plan and the
//! operator's settings, unit-tested for what matters (no token, no secret values, restricted
//! security context, read-only source claim).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, SecretKeySelector as KubeSecretKeySelector, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

use crate::api::{BackupStorage, FsGroupChangePolicy, JobTemplate, SecretKeySelector};
use crate::worker::Plan;
use crate::worker::plan::{
    COPY_MOUNT_PREFIX, IDENTITY_ENV, PASSWORD_ENV, PLAN_ENV, RECIPIENTS_ENV_PREFIX, SOURCE_MOUNT,
    STORE_MOUNT, TERMINATION_LOG, TMP_MOUNT, copy_credential_env,
};

/// The label every worker Job and Pod carries with the name of the object it works for.
pub const OWNER_NAME_LABEL: &str = "coffer.dev/owner-name";
/// The label with the worker's operation (`backup`, `restore`, `delete`, `inspect`).
pub const OPERATION_LABEL: &str = "coffer.dev/operation";
/// The label with the UID of the object the Job works for: names are reused (a Backup
/// deleted and created again), UIDs never, so a Job is only ever read by its own object.
pub const OWNER_UID_LABEL: &str = "coffer.dev/owner-uid";
/// The worker's container name.
pub const CONTAINER: &str = "worker";
/// The UID and GID the worker runs as (non-root, as the restricted Pod Security Standard
/// requires); the image's user.
pub const WORKER_UID: i64 = 65532;
/// The only capabilities a worker ever gets: those a volume restore with `restoreOwners`
/// needs to give files their owners back (all within the `baseline` Pod Security Standard).
pub const OWNER_CAPABILITIES: [&str; 4] = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"];
/// Seconds a finished Job is kept when the template does not say.
pub const DEFAULT_TTL_SECONDS: i32 = 86_400;
/// Seconds a backup or restore may run when the template does not say: a stuck run ends
/// (Failed, with the reason) instead of blocking every later run of its schedule.
pub const DEFAULT_RUN_DEADLINE_SECONDS: i64 = 6 * 3600;
/// Seconds a deletion or an inspection may run when the template does not say.
pub const DEFAULT_HOUSEKEEPING_DEADLINE_SECONDS: i64 = 3600;
/// How long a drill may run by default (`spec.drill.activeDeadlineSeconds`).
pub const DEFAULT_DRILL_DEADLINE_SECONDS: i64 = 3600;
/// The most a drill's scratch instance may hold by default (`spec.drill.scratchSize`).
pub const DEFAULT_DRILL_SCRATCH: &str = "10Gi";
/// The longest a pre-flight check Job may run (a shorter `activeDeadlineSeconds` wins).
pub const CHECK_DEADLINE_SECONDS: i64 = 300;

/// Operator-wide settings of worker Jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Coffer's image (the same binary as the controller).
    pub image: String,
    /// The ServiceAccount the worker Pods run as; it has no permissions and no token is
    /// mounted.
    pub service_account: String,
    /// Bytes a Redis or PostgreSQL restore may spool into its temporary volume (see
    /// [`crate::pipeline::fetch`]); the volume gets this size limit plus [`TMP_ROOM`].
    pub restore_spool_bytes: u64,
}

/// Room in a worker's temporary volume beside a restore's spool (the PostgreSQL password
/// file, `HOME`).
pub const TMP_ROOM: u64 = 64 << 20;

/// The environment variable that tells a restore worker how much it may spool.
pub const SPOOL_ENV: &str = "COFFER_SPOOL_BYTES";

/// What one Job is for.
#[derive(Clone, Debug)]
pub struct JobRequest<'a> {
    pub name: String,
    pub namespace: &'a str,
    /// The object the Job works for; `None` for a deletion Job, which must outlive its Backup.
    pub owner: Option<OwnerReference>,
    /// The name of the object the Job works for (a label on the Job and its Pods).
    pub owner_name: String,
    /// The UID of the object the Job works for (a label on the Job and its Pods).
    pub owner_uid: String,
    pub plan: &'a Plan,
    pub template: Option<&'a JobTemplate>,
}

/// A Job name from a base name and a suffix, within Kubernetes' 63-character limit (a long
/// base is shortened and given a hash so that two long names stay distinct).
pub fn job_name(base: &str, suffix: &str) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash = hex::encode(Sha256::digest(base.as_bytes()));
    let keep = 63 - suffix.len() - 1 - 9;
    let mut cut: String = base.chars().take(keep).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    format!("{cut}-{}-{suffix}", &hash[..8])
}

/// Builds the Job. Fails only if the plan cannot be serialised.
pub fn build(
    request: &JobRequest<'_>,
    settings: &WorkerSettings,
) -> Result<Job, serde_json::Error> {
    let template = request.template.cloned().unwrap_or_default();
    let plan = request.plan;
    // A volume restore that gives files back their owners runs as root with only the
    // capabilities that takes (baseline, not restricted).
    let owners = matches!(plan, Plan::Restore(p) if p.volume.as_ref().is_some_and(|v| v.restore_owners) && p.target.volume.is_some());
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "coffer".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "worker".to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "coffer".to_owned(),
        ),
        (
            OWNER_NAME_LABEL.to_owned(),
            label_value(&request.owner_name),
        ),
        (OPERATION_LABEL.to_owned(), plan.operation().to_owned()),
        (OWNER_UID_LABEL.to_owned(), label_value(&request.owner_uid)),
    ]);
    let job_labels = labels.clone();
    if let Some(extra) = &template.pod_labels {
        for (k, v) in extra {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    let mut env = vec![
        value(PLAN_ENV, plan.to_json()?),
        value("TMPDIR", TMP_MOUNT.to_owned()),
        value("HOME", TMP_MOUNT.to_owned()),
        value("COFFER_LOG_FORMAT", "json".to_owned()),
    ];
    if let Some(secret) = plan.password_secret() {
        env.push(secret_env(PASSWORD_ENV, secret));
    }
    // Keys of encryption: optional, so that a missing one is the worker's one-line failure
    // naming it, not a Pod that cannot start until the Job's deadline.
    if let Some(encryption) = plan.encryption() {
        for (n, from) in encryption.recipients_from.iter().enumerate() {
            let name = format!("{RECIPIENTS_ENV_PREFIX}{n}");
            if let Some(secret) = &from.secret_key_ref {
                env.push(optional(secret_env(&name, secret)));
            } else if let Some(map) = &from.config_map_key_ref {
                env.push(config_map_env(&name, map));
            }
        }
    }
    let identity = match plan {
        Plan::Restore(restore) => restore.identity_secret.as_ref(),
        Plan::Drill(drill) => drill.identity_secret.as_ref(),
        _ => None,
    };
    if let Some(secret) = identity {
        env.push(optional(secret_env(IDENTITY_ENV, secret)));
    }
    if let Some(secret) = plan
        .storage()
        .s3
        .as_ref()
        .and_then(|s| s.credentials_secret_ref.as_ref())
    {
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            env.push(secret_env(
                key,
                &SecretKeySelector {
                    name: secret.name.clone(),
                    key: key.to_owned(),
                },
            ));
        }
    }

    // The other stores a copy writes or a restore may fall back to: each with its own
    // credentials (never the main store's) and, on a claim, its own mount.
    let copies = plan.copy_stores();
    for (n, copy) in copies.iter().enumerate() {
        if let Some(secret) = copy
            .storage
            .s3
            .as_ref()
            .and_then(|s| s.credentials_secret_ref.as_ref())
        {
            // Optional: a copy store whose Secret lacks a key is the worker's one-line failure
            // (and a restore's fallback it skips), not a Pod that never starts.
            for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                env.push(optional(secret_env(
                    &copy_credential_env(n, key),
                    &SecretKeySelector {
                        name: secret.name.clone(),
                        key: key.to_owned(),
                    },
                )));
            }
        }
    }

    // A Redis or PostgreSQL restore may keep a copy of the backup in its temporary volume,
    // up to a limit the kubelet enforces.
    let spools = matches!(plan, Plan::Restore(r) if r.target.volume.is_none());
    let mut tmp = EmptyDirVolumeSource::default();
    if spools {
        env.push(value(SPOOL_ENV, settings.restore_spool_bytes.to_string()));
        tmp.size_limit = Some(Quantity(
            settings
                .restore_spool_bytes
                .saturating_add(TMP_ROOM)
                .to_string(),
        ));
    }
    // A drill's scratch instance lives there, within its size.
    if let Plan::Drill(drill) = plan {
        tmp.size_limit = Some(
            drill
                .scratch_size
                .clone()
                .unwrap_or_else(|| Quantity(DEFAULT_DRILL_SCRATCH.to_owned())),
        );
    }
    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(tmp),
        ..Volume::default()
    }];
    let mut mounts = vec![mount("tmp", TMP_MOUNT, false)];
    if let Some(claim) = plan.volume_claim() {
        // A backup only reads the volume, and so does a restore's dry run; a restore writes it.
        let read_only =
            matches!(plan, Plan::Backup(_)) || matches!(plan, Plan::Restore(p) if p.dry_run);
        volumes.push(claim_volume("source", claim, read_only));
        mounts.push(mount("source", SOURCE_MOUNT, read_only));
    }
    if let Some(claim) = store_claim(plan.storage()) {
        volumes.push(claim_volume("store", claim, false));
        mounts.push(mount("store", STORE_MOUNT, false));
    }
    let mut args = vec![
        format!("--termination-log={TERMINATION_LOG}"),
        format!("--source-dir={SOURCE_MOUNT}"),
        format!("--store-dir={STORE_MOUNT}"),
    ];
    for (n, copy) in copies.iter().enumerate() {
        let path = format!("{COPY_MOUNT_PREFIX}{n}");
        if let Some(claim) = store_claim(&copy.storage) {
            let name = format!("copy-{n}");
            // A restore only reads its fallbacks.
            let read_only = matches!(plan, Plan::Restore(_));
            volumes.push(claim_volume(&name, claim, read_only));
            mounts.push(mount(&name, &path, read_only));
        }
        args.push(format!("--copy-dir={path}"));
    }

    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        command: Some(vec!["coffer".to_owned(), "worker".to_owned()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: template.resources.clone(),
        termination_message_path: Some(TERMINATION_LOG.to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(!owners),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: owners.then(|| OWNER_CAPABILITIES.map(str::to_owned).to_vec()),
            }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(request.name.clone()),
            namespace: Some(request.namespace.to_owned()),
            labels: Some(job_labels),
            owner_references: request.owner.clone().map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // A restore is never run twice by Kubernetes either (a Flush or a clean twice).
            backoff_limit: Some(match plan {
                // A check fails by design when something is wrong: said at once, not retried
                // (the schedule runs it again itself).
                Plan::Restore(_) | Plan::Check(_) => 0,
                _ => template.backoff_limit.unwrap_or(0),
            }),
            active_deadline_seconds: Some(match plan {
                // A check takes seconds; one that cannot start (no image, no room) is
                // reported as not finished within minutes, whatever a long backup needs.
                Plan::Check(_) => template
                    .active_deadline_seconds
                    .map_or(CHECK_DEADLINE_SECONDS, |d| d.min(CHECK_DEADLINE_SECONDS)),
                Plan::Backup(_) | Plan::Restore(_) | Plan::Copy(_) => template
                    .active_deadline_seconds
                    .unwrap_or(DEFAULT_RUN_DEADLINE_SECONDS),
                // The schedule's drill settings (or their defaults) come as the template.
                Plan::Drill(_) => template
                    .active_deadline_seconds
                    .unwrap_or(DEFAULT_DRILL_DEADLINE_SECONDS),
                Plan::Delete(_) | Plan::Inspect(_) | Plan::Sweep(_) | Plan::Lock(_) => template
                    .active_deadline_seconds
                    .unwrap_or(DEFAULT_HOUSEKEEPING_DEADLINE_SECONDS),
            }),
            ttl_seconds_after_finished: Some(
                template
                    .ttl_seconds_after_finished
                    .unwrap_or(DEFAULT_TTL_SECONDS),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: template.pod_annotations.clone(),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    service_account_name: Some(settings.service_account.clone()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: template.node_selector.clone(),
                    tolerations: template.tolerations.clone(),
                    priority_class_name: template.priority_class_name.clone(),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(!owners),
                        run_as_user: Some(if owners {
                            0
                        } else {
                            template.run_as_user.unwrap_or(WORKER_UID)
                        }),
                        run_as_group: Some(if owners {
                            0
                        } else {
                            template.run_as_group.unwrap_or(WORKER_UID)
                        }),
                        // The kubelet gives the fsGroup to every volume it mounts writable,
                        // and to none it mounts read-only: a backup's Pod has one (so that a
                        // claim used as the store is writable, new or not), a restore into a
                        // claim has none (the owners of the user's data are never changed
                        // unless asked).
                        fs_group: template
                            .fs_group
                            .or_else(|| (!writes_user_claim(plan)).then_some(WORKER_UID)),
                        fs_group_change_policy: Some(
                            match template.fs_group_change_policy.unwrap_or_default() {
                                FsGroupChangePolicy::OnRootMismatch => "OnRootMismatch",
                                FsGroupChangePolicy::Always => "Always",
                            }
                            .to_owned(),
                        ),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

/// Whether the worker writes into the user's claim (a volume restore); a backup mounts it
/// read-only.
fn writes_user_claim(plan: &Plan) -> bool {
    matches!(plan, Plan::Restore(p) if !p.dry_run) && plan.volume_claim().is_some()
}

/// The claim of a filesystem store.
fn store_claim(storage: &BackupStorage) -> Option<&str> {
    storage.filesystem.as_ref().map(|f| f.claim_name.as_str())
}

/// A label value: at most 63 characters (object names can be longer).
fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        name.to_owned()
    } else {
        job_name(name, "x").trim_end_matches("-x").to_owned()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

fn value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }
}

fn secret_env(name: &str, secret: &SecretKeySelector) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(KubeSecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The variable is left unset when its Secret or key is missing.
fn optional(mut var: EnvVar) -> EnvVar {
    if let Some(s) = var
        .value_from
        .as_mut()
        .and_then(|f| f.secret_key_ref.as_mut())
    {
        s.optional = Some(true);
    }
    var
}

fn config_map_env(name: &str, key: &crate::api::ConfigMapKeySelector) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(k8s_openapi::api::core::v1::ConfigMapKeySelector {
                name: key.name.clone(),
                key: key.key.clone(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

fn claim_volume(name: &str, claim: &str, read_only: bool) -> Volume {
    Volume {
        name: name.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_owned(),
            read_only: Some(read_only),
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::api::{
        BackupSource, Compression, FilesystemStorage, LocalObjectReference, PostgresSource,
        RedisMode, RedisSource, S3Storage, VolumeRestoreOptions, VolumeSource,
    };
    use crate::worker::plan::{BackupPlan, RestorePlan};

    fn s3() -> BackupStorage {
        BackupStorage {
            s3: Some(S3Storage {
                bucket: "backups".into(),
                prefix: "prod/".into(),
                endpoint: Some("http://minio:9000".into()),
                region: "us-east-1".into(),
                force_path_style: true,
                credentials_secret_ref: Some(LocalObjectReference {
                    name: "s3-creds".into(),
                }),
                object_lock: None,
            }),
            filesystem: None,
        }
    }

    fn redis() -> BackupSource {
        BackupSource {
            redis: Some(RedisSource {
                host: "redis.shop".into(),
                port: 6379,
                database: None,
                username: None,
                password_secret_ref: Some(SecretKeySelector {
                    name: "redis-auth".into(),
                    key: "password".into(),
                }),
                mode: RedisMode::Snapshot,
            }),
            postgres: None,
            mysql: None,
            volume: None,
        }
    }

    fn backup_plan(source: BackupSource, storage: BackupStorage) -> Plan {
        Plan::Backup(BackupPlan {
            source,
            storage,
            folder: "shop/redis/20261201T160000Z/".into(),
            name: "redis".into(),
            compression: Compression::Zstd,
            encryption: None,
            owner: None,
            lock: None,
        })
    }

    fn settings() -> WorkerSettings {
        WorkerSettings {
            image: "ghcr.io/coffer-dev/coffer:0.1.0".into(),
            service_account: "coffer-worker".into(),
            restore_spool_bytes: 2 << 30,
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "coffer.dev/v1alpha1".into(),
            kind: "Backup".into(),
            name: "redis-20261201-160000".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn job_for(plan: &Plan, template: Option<&JobTemplate>) -> Job {
        build(
            &JobRequest {
                name: "redis-20261201-160000-backup".into(),
                namespace: "shop",
                owner: Some(owner()),
                owner_name: owner().name,
                owner_uid: owner().uid,
                plan,
                template,
            },
            &settings(),
        )
        .unwrap()
    }

    fn pod(job: &Job) -> &PodSpec {
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn claims(job: &Job) -> Vec<(String, String, bool)> {
        let pod = pod(job);
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        pod.volumes
            .clone()
            .unwrap()
            .into_iter()
            .filter_map(|v| {
                let claim = v.persistent_volume_claim?;
                let m = mounts.iter().find(|m| m.name == v.name).unwrap();
                assert_eq!(claim.read_only, m.read_only);
                Some((claim.claim_name, m.mount_path.clone(), m.read_only.unwrap()))
            })
            .collect()
    }

    #[test]
    fn copy_stores_get_their_own_credentials_and_mounts() {
        use crate::worker::plan::{CopyPlan, CopyStore};
        let mut offsite = s3();
        offsite.s3.as_mut().unwrap().credentials_secret_ref = Some(LocalObjectReference {
            name: "offsite-creds".into(),
        });
        let vault = BackupStorage {
            s3: None,
            filesystem: Some(FilesystemStorage {
                claim_name: "vault".into(),
            }),
        };
        let copy = |to: BackupStorage| {
            Plan::Copy(CopyPlan {
                storage: s3(),
                folder: "shop/redis/x/".into(),
                to: CopyStore {
                    name: "c".into(),
                    storage: to,
                },
                manifest_sha256: None,
                retention: None,
                group: String::new(),
                time_zone: String::new(),
                lock: None,
            })
        };
        let job = job_for(&copy(offsite), None);
        let container = &pod(&job).containers[0];
        let secret_of = |name: &str| {
            container
                .env
                .iter()
                .flatten()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|s| (s.name.clone(), s.key.clone()))
        };
        assert_eq!(
            secret_of("AWS_ACCESS_KEY_ID"),
            Some(("s3-creds".into(), "AWS_ACCESS_KEY_ID".into()))
        );
        assert_eq!(
            secret_of("COFFER_COPY_0_AWS_SECRET_ACCESS_KEY"),
            Some(("offsite-creds".into(), "AWS_SECRET_ACCESS_KEY".into()))
        );
        assert!(
            container
                .args
                .iter()
                .flatten()
                .any(|a| a == "--copy-dir=/coffer/copy-0")
        );
        // A copy writes its claim; a restore only reads its fallbacks.
        let job = job_for(&copy(vault.clone()), None);
        assert_eq!(
            claims(&job),
            [("vault".into(), "/coffer/copy-0".into(), false)]
        );
        let restore = Plan::Restore(RestorePlan {
            storage: s3(),
            folder: "shop/redis/x/".into(),
            latest: false,
            latest_before: None,
            target: redis(),
            redis: None,
            postgres: None,
            mysql: None,
            volume: None,
            manifest_sha256: None,
            identity_secret: None,
            fallbacks: vec![CopyStore {
                name: "vault".into(),
                storage: vault,
            }],
            dry_run: false,
        });
        assert_eq!(
            claims(&job_for(&restore, None)),
            [("vault".into(), "/coffer/copy-0".into(), true)]
        );
    }

    #[test]
    fn the_worker_gets_no_token_and_a_restricted_security_context() {
        let job = job_for(&backup_plan(redis(), s3()), None);
        let pod = pod(&job);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("coffer-worker"));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(WORKER_UID));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        // The read-only root filesystem needs a writable /tmp (the PostgreSQL password file).
        let tmp = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.mount_path == "/tmp");
        assert_eq!(tmp.unwrap().read_only, Some(false));
        assert!(pod.volumes.as_ref().unwrap()[0].empty_dir.is_some());
        assert_eq!(
            c.command.as_deref(),
            Some(&["coffer".to_owned(), "worker".to_owned()][..])
        );
    }

    #[test]
    fn secrets_are_referenced_never_copied() {
        let job = job_for(&backup_plan(redis(), s3()), None);
        let env = pod(&job).containers[0].env.clone().unwrap();
        let reference = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|s| (s.name.clone(), s.key.clone()))
        };
        assert_eq!(
            reference(PASSWORD_ENV),
            Some(("redis-auth".into(), "password".into()))
        );
        assert_eq!(
            reference("AWS_ACCESS_KEY_ID"),
            Some(("s3-creds".into(), "AWS_ACCESS_KEY_ID".into()))
        );
        assert_eq!(
            reference("AWS_SECRET_ACCESS_KEY"),
            Some(("s3-creds".into(), "AWS_SECRET_ACCESS_KEY".into()))
        );
        // Every plain value is free of secrets: the plan names the Secret, not its value.
        let plan = env.iter().find(|e| e.name == PLAN_ENV).unwrap();
        let plan = Plan::from_json(plan.value.as_deref().unwrap()).unwrap();
        assert_eq!(plan, backup_plan(redis(), s3()));
        for e in &env {
            assert!(e.value.is_some() != e.value_from.is_some(), "{}", e.name);
        }
    }

    #[test]
    fn a_volume_backup_mounts_the_claim_read_only_and_a_restore_read_write() {
        let source = BackupSource {
            redis: None,
            postgres: None,
            mysql: None,
            volume: Some(VolumeSource {
                claim_name: "app-data".into(),
                skip_unreadable: false,
            }),
        };
        let storage = BackupStorage {
            s3: None,
            filesystem: Some(FilesystemStorage {
                claim_name: "backup-store".into(),
            }),
        };
        let backup = job_for(&backup_plan(source.clone(), storage.clone()), None);
        assert_eq!(
            claims(&backup),
            [
                ("app-data".into(), SOURCE_MOUNT.into(), true),
                ("backup-store".into(), STORE_MOUNT.into(), false)
            ]
        );
        let restore = Plan::Restore(RestorePlan {
            storage,
            folder: "shop/data/20261201T160000Z/".into(),
            latest: false,
            latest_before: None,
            target: source.clone(),
            redis: None,
            postgres: None,
            mysql: None,
            volume: None,
            manifest_sha256: None,
            identity_secret: None,
            fallbacks: Vec::new(),
            dry_run: false,
        });
        assert!(!claims(&job_for(&restore, None))[0].2);
        // Its dry run only reads it.
        let Plan::Restore(restore_plan) = &restore else {
            unreachable!()
        };
        let dry_run = Plan::Restore(RestorePlan {
            dry_run: true,
            ..restore_plan.clone()
        });
        assert!(claims(&job_for(&dry_run, None))[0].2);
        // The kubelet never changes the owners of the data: no fsGroup when a volume is
        // restored into (mounted writable). A backup mounts it read-only, which the kubelet
        // never gives a group: its Pod has one, for a claim store, applied on root mismatch.
        let psc = pod(&job_for(&restore, None))
            .security_context
            .clone()
            .unwrap();
        assert_eq!(psc.fs_group, None);
        assert_eq!(psc.run_as_user, Some(WORKER_UID));
        for job in [
            job_for(&backup_plan(source.clone(), s3()), None),
            backup.clone(),
            job_for(&backup_plan(redis(), s3()), None),
        ] {
            let psc = pod(&job).security_context.clone().unwrap();
            assert_eq!(psc.fs_group, Some(WORKER_UID));
            assert_eq!(psc.run_as_user, Some(WORKER_UID));
            assert_eq!(
                psc.fs_group_change_policy.as_deref(),
                Some("OnRootMismatch")
            );
        }
        // Chosen by the user when asked.
        let template = JobTemplate {
            run_as_user: Some(999),
            run_as_group: Some(999),
            fs_group: Some(999),
            fs_group_change_policy: Some(FsGroupChangePolicy::Always),
            ..JobTemplate::default()
        };
        let psc = pod(&job_for(&restore, Some(&template)))
            .security_context
            .clone()
            .unwrap();
        assert_eq!(
            (psc.run_as_user, psc.run_as_group, psc.fs_group),
            (Some(999), Some(999), Some(999))
        );
        assert_eq!(psc.fs_group_change_policy.as_deref(), Some("Always"));
        // Giving owners back runs as root with four capabilities, nothing more.
        let Plan::Restore(mut owners) = restore.clone() else {
            unreachable!()
        };
        owners.volume = Some(VolumeRestoreOptions {
            clean: false,
            restore_owners: true,
        });
        let job = job_for(&Plan::Restore(owners), None);
        let psc = pod(&job).security_context.clone().unwrap();
        assert_eq!(
            (psc.run_as_user, psc.run_as_non_root),
            (Some(0), Some(false))
        );
        let sc = pod(&job).containers[0].security_context.clone().unwrap();
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            caps.add,
            Some(OWNER_CAPABILITIES.map(str::to_owned).to_vec())
        );
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        // No S3 credentials are asked for when the store is a claim.
        let env = pod(&job_for(&restore, None)).containers[0]
            .env
            .clone()
            .unwrap();
        assert!(!env.iter().any(|e| e.name.starts_with("AWS_")));
    }

    #[test]
    fn a_drill_job_names_no_source_gets_no_source_credentials_and_is_bounded() {
        use crate::worker::plan::DrillPlan;
        let mut drill = DrillPlan {
            storage: s3(),
            folder: "shop/redis/20261201T160000Z/".into(),
            manifest_sha256: None,
            checks: crate::api::DrillChecks::default(),
            identity_secret: None,
            scratch_size: None,
        };
        let job = job_for(&Plan::Drill(drill.clone()), None);
        let text = serde_json::to_string(&job).unwrap();
        let container = &pod(&job).containers[0];
        let env: Vec<&str> = container
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        // The store's credentials only: no password, no source, no volume of one.
        assert!(!env.contains(&PASSWORD_ENV), "{env:?}");
        assert!(!env.contains(&IDENTITY_ENV), "{env:?}");
        assert!(env.contains(&"AWS_ACCESS_KEY_ID"), "{env:?}");
        assert!(!text.contains("redis-auth") && !text.contains("redis.shop"));
        assert!(claims(&job).is_empty());
        let tmp_limit = |job: &Job| {
            pod(job)
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == "tmp")
                .and_then(|v| v.empty_dir.clone())
                .and_then(|d| d.size_limit)
        };
        assert_eq!(tmp_limit(&job), Some(Quantity("10Gi".into())));
        assert_eq!(
            job.spec.as_ref().and_then(|s| s.active_deadline_seconds),
            Some(DEFAULT_DRILL_DEADLINE_SECONDS)
        );
        // The key of an encrypted backup, and a scratch size of the user's.
        drill.identity_secret = Some(SecretKeySelector {
            name: "age".into(),
            key: "identity".into(),
        });
        drill.scratch_size = Some(Quantity("1Gi".into()));
        let job = job_for(&Plan::Drill(drill), None);
        let container = &pod(&job).containers[0];
        assert!(
            container
                .env
                .iter()
                .flatten()
                .any(|e| e.name == IDENTITY_ENV)
        );
        assert_eq!(tmp_limit(&job), Some(Quantity("1Gi".into())));
    }

    #[test]
    fn a_check_job_is_bounded_by_minutes_even_when_backups_may_run_for_hours() {
        let check = Plan::Check(crate::worker::plan::CheckPlan {
            source: redis(),
            storage: s3(),
            folder: "shop/redis/".into(),
            encryption: None,
        });
        let deadline = |template: Option<&JobTemplate>| {
            job_for(&check, template)
                .spec
                .and_then(|s| s.active_deadline_seconds)
        };
        assert_eq!(deadline(None), Some(CHECK_DEADLINE_SECONDS));
        let long = JobTemplate {
            active_deadline_seconds: Some(6 * 3600),
            ..JobTemplate::default()
        };
        assert_eq!(deadline(Some(&long)), Some(CHECK_DEADLINE_SECONDS));
        let short = JobTemplate {
            active_deadline_seconds: Some(60),
            ..JobTemplate::default()
        };
        assert_eq!(deadline(Some(&short)), Some(60));
        let retrying = JobTemplate {
            backoff_limit: Some(3),
            ..JobTemplate::default()
        };
        let job = job_for(&check, Some(&retrying));
        assert_eq!(job.spec.and_then(|s| s.backoff_limit), Some(0));
    }

    #[test]
    fn job_settings_come_from_the_template_with_safe_defaults() {
        let postgres = BackupSource {
            redis: None,
            postgres: Some(PostgresSource {
                host: "pg".into(),
                port: 5432,
                databases: vec![],
                user: "postgres".into(),
                password_secret_ref: None,
                globals: true,
            }),
            mysql: None,
            volume: None,
        };
        let plan = backup_plan(postgres, s3());
        let job = job_for(&plan, None);
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.ttl_seconds_after_finished, Some(DEFAULT_TTL_SECONDS));
        assert_eq!(
            spec.active_deadline_seconds,
            Some(DEFAULT_RUN_DEADLINE_SECONDS)
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[OWNER_UID_LABEL], "uid-1");
        assert!(
            !pod(&job).containers[0]
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.name == PASSWORD_ENV)
        );
        let owner_refs = job.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owner_refs[0].controller, Some(true));

        let template = JobTemplate {
            active_deadline_seconds: Some(600),
            backoff_limit: Some(2),
            ttl_seconds_after_finished: Some(60),
            node_selector: Some([("disk".to_owned(), "ssd".to_owned())].into()),
            pod_labels: Some([("team".to_owned(), "shop".to_owned())].into()),
            ..JobTemplate::default()
        };
        let job = job_for(&plan, Some(&template));
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.ttl_seconds_after_finished, Some(60));
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("shop"));
        assert_eq!(
            labels.get(OWNER_NAME_LABEL).map(String::as_str),
            Some("redis-20261201-160000")
        );
        assert_eq!(pod(&job).node_selector.as_ref().unwrap()["disk"], "ssd");
    }

    #[test]
    fn long_names_are_shortened_and_stay_distinct() {
        assert_eq!(job_name("shop-redis", "backup"), "shop-redis-backup");
        let a = job_name(&"a".repeat(80), "backup");
        let b = job_name(&format!("{}b", "a".repeat(79)), "backup");
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with("-backup"));
    }
}
