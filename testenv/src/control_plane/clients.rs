//! Kubeconfig files and `kube::Client`s for the test control plane.

use std::future::Future;
use std::path::Path;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::ControlPlane;
use crate::{Result, TestEnvError};

fn kube_error(what: &str) -> impl FnOnce(kube::Error) -> TestEnvError + '_ {
    move |e| TestEnvError::ControlPlane(format!("{what}: {e}"))
}

/// Writes a kubeconfig (JSON, which kubectl and helm read like YAML) for `user` with a
/// bearer token, trusting the CA in `ca_file`.
pub(crate) fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_file: &Path,
    user: &str,
    token: &str,
) -> Result<()> {
    let config = kubeconfig_json(server, ca_file, user, token);
    super::write(path, &config.to_string())
}

fn kubeconfig_json(server: &str, ca_file: &Path, user: &str, token: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "coffer-test", "cluster": {
            "server": server,
            "certificate-authority": ca_file,
        }}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "coffer-test", "user": user}}],
        "current-context": user,
    })
}

/// A client from a kubeconfig file, bound to the current tokio runtime.
pub(crate) async fn from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| TestEnvError::ControlPlane(format!("reading {}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| TestEnvError::ControlPlane(format!("loading {}: {e}", path.display())))?;
    kube::Client::try_from(config).map_err(kube_error("building a client"))
}

/// A client for a ServiceAccount, with a one-hour token from the TokenRequest API.
pub(crate) async fn service_account(
    plane: &ControlPlane,
    namespace: &str,
    name: &str,
) -> Result<kube::Client> {
    let admin = plane.admin_client().await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin, namespace);
    if accounts
        .get_opt(name)
        .await
        .map_err(kube_error("reading a ServiceAccount"))?
        .is_none()
    {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        accounts
            .create(&PostParams::default(), &account)
            .await
            .map_err(kube_error("creating a ServiceAccount"))?;
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(kube_error("requesting a ServiceAccount token"))?;
    let token = issued
        .status
        .map(|s| s.token)
        .ok_or_else(|| TestEnvError::ControlPlane("the token request returned no token".into()))?;
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let json = kubeconfig_json(plane.server(), &plane.dir().join("ca.crt"), &user, &token);
    let kubeconfig: Kubeconfig = serde_json::from_value(json)
        .map_err(|e| TestEnvError::ControlPlane(format!("building a kubeconfig: {e}")))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| TestEnvError::ControlPlane(format!("loading a kubeconfig: {e}")))?;
    kube::Client::try_from(config).map_err(kube_error("building a client"))
}

/// Runs `future` to completion on a new runtime in a new thread, so it works whether or
/// not the caller is inside a tokio runtime (where a nested `block_on` would panic).
pub(crate) fn block_on<T, F>(future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(TestEnvError::io("starting a runtime"))?
            .block_on(future)
    })
    .join()
    .unwrap_or_else(|_| {
        Err(TestEnvError::ControlPlane(
            "a helper thread panicked".into(),
        ))
    })
}
