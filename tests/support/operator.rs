//! Local operator replicas (`tests/operator/local.sh`) against the
//! sandbox, and the Remediations they write.
use std::path::PathBuf;
use std::time::Duration;

use aiops_operator::remediation::crd::{Phase, Remediation};
use anyhow::{Context, bail};
use kube::Client;
use kube::api::{Api, ListParams};

use super::sandbox::{Sandbox, TestNamespace, repo_root, wait_until};

/// The namespace label that routes a test namespace through the operator's webhooks.
pub const E2E_LABEL: &str = "aiops-operator.dev/e2e";

/// Where `local.sh` keeps each replica's pid, port and log, one folder a replica.
pub fn operators_dir() -> PathBuf {
    repo_root().join("target/operator")
}

/// The pid `local.sh` recorded for the replica `name` (it may have exited since).
pub fn recorded_pid(name: &str) -> Option<u32> {
    std::fs::read_to_string(operators_dir().join(name).join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A local operator replica started by `tests/operator/local.sh start`.
pub struct OperatorProcess {
    pub name: String,
    pub port: u16,
}

impl OperatorProcess {
    pub fn pid(&self) -> Option<u32> {
        recorded_pid(&self.name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(operators_dir().join(&self.name).join("log")).unwrap_or_default()
    }

    /// The last `lines` lines of the replica's log, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        last_lines(&self.log(), lines)
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

    /// Points the webhook configurations (policies and approval) at this
    /// replica, as a Service would once the replica they named is gone.
    pub fn take_webhooks(&self) {
        run_local_sh(
            &["register", &self.name],
            &[("AIOPS_WEBHOOK_NAMESPACE_LABEL", E2E_LABEL)],
        );
    }

    /// The replica's `/metrics` text (served over TLS by its webhook server).
    pub async fn metrics(&self) -> String {
        self.try_metrics()
            .await
            .unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// [`OperatorProcess::metrics`], with an error instead of a failed test.
    pub async fn try_metrics(&self) -> anyhow::Result<String> {
        let ca_file = operators_dir().join("certs/ca.crt");
        let ca =
            std::fs::read(&ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).context("the local CA")?)
            .timeout(Duration::from_secs(10))
            .build()
            .context("HTTP client")?;
        client
            .get(format!("https://127.0.0.1:{}/metrics", self.port))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .context("GET /metrics")?
            .text()
            .await
            .context("the /metrics body")
    }
}

/// The last `count` lines of `text`.
pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Runs `tests/operator/local.sh` with `args` and extra environment;
/// returns its standard output.
pub fn local_sh(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("tests/operator/local.sh"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .context("running tests/operator/local.sh")?;
    if !out.status.success() {
        bail!(
            "tests/operator/local.sh {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_local_sh(args: &[&str], env: &[(&str, &str)]) -> String {
    local_sh(args, env).unwrap_or_else(|err| panic!("{err:#}"))
}

/// Starts a local operator replica (this test binary's build) against the
/// sandbox; `env` adds settings (e.g. extra `run` flags).
pub fn start_operator(name: &str, env: &[(&str, &str)]) -> OperatorProcess {
    try_start_operator(name, env).unwrap_or_else(|err| panic!("{err:#}"))
}

/// [`start_operator`], with an error instead of a failed test. `env` is
/// applied last, so it may also name another binary (`AIOPS_BIN`) or
/// another namespace label for the webhooks (`AIOPS_WEBHOOK_NAMESPACE_LABEL`).
pub fn try_start_operator(name: &str, env: &[(&str, &str)]) -> anyhow::Result<OperatorProcess> {
    let mut all = vec![
        ("AIOPS_BIN", env!("CARGO_BIN_EXE_aiops-operator")),
        ("AIOPS_WEBHOOK_NAMESPACE_LABEL", E2E_LABEL),
        // The webhooks are scoped to the test's namespaces by that label;
        // admission policies in the API server would not be.
        ("AIOPS_ADMISSION_BACKEND", "webhook"),
    ];
    all.extend_from_slice(env);
    let printed = local_sh(&["start", name], &all)?;
    let port = printed
        .trim()
        .parse()
        .with_context(|| format!("local.sh start prints the port, not {printed:?}"))?;
    Ok(OperatorProcess {
        name: name.to_string(),
        port,
    })
}

/// Stops every local operator replica (a previous test binary's included).
pub fn stop_all_operators() {
    run_local_sh(&["stop-all"], &[]);
}

/// Removes the operator's webhook registrations (after the last replica stopped).
pub fn uninstall_webhooks() {
    run_local_sh(&["uninstall"], &[]);
}

/// The kubectl arguments that approve the Remediation `name` in
/// `namespace`, as a human reviewer would.
pub fn approval_patch<'a>(namespace: &'a str, name: &'a str) -> [&'a str; 8] {
    [
        "-n",
        namespace,
        "patch",
        "rem",
        name,
        "--type=merge",
        "-p",
        r#"{"spec":{"approved":true}}"#,
    ]
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

    /// Approves a Remediation with `kubectl patch` as the sandbox admin;
    /// returns (success, kubectl's output).
    pub fn approve(&self, namespace: &str, name: &str) -> (bool, String) {
        self.kubectl(&approval_patch(namespace, name))
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

/// Waits until a Remediation in `namespace` is in one of `phases` and returns it.
pub async fn wait_remediation(
    client: &Client,
    namespace: &str,
    phases: &[Phase],
    timeout: Duration,
) -> Remediation {
    wait_until(
        timeout,
        &format!("a remediation in {namespace} to reach {phases:?}"),
        || async {
            remediations(client, namespace)
                .await
                .into_iter()
                .find(|r| phases.contains(&phase(r)))
        },
    )
    .await
}

/// A Deployment `app` (container `web`, `replicas`) that rolled out
/// `nginx:1.25.5` and was then broken with `bad_image`, once its case is
/// `Proposed`, in a new e2e namespace named after `prefix`.
pub async fn broken_after_a_good_rollout(
    sandbox: &Sandbox,
    prefix: &str,
    replicas: i32,
    bad_image: &str,
    timeout: Duration,
) -> (TestNamespace, Remediation) {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let ns = sandbox.e2e_namespace(prefix).await;
    let client = &sandbox.client;
    super::workloads::create_deployment(
        client,
        &ns.name,
        "app",
        replicas,
        serde_json::json!({"name": "web", "image": "nginx:1.25.5"}),
    )
    .await;
    super::workloads::wait_deployment_rolled_out(client, &ns.name, "app").await;
    let broken = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": bad_image}]}}}});
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .patch("app", &PatchParams::default(), &Patch::Strategic(&broken))
        .await
        .expect("break the deployment");
    let proposed = wait_remediation(client, &ns.name, &[Phase::Proposed], timeout).await;
    (ns, proposed)
}
