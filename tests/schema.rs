//! The CRD schemas reject bad specs with messages that name the field: CEL rules (evaluated
//! here with kube's client-side CEL validator), enums, minimums and required fields.
//! The same rules are checked against a real kube-apiserver by the control-plane tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer::api::{Backup, BackupSchedule, RestoreRequest};
use kube::CustomResourceExt;
use serde_json::{Value, json};

mod support;
use support::{cel_errors, openapi_schema as schema};

fn redis() -> Value {
    json!({"redis": {"host": "redis.shop.svc"}})
}

fn s3() -> Value {
    json!({"s3": {"bucket": "backups"}})
}

fn schedule(spec: Value) -> Value {
    json!({"apiVersion": "coffer.dev/v1alpha1", "kind": "BackupSchedule",
           "metadata": {"name": "s", "namespace": "n"}, "spec": spec})
}

fn backup(spec: Value) -> Value {
    json!({"apiVersion": "coffer.dev/v1alpha1", "kind": "Backup",
           "metadata": {"name": "b", "namespace": "n"}, "spec": spec})
}

fn restore(spec: Value) -> Value {
    json!({"apiVersion": "coffer.dev/v1alpha1", "kind": "RestoreRequest",
           "metadata": {"name": "r", "namespace": "n"}, "spec": spec})
}

#[test]
fn a_schedule_needs_exactly_one_source_kind() {
    let crd = BackupSchedule::crd();
    let ok = schedule(json!({"schedule": "@daily", "source": redis(), "storage": s3()}));
    assert_eq!(cel_errors(&crd, &ok, None), Vec::<String>::new());

    let two = schedule(json!({"schedule": "@daily", "storage": s3(),
        "source": {"redis": {"host": "r"}, "volume": {"claimName": "data"}}}));
    let errors = cel_errors(&crd, &two, None);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("spec.source"), "{errors:?}");
    assert!(
        errors[0].contains("exactly one of redis, postgres, mysql or volume"),
        "{errors:?}"
    );

    let none = schedule(json!({"schedule": "@daily", "source": {}, "storage": s3()}));
    assert_eq!(cel_errors(&crd, &none, None).len(), 1);

    let mysql = json!({"host": "mysql.shop.svc", "user": "backup"});
    let alone =
        schedule(json!({"schedule": "@daily", "storage": s3(), "source": {"mysql": mysql}}));
    assert_eq!(cel_errors(&crd, &alone, None), Vec::<String>::new());
    let with_pg = schedule(json!({"schedule": "@daily", "storage": s3(),
        "source": {"mysql": mysql, "postgres": {"host": "pg"}}}));
    assert_eq!(cel_errors(&crd, &with_pg, None).len(), 1);
}

#[test]
fn storage_needs_exactly_one_of_s3_or_filesystem() {
    let crd = BackupSchedule::crd();
    let both = schedule(json!({"schedule": "@daily", "source": redis(),
        "storage": {"s3": {"bucket": "backups"}, "filesystem": {"claimName": "store"}}}));
    let errors = cel_errors(&crd, &both, None);
    assert!(
        errors.len() == 1
            && errors[0].contains("spec.storage")
            && errors[0].contains("exactly one of s3 or filesystem"),
        "{errors:?}"
    );
}

#[test]
fn a_backup_names_a_schedule_or_gives_source_and_storage() {
    let crd = Backup::crd();
    for ok in [
        json!({"scheduleRef": {"name": "s"}}),
        json!({"source": redis(), "storage": s3()}),
        json!({"scheduleRef": {"name": "s"}, "source": redis(), "storage": s3()}),
    ] {
        assert_eq!(
            cel_errors(&crd, &backup(ok.clone()), None),
            Vec::<String>::new(),
            "{ok}"
        );
    }
    let errors = cel_errors(&crd, &backup(json!({"deletionPolicy": "Retain"})), None);
    assert!(
        errors.iter().any(|e| e.contains("set scheduleRef")),
        "{errors:?}"
    );
    let errors = cel_errors(&crd, &backup(json!({"source": redis()})), None);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("source and storage go together")),
        "{errors:?}"
    );
}

#[test]
fn only_the_deletion_policy_of_a_backup_can_change() {
    let crd = Backup::crd();
    let old = backup(json!({"source": redis(), "storage": s3(), "deletionPolicy": "Delete"}));
    let retained = backup(json!({"source": redis(), "storage": s3(), "deletionPolicy": "Retain"}));
    assert_eq!(
        cel_errors(&crd, &retained, Some(&old)),
        Vec::<String>::new()
    );

    let moved = backup(json!({"source": {"redis": {"host": "elsewhere"}}, "storage": s3()}));
    let errors = cel_errors(&crd, &moved, Some(&old));
    assert!(
        errors.iter().any(|e| e.contains("source cannot change")),
        "{errors:?}"
    );

    let compressed = backup(json!({"source": redis(), "storage": s3(), "compression": "gzip"}));
    let errors = cel_errors(&crd, &compressed, Some(&old));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("only deletionPolicy can change")),
        "{errors:?}"
    );
}

#[test]
fn a_restore_names_exactly_one_of_backup_ref_or_from_and_never_changes() {
    let crd = RestoreRequest::crd();
    let by_ref = restore(json!({"backupRef": {"name": "b"}}));
    assert_eq!(cel_errors(&crd, &by_ref, None), Vec::<String>::new());
    let from = restore(json!({"from": {"storage": s3(), "location": "shop/x/", "latest": true}}));
    assert_eq!(cel_errors(&crd, &from, None), Vec::<String>::new());

    let both = restore(json!({"backupRef": {"name": "b"},
        "from": {"storage": s3(), "location": "shop/x/"}}));
    let errors = cel_errors(&crd, &both, None);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("exactly one of backupRef or from")),
        "{errors:?}"
    );
    let neither = restore(json!({"quiesce": []}));
    assert_eq!(cel_errors(&crd, &neither, None).len(), 1);

    let changed = restore(json!({"backupRef": {"name": "other"}}));
    let errors = cel_errors(&crd, &changed, Some(&by_ref));
    assert!(errors.iter().any(|e| e.contains("runs once")), "{errors:?}");
}

