//! One webhook process of this build, registered with the sandbox for one
//! test and unregistered when the test ends.
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use aiops_operator::admission::certs::CertAuthority;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::objects::{is_denial_by, privileged_pod};
use crate::support::{self, Sandbox, TestNamespace, wait_until};
use crate::{CONFIG_MAP, LIVE_LABEL, PRIVILEGED_POLICY};

/// What a test expects the webhook to do with a privileged pod right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Deny,
    /// Admit with a warning tagged with this mode (`Audit` or `Warn`).
    Warning(&'static str),
}

/// Which certificates the webhook starts with.
pub enum Certs<'a> {
    /// `aiops-operator certs --ip 127.0.0.1`, as an operator would.
    Cli,
    /// Issued by a CA the test keeps, so it can issue a replacement.
    From(&'a CertAuthority),
}

/// How the webhook process runs, beyond its ConfigMap and certificates.
#[derive(Default)]
pub struct Options {
    /// Policy directory (default: the repository's `policies/`).
    pub policies_dir: Option<PathBuf>,
    /// `POD_NAME` of the process, which then also polls its policy files
    /// every second.
    pub pod_name: Option<String>,
    /// More flags for `aiops-operator run`.
    pub extra_args: Vec<String>,
}

/// A temporary copy of the repository's `policies/`, for a test that adds
/// its own policies beside them (the start probe needs the baseline ones).
pub fn project_policies_copy() -> tempfile::TempDir {
    let policies = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(support::repo_root().join("policies")).expect("policies/") {
        let path = entry.expect("policy entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            let name = path.file_name().expect("file name");
            std::fs::copy(&path, policies.path().join(name)).expect("copying a policy");
        }
    }
    policies
}

/// One webhook process registered with the sandbox for one test.
pub struct LiveWebhook {
    pub id: String,
    port: u16,
    pub child: Child,
    pub dir: tempfile::TempDir,
    ca_pem: String,
    configuration: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    pub client: kube::Client,
    /// Dropped after the configuration is deleted, so the operator
    /// namespace outlives every request the webhook could still get.
    pub operator_namespace: TestNamespace,
}

impl LiveWebhook {
    /// Starts the webhook with `config` as its ConfigMap data and registers it.
    pub async fn start(
        sandbox: &Sandbox,
        config: &[(&str, &str)],
        certs: Certs<'_>,
    ) -> LiveWebhook {
        Self::start_with(sandbox, config, certs, Options::default()).await
    }

