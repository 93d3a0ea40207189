//! The admission webhook against the real sandbox API server (issue 3 §5).
//!
//! Each test starts the built binary (`aiops-operator run --webhook-only`)
//! as a local process on a free loopback port, with its own certificates,
//! its own operator namespace and ConfigMap, and registers it with a
//! ValidatingWebhookConfiguration (`clientConfig.url` + `caBundle`) whose
//! namespaceSelector matches only that test's namespaces. Nothing else in
//! the shared cluster is ever sent to it, and the configuration is deleted
//! when the test ends, panics included ([`LiveWebhook`]'s `Drop`).
//!
//! What is shown: Enforce denies every bad Kyverno pod-security fixture
//! naming the right policy and admits every good one (plus `:latest` and
//! untagged images); Audit admits with a warning, a Warning Event and a
//! PolicyReport result; a ConfigMap switch to Enforce applies within 2 s in
//! the same process; exempt namespaces are never blocked; rotating the
//! certificate files under load fails no request.
//!
//! Needs the sandbox (`make cluster-up`); fails loudly without it.
mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aiops_operator::admission::certs::CertAuthority;
use base64::Engine as _;
use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use support::{Sandbox, TestNamespace, repo_root, wait_until};

/// Namespaces carrying this label (value: the webhook's id) are sent to
/// that test's webhook, and only those.
const LIVE_LABEL: &str = "aiops-operator.dev/admission-live";
/// The ConfigMap each test's webhook reads its modes from.
const CONFIG_MAP: &str = "aiops-operator-config";
/// The webhook's name inside the configuration; the API server quotes it
/// in every denial.
const WEBHOOK_NAME: &str = "validate.aiops-operator.dev";
/// Where the Kyverno pod-security suites live, beside this repository.
const FIXTURES: &str = "../shared/conformance/kyverno/pod-security/baseline";
/// A privileged container with a pinned image: violates exactly one of our
/// policies, `disallow-privileged-containers` (Audit by default).
const PRIVILEGED_POLICY: &str = "disallow-privileged-containers";

/// What a test expects the webhook to do with a privileged pod right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Deny,
    /// Admit with a warning tagged with this mode (`Audit` or `Warn`).
    Warning(&'static str),
}

/// Which certificates the webhook starts with.
enum Certs<'a> {
    /// `aiops-operator certs --ip 127.0.0.1`, as an operator would.
    Cli,
    /// Issued by a CA the test keeps, so it can issue a replacement.
    From(&'a CertAuthority),
}

/// One webhook process registered with the sandbox for one test.
struct LiveWebhook {
    id: String,
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    ca_pem: String,
    configuration: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    client: kube::Client,
    /// Dropped after the configuration is deleted, so the operator
    /// namespace outlives every request the webhook could still get.
    operator_namespace: TestNamespace,
}

