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
//! `BENCH_E2E_ENDPOINT=noop` registers the webhook's `/noop` endpoint
//! instead (it parses the review and allows it without evaluating any
//! policy): the cost of having any webhook of this stack in the path, the
//! floor under the `validate` figures. The output then goes to
//! `target/bench/admission-e2e-noop.json`.
//!
//! `cargo test --all-targets` also runs bench targets, without `--bench`;
//! then this does nothing.
#[path = "../support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
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
    /// `validate` (the default) or `noop`.
    endpoint: String,
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
        let endpoint = var("BENCH_E2E_ENDPOINT", "validate");
        ensure!(
            endpoint == "validate" || endpoint == "noop",
            "BENCH_E2E_ENDPOINT must be validate or noop, not {endpoint:?}"
        );
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
            out: repo_root().join(if endpoint == "validate" {
                "target/bench/admission-e2e.json".to_string()
            } else {
                format!("target/bench/admission-e2e-{endpoint}.json")
            }),
            endpoint,
        })
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
    let probe = WebhookProbe::new(port, &ca_pem, &settings.endpoint)?;
    support::wait_webhook_ready(webhook, &probe.http, &probe.base, Duration::from_secs(30)).await?;
    let configuration = support::validating_configuration(
        &cleanup.configuration,
        &format!("https://127.0.0.1:{port}/{}", settings.endpoint),
        &ca_pem,
        BENCH_LABEL,
        &id,
    )?;

    // Someone else's webhook matching every namespace would sit in both
    // phases and blur the comparison: record it, loudly.
    let others = other_webhook_configurations(&client, &cleanup.configuration).await?;
    if !others.is_empty() {
        eprintln!(
            "warning: other admission webhooks are registered and may see our pods: {others:?}"
        );
    }

    let mut rows = Vec::new();
    for &clients in &settings.clients {
        let mut with = Phase::default();
        let mut without = Phase::default();
        for round in 0..settings.rounds {
            // Alternate the order so slow drift does not favour one side.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for registered in order {
                set_registered(&client, &configuration, registered, &namespace, &probe).await?;
                clear_pods(&client, &namespace).await?;
                let tag = format!("c{clients}r{round}{}", if registered { "w" } else { "o" });
                let phase = measure_creates(&client, &namespace, &tag, clients, &settings).await;
                eprintln!(
                    "clients={clients} round={round} webhook={registered}: {} creates, {:.0}/s, p99 {:.2} ms, {} errors",
                    phase.latencies.len(),
                    phase.rate(),
                    phase.percentile_ms(0.99),
                    phase.errors.len()
                );
                if registered {
                    with.absorb(phase);
                } else {
                    without.absorb(phase);
                }
            }
        }
        rows.push(row(clients, &with, &without));
    }
    set_registered(&client, &configuration, false, &namespace, &probe).await?;
    clear_pods(&client, &namespace).await?;

    let report = json!({
        "rows": rows,
        "targets": targets(&rows),
        "setup": {
            "what": "bare Pod CREATEs through the sandbox kube-apiserver, with and without our validating webhook",
            "kubernetes": version.git_version,
            "webhook": "target/release aiops-operator run --webhook-only --standalone --admission-mode Enforce, all 12 policies; registered via clientConfig.url + caBundle, failurePolicy Fail, timeoutSeconds 5",
            "pod": "2 containers with resources, probes, env and a restricted securityContext; compliant with all 12 policies (every create is evaluated and allowed); a scheduling gate keeps the scheduler and kwok out of the measurement",
            "endpoint": format!("/{}", settings.endpoint),
            "rounds": settings.rounds,
            "warmup_seconds_per_phase": settings.warmup.as_secs_f64(),
            "seconds_per_phase": settings.measure.as_secs_f64(),
            "order": "with/without alternating per round; namespace emptied before each phase",
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

/// Registers or unregisters the webhook and waits until the API server
/// has noticed (its configuration cache updates asynchronously): a
/// dry-run create must (or must no longer) reach the webhook.
async fn set_registered(
    client: &kube::Client,
    configuration: &ValidatingWebhookConfiguration,
    registered: bool,
    namespace: &str,
    probe: &WebhookProbe,
) -> Result<()> {
    let api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let name = configuration.metadata.name.clone().unwrap_or_default();
    let exists = api.get_opt(&name).await?.is_some();
    if registered && !exists {
        api.create(&PostParams::default(), configuration)
            .await
            .context("registering the webhook")?;
    } else if !registered && exists {
        api.delete(&name, &DeleteParams::default())
            .await
            .context("unregistering the webhook")?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let start = Instant::now();
    // Several quiet probes in a row before "not called" is believed.
    let mut quiet = 0;
    loop {
        let before = probe.validated().await?;
        pods.create(&dry_run, &bench_pod("probe"))
            .await
            .context("probe create")?;
        let called = probe.validated().await? > before;
        if registered && called {
            return Ok(());
        }
        quiet = if called { 0 } else { quiet + 1 };
        if !registered && quiet >= 5 {
            return Ok(());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the API server did not pick up the webhook (registered={registered}) in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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

fn row(clients: usize, with: &Phase, without: &Phase) -> Value {
    let (p99_with, p99_without) = (with.percentile_ms(0.99), without.percentile_ms(0.99));
    let (rate_with, rate_without) = (with.rate(), without.rate());
    json!({
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

fn targets(rows: &[Value]) -> Value {
    let at_10 = rows.iter().find(|r| r["clients"] == 10);
    let le_5 = |key: &str| {
        at_10
            .filter(|r| r["valid"] == true)
            .and_then(|r| r[key].as_f64())
            .map(|v| v <= 5.0)
    };
    json!({
        "p99_added_at_10_clients_at_most_5pct": le_5("p99_overhead_pct"),
        "throughput_cost_at_10_clients_at_most_5pct": le_5("throughput_cost_pct"),
    })
}
