//! The sandbox cluster (`tests/sandbox/cluster.sh`, started by `make
//! cluster-up` or `make test`): connecting to it, a namespace per test,
//! kubectl, and waiting for the cluster to get somewhere.
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

/// The repository root (where `target/` lives).
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
    /// Connects to the sandbox, failing the test loudly if it is not
    /// running: a sandbox test never skips.
    pub async fn connect() -> Sandbox {
        Sandbox::try_connect()
            .await
            .unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// Connects to the sandbox; the error says how to start it.
    pub async fn try_connect() -> anyhow::Result<Sandbox> {
        let dir = sandbox_dir();
        let kubeconfig = dir.join("kubeconfig");
        let bin_dir = std::fs::read_to_string(dir.join("bin-dir"))
            .map(|s| PathBuf::from(s.trim()))
            .map_err(|err| anyhow!("{NOT_RUNNING} ({}: {err})", dir.display()))?;
        let client = client_from(&kubeconfig)
            .await
            .map_err(|err| anyhow!("{NOT_RUNNING} ({err:#})"))?;
        if let Err(err) = client.apiserver_version().await {
            bail!("{NOT_RUNNING} (apiserver unreachable: {err})");
        }
        Ok(Sandbox {
            client,
            kubeconfig,
            bin_dir,
        })
    }

    /// Creates a fresh namespace for one test; it is deleted when the guard drops,
    /// even on panic.
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
        create_namespace(&self.client, &name, &[("aiops-operator.dev/test", "true")])
            .await
            .unwrap_or_else(|err| panic!("{err:#}"));
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
pub async fn client_from(kubeconfig: &Path) -> anyhow::Result<Client> {
    let raw = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", kubeconfig.display()))?;
    Client::try_from(config).context("building the client")
}

/// Runs `kubectl` against `kubeconfig`; returns (success, stdout+stderr).
/// Synchronous, so it also works from `Drop` while a test unwinds.
pub fn kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
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

/// Creates a namespace with `labels` and waits until pods can be created
/// in it: the ServiceAccount admission plugin rejects pods until the
/// controller-manager has created the namespace's default account.
pub async fn create_namespace(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
) -> anyhow::Result<()> {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(key, value)| (key.to_string(), json!(value)))
        .collect();
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }))
    .context("namespace manifest")?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    try_wait_until(
        Duration::from_secs(60),
        &format!("the default service account in {name}"),
        || async { accounts.get_opt("default").await.ok().flatten() },
    )
    .await?;
    Ok(())
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
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_wait_until(timeout, what, probe)
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

/// Polls `probe` until it returns `Some`; an error naming `what` after `timeout`.
pub async fn try_wait_until<T, F, Fut>(
    timeout: Duration,
    what: &str,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
