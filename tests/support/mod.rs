//! Helpers shared by the integration tests.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// The openAPIV3Schema of a CRD's only version, as JSON.
pub fn openapi_schema(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("generated CRDs have a schema");
    serde_json::to_value(schema).unwrap()
}

/// The messages of the CEL rules of `crd` that `object` breaks (empty when it passes), as
/// kube's client-side CEL validator reports them. `old` is the previous object, for
/// transition rules.
pub fn cel_errors(
    crd: &CustomResourceDefinition,
    object: &Value,
    old: Option<&Value>,
) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(&openapi_schema(crd), object, old) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}
