//! Running `coffer controller` against the test control plane as the non-admin user
//! `coffer-operator`, bound to exactly the rules in `deploy/coffer.yaml` (the chart's RBAC).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffer_testenv::ControlPlane;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};

/// The user the operator runs as (the API server knows it; it has no rights of its own).
pub const OPERATOR_USER: &str = "coffer-operator";

pub fn plane() -> &'static ControlPlane {
    ControlPlane::global().unwrap()
}

pub async fn admin() -> kube::Client {
    plane().admin_client().await.unwrap()
}

/// Applies `crds/` with server-side apply and waits until every CRD is Established.
pub async fn install_crds(client: &kube::Client) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/coffer.dev.yaml");
    let crds: Vec<CustomResourceDefinition> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = vec![];
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("coffer-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        names.push(name);
    }
    for name in &names {
        tokio::time::timeout(
            Duration::from_secs(90),
            await_condition(api.clone(), name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established"))
        .unwrap();
    }
    names
}

/// The objects of `deploy/coffer.yaml` (the chart rendered with its default values).
pub fn deployed_objects() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/coffer.yaml");
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    docs.into_iter().filter(Value::is_object).collect()
}

async fn apply(client: &kube::Client, namespace: Option<&str>, mut doc: Value) {
    let api_version = doc["apiVersion"].as_str().unwrap().to_owned();
    let kind = doc["kind"].as_str().unwrap().to_owned();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind));
    if let Some(ns) = namespace {
        doc["metadata"]["namespace"] = json!(ns);
    }
    let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
    let object: DynamicObject = serde_json::from_value(doc).unwrap();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply("coffer-tests").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
}

/// Installs the CRDs and binds the operator's ClusterRole (cluster-wide) and leader-election
/// Role (in `namespace`) from `deploy/coffer.yaml` (the Helm chart's RBAC) to
/// [`OPERATOR_USER`].
pub async fn prepare(namespace: &str) {
    let client = admin().await;
    install_crds(&client).await;
    let user =
        json!([{"kind": "User", "name": OPERATOR_USER, "apiGroup": "rbac.authorization.k8s.io"}]);
    for mut doc in deployed_objects() {
        match doc["kind"].as_str().unwrap() {
            "ClusterRole" => apply(&client, None, doc).await,
            "ClusterRoleBinding" => {
                doc["metadata"]["name"] = json!("coffer-controller-tests");
                doc["subjects"] = user.clone();
                apply(&client, None, doc).await;
            }
            "Role" => apply(&client, Some(namespace), doc).await,
            "RoleBinding" => {
                doc["subjects"] = user.clone();
                apply(&client, Some(namespace), doc).await;
            }
            _ => {}
        }
    }
}

/// A `coffer controller` process, killed when dropped.
pub struct Operator {
    child: Option<Child>,
    log: PathBuf,
    pub metrics_address: String,
    pub identity: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Operator {
    /// Starts the controller for `namespace` (its Lease in the same namespace).
    pub fn start(namespace: &str, identity: &str) -> Self {
        Self::start_binary(env!("CARGO_BIN_EXE_coffer").as_ref(), namespace, identity)
    }

    /// [`Operator::start`] with more command-line arguments.
    pub fn start_with(namespace: &str, identity: &str, extra: &[&str]) -> Self {
        Self::spawn(
            env!("CARGO_BIN_EXE_coffer").as_ref(),
            namespace,
            identity,
            extra,
        )
    }

    /// [`Operator::start`] with another `coffer` binary (the benchmark's release build).
    pub fn start_binary(binary: &Path, namespace: &str, identity: &str) -> Self {
        Self::spawn(binary, namespace, identity, &[])
    }

    /// [`Operator::start`], reaching the API server at `api` (for example through a
    /// [`super::partition::Partition`]) instead of its own address.
    pub fn start_via(namespace: &str, identity: &str, api: std::net::SocketAddr) -> Self {
        let original = plane().user_kubeconfig(OPERATOR_USER).unwrap();
        let text = std::fs::read_to_string(&original).unwrap();
        let server = plane().server();
        assert!(text.contains(server), "{text}");
        let via = plane().dir().join(format!(
            "kubeconfig-{namespace}-{identity}-via-{}",
            api.port()
        ));
        std::fs::write(&via, text.replace(server, &format!("https://{api}"))).unwrap();
        Self::spawn_with(
            env!("CARGO_BIN_EXE_coffer").as_ref(),
            namespace,
            identity,
            &[],
            &via,
        )
    }

    fn spawn(binary: &Path, namespace: &str, identity: &str, extra: &[&str]) -> Self {
        let kubeconfig = plane().user_kubeconfig(OPERATOR_USER).unwrap();
        Self::spawn_with(binary, namespace, identity, extra, &kubeconfig)
    }

    fn spawn_with(
        binary: &Path,
        namespace: &str,
        identity: &str,
        extra: &[&str],
        kubeconfig: &Path,
    ) -> Self {
        let dir = plane().dir().join("operators");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{namespace}-{identity}.log"));
        // A restarted operator appends to the same log.
        let metrics_address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .args([
                "controller",
                "--namespace",
                namespace,
                "--metrics-address",
                &metrics_address,
                "--worker-image",
                "ghcr.io/coffer-dev/coffer:test",
                "--identity",
                identity,
            ])
            // A short Lease unless the test chooses another.
            .args(if extra.contains(&"--lease-duration") {
                &[][..]
            } else {
                &["--lease-duration", "6"][..]
            })
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,coffer=debug,kube=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            log,
            metrics_address,
            identity: identity.to_owned(),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the controller logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited by itself (for example after losing its Lease).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Kills the process at once (SIGKILL: no clean shutdown, the Lease is not released).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the process to stop (SIGTERM) and returns its exit code once it has.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The body of an HTTP GET of `path` on the metrics address.
    pub async fn get(&self, path: &str) -> String {
        http_get(&self.metrics_address, path).await
    }
}

/// The response (head and body) of an HTTP/1.0 GET of `path` at `address`.
pub async fn http_get(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.identity, self.log());
        }
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
