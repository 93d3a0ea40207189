//! Test support for live tests against the sandbox cluster
//! (`tests/sandbox/cluster.sh`, started by `make cluster-up` or `make test`).
//!
//! A test connects with [`Sandbox::connect`], which fails the test with a
//! message naming `make cluster-up` when the sandbox is not running: a
//! sandbox test never skips. Each test works in its own namespace
//! ([`Sandbox::namespace`]), deleted when the guard drops, even on panic.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aiops_operator::remediation::crd::{Phase, Remediation};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The repository root (where `target/sandbox` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sandbox's state directory, overridable like the shell harness.
pub fn sandbox_dir() -> PathBuf {
    std::env::var_os("AIOPS_SANDBOX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/sandbox"))
}

const NOT_RUNNING: &str = "the sandbox cluster is not running: start it with `make cluster-up` \
     (or run the whole suite with `make test`, which starts it)";

/// A connection to the running sandbox cluster.
pub struct Sandbox {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
}

impl Sandbox {
    /// Connects to the sandbox, failing the test loudly if it is not running.
    pub async fn connect() -> Sandbox {
        let dir = sandbox_dir();
        let kubeconfig = dir.join("kubeconfig");
        let bin_dir = std::fs::read_to_string(dir.join("bin-dir"))
            .map(|s| PathBuf::from(s.trim()))
            .unwrap_or_else(|err| panic!("{NOT_RUNNING} ({}: {err})", dir.display()));
        let client = client_from(&kubeconfig)
            .await
            .unwrap_or_else(|err| panic!("{NOT_RUNNING} ({err})"));
        if let Err(err) = client.apiserver_version().await {
            panic!("{NOT_RUNNING} (apiserver unreachable: {err})");
        }
        Sandbox {
            client,
            kubeconfig,
            bin_dir,
        }
    }

    /// Creates a fresh namespace for one test; it is deleted when the guard drops.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "t-{prefix}-{:x}{:x}",
            nanos ^ std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"aiops-operator.dev/test": "true"}},
        }))
        .expect("namespace manifest");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|err| panic!("creating namespace {name}: {err}"));
        // The ServiceAccount admission plugin rejects pods until the
        // controller-manager has created the namespace's default account.
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.client.clone(), &name);
        wait_until(
            Duration::from_secs(30),
            "default service account",
            || async { accounts.get_opt("default").await.ok().flatten() },
        )
        .await;
        TestNamespace {
            name,
            kubectl: self.kubectl_path(),
            kubeconfig: self.kubeconfig.clone(),
        }
    }

    pub fn kubectl_path(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }

    /// Runs the sandbox's kubectl and returns (success, stdout+stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        kubectl(&self.kubectl_path(), &self.kubeconfig, args)
    }
}

/// Builds a client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> Result<Client, String> {
    let raw =
        Kubeconfig::read_from(kubeconfig).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    Client::try_from(config).map_err(|e| e.to_string())
}

fn kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    match std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
    {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
        Err(err) => (false, format!("running {}: {err}", kubectl.display())),
    }
}

/// A namespace owned by one test, deleted (without waiting) on drop.
pub struct TestNamespace {
    pub name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot be async; kubectl keeps cleanup working even while a
        // panicking test unwinds through the runtime.
        let _ = kubectl(
            &self.kubectl,
            &self.kubeconfig,
            &["delete", "namespace", &self.name, "--wait=false"],
        );
    }
}

/// Polls `probe` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Lists the pods in `namespace` matching a label selector.
pub async fn pods(client: &Client, namespace: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
}

/// Whether a pod is Running with its Ready condition True.
pub fn pod_ready(pod: &Pod) -> bool {
    let running = pod
        .status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running"));
    running && aiops_operator::k8s::pod::pod_is_ready(pod)
}

/// Creates any namespaced object from JSON in the test namespace.
pub async fn create<K>(client: &Client, namespace: &str, manifest: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(manifest).expect("valid manifest");
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|err| panic!("creating object in {namespace}: {err}"))
}

/// Deletes a namespaced object, ignoring "not found".
pub async fn delete<K>(client: &Client, namespace: &str, name: &str)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let _ = Api::<K>::namespaced(client.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await;
}

/// A Deployment manifest with one container, labelled `app=<name>`.
pub fn deployment(name: &str, replicas: i32, container: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    })
}

/// A local operator replica started by `tests/operator/local.sh start`.
pub struct OperatorProcess {
    pub name: String,
    pub port: u16,
}

impl OperatorProcess {
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(repo_root().join(format!("target/operator/{}/pid", self.name)))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(repo_root().join(format!("target/operator/{}/log", self.name)))
            .unwrap_or_default()
    }

    /// Kills the process without a chance to clean up (a crash).
    pub fn kill_hard(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }

    pub fn stop(&self) {
        run_local_sh(&["stop", &self.name], &[]);
    }

    /// The replica's `/metrics` text (served over TLS by its webhook server).
    pub async fn metrics(&self) -> String {
        let ca = std::fs::read(repo_root().join("target/operator/certs/ca.crt"))
            .expect("read target/operator/certs/ca.crt");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("the local CA"))
            .build()
            .expect("HTTP client");
        client
            .get(format!("https://127.0.0.1:{}/metrics", self.port))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET /metrics")
            .text()
            .await
            .expect("the /metrics body")
    }
}

fn run_local_sh(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("tests/operator/local.sh"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|err| panic!("running tests/operator/local.sh: {err}"));
    assert!(
        out.status.success(),
        "tests/operator/local.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace label that routes a test namespace through the operator's webhooks.
pub const E2E_LABEL: &str = "aiops-operator.dev/e2e";

/// Starts a local operator replica (this test binary's build) against the
/// sandbox; `env` adds settings (e.g. extra `run` flags).
pub fn start_operator(name: &str, env: &[(&str, &str)]) -> OperatorProcess {
    let bin = env!("CARGO_BIN_EXE_aiops-operator");
    let mut all = vec![
        ("AIOPS_BIN", bin),
        ("AIOPS_WEBHOOK_NAMESPACE_LABEL", E2E_LABEL),
    ];
    all.extend_from_slice(env);
    let port = run_local_sh(&["start", name], &all)
        .trim()
        .parse()
        .expect("local.sh start prints the port");
    OperatorProcess {
        name: name.to_string(),
        port,
    }
}

/// Stops every local operator replica (a previous test binary's included).
pub fn stop_all_operators() {
    run_local_sh(&["stop-all"], &[]);
}

/// Removes the operator's webhook registrations (after the last replica stopped).
pub fn uninstall_webhooks() {
    run_local_sh(&["uninstall"], &[]);
}

impl Sandbox {
    /// A namespace whose requests go through the operator's webhooks.
    pub async fn e2e_namespace(&self, prefix: &str) -> TestNamespace {
        let ns = self.namespace(prefix).await;
        let (ok, out) =
            self.kubectl(&["label", "namespace", &ns.name, &format!("{E2E_LABEL}=true")]);
        assert!(ok, "labelling {}: {out}", ns.name);
        ns
    }
}

/// The Remediations in `namespace` (empty when the list fails).
pub async fn remediations(client: &Client, namespace: &str) -> Vec<Remediation> {
    Api::<Remediation>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// A Remediation's phase (Diagnosing until it has a status).
pub fn phase(r: &Remediation) -> Phase {
    r.status.as_ref().map(|s| s.phase).unwrap_or_default()
}