impl LiveWebhook {
    /// Starts the webhook with `config` as its ConfigMap data and registers it.
    async fn start(sandbox: &Sandbox, config: &[(&str, &str)], certs: Certs<'_>) -> LiveWebhook {
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
            Certs::Cli => {
                let out = Command::new(env!("CARGO_BIN_EXE_aiops-operator"))
                    .args(["certs", "--ip", "127.0.0.1", "--out"])
                    .arg(dir.path())
                    .output()
                    .expect("running aiops-operator certs");
                assert!(
                    out.status.success(),
                    "aiops-operator certs failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
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
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("webhook.log")).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_aiops-operator"));
        command
            .args(["run", "--webhook-only", "--webhook-listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--webhook-tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--webhook-tls-key")
            .arg(dir.path().join("tls.key"))
            .arg("--policies-dir")
            .arg(repo_root().join("policies"))
            .args(["--operator-namespace", &operator_namespace.name])
            .args(["--admission-config-map", CONFIG_MAP])
            .env("KUBECONFIG", &sandbox.kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the webhook logged, for a failing test's output.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("webhook.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// An HTTPS client trusting only this webhook's CA; with
    /// `fresh_connections` every request does its own TLS handshake.
    fn https_client(&self, fresh_connections: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM"),
            )
            .tls_info(true)
            .timeout(Duration::from_secs(10));
        if fresh_connections {
            builder = builder.pool_max_idle_per_host(0);
        }
        builder.build().expect("HTTPS client")
    }

    /// Waits until the process answers `/readyz` over TLS.
    async fn wait_listening(&mut self) {
        let client = self.https_client(true);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the webhook exited during start-up ({status}):\n{}",
                    self.log_tail()
                );
            }
            let ready = client.get(self.url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "the webhook did not become ready in 60 s:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Registers the shipped validating webhook (its rules, failurePolicy,
    /// sideEffects) pointed at this process and scoped to this test.
    async fn register(&self) {
        let shipped =
            std::fs::read_to_string(repo_root().join("manifests/webhook-configurations.yaml"))
                .expect("manifests/webhook-configurations.yaml");
        let mut webhook = yaml_documents(&shipped)
            .into_iter()
            .find(|doc| doc["kind"] == "ValidatingWebhookConfiguration")
            .and_then(|doc| doc["webhooks"].get(0).cloned())
            .expect("a ValidatingWebhookConfiguration with one webhook in the manifests");
        webhook["name"] = json!(WEBHOOK_NAME);
        webhook["clientConfig"] = json!({
            "url": self.url("/validate"),
            "caBundle": base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
        });
        webhook["namespaceSelector"] = json!({"matchLabels": {LIVE_LABEL: self.id}});
        // A debug build on a busy 2-core machine; the shipped 5 s is for release.
        webhook["timeoutSeconds"] = json!(15);
        let configuration: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": self.configuration, "labels": {LIVE_LABEL: self.id}},
            "webhooks": [webhook],
        }))
        .expect("ValidatingWebhookConfiguration");
        Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &configuration)
            .await
            .unwrap_or_else(|e| panic!("registering {}: {e}", self.configuration));
    }

    /// Sends `namespace` to this webhook and waits until the API server
    /// does so and the webhook answers as `expect` says.
    async fn serve(&self, namespace: &str, expect: Expect) {
        let patch = json!({"metadata": {"labels": {LIVE_LABEL: self.id}}});
        Api::<Namespace>::all(self.client.clone())
            .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("labelling namespace {namespace}: {e}"));
        self.wait_answering(namespace, expect).await;
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

    fn write_manifest(&self, file: &str, manifest: &Value) -> PathBuf {
        let path = self.dir.path().join(file);
        let mut out = std::fs::File::create(&path).expect("manifest file");
        out.write_all(manifest.to_string().as_bytes())
            .expect("writing manifest");
        path
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        kubectl(&self.kubectl, &self.kubeconfig, args)
    }

    /// The webhook's Prometheus metrics.
    async fn metrics(&self) -> String {
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

fn kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    match Command::new(kubectl)
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

/// A loopback port free right now; the webhook binds it a moment later.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Issues a new serving certificate from `ca` and swaps it into `dir` the
/// way a careful rotation does: write aside, then rename over (certificate
/// first, key second; the webhook must ride out the moment in between).
fn rotate_serving_cert(ca: &CertAuthority, dir: &Path) -> String {
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

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let value =
                <serde_yaml::Value as serde::Deserialize>::deserialize(doc).expect("valid YAML");
            serde_json::to_value(value).expect("YAML that maps to JSON")
        })
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

fn privileged_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "app",
            "image": "nginx:1.25.5",
            "securityContext": {"privileged": true},
        }]},
    })
}

fn pod_with_image(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]},
    })
}

/// Whether an API error text is our webhook denying the request and naming `policy`.
fn is_denial_by(text: &str, policy: &str) -> bool {
    text.contains(&format!(
        "admission webhook \"{WEBHOOK_NAME}\" denied the request"
    )) && text.contains(&format!("{policy}/"))
}