    /// [`LiveWebhook::start`] with the process options.
    pub async fn start_with(
        sandbox: &Sandbox,
        config: &[(&str, &str)],
        certs: Certs<'_>,
        options: Options,
    ) -> LiveWebhook {
        let operator_namespace = sandbox.namespace("awh-op").await;
        let data: BTreeMap<String, String> = config
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let config_map: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP},
            "data": data,
        }))
        .expect("ConfigMap manifest");
        Api::<ConfigMap>::namespaced(sandbox.client.clone(), &operator_namespace.name)
            .create(&PostParams::default(), &config_map)
            .await
            .expect("creating the admission ConfigMap");

        let dir = tempfile::tempdir().expect("temp dir");
        match certs {
            Certs::Cli => support::generate_certs(dir.path()).unwrap_or_else(|e| panic!("{e:#}")),
            Certs::From(ca) => {
                std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).expect("ca.crt");
                rotate_serving_cert(ca, dir.path());
            }
        }
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).expect("ca.crt");

        // The id is the operator namespace's unique suffix: one webhook per namespace.
        let id = operator_namespace
            .name
            .rsplit('-')
            .next()
            .unwrap_or("x")
            .to_string();
        let port = support::free_port().unwrap_or_else(|e| panic!("{e:#}"));
        let policies = options
            .policies_dir
            .unwrap_or_else(|| support::repo_root().join("policies"));
        let mut command = support::webhook_command_with_policies(dir.path(), port, &policies)
            .unwrap_or_else(|e| panic!("{e:#}"));
        if let Some(pod_name) = &options.pod_name {
            command
                .env("POD_NAME", pod_name)
                .args(["--policies-poll-seconds", "1"]);
        }
        command.args(&options.extra_args);
        // The API server's admission policies are cluster-wide, whatever
        // namespaces this webhook is registered for, and these tests judge
        // the webhook itself: the API server backend only when asked for.
        if !options
            .extra_args
            .iter()
            .any(|a| a.starts_with("--admission-backend"))
        {
            command.args(["--admission-backend", "webhook"]);
        }
        command
            // Its own configuration: the one whose CA and rules it owns.
            .args(["--validating-webhook-config", &format!("aiops-live-{id}")])
            .args(["--operator-namespace", &operator_namespace.name])
            .args(["--admission-config-map", CONFIG_MAP])
            .env("KUBECONFIG", &sandbox.kubeconfig)
            .env("RUST_LOG", "info");
        let child = command.spawn().expect("starting aiops-operator run");

        let mut webhook = LiveWebhook {
            configuration: format!("aiops-live-{id}"),
            id,
            port,
            child,
            dir,
            ca_pem,
            kubectl: sandbox.kubectl_path(),
            kubeconfig: sandbox.kubeconfig.clone(),
            client: sandbox.client.clone(),
            operator_namespace,
        };
        webhook.wait_listening().await;
        webhook.register().await;
        webhook
    }

    /// The name of the ValidatingWebhookConfiguration this webhook registered.
    pub fn configuration_name(&self) -> &str {
        &self.configuration
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the webhook logged, for a failing test's output.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("webhook.log")).unwrap_or_default();
        support::last_lines(&log, 40)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// An HTTPS client trusting only this webhook's CA; with
    /// `fresh_connections` every request does its own TLS handshake.
    pub fn https_client(&self, fresh_connections: bool) -> reqwest::Client {
        support::https_client(&self.ca_pem, fresh_connections).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Waits until the process answers `/readyz` over TLS.
    async fn wait_listening(&mut self) {
        let (client, base) = (self.https_client(true), self.url(""));
        let ready =
            support::wait_webhook_ready(&mut self.child, &client, &base, Duration::from_secs(60))
                .await;
        if let Err(error) = ready {
            panic!("{error}:\n{}", self.log_tail());
        }
    }

    /// Registers the shipped validating webhook (its rules, failurePolicy,
    /// sideEffects) pointed at this process and scoped to this test.
    async fn register(&self) {
        let mut configuration = support::validating_configuration(
            &self.configuration,
            &self.url("/validate"),
            &self.ca_pem,
            LIVE_LABEL,
            &self.id,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        // A debug build on a busy 2-core machine; the shipped 5 s is for release.
        for webhook in configuration.webhooks.iter_mut().flatten() {
            webhook.timeout_seconds = Some(15);
        }
        Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &configuration)
            .await
            .unwrap_or_else(|e| panic!("registering {}: {e}", self.configuration));
    }

    /// Sends `namespace` to this webhook and waits until the API server
    /// does so and the webhook answers as `expect` says.
    pub async fn serve(&self, namespace: &str, expect: Expect) {
        self.label_namespace(namespace).await;
        self.wait_answering(namespace, expect).await;
    }

    /// Labels `namespace` so the API server sends its requests here.
    pub async fn label_namespace(&self, namespace: &str) {
        let patch = json!({"metadata": {"labels": {LIVE_LABEL: self.id}}});
        Api::<Namespace>::all(self.client.clone())
            .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("labelling namespace {namespace}: {e}"));
    }

    /// Polls a server-side dry run of a privileged pod until the answer
    /// shows that the registration is live and the expected mode applies
    /// (webhook configurations and namespace labels reach the API server's
    /// caches asynchronously, and the ConfigMap is read after start-up).
    async fn wait_answering(&self, namespace: &str, expect: Expect) {
        let manifest = self.write_manifest("probe.yaml", &privileged_pod("probe"));
        let what = format!("webhook {} answering {expect:?} in {namespace}", self.id);
        wait_until(Duration::from_secs(60), &what, || async {
            let (ok, text) = self.kubectl(&[
                "create",
                "--dry-run=server",
                "-n",
                namespace,
                "-f",
                manifest.to_str().unwrap_or_default(),
            ]);
            let answered = match expect {
                Expect::Deny => !ok && is_denial_by(&text, PRIVILEGED_POLICY),
                Expect::Warning(mode) => {
                    ok && text.contains(&format!("Warning: [{mode}] {PRIVILEGED_POLICY}/"))
                }
            };
            answered.then_some(())
        })
        .await;
    }

    pub fn write_manifest(&self, file: &str, manifest: &Value) -> PathBuf {
        let path = self.dir.path().join(file);
        let mut out = std::fs::File::create(&path).expect("manifest file");
        out.write_all(manifest.to_string().as_bytes())
            .expect("writing manifest");
        path
    }

    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        support::kubectl(&self.kubectl, &self.kubeconfig, args)
    }

    /// The webhook's Prometheus metrics.
    pub async fn metrics(&self) -> String {
        self.https_client(false)
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }
}

impl Drop for LiveWebhook {
    fn drop(&mut self) {
        // Unregister first so the API server stops calling a process that
        // is about to go away. Drop cannot be async; kubectl works even
        // while a panicking test unwinds through its runtime.
        let (ok, text) = self.kubectl(&[
            "delete",
            "validatingwebhookconfiguration",
            &self.configuration,
            "--ignore-not-found",
            "--wait=false",
        ]);
        if !ok {
            eprintln!(
                "could not delete ValidatingWebhookConfiguration {}: {text}",
                self.configuration
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- webhook {} log (pid {}) ---\n{}",
                self.id,
                self.child.id(),
                self.log_tail()
            );
        }
    }
}

/// Issues a new serving certificate from `ca` and swaps it into `dir` the
/// way a careful rotation does: write aside, then rename over (certificate
/// first, key second; the webhook must ride out the moment in between).
pub fn rotate_serving_cert(ca: &CertAuthority, dir: &Path) -> String {
    let serving = ca
        .issue_serving(&[], &["127.0.0.1".parse().expect("IP")])
        .expect("issuing a serving certificate");
    for (file, pem) in [
        ("tls.crt", &serving.cert_pem),
        ("tls.key", &serving.key_pem),
    ] {
        let staged = dir.join(format!(".{file}.new"));
        std::fs::write(&staged, pem).expect("staging certificate");
        std::fs::rename(&staged, dir.join(file)).expect("swapping certificate");
    }
    serving.cert_pem
}
