//! `coffer crds` is the only source of the CRDs: `crds/` and the Helm chart hold exactly its
//! output, and the output carries the printer columns, short names, category and CEL rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

const REGENERATE: &str = "run ./scripts/regen-crds and commit the result";

fn coffer_crds() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(output.status.success(), "coffer crds failed: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn committed_crds_equal_the_generated_ones() {
    let generated = coffer_crds();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["crds/coffer.dev.yaml", "charts/coffer/crds/coffer.dev.yaml"] {
        let committed = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("{file} cannot be read ({e}): {REGENERATE}"));
        assert!(
            committed == generated,
            "{file} differs from `coffer crds`: {REGENERATE}"
        );
    }
    // crds/ holds exactly that one file, so `kubectl apply -f crds/` applies nothing else.
    let entries: Vec<_> = std::fs::read_dir(root.join("crds")).unwrap().collect();
    assert_eq!(entries.len(), 1, "crds/ must hold only coffer.dev.yaml");
}

fn by_kind(kind: &str) -> CustomResourceDefinition {
    let all: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&coffer_crds()).unwrap();
    all.into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD of kind {kind}"))
}

fn columns(crd: &CustomResourceDefinition) -> Vec<(String, String)> {
    crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .map(|c| (c.name.clone(), c.json_path.clone()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn every_kind_is_namespaced_with_status_short_name_and_category() {
    for (kind, short) in [
        ("BackupSchedule", "cbs"),
        ("Backup", "cbk"),
        ("RestoreRequest", "crr"),
    ] {
        let crd = by_kind(kind);
        assert_eq!(crd.spec.group, "coffer.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(
            (version.name.as_str(), version.served, version.storage),
            ("v1alpha1", true, true)
        );
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind} status"
        );
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_owned()][..])
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["coffer".to_owned()][..])
        );
        let description = version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap()
            .description
            .as_deref();
        assert!(
            description.is_some_and(|d| d.starts_with(&format!("A {kind}"))),
            "{kind}: {description:?}"
        );
    }
}

#[test]
fn printer_columns_show_what_users_look_for() {
    assert_eq!(
        columns(&by_kind("BackupSchedule")),
        pairs(&[
            ("Schedule", ".spec.schedule"),
            ("Time Zone", ".spec.timeZone"),
            ("Suspended", ".spec.suspend"),
            ("Last Success", ".status.lastSuccessfulTime"),
            ("Next Run", ".status.nextScheduleTime"),
            ("Age", ".metadata.creationTimestamp"),
        ])
    );
    // kubectl prints a future "date" column as "<invalid>", so the next run is a timestamp.
    let schedule = by_kind("BackupSchedule");
    let next = schedule.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .find(|c| c.name == "Next Run")
        .unwrap();
    assert_eq!(next.type_, "string");
    assert_eq!(
        columns(&by_kind("Backup")),
        pairs(&[
            ("Phase", ".status.phase"),
            ("Source", ".status.sourceKind"),
            ("Stored", ".status.storedSize"),
            ("Started", ".status.startTime"),
            ("Duration", ".status.duration"),
        ])
    );
    assert_eq!(
        columns(&by_kind("RestoreRequest")),
        pairs(&[
            ("Backup", ".spec.backupRef.name"),
            ("Phase", ".status.phase"),
            ("Age", ".metadata.creationTimestamp"),
        ])
    );
}

#[test]
fn cel_rules_are_in_the_generated_yaml() {
    let yaml = coffer_crds();
    for message in [
        "exactly one of redis, postgres, mysql or volume must be set",
        "exactly one of s3 or filesystem must be set",
        "exactly one of backupRef or from must be set",
        "source and storage go together",
        "a RestoreRequest runs once",
    ] {
        assert!(yaml.contains(message), "missing CEL rule: {message}");
    }
}

#[test]
fn every_field_has_a_description() {
    fn walk(path: &str, node: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                let described = child
                    .get("description")
                    .and_then(|d| d.as_str())
                    .is_some_and(|d| !d.is_empty());
                // apiVersion/kind/metadata are described by Kubernetes itself.
                if !described && !matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                    missing.push(child_path.clone());
                }
                walk(&child_path, child, missing);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = node.get(key) {
                walk(&format!("{path}[]"), child, missing);
            }
        }
    }
    let mut missing = vec![];
    for kind in ["BackupSchedule", "Backup", "RestoreRequest"] {
        let crd = by_kind(kind);
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        walk(kind, &schema, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a doc comment: {missing:#?}"
    );
}