/// The schema node at a `/`-separated path of property names below `spec`.
fn spec_field<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut node = &schema["properties"]["spec"];
    for part in path.split('/') {
        node = &node["properties"][part];
        assert!(!node.is_null(), "no field {path} in the schema");
    }
    node
}

#[test]
fn enums_are_closed_lists() {
    let s = schema(&BackupSchedule::crd());
    let b = schema(&Backup::crd());
    let r = schema(&RestoreRequest::crd());
    let cases = [
        (
            spec_field(&s, "source/redis/mode"),
            json!(["Snapshot", "Keys"]),
        ),
        (
            spec_field(&s, "compression"),
            json!(["zstd", "gzip", "none"]),
        ),
        (
            spec_field(&s, "concurrencyPolicy"),
            json!(["Forbid", "Replace", "Allow"]),
        ),
        (
            spec_field(&b, "deletionPolicy"),
            json!(["Delete", "Retain"]),
        ),
        (
            spec_field(&r, "redis/conflict"),
            json!(["Skip", "Overwrite", "Flush"]),
        ),
    ];
    for (node, values) in cases {
        assert_eq!(node["enum"], values, "{node}");
    }
    assert_eq!(spec_field(&s, "compression")["default"], "zstd");
    assert_eq!(spec_field(&r, "redis/conflict")["default"], "Skip");
    assert_eq!(spec_field(&b, "deletionPolicy")["default"], "Delete");
}

#[test]
fn numbers_have_their_bounds() {
    let s = schema(&BackupSchedule::crd());
    for port in ["source/redis/port", "source/postgres/port"] {
        let node = spec_field(&s, port);
        assert_eq!(
            (node["minimum"].as_f64(), node["maximum"].as_f64()),
            (Some(1.0), Some(65535.0)),
            "{port}"
        );
    }
    for keep in [
        "keepLast",
        "keepHourly",
        "keepDaily",
        "keepWeekly",
        "keepMonthly",
        "keepYearly",
        "keepFailed",
    ] {
        let node = spec_field(&s, &format!("retention/{keep}"));
        assert_eq!(node["minimum"].as_f64(), Some(0.0), "{keep}");
    }
    assert_eq!(spec_field(&s, "retention/keepFailed")["default"], 3);
    assert_eq!(
        spec_field(&s, "startingDeadlineSeconds")["minimum"].as_f64(),
        Some(0.0)
    );
}

#[test]
fn required_fields_are_required() {
    let s = schema(&BackupSchedule::crd());
    let required = |node: &Value| -> Vec<String> {
        serde_json::from_value(node["required"].clone()).unwrap_or_default()
    };
    assert_eq!(
        required(&s["properties"]["spec"]),
        ["schedule", "source", "storage"]
    );
    assert_eq!(required(spec_field(&s, "source/redis")), ["host"]);
    assert_eq!(required(spec_field(&s, "source/postgres")), ["host"]);
    assert_eq!(required(spec_field(&s, "source/volume")), ["claimName"]);
    assert_eq!(required(spec_field(&s, "storage/s3")), ["bucket"]);
    assert_eq!(
        required(spec_field(&s, "source/redis/passwordSecretRef")),
        ["key", "name"]
    );
    let r = schema(&RestoreRequest::crd());
    assert_eq!(required(spec_field(&r, "from")), ["location", "storage"]);
    assert_eq!(
        required(&spec_field(&r, "quiesce")["items"]),
        ["kind", "name"]
    );
}

/// Matches `value` against the schema pattern of a spec field, anchored as the apiserver
/// does (the patterns carry their own `^...$`).
fn pattern_matches(schema: &Value, field: &str, value: &str) -> bool {
    let pattern = spec_field(schema, field)["pattern"].as_str().unwrap();
    regex::Regex::new(pattern).unwrap().is_match(value)
}

#[test]
fn schedule_shape_and_retention_age_are_checked_by_pattern() {
    let s = schema(&BackupSchedule::crd());
    for ok in [
        "0 0 * * *",
        "*/5 1-3 * JAN MON-FRI",
        "@daily",
        "@hourly",
        " 0 0 * * * ",
    ] {
        assert!(pattern_matches(&s, "schedule", ok), "{ok:?} should pass");
    }
    for bad in [
        "",
        "0 0 * *",
        "0 0 0 * * *",
        "@reboot",
        "@midnight",
        "daily",
    ] {
        assert!(
            !pattern_matches(&s, "schedule", bad),
            "{bad:?} should be refused"
        );
    }
    for ok in ["90d", "12h", "4w", "1d"] {
        assert!(
            pattern_matches(&s, "retention/maxAge", ok),
            "{ok:?} should pass"
        );
    }
    for bad in ["0d", "90", "1.5d", "90 d", "d", "3m", "-1d"] {
        assert!(
            !pattern_matches(&s, "retention/maxAge", bad),
            "{bad:?} should be refused"
        );
    }
    let bucket = |b: &str| pattern_matches(&s, "storage/s3/bucket", b);
    assert!(bucket("backups") && bucket("my.backups-2"));
    assert!(!bucket("Backups") && !bucket("-backups") && !bucket("backups/"));
}