/// Why the API server refused to create an object.
#[derive(Debug)]
struct Refusal {
    /// HTTP status; 422 is the API server's own validation, which runs
    /// before validating admission webhooks.
    code: u16,
    message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl Refusal {
    fn is_denial_by(&self, policy: &str) -> bool {
        is_denial_by(&self.message, policy)
    }

    /// Refused by the API server's own object validation, so no admission
    /// webhook was ever asked.
    fn is_invalid_object(&self) -> bool {
        self.code == 422 && !self.message.contains("admission webhook")
    }
}

/// The group, version and kind a manifest names.
fn gvk_of(manifest: &Value) -> GroupVersionKind {
    let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = manifest["kind"].as_str().unwrap_or_default();
    GroupVersionKind::gvk(group, version, kind)
}

/// Creates any namespaced object from its manifest in `namespace`
/// (ignoring the namespace the manifest names). `dry_run` asks the API
/// server to run the whole admission chain but persist nothing.
async fn create_object(
    client: &kube::Client,
    namespace: &str,
    manifest: &Value,
    dry_run: bool,
) -> Result<(), Refusal> {
    let mut manifest = manifest.clone();
    manifest["metadata"]["namespace"] = json!(namespace);
    let resource = ApiResource::from_gvk(&gvk_of(&manifest));
    let object: DynamicObject = serde_json::from_value(manifest).map_err(|e| Refusal {
        code: 0,
        message: format!("not an object: {e}"),
    })?;
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        .create(&params, &object)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(status) => Refusal {
                code: status.code,
                message: status.message,
            },
            other => Refusal {
                code: 0,
                message: other.to_string(),
            },
        })
}

