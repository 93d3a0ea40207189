//! The `kyverno` backend: Kyverno's own admission controller (pinned in
//! `tests/bench/kyverno.sh`, built from the Go module proxy into a cache
//! outside the checkout) running out of cluster against the sandbox, with
//! the same 12 policies as the `webhook` backend, Enforce.
//!
//! Kyverno registers its webhooks cluster-wide and keeps them registered
//! while it runs, so the bench does not switch it by (un)registering: its
//! config narrows every resource webhook to namespaces carrying
//! [`ACTIVE_LABEL`], and a phase switches Kyverno on by putting that label
//! on the bench namespace. No other namespace of the shared sandbox ever
//! matches. Dropping [`Kyverno`] stops the process, then removes its
//! webhook configurations, the policies and its namespace.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::{self, Sandbox, repo_root};

/// The bench namespace carries this label while Kyverno is the backend.
pub const ACTIVE_LABEL: &str = "aiops-operator.dev/bench-kyverno";
/// In the API server's denials by Kyverno's resource webhook.
pub const DENIAL_MARKER: &str = "\"validate.kyverno.svc";
/// What the report's `setup` says of this backend.
pub const SETUP: &str = "Kyverno v1.19.1 cmd/kyverno (tests/bench/kyverno.sh), out of cluster: \
     --serverIP=127.0.0.1:<port> registers its webhooks by URL; policies/*.yaml as ClusterPolicies, \
     validationFailureAction Enforce; admission reports off (--admissionReports=false); its resource \
     webhooks narrowed by its config's namespaceSelector to the bench namespace, which carries the \
     label only in kyverno phases (so its configurations stay registered, unmatched, in the others)";
/// Kyverno registers this one as soon as it serves (before any policy).
const POLICY_WEBHOOK: &str = "kyverno-policy-validating-webhook-cfg";

fn script() -> PathBuf {
    repo_root().join("tests/bench/kyverno.sh")
}

/// Builds the pinned Kyverno, or finds it in the cache (20 minutes and
/// more when cold; the script reports its progress on our stderr).
pub fn build() -> Result<()> {
    let status = Command::new("bash")
        .arg(script())
        .arg("build")
        .stdout(Stdio::null())
        .status()
        .context("running tests/bench/kyverno.sh build")?;
    ensure!(status.success(), "building Kyverno failed ({status})");
    Ok(())
}

/// A running Kyverno admission controller and what it registered.
pub struct Kyverno {
    child: Child,
    /// Kyverno's own namespace: its config, certificates and lease.
    namespace: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    log: PathBuf,
}

