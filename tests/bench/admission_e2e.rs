//! `make bench-admission-e2e`: what users feel. Bare Pod creates through the
//! sandbox API server from concurrent clients, with our webhook registered
//! (release binary, Enforce, all 12 policies, compliant pods, so every
//! create is evaluated and allowed) and without it, in the same run; rows
//! for 10 and 50 clients; writes `target/bench/admission-e2e.json`.
//!
//! A Cargo bench target (`harness = false`) rather than an example, because
//! Cargo hands benches `CARGO_BIN_EXE_aiops-operator`, the optimised binary
//! of the same build: the webhook measured is exactly the one we ship.
//!
//! Method, per client count: several rounds, each one phase with the
//! webhook and one without, in alternating order so that drift (other work
//! on this shared 2-core machine, etcd growth) hits both alike. Each phase
//! starts from an empty namespace, warms up for a second (not recorded),
//! then records every create's latency for `BENCH_E2E_SECONDS`. Pods carry
//! a scheduling gate, so neither the scheduler nor kwok works on them while
//! we measure: the figures are the API server's create path (authn, authz,
//! admission incl. our webhook, validation, etcd), nothing downstream.
//!
//! Backends (`BENCH_E2E_BACKENDS`, default `webhook,vap,vap-policies,webhook-vap,vap-one,noop`),
//! each measured against the same `none` phases (nothing registered) in
//! alternating rounds of one run; each row of the JSON carries `backend`:
//! - `webhook`: our webhook's `/validate` (12 pattern policies, Enforce);
//! - `noop`: its `/noop` endpoint (parses the review, allows it, evaluates
//!   nothing): the floor of any webhook of this stack;
//! - `vap`: no webhook; the same baseline checks as CEL (`pod-security-vpol`
//!   baseline, 11 ValidatingPolicies, read in place from `../shared`) as the
//!   ValidatingAdmissionPolicies the operator generates, rules with the same
//!   match merged into one policy (`--admission-backend vap`);
//! - `vap-unmerged`: the same rules, one admission policy per rule (what a
//!   one-to-one translation would cost);
//! - `vap-one`: one admission policy with one cheap expression (the first
//!   container is not privileged): the floor of the API server's own
//!   admission policies, as `noop` is the webhook's;
//! - `vap-policies`: no webhook; the rules of the project's 12 `policies/`
//!   that have an exact CEL form (all but its two JMESPath rules), merged,
//!   as `--admission-backend vap` generates them;
//! - `webhook-vap`: both, what `--admission-backend vap` costs on a default
//!   install, where two JMESPath rules keep the webhook called for pods (it
//!   evaluates all 12 policies here rather than the two left to it: that
//!   evaluation is some 25 µs of each call); `auto` keeps such rules in
//!   the webhook instead;
//! - `kyverno` (opt-in, not in the default list: its first build takes 20
//!   minutes and more): Kyverno's own admission controller with the same 12
//!   policies, Enforce, run out of cluster by `tests/bench/kyverno.sh`
//!   (see [`kyverno`]).
//!
//! `cargo test --all-targets` also runs bench targets, without `--bench`;
//! then this does nothing.
#[path = "../support/mod.rs"]
mod support;

#[path = "admission_e2e/kyverno.rs"]
mod kyverno;
#[path = "admission_e2e/policies.rs"]
mod policies;

use policies::{
    CEL_POLICIES, VAP_LABEL, admission_policies, admission_policy_pair, one_check_spec,
    project_policies,
};
use std::path::PathBuf;
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use support::{Sandbox, repo_root};

/// Namespaces carrying this label are sent to the benchmark's webhook.
const BENCH_LABEL: &str = "aiops-operator.dev/bench-e2e";

/// Knobs, from the environment so `make` can pass them through.
struct Settings {
    clients: Vec<usize>,
    rounds: usize,
    warmup: Duration,
    measure: Duration,
    backends: Vec<Backend>,
    out: PathBuf,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or(default.to_string());
        let clients = var("BENCH_E2E_CLIENTS", "10,50")
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("BENCH_E2E_CLIENTS: comma-separated client counts")?;
        let backends = var(
            "BENCH_E2E_BACKENDS",
            "webhook,vap,vap-policies,webhook-vap,vap-one,noop",
        )
        .split(',')
        .map(|b| Backend::parse(b.trim()))
        .collect::<Result<Vec<_>>>()?;
        Ok(Settings {
            clients,
            rounds: var("BENCH_E2E_ROUNDS", "3")
                .parse()
                .context("BENCH_E2E_ROUNDS")?,
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(
                var("BENCH_E2E_SECONDS", "8")
                    .parse()
                    .context("BENCH_E2E_SECONDS")?,
            ),
            out: repo_root().join("target/bench/admission-e2e.json"),
            backends,
        })
    }
}