/// Asks the webhook directly, as the API server would, about creating
/// `manifest` in `namespace`; returns the denial message, if denied.
async fn review_directly(
    webhook: &LiveWebhook,
    namespace: &str,
    manifest: &Value,
) -> Option<String> {
    let mut object = manifest.clone();
    object["metadata"]["namespace"] = json!(namespace);
    let gvk = gvk_of(&object);
    let resource = ApiResource::from_gvk(&gvk);
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "direct-fixture-review",
            "kind": {"group": gvk.group, "version": gvk.version, "kind": gvk.kind},
            "resource": {"group": gvk.group, "version": gvk.version, "resource": resource.plural},
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "admission-live-test", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": true
        }
    });
    let reply: Value = webhook
        .https_client(false)
        .post(webhook.url("/validate"))
        .json(&review)
        .send()
        .await
        .expect("POST /validate")
        .json()
        .await
        .expect("an AdmissionReview reply");
    (reply["response"]["allowed"] == false).then(|| {
        reply["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

/// Our policy for a Kyverno baseline fixture directory.
fn policy_for_fixture(dir: &str) -> &str {
    match dir {
        // Kyverno tests host ports in two suites (a list check and an
        // alternate range check); our one policy covers both.
        "disallow-host-ports-range" => "disallow-host-ports",
        other => other,
    }
}

/// The 12 Kyverno baseline suites, sorted.
fn fixture_suites() -> Vec<String> {
    let fixtures = repo_root().join(FIXTURES);
    let mut dirs: Vec<String> = std::fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("reading {}: {e}", fixtures.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join(".chainsaw-test").is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 12, "the 12 Kyverno baseline suites: {dirs:?}");
    for dir in &dirs {
        let policy = policy_for_fixture(dir);
        assert!(
            repo_root()
                .join(format!("policies/{policy}.yaml"))
                .is_file(),
            "fixture {dir} maps to policy {policy}, which we do not ship"
        );
    }
    dirs
}

/// What became of the documents of some fixture files.
#[derive(Default)]
struct FixtureOutcome {
    /// One line per document that did not behave.
    problems: Vec<String>,
    tried: usize,
    /// Bad documents the API server's own validation refused before any
    /// webhook ran; the webhook's verdict on them was asked directly.
    checked_directly: Vec<String>,
}

impl FixtureOutcome {
    fn merge(&mut self, other: FixtureOutcome) {
        self.problems.extend(other.problems);
        self.tried += other.tried;
        self.checked_directly.extend(other.checked_directly);
    }
}

/// How a fixture document must fare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict<'a> {
    /// Denied by our webhook, naming this policy.
    DeniedBy(&'a str),
    Admitted,
}

/// Creates every document of one fixture file in `namespace` and checks
/// each against `verdict`. A bad document that the API server rejects as
/// invalid before admission (422) is judged by asking the same webhook
/// directly, and listed in `checked_directly`.
async fn check_fixture_file(
    webhook: &LiveWebhook,
    namespace: &str,
    file: &Path,
    verdict: Verdict<'_>,
) -> FixtureOutcome {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("reading fixture {}: {e}", file.display()));
    let documents = yaml_documents(&text);
    assert!(
        !documents.is_empty(),
        "{} holds no documents",
        file.display()
    );
    let mut outcome = FixtureOutcome {
        tried: documents.len(),
        ..FixtureOutcome::default()
    };
    for doc in &documents {
        let label = format!(
            "{} {} {}",
            file.strip_prefix(repo_root()).unwrap_or(file).display(),
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?"),
        );
        let created = create_object(&webhook.client, namespace, doc, false).await;
        match (verdict, created) {
            (Verdict::Admitted, Ok(())) => {}
            (Verdict::Admitted, Err(refusal)) => {
                outcome
                    .problems
                    .push(format!("{label}: refused: {refusal}"));
            }
            (Verdict::DeniedBy(_), Ok(())) => {
                outcome
                    .problems
                    .push(format!("{label}: admitted, expected a denial"));
            }
            (Verdict::DeniedBy(policy), Err(refusal)) if refusal.is_denial_by(policy) => {}
            (Verdict::DeniedBy(policy), Err(refusal)) if refusal.is_invalid_object() => {
                match review_directly(webhook, namespace, doc).await {
                    // Asked directly, there is no API server wording around it.
                    Some(message) if message.contains(&format!("{policy}/")) => {
                        outcome.checked_directly.push(label);
                    }
                    Some(message) => outcome.problems.push(format!(
                        "{label}: invalid for the API server, and our direct denial does not name {policy}: {message}"
                    )),
                    None => outcome.problems.push(format!(
                        "{label}: invalid for the API server, and our webhook allows it directly"
                    )),
                }
            }
            (Verdict::DeniedBy(policy), Err(refusal)) => {
                outcome
                    .problems
                    .push(format!("{label}: not denied by {policy}: {refusal}"));
            }
        }
    }
    outcome
}

fn assert_fixtures_behaved(what: &str, outcome: &FixtureOutcome) {
    assert!(
        outcome.problems.is_empty(),
        "{what}: {} of {} fixture documents misbehaved:\n{}",
        outcome.problems.len(),
        outcome.tried,
        outcome.problems.join("\n")
    );
    eprintln!(
        "{what}: all {} fixture documents behaved; {} bad ones were invalid for the API server \
         itself (refused before admission), and our webhook denied them when asked directly:\n  {}",
        outcome.tried,
        outcome.checked_directly.len(),
        outcome.checked_directly.join("\n  ")
    );
}

#[tokio::test]
async fn enforce_with_all_policies_denies_every_bad_fixture_naming_its_policy() {
    let sandbox = Sandbox::connect().await;
    let webhook = LiveWebhook::start(&sandbox, &[("mode", "Enforce")], Certs::Cli).await;
    let suites = fixture_suites();
    let fixtures = repo_root().join(FIXTURES);

    // One namespace per suite: the suites reuse object names.
    let (webhook, sandbox, fixtures) = (&webhook, &sandbox, &fixtures);
    let outcomes: Vec<FixtureOutcome> = futures::stream::iter(suites)
        .map(|suite| async move {
            let ns = sandbox.namespace("awh-bad").await;
            webhook.serve(&ns.name, Expect::Deny).await;
            let verdict = Verdict::DeniedBy(policy_for_fixture(&suite));
            let dir = fixtures.join(&suite).join(".chainsaw-test");
            let mut outcome = FixtureOutcome::default();
            for file in ["pod-bad.yaml", "podcontroller-bad.yaml"] {
                outcome
                    .merge(check_fixture_file(webhook, &ns.name, &dir.join(file), verdict).await);
            }
            outcome
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut total = FixtureOutcome::default();
    outcomes.into_iter().for_each(|o| total.merge(o));
    assert_fixtures_behaved("all 12 policies in Enforce", &total);
}

/// Each suite the way Kyverno's chainsaw test runs it: the suite's policy
/// in Enforce; here the other 11 are in Warn (chainsaw installs no other
/// policy). Some good fixtures break another baseline control on purpose
/// (host-process ones need hostNetwork; proc-mount ones use untagged
/// images), so they can only be admitted with that policy not enforcing.
#[tokio::test]
async fn each_suite_as_chainsaw_runs_it_admits_good_and_denies_bad_fixtures() {
    let sandbox = Sandbox::connect().await;
    let fixtures = repo_root().join(FIXTURES);
    let (sandbox, fixtures) = (&sandbox, &fixtures);
    let outcomes: Vec<FixtureOutcome> = futures::stream::iter(fixture_suites())
        .map(|suite| async move {
            let policy = policy_for_fixture(&suite);
            let policy_modes = format!("{policy}: Enforce\n");
            let webhook = LiveWebhook::start(
                sandbox,
                &[("mode", "Warn"), ("policyModes", &policy_modes)],
                Certs::Cli,
            )
            .await;
            let ns = sandbox.namespace("awh-suite").await;
            let probe = if policy == PRIVILEGED_POLICY {
                Expect::Deny
            } else {
                Expect::Warning("Warn")
            };
            webhook.serve(&ns.name, probe).await;
            let dir = fixtures.join(&suite).join(".chainsaw-test");
            let mut outcome = FixtureOutcome::default();
            for (file, verdict) in [
                ("pod-good.yaml", Verdict::Admitted),
                ("podcontroller-good.yaml", Verdict::Admitted),
                ("pod-bad.yaml", Verdict::DeniedBy(policy)),
                ("podcontroller-bad.yaml", Verdict::DeniedBy(policy)),
            ] {
                outcome
                    .merge(check_fixture_file(&webhook, &ns.name, &dir.join(file), verdict).await);
            }
            outcome
        })
        .buffer_unordered(3)
        .collect()
        .await;
    let mut total = FixtureOutcome::default();
    outcomes.into_iter().for_each(|o| total.merge(o));
    assert_fixtures_behaved("each suite's policy in Enforce", &total);
}

#[tokio::test]
async fn enforce_denies_latest_and_untagged_images_and_admits_pinned_ones() {
    let sandbox = Sandbox::connect().await;
    let webhook = LiveWebhook::start(&sandbox, &[("mode", "Enforce")], Certs::Cli).await;
    let ns = sandbox.namespace("awh-tag").await;
    webhook.serve(&ns.name, Expect::Deny).await;
    let client = &sandbox.client;

    for (name, image) in [
        ("latest", "nginx:latest"),
        ("untagged", "nginx"),
        ("registry-latest", "registry.example/team/app:latest"),
        (
            "registry-port-latest",
            "registry.example:5000/team/app:latest",
        ),
        // A registry's port is not a tag.
        ("registry-port-untagged", "registry.example:5000/team/app"),
    ] {
        let error = create_object(client, &ns.name, &pod_with_image(name, image), false)
            .await
            .expect_err(&format!("pod with image {image} must be denied"));
        assert!(
            error.is_denial_by("disallow-latest-tag"),
            "{image}: {error}"
        );
        let deployment = support::deployment(name, 1, json!({"name": "app", "image": image}));
        let error = create_object(client, &ns.name, &deployment, false)
            .await
            .expect_err(&format!("Deployment with image {image} must be denied"));
        assert!(
            error.is_denial_by("disallow-latest-tag"),
            "{image}: {error}"
        );
    }

    create_object(
        client,
        &ns.name,
        &pod_with_image("pinned", "nginx:1.25.5"),
        false,
    )
    .await
    .expect("a pinned image is admitted");
    let deployment =
        support::deployment("pinned", 1, json!({"name": "app", "image": "nginx:1.25.5"}));
    create_object(client, &ns.name, &deployment, false)
        .await
        .expect("a Deployment with a pinned image is admitted");
    // Its ReplicaSet and Pod, created by the controllers, pass the webhook too.
    wait_until(
        Duration::from_secs(60),
        "the pinned Deployment's pod",
        || async {
            let pods = support::pods(client, &ns.name, "app=pinned").await;
            (!pods.is_empty()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn audit_admits_with_a_warning_an_event_and_a_policy_report() {
    let sandbox = Sandbox::connect().await;
    // The cluster may lack the report CRD; ours is written for that case.
    let crd = repo_root().join("manifests/policyreport-crd.yaml");
    let (ok, text) = sandbox.kubectl(&["apply", "-f", crd.to_str().unwrap_or_default()]);
    assert!(ok, "installing the PolicyReport CRD: {text}");
    let (ok, text) = sandbox.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/policyreports.wgpolicyk8s.io",
    ]);
    assert!(ok, "PolicyReport CRD not established: {text}");

    let webhook = LiveWebhook::start(&sandbox, &[("mode", "Audit")], Certs::Cli).await;
    let ns = sandbox.namespace("awh-audit").await;
    webhook.serve(&ns.name, Expect::Warning("Audit")).await;

    let manifest = webhook.write_manifest("audited.yaml", &privileged_pod("audited"));
    let (ok, text) = webhook.kubectl(&[
        "apply",
        "-n",
        &ns.name,
        "-f",
        manifest.to_str().unwrap_or_default(),
    ]);
    assert!(ok, "an audited pod is admitted: {text}");
    assert!(
        text.contains(&format!("Warning: [Audit] {PRIVILEGED_POLICY}/")),
        "kubectl shows the admission warning: {text}"
    );
    let pods: Api<Pod> = Api::namespaced(sandbox.client.clone(), &ns.name);
    assert!(
        pods.get_opt("audited").await.expect("get pod").is_some(),
        "the pod exists"
    );

    let events: Api<Event> = Api::namespaced(sandbox.client.clone(), &ns.name);
    let event = wait_until(
        Duration::from_secs(30),
        "a Warning Event on the pod",
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.involved_object.kind.as_deref() == Some("Pod")
                        && e.involved_object.name.as_deref() == Some("audited")
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.contains(PRIVILEGED_POLICY))
                })
        },
    )
    .await;
    eprintln!(
        "event: reason={:?} message={:?}",
        event.reason, event.message
    );

    let reports_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    );
    let reports: Api<DynamicObject> =
        Api::namespaced_with(sandbox.client.clone(), &ns.name, &reports_resource);
    let result = wait_until(
        Duration::from_secs(30),
        "a PolicyReport result for the pod",
        || async {
            let list = reports.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find_map(|report| {
                report.data["results"]
                    .as_array()?
                    .iter()
                    .find(|r| {
                        r["policy"] == PRIVILEGED_POLICY
                            && r["result"] == "fail"
                            && r["resources"]
                                .as_array()
                                .is_some_and(|res| res.iter().any(|o| o["name"] == "audited"))
                    })
                    .cloned()
            })
        },
    )
    .await;
    assert!(
        result["rule"].as_str().is_some_and(|r| !r.is_empty()),
        "the result names the rule: {result}"
    );
}

#[tokio::test]
async fn config_map_switch_from_audit_to_enforce_applies_within_two_seconds() {
    let sandbox = Sandbox::connect().await;
    let mut webhook = LiveWebhook::start(&sandbox, &[("mode", "Audit")], Certs::Cli).await;
    let ns = sandbox.namespace("awh-switch").await;
    webhook.serve(&ns.name, Expect::Warning("Audit")).await;
    let pid = webhook.pid();

    let bad = privileged_pod("switch");
    create_object(&sandbox.client, &ns.name, &bad, true)
        .await
        .expect("admitted while in Audit");

    let config_maps: Api<ConfigMap> =
        Api::namespaced(sandbox.client.clone(), &webhook.operator_namespace.name);
    let patch = json!({"data": {"mode": "Enforce"}});
    config_maps
        .patch(CONFIG_MAP, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patching the ConfigMap");
    let switched = Instant::now();
    // Tight polling (not `wait_until`'s 250 ms) so the measurement is honest.
    let took = loop {
        match create_object(&sandbox.client, &ns.name, &bad, true).await {
            Err(error) if error.is_denial_by(PRIVILEGED_POLICY) => break switched.elapsed(),
            Err(error) => panic!("unexpected error while switching: {error}"),
            Ok(()) if switched.elapsed() > Duration::from_secs(20) => {
                panic!("still admitted 20 s after switching to Enforce")
            }
            Ok(()) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    eprintln!("Audit -> Enforce took effect after {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "the switch took {took:?}, more than 2 s"
    );
    assert_eq!(webhook.pid(), pid, "same process");
    assert!(
        matches!(webhook.child.try_wait(), Ok(None)),
        "the webhook process kept running (no restart)"
    );
}

#[tokio::test]
async fn exempt_namespaces_are_never_blocked() {
    let sandbox = Sandbox::connect().await;
    let exempt = sandbox.namespace("awh-exempt").await;
    let exempt_list = format!("- {}\n", exempt.name);
    let webhook = LiveWebhook::start(
        &sandbox,
        &[("mode", "Enforce"), ("exemptNamespaces", &exempt_list)],
        Certs::Cli,
    )
    .await;
    let enforced = sandbox.namespace("awh-enforced").await;
    webhook.serve(&enforced.name, Expect::Deny).await;
    // The exempt namespace is labelled too, so the API server does call the
    // webhook for it: the exemption is the webhook's, not the selector's.
    let patch = json!({"metadata": {"labels": {LIVE_LABEL: webhook.id}}});
    Api::<Namespace>::all(sandbox.client.clone())
        .patch(&exempt.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("labelling the exempt namespace");

    let exempt_before = exempt_count(&webhook.metrics().await);
    let client = &sandbox.client;
    for (name, manifest) in [
        ("privileged", privileged_pod("privileged")),
        ("latest", pod_with_image("latest", "nginx:latest")),
    ] {
        // The namespace label reaches the API server's cache asynchronously;
        // wait until the webhook has actually been asked.
        wait_until(
            Duration::from_secs(30),
            "the webhook exempting a request",
            || async {
                create_object(client, &exempt.name, &manifest, true)
                    .await
                    .unwrap_or_else(|e| panic!("{name} refused in the exempt namespace: {e}"));
                (exempt_count(&webhook.metrics().await) > exempt_before).then_some(())
            },
        )
        .await;
        create_object(client, &exempt.name, &manifest, false)
            .await
            .unwrap_or_else(|e| panic!("{name} refused in the exempt namespace: {e}"));
        let error = create_object(client, &enforced.name, &manifest, false)
            .await
            .expect_err("the same pod is denied in a namespace that is not exempt");
        assert!(error.message.contains(WEBHOOK_NAME), "{error}");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &exempt.name);
    assert_eq!(
        pods.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );
}

/// `aiops_admission_requests_total{endpoint="validate",result="exempt"}`.
fn exempt_count(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("aiops_admission_requests_total{")
                && l.contains("endpoint=\"validate\"")
                && l.contains("result=\"exempt\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A minimal v1 AdmissionReview of a compliant pod, for direct requests.
fn review_of_good_pod(uid: usize) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("rotation-{uid}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "direct",
            "namespace": "rotation",
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": pod_with_image("direct", "nginx:1.25.5"),
            "oldObject": null,
            "dryRun": false
        }
    })
}

/// The DER of the certificate the webhook serves on a new connection.
async fn served_certificate(webhook: &LiveWebhook) -> Option<Vec<u8>> {
    let response = webhook
        .https_client(true)
        .get(webhook.url("/healthz"))
        .send()
        .await
        .ok()?;
    let info = response.extensions().get::<reqwest::tls::TlsInfo>()?;
    info.peer_certificate().map(<[u8]>::to_vec)
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("certificate PEM")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() {
    let sandbox = Sandbox::connect().await;
    let ca = CertAuthority::generate("admission-live rotation CA").expect("CA");
    let webhook =
        Arc::new(LiveWebhook::start(&sandbox, &[("mode", "Enforce")], Certs::From(&ca)).await);
    let ns = sandbox.namespace("awh-rotate").await;
    webhook.serve(&ns.name, Expect::Deny).await;
    let original = served_certificate(&webhook)
        .await
        .expect("served certificate");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let through_apiserver = Arc::new(AtomicUsize::new(0));
    let direct = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    // Through the API server: dry-run creates, alternating a compliant pod
    // (must be admitted) and a privileged one (must be denied by us; any
    // webhook call failure would surface as a different error, since the
    // failurePolicy is Fail).
    for worker in 0..2 {
        let (stop, failures, count) = (stop.clone(), failures.clone(), through_apiserver.clone());
        let (client, namespace) = (sandbox.client.clone(), ns.name.clone());
        load.push(tokio::spawn(async move {
            let good = pod_with_image("good", "nginx:1.25.5");
            let bad = privileged_pod("bad");
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let want_denied = (i + worker) % 2 == 1;
                let manifest = if want_denied { &bad } else { &good };
                let outcome = create_object(&client, &namespace, manifest, true).await;
                let problem = match (outcome, want_denied) {
                    (Ok(()), false) => None,
                    (Err(e), true) if e.is_denial_by(PRIVILEGED_POLICY) => None,
                    (Ok(()), true) => Some("privileged pod admitted".to_string()),
                    (Err(e), _) => Some(e.to_string()),
                };
                if let Some(problem) = problem {
                    failures
                        .lock()
                        .expect("lock")
                        .push(format!("apiserver: {problem}"));
                }
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    // Directly over TLS with a new handshake per request, so handshakes
    // happen right across the swap.
    for _ in 0..2 {
        let (stop, failures, count) = (stop.clone(), failures.clone(), direct.clone());
        let webhook = webhook.clone();
        load.push(tokio::spawn(async move {
            let client = webhook.https_client(true);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let sent = client
                    .post(webhook.url("/validate"))
                    .json(&review_of_good_pod(i))
                    .send()
                    .await;
                let problem = match sent {
                    Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                        Ok(body) if body["response"]["allowed"] == true => None,
                        Ok(body) => Some(format!("not allowed: {body}")),
                        Err(e) => Some(format!("unreadable reply: {e}")),
                    },
                    Ok(r) => Some(format!("HTTP {}", r.status())),
                    Err(e) => Some(format!("{e:?}")),
                };
                if let Some(problem) = problem {
                    failures
                        .lock()
                        .expect("lock")
                        .push(format!("direct: {problem}"));
                }
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }

    // Let traffic flow, rotate, and keep it flowing until the new
    // certificate is served and a while after.
    wait_until(Duration::from_secs(30), "load before rotation", || async {
        (through_apiserver.load(Ordering::Relaxed) >= 10 && direct.load(Ordering::Relaxed) >= 10)
            .then_some(())
    })
    .await;
    let rotated_pem = rotate_serving_cert(&ca, webhook.dir.path());
    let rotated = der_of(&rotated_pem);
    assert_ne!(rotated, original);
    let rotated_at = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the new certificate served",
        || async { (served_certificate(&webhook).await? == rotated).then_some(()) },
    )
    .await;
    let swapped_after = rotated_at.elapsed();
    let (api_mark, direct_mark) = (
        through_apiserver.load(Ordering::Relaxed),
        direct.load(Ordering::Relaxed),
    );
    wait_until(Duration::from_secs(30), "load after rotation", || async {
        (through_apiserver.load(Ordering::Relaxed) >= api_mark + 10
            && direct.load(Ordering::Relaxed) >= direct_mark + 10)
            .then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }

    let failures = failures.lock().expect("lock");
    eprintln!(
        "rotation: new certificate served after {swapped_after:?}; {} requests through the API server, {} direct; {} failed",
        through_apiserver.load(Ordering::Relaxed),
        direct.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed during rotation:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
