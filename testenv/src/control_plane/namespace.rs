//! One namespace per test, deleted afterwards.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use super::{ControlPlane, TEST_NAMESPACE_LABEL, clients};
use crate::process::random_token;
use crate::{Result, TestEnvError};

/// A namespace made for one test. Dropping it deletes the namespace (and so everything in
/// it) unless `COFFER_TEST_KEEP=1`, in which case its name is printed for inspection.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    pub(super) async fn create(plane: &ControlPlane, prefix: &str) -> Result<Self> {
        let suffix: String = random_token().chars().take(6).collect();
        let prefix: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!("{}-{suffix}", prefix.trim_matches('-'));
        let client = plane.admin_client().await?;
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|e| TestEnvError::ControlPlane(format!("creating namespace {name}: {e}")))?;
        // Pods can only be created once the ServiceAccount controller made `default`.
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(accounts.get_opt("default").await, Ok(Some(_))) {
            if Instant::now() > deadline {
                return Err(TestEnvError::ControlPlane(format!(
                    "namespace {name} got no default ServiceAccount within 30s: is kube-controller-manager running?"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            name,
            kubeconfig: plane.kubeconfig(),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("COFFER_TEST_KEEP").is_some_and(|v| v == "1") {
            eprintln!("COFFER_TEST_KEEP=1: keeping namespace {}", self.name);
            return;
        }
        // A client is bound to the runtime it was made in, and the test's runtime may be
        // blocked on this very drop: delete from a runtime of our own.
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let _ = clients::block_on(async move {
            let client = clients::from_kubeconfig(&kubeconfig).await?;
            let _ = Api::<Namespace>::all(client)
                .delete(&name, &DeleteParams::background())
                .await;
            Ok(())
        });
    }
}