/// What admits the pods in one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    None,
    Webhook,
    Noop,
    Vap,
    VapUnmerged,
    VapOne,
    VapPolicies,
    WebhookAndVap,
    Kyverno,
}

impl Backend {
    fn parse(text: &str) -> Result<Backend> {
        match text {
            "webhook" => Ok(Backend::Webhook),
            "noop" => Ok(Backend::Noop),
            "vap" => Ok(Backend::Vap),
            "vap-unmerged" => Ok(Backend::VapUnmerged),
            "vap-one" => Ok(Backend::VapOne),
            "vap-policies" => Ok(Backend::VapPolicies),
            "webhook-vap" => Ok(Backend::WebhookAndVap),
            "kyverno" => Ok(Backend::Kyverno),
            other => anyhow::bail!(
                "BENCH_E2E_BACKENDS: unknown backend {other:?} (webhook, vap, vap-unmerged, vap-one, vap-policies, webhook-vap, noop, kyverno)"
            ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::Webhook => "webhook",
            Backend::Noop => "noop",
            Backend::Vap => "vap",
            Backend::VapUnmerged => "vap-unmerged",
            Backend::VapOne => "vap-one",
            Backend::VapPolicies => "vap-policies",
            Backend::WebhookAndVap => "webhook-vap",
            Backend::Kyverno => "kyverno",
        }
    }
}

fn main() -> ExitCode {
    support::run_benchmark("admission_e2e", "bench-admission-e2e", run)
}

/// Deletes what the benchmark created and stops the webhook, also when
/// the benchmark fails half-way.
struct Cleanup {
    sandbox: Sandbox,
    namespace: String,
    configuration: String,
    webhook: Option<Child>,
    vap_label: String,
    /// Dropped after the rest: stops Kyverno and removes what it registered.
    kyverno: Option<kyverno::Kyverno>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Best effort, and synchronous: this also runs while an error
        // propagates out of `run`.
        self.sandbox.kubectl(&[
            "delete",
            "validatingwebhookconfiguration",
            &self.configuration,
            "--ignore-not-found",
            "--wait=false",
        ]);
        self.sandbox.kubectl(&[
            "delete",
            "validatingwebhookconfiguration",
            &format!("{}-noop", self.configuration),
            "--ignore-not-found",
            "--wait=false",
        ]);
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            self.sandbox
                .kubectl(&["delete", kind, "-l", &self.vap_label, "--ignore-not-found"]);
        }
        self.sandbox.kubectl(&[
            "delete",
            "namespace",
            &self.namespace,
            "--ignore-not-found",
            "--wait=false",
        ]);
        if let Some(child) = &mut self.webhook {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn run() -> Result<()> {
    let settings = Settings::from_env()?;
    let with_kyverno = settings.backends.contains(&Backend::Kyverno);
    if with_kyverno {
        kyverno::build()?;
    }
    let sandbox = Sandbox::try_connect().await?;
    let client = sandbox.client.clone();
    let version = client
        .apiserver_version()
        .await
        .context("the sandbox API server's version")?;
    let load_before = loadavg();

    let id = format!("{:x}", std::process::id());
    let mut cleanup = Cleanup {
        sandbox,
        namespace: format!("aiops-bench-e2e-{id}"),
        configuration: format!("aiops-bench-e2e-{id}"),
        webhook: None,
        vap_label: format!("{VAP_LABEL}={id}"),
        kyverno: None,
    };
    let namespace = cleanup.namespace.clone();
    support::create_namespace(&client, &namespace, &[(BENCH_LABEL, &id)]).await?;

    let dir = tempfile::tempdir().context("temp dir")?;
    support::generate_certs(dir.path())?;
    let port = support::free_port()?;
    let mut command = support::webhook_command(dir.path(), port)?;
    command.args(["--standalone", "--admission-mode", "Enforce"]);
    let webhook = cleanup
        .webhook
        .insert(command.spawn().context("starting the webhook")?);
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).context("ca.crt")?;
    let validate_probe = WebhookProbe::new(port, &ca_pem, "validate")?;
    let noop_probe = WebhookProbe::new(port, &ca_pem, "noop")?;
    support::wait_webhook_ready(
        webhook,
        &validate_probe.http,
        &validate_probe.base,
        Duration::from_secs(30),
    )
    .await?;
    let configuration = |name: &str, endpoint: &str| {
        support::validating_configuration(
            name,
            &format!("https://127.0.0.1:{port}/{endpoint}"),
            &ca_pem,
            BENCH_LABEL,
            &id,
        )
    };
    let phases = Phases {
        client: client.clone(),
        namespace: namespace.clone(),
        validate: (
            configuration(&cleanup.configuration, "validate")?,
            validate_probe,
        ),
        noop: (
            configuration(&format!("{}-noop", cleanup.configuration), "noop")?,
            noop_probe,
        ),
        vap_merged: admission_policies(&id, true)?,
        vap_unmerged: admission_policies(&id, false)?,
        vap_one: vec![admission_policy_pair(&id, "one", one_check_spec())],
        vap_policies: project_policies(&id)?,
        kyverno: with_kyverno.then(|| id.clone()),
    };

    // Someone else's webhook matching every namespace would sit in both
    // phases and blur the comparison: record it, loudly.
    let others = other_webhook_configurations(&client, &cleanup.configuration).await?;
    if !others.is_empty() {
        eprintln!(
            "warning: other admission webhooks are registered and may see our pods: {others:?}"
        );
    }
    if with_kyverno {
        // Beside the report, so it outlives a failed run.
        let log = settings.out.with_file_name("admission-e2e-kyverno.log");
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent).context("creating target/bench")?;
        }
        cleanup.kyverno = Some(kyverno::Kyverno::start(&cleanup.sandbox, &id, &log).await?);
    }

    let mut rows = Vec::new();
    for &clients in &settings.clients {
        let mut none = Phase::default();
        let mut measured: Vec<(Backend, Phase)> = settings
            .backends
            .iter()
            .map(|b| (*b, Phase::default()))
            .collect();
        let mut order: Vec<Backend> = std::iter::once(Backend::None)
            .chain(settings.backends.iter().copied())
            .collect();
        for round in 0..settings.rounds {
            // Rotate the order each round so slow drift (other work on
            // this machine, etcd growth) does not favour one backend.
            if round > 0 {
                order.rotate_left(1);
            }
            for &backend in &order {
                phases.activate(backend).await?;
                clear_pods(&client, &namespace).await?;
                let tag = format!("c{clients}r{round}{}", backend.name());
                let phase = measure_creates(&client, &namespace, &tag, clients, &settings).await;
                eprintln!(
                    "clients={clients} round={round} backend={}: {} creates, {:.0}/s, p99 {:.2} ms, {} errors",
                    backend.name(),
                    phase.latencies.len(),
                    phase.rate(),
                    phase.percentile_ms(0.99),
                    phase.errors.len()
                );
                match measured.iter_mut().find(|(b, _)| *b == backend) {
                    Some((_, total)) => total.absorb(phase),
                    None => none.absorb(phase),
                }
            }
        }
        for (backend, phase) in &measured {
            rows.push(row(*backend, clients, phase, &none));
        }
    }
    phases.activate(Backend::None).await?;
    clear_pods(&client, &namespace).await?;

    let report = json!({
        "rows": rows,
        "targets": targets(&rows),
        "setup": {
            "what": "bare Pod CREATEs through the sandbox kube-apiserver, with each admission backend and with none",
            "backends": settings.backends.iter().map(|b| b.name()).collect::<Vec<_>>(),
            "vap_policies": format!("{CEL_POLICIES} as generated ValidatingAdmissionPolicies ({} merged, {} unmerged), Deny, scoped to the bench namespace", phases.vap_merged.len(), phases.vap_unmerged.len()),
            "kubernetes": version.git_version,
            "webhook": "target/release aiops-operator run --webhook-only --standalone --admission-mode Enforce, all 12 policies; registered via clientConfig.url + caBundle, failurePolicy Fail, timeoutSeconds 5",
            "kyverno": with_kyverno.then_some(kyverno::SETUP),
            "pod": "2 containers with resources, probes, env and a restricted securityContext; compliant with all 12 policies (every create is evaluated and allowed); a scheduling gate keeps the scheduler and kwok out of the measurement",
            "rounds": settings.rounds,
            "warmup_seconds_per_phase": settings.warmup.as_secs_f64(),
            "seconds_per_phase": settings.measure.as_secs_f64(),
            "order": "none and every backend, the order rotated each round; namespace emptied before each phase",
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "note": "client, kube-apiserver, etcd, controllers and the webhook all share this machine's 2 cores",
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "other_webhook_configurations": others,
        },
    });
    if let Some(parent) = settings.out.parent() {
        std::fs::create_dir_all(parent).context("creating target/bench")?;
    }
    let text = serde_json::to_string_pretty(&report).context("encoding the report")?;
    std::fs::write(&settings.out, format!("{text}\n"))
        .with_context(|| format!("writing {}", settings.out.display()))?;
    println!("{text}");
    eprintln!("wrote {}", settings.out.display());
    drop(cleanup);
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Names of the webhook configurations in the cluster besides ours.
async fn other_webhook_configurations(client: &kube::Client, ours: &str) -> Result<Vec<String>> {
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?;
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?;
    Ok(validating
        .items
        .iter()
        .map(|c| {
            format!(
                "validating/{}",
                c.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .chain(mutating.items.iter().map(|c| {
            format!(
                "mutating/{}",
                c.metadata.name.as_deref().unwrap_or_default()
            )
        }))
        .filter(|name| name != &format!("validating/{ours}"))
        .collect())
}

/// Talks to the webhook directly: its request counter.
struct WebhookProbe {
    http: reqwest::Client,
    base: String,
    endpoint: String,
}

impl WebhookProbe {
    fn new(port: u16, ca_pem: &str, endpoint: &str) -> Result<WebhookProbe> {
        Ok(WebhookProbe {
            http: support::https_client(ca_pem, false)?,
            base: format!("https://127.0.0.1:{port}"),
            endpoint: endpoint.to_string(),
        })
    }

    /// How many reviews the webhook has answered on the bench's endpoint.
    async fn validated(&self) -> Result<f64> {
        let label = format!("endpoint=\"{}\"", self.endpoint);
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("aiops_admission_requests_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

/// Everything a phase can switch on, and the switching.
struct Phases {
    client: kube::Client,
    namespace: String,
    validate: (ValidatingWebhookConfiguration, WebhookProbe),
    noop: (ValidatingWebhookConfiguration, WebhookProbe),
    vap_merged: Vec<(Value, Value)>,
    vap_unmerged: Vec<(Value, Value)>,
    vap_one: Vec<(Value, Value)>,
    vap_policies: Vec<(Value, Value)>,
    /// The value of [`kyverno::ACTIVE_LABEL`] that switches Kyverno on,
    /// when Kyverno is one of the backends.
    kyverno: Option<String>,
}

impl Phases {
    /// Makes `backend` the only admission in the bench namespace and waits
    /// until the API server acts on it (its caches update asynchronously).
    async fn activate(&self, backend: Backend) -> Result<()> {
        let webhooks = Api::<ValidatingWebhookConfiguration>::all(self.client.clone());
        for (wanted, (configuration, _)) in [
            (
                matches!(backend, Backend::Webhook | Backend::WebhookAndVap),
                &self.validate,
            ),
            (backend == Backend::Noop, &self.noop),
        ] {
            let name = configuration.metadata.name.clone().unwrap_or_default();
            let exists = webhooks.get_opt(&name).await?.is_some();
            if wanted && !exists {
                webhooks
                    .create(&PostParams::default(), configuration)
                    .await
                    .context("registering the webhook")?;
            } else if !wanted && exists {
                webhooks
                    .delete(&name, &DeleteParams::default())
                    .await
                    .context("unregistering the webhook")?;
            }
        }
        let wanted_policies = match backend {
            Backend::Vap => &self.vap_merged,
            Backend::VapUnmerged => &self.vap_unmerged,
            Backend::VapOne => &self.vap_one,
            Backend::VapPolicies | Backend::WebhookAndVap => &self.vap_policies,
            _ => &Vec::new(),
        };
        self.set_admission_policies(wanted_policies).await?;
        if let Some(id) = &self.kyverno {
            kyverno::switch(
                &self.client,
                &self.namespace,
                id,
                backend == Backend::Kyverno,
            )
            .await?;
        }
        for (active, (_, probe)) in [
            (
                matches!(backend, Backend::Webhook | Backend::WebhookAndVap),
                &self.validate,
            ),
            (backend == Backend::Noop, &self.noop),
        ] {
            self.wait_called(probe, active).await?;
        }
        if self.kyverno.is_some() {
            self.wait_denials(
                kyverno::DENIAL_MARKER,
                backend == Backend::Kyverno,
                Duration::from_secs(120),
            )
            .await?;
        }
        self.wait_denials(
            "ValidatingAdmissionPolicy",
            !wanted_policies.is_empty(),
            Duration::from_secs(60),
        )
        .await
    }

    async fn set_admission_policies(&self, wanted: &[(Value, Value)]) -> Result<()> {
        let policies: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &ApiResource::erase::<ValidatingAdmissionPolicy>(&()),
        );
        let bindings: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &ApiResource::erase::<ValidatingAdmissionPolicyBinding>(&()),
        );
        let wanted_names: Vec<String> = wanted
            .iter()
            .filter_map(|(p, _)| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        for api in [&bindings, &policies] {
            let existing = api
                .list_metadata(&ListParams::default().labels(VAP_LABEL))
                .await
                .context("listing the bench's admission policies")?;
            for name in existing
                .items
                .iter()
                .filter_map(|o| o.metadata.name.clone())
            {
                if !wanted_names.contains(&name) {
                    api.delete(&name, &DeleteParams::default())
                        .await
                        .context("deleting")?;
                }
            }
        }
        let params = PatchParams::apply("aiops-bench-e2e").force();
        for (policy, binding) in wanted {
            let name = policy["metadata"]["name"].as_str().unwrap_or_default();
            policies
                .patch(name, &params, &Patch::Apply(policy))
                .await
                .context("applying an admission policy")?;
            bindings
                .patch(name, &params, &Patch::Apply(binding))
                .await
                .context("applying a binding")?;
        }
        Ok(())
    }

    /// Waits until a dry-run create reaches the webhook behind `probe`
    /// (`active`), or several in a row do not.
    async fn wait_called(&self, probe: &WebhookProbe, active: bool) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let start = Instant::now();
        let mut quiet = 0;
        loop {
            let before = probe.validated().await?;
            let _ = pods.create(&dry_run, &bench_pod("probe")).await;
            let called = probe.validated().await? > before;
            if active && called {
                return Ok(());
            }
            quiet = if called { 0 } else { quiet + 1 };
            if !active && quiet >= 5 {
                return Ok(());
            }
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "the API server did not pick up the webhook (registered={active}) in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a privileged pod is denied with a message naming
    /// `marker` (the backend: "ValidatingAdmissionPolicy", Kyverno's
    /// webhook) several times in a row (`active`) or not denied by it
    /// several times in a row, and the compliant bench pod is admitted.
    async fn wait_denials(&self, marker: &str, active: bool, timeout: Duration) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let mut privileged = serde_json::to_value(bench_pod("probe-privileged"))?;
        // Only `privileged`: with the bench pod's allowPrivilegeEscalation
        // false the API server would refuse the pod as invalid first.
        privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
        let privileged: Pod = serde_json::from_value(privileged)?;
        let start = Instant::now();
        let mut settled = 0;
        loop {
            let denied = match pods.create(&dry_run, &privileged).await {
                Ok(_) => false,
                Err(kube::Error::Api(status)) => status.message.contains(marker),
                Err(error) => return Err(error).context("probing the admission backend"),
            };
            settled = if denied == active { settled + 1 } else { 0 };
            if settled >= 3 {
                break;
            }
            ensure!(
                start.elapsed() < timeout,
                "denials naming {marker} not {} after {timeout:?}",
                if active { "in place" } else { "gone" }
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if active {
            // Every policy loads in the same cache refresh, but leave it a moment.
            tokio::time::sleep(Duration::from_secs(2)).await;
            pods.create(&dry_run, &bench_pod("probe"))
                .await
                .with_context(|| format!("the compliant bench pod must pass {marker}"))?;
        }
        Ok(())
    }
}

/// Deletes every pod in the namespace and waits until none is left.
async fn clear_pods(client: &kube::Client, namespace: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .context("deleting the pods")?;
    let start = Instant::now();
    // Unbound (gated) pods go at once; only the list has to catch up.
    while !pods
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .items
        .is_empty()
    {
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "pods in {namespace} not gone after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A realistic, compliant bare Pod: every policy evaluates, none objects.
fn bench_pod(name: &str) -> Pod {
    let container = |name: &str, image: &str, port: i32| {
        json!({
            "name": name,
            "image": image,
            "ports": [{"name": "http", "containerPort": port}],
            "env": [
                {"name": "APP_ENV", "value": "production"},
                {"name": "LOG_LEVEL", "value": "info"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi"},
            },
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "runAsNonRoot": true,
                "runAsUser": 10001,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        })
    };
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "bench", "app.kubernetes.io/part-of": "aiops-bench"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
        },
        "spec": {
            "schedulingGates": [{"name": "aiops-operator.dev/bench"}],
            "containers": [
                container("app", "nginx:1.25.5", 8080),
                container("sidecar", "busybox:1.36.1", 9090),
            ],
        },
    });
    // The literal above is a valid Pod; a failure here is a bug in this file.
    serde_json::from_value(pod).unwrap_or_default()
}

/// What one phase (or several, absorbed) measured.
#[derive(Default)]
struct Phase {
    /// One per successful create started inside the measured window.
    latencies: Vec<Duration>,
    errors: Vec<String>,
    measured: Duration,
}

impl Phase {
    fn absorb(&mut self, other: Phase) {
        self.latencies.extend(other.latencies);
        self.errors.extend(other.errors);
        self.measured += other.measured;
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.measured.as_secs_f64().max(f64::EPSILON)
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return 0.0;
        }
        let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index].as_secs_f64() * 1000.0
    }
}

/// `clients` concurrent loops creating pods as fast as the API server
/// answers; creates started during the warm-up are not recorded.
async fn measure_creates(
    client: &kube::Client,
    namespace: &str,
    tag: &str,
    clients: usize,
    settings: &Settings,
) -> Phase {
    let start = Instant::now();
    let record_from = start + settings.warmup;
    let deadline = record_from + settings.measure;
    let tag: Arc<str> = Arc::from(tag);
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let tag = Arc::clone(&tag);
        tasks.push(tokio::spawn(async move {
            let mut phase = Phase::default();
            let mut i = 0usize;
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let pod = bench_pod(&format!("{tag}-{worker}-{i}"));
                let result = pods.create(&PostParams::default(), &pod).await;
                let took = sent.elapsed();
                if sent >= record_from {
                    match result {
                        Ok(_) => phase.latencies.push(took),
                        Err(error) => phase.errors.push(error.to_string()),
                    }
                }
                i += 1;
            }
            phase
        }));
    }
    let mut total = Phase::default();
    for task in tasks {
        match task.await {
            Ok(phase) => total.absorb(phase),
            Err(error) => total.errors.push(format!("client task failed: {error}")),
        }
    }
    // Creates still in flight at the deadline finish a little later; the
    // window is the measured interval, not the time until the last reply.
    total.measured = settings.measure;
    total
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn row(backend: Backend, clients: usize, with: &Phase, without: &Phase) -> Value {
    let (p99_with, p99_without) = (with.percentile_ms(0.99), without.percentile_ms(0.99));
    let (rate_with, rate_without) = (with.rate(), without.rate());
    json!({
        "backend": backend.name(),
        "clients": clients,
        "p99_ms_with": round2(p99_with),
        "p99_ms_without": round2(p99_without),
        "creates_per_s_with": round2(rate_with),
        "creates_per_s_without": round2(rate_without),
        "p99_overhead_pct": round2((p99_with / p99_without.max(f64::EPSILON) - 1.0) * 100.0),
        "throughput_cost_pct": round2((1.0 - rate_with / rate_without.max(f64::EPSILON)) * 100.0),
        "p50_ms_with": round2(with.percentile_ms(0.50)),
        "p50_ms_without": round2(without.percentile_ms(0.50)),
        "creates_with": with.latencies.len(),
        "creates_without": without.latencies.len(),
        // A failed create is not in the latencies, so it could flatter
        // them: any failure makes the row invalid and its targets unjudged.
        "valid": with.errors.is_empty() && without.errors.is_empty(),
        "errors_with": with.errors.len(),
        "errors_without": without.errors.len(),
        "first_errors": with.errors.iter().chain(&without.errors).take(3).collect::<Vec<_>>(),
    })
}

/// Per backend: are the targets (at most 5 % added p99 and 5 %
/// throughput cost at 10 clients) met?
fn targets(rows: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    for row in rows.iter().filter(|r| r["clients"] == 10) {
        let le_5 = |key: &str| {
            (row["valid"] == true)
                .then(|| row[key].as_f64())
                .flatten()
                .map(|v| v <= 5.0)
        };
        out.insert(
            row["backend"].as_str().unwrap_or("").to_string(),
            json!({
                "p99_added_at_10_clients_at_most_5pct": le_5("p99_overhead_pct"),
                "throughput_cost_at_10_clients_at_most_5pct": le_5("throughput_cost_pct"),
            }),
        );
    }
    Value::Object(out)
}
