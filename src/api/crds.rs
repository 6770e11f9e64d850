//! Rendering the CustomResourceDefinitions of every kind as YAML (`coffer crds`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::{Backup, BackupSchedule, Notifier, RestoreRequest};

/// Rendering the CRDs failed; this is a bug in Coffer, not in the user's input.
#[derive(Debug, thiserror::Error)]
pub enum CrdRenderError {
    #[error("could not convert a generated CRD to JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("could not write a generated CRD as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

/// Every CRD of the API, in the order they are printed.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        BackupSchedule::crd(),
        Backup::crd(),
        RestoreRequest::crd(),
        Notifier::crd(),
    ]
}

/// All CRDs as one multi-document YAML stream, each document starting with `---`.
///
/// Keys are written in sorted order, so the output depends only on the types and never on
/// the map ordering a dependency's feature flags happen to select.
pub fn to_yaml() -> Result<String, CrdRenderError> {
    let mut out = String::new();
    for crd in all() {
        let value = serde_json::to_value(&crd)?;
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&Sorted(&value))?);
    }
    Ok(out)
}

/// Serializes a JSON value with the keys of every object in sorted order.
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serializer.collect_map(entries.into_iter().map(|(k, v)| (k, Sorted(v))))
            }
            Value::Array(items) => serializer.collect_seq(items.iter().map(Sorted)),
            other => other.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_rendered_once_in_a_fixed_order() {
        let yaml = to_yaml().unwrap();
        let names: Vec<_> = yaml
            .lines()
            .filter_map(|l| l.strip_prefix("  name: "))
            .collect();
        assert_eq!(
            names,
            [
                "backupschedules.coffer.dev",
                "backups.coffer.dev",
                "restorerequests.coffer.dev",
                "notifiers.coffer.dev"
            ]
        );
        assert_eq!(yaml.matches("---\n").count(), 4);
    }

    #[test]
    fn rendered_yaml_reads_back_as_the_same_crds() {
        let yaml = to_yaml().unwrap();
        let parsed: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(parsed, all());
    }
}