impl Kyverno {
    /// Starts Kyverno (config in namespace `aiops-bench-kyverno-<id>`,
    /// resource webhooks limited to namespaces labelled
    /// `ACTIVE_LABEL=<id>`), waits until it serves, applies the policies
    /// and waits until Kyverno reports them ready. Kyverno logs to `log`.
    pub async fn start(sandbox: &Sandbox, id: &str, log: &Path) -> Result<Kyverno> {
        let namespace = format!("aiops-bench-kyverno-{id}");
        let file = std::fs::File::create(log).context("Kyverno's log file")?;
        let child = Command::new("bash")
            .arg(script())
            .arg("run")
            .arg(&namespace)
            .arg(format!("{ACTIVE_LABEL}={id}"))
            .arg(support::free_port()?.to_string())
            .arg(support::free_port()?.to_string())
            .env("KUBECTL", sandbox.kubectl_path())
            .env("KUBECONFIG", &sandbox.kubeconfig)
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("Kyverno's log file")?)
            .stderr(file)
            .spawn()
            .context("starting Kyverno")?;
        let mut kyverno = Kyverno {
            child,
            namespace,
            kubectl: sandbox.kubectl_path(),
            kubeconfig: sandbox.kubeconfig.clone(),
            log: log.to_path_buf(),
        };
        let started = Instant::now();
        kyverno.wait_serving(&sandbox.client).await?;
        eprintln!(
            "kyverno: serving after {:.0} s",
            started.elapsed().as_secs_f64()
        );
        kyverno.apply_policies(&sandbox.client, id).await?;
        eprintln!(
            "kyverno: policies ready after {:.0} s",
            started.elapsed().as_secs_f64()
        );
        Ok(kyverno)
    }

    /// The last lines of Kyverno's log, for an error.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("Kyverno's process")? {
            bail!(
                "Kyverno exited ({status}); the end of {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Waits until Kyverno has made its certificates, won its lease and
    /// registered its policy webhook.
    async fn wait_serving(&mut self, client: &kube::Client) -> Result<()> {
        let webhooks = Api::<ValidatingWebhookConfiguration>::all(client.clone());
        let start = Instant::now();
        loop {
            self.ensure_running()?;
            if webhooks.get_opt(POLICY_WEBHOOK).await?.is_some() {
                return Ok(());
            }
            ensure!(
                start.elapsed() < Duration::from_secs(180),
                "Kyverno did not register {POLICY_WEBHOOK} in 180 s; the end of {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The repository's 12 policies as ClusterPolicies, Enforce (as the
    /// `webhook` backend runs them), labelled for `kyverno.sh down`, and
    /// waits until each is ready.
    async fn apply_policies(&mut self, client: &kube::Client, id: &str) -> Result<()> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kyverno.io", "v1", "ClusterPolicy"),
            "clusterpolicies",
        );
        let policies: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let params = PatchParams::apply("aiops-bench-e2e").force();
        let mut names = Vec::new();
        for path in policy_files()? {
            for mut policy in support::read_yaml_documents(&path)? {
                policy["spec"]["validationFailureAction"] = json!("Enforce");
                policy["metadata"]["labels"][ACTIVE_LABEL] = json!(id);
                let name = policy["metadata"]["name"]
                    .as_str()
                    .with_context(|| format!("a policy without a name in {}", path.display()))?
                    .to_string();
                // Kyverno registers its webhooks as soon as it has its CA,
                // and may still be without its serving certificate for a
                // moment: its handshakes fail until then.
                let start = Instant::now();
                while let Err(error) = policies.patch(&name, &params, &Patch::Apply(&policy)).await
                {
                    self.ensure_running()?;
                    if start.elapsed() > Duration::from_secs(60) {
                        return Err(error)
                            .with_context(|| format!("applying ClusterPolicy {name}"));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                names.push(name);
            }
        }
        ensure!(
            names.len() == 12,
            "expected the 12 policies of policies/, found {}",
            names.len()
        );
        let start = Instant::now();
        for name in &names {
            loop {
                self.ensure_running()?;
                let policy = policies.get(name).await?;
                if is_ready(&policy.data) {
                    break;
                }
                ensure!(
                    start.elapsed() < Duration::from_secs(120),
                    "ClusterPolicy {name} not ready after 120 s: {}",
                    policy.data["status"]
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok(())
    }
}

impl Drop for Kyverno {
    fn drop(&mut self) {
        // Stopped first: while it runs, Kyverno registers its webhooks again.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let down = Command::new("bash")
            .arg(script())
            .arg("down")
            .arg(&self.namespace)
            .env("KUBECTL", &self.kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .status();
        if !matches!(down, Ok(status) if status.success()) {
            eprintln!(
                "warning: kyverno.sh down {} failed ({down:?}): remove Kyverno's webhook configurations by hand",
                self.namespace
            );
        }
    }
}

/// Puts [`ACTIVE_LABEL`]`=id` on `namespace` (`active`) or takes it off:
/// Kyverno's resource webhooks match only namespaces carrying it.
pub async fn switch(client: &kube::Client, namespace: &str, id: &str, active: bool) -> Result<()> {
    let value = if active { json!(id) } else { Value::Null };
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {ACTIVE_LABEL: value}}})),
        )
        .await
        .context("labelling the bench namespace for Kyverno")?;
    Ok(())
}

/// `policies/*.yaml`, the set the `webhook` backend loads.
fn policy_files() -> Result<Vec<PathBuf>> {
    let dir = repo_root().join("policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Kyverno's `Ready` condition on a policy.
fn is_ready(policy: &Value) -> bool {
    policy["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}
