//! `make bench-detect`: how fast, how lean and how quiet detection is at
//! scale. In the sandbox, with the operator running (the release binary,
//! started by `tests/operator/local.sh start bench-op`, webhooks scoped to
//! the bench namespaces), it rolls out 100 healthy Deployments of 20
//! replicas (2,000 kwok pods), waits until every one is Ready, measures the
//! operator's steady API traffic, then creates 20 Deployments of 10
//! replicas whose image is not in `tests/sandbox/images.yaml`, so all 200
//! pods go `ErrImagePull` → `ImagePullBackOff`. Writes
//! `target/bench/detect.json`.
//!
//! - **Detection latency**, per broken Deployment: from the moment this
//!   process's own Pod watch first sees one of its pods in `ErrImagePull`
//!   or `ImagePullBackOff`, to the moment this process's own Remediation
//!   watch sees that Deployment's Remediation `ADDED`. Both watches run
//!   here and are stamped with one monotonic clock. (Also reported: from
//!   the first `ImagePullBackOff`, which excludes the simulated kubelet's
//!   0.5–1 s `ErrImagePull` → `ImagePullBackOff` step.)
//! - **Remediations**: counted in the bench namespaces at the end; must be
//!   exactly one per broken Deployment, none for a healthy one, and no
//!   target may ever have been `ADDED` twice.
//! - **Peak RSS**: the operator process's `VmHWM` from `/proc/PID/status`.
//! - **API requests**: counted by the API server, not by the operator. The
//!   built-in `apiserver_request_total` has no user label, so the bench
//!   installs a FlowSchema that matches only the operator's ServiceAccount
//!   (same priority level, `workload-low`, as the built-in `service-accounts`
//!   schema it would otherwise fall into) and reads
//!   `apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}` from
//!   the API server's `/metrics` between phases. Per incident = (requests in
//!   the incident window − the healthy steady rate × the window) / 20.
//!
//! Knobs (environment): `BENCH_DETECT_HEALTHY` (100),
//! `BENCH_DETECT_HEALTHY_REPLICAS` (20), `BENCH_DETECT_BROKEN` (20),
//! `BENCH_DETECT_BROKEN_REPLICAS` (10), `BENCH_DETECT_NAMESPACES` (10),
//! `BENCH_DETECT_STEADY_SECONDS` (30), `BENCH_DETECT_SETTLE_SECONDS` (15),
//! `BENCH_DETECT_CONCURRENCY` (8), `BENCH_DETECT_WEBHOOKS` (1; 0 scopes the
//! operator's webhooks to no namespace, so its CPU goes to detection only),
//! `BENCH_DETECT_OPERATOR_BIN` (another operator binary to measure;
//! default: this build's release binary).
//!
//! Everything it creates (namespaces, the FlowSchema, the operator and its
//! webhook registrations) is removed at the end, also when it fails.
//!
//! `cargo test --all-targets` also runs bench targets, without `--bench`;
//! then this does nothing.
// The report is one large `json!`.
#![recursion_limit = "256"]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiops_operator::remediation::crd::{Phase, Remediation};
use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::flowcontrol::v1::FlowSchema;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// Label on the bench namespaces; the operator's webhooks are scoped to it.
const NS_LABEL: &str = "aiops-operator.dev/bench-detect";
/// Label on the bench Deployments and their pods.
const POD_LABEL: &str = "aiops-bench";
const POD_LABEL_VALUE: &str = "detect";
const OPERATOR_NAME: &str = "bench-op";
const OPERATOR_NAMESPACE: &str = "aiops-system";
const OPERATOR_SA: &str = "aiops-operator";
const LEASE: &str = "aiops-operator-leader";
const FLOW_SCHEMA: &str = "aiops-bench-detect-operator";
const DISPATCHED: &str = "apiserver_flowcontrol_dispatched_requests_total";
const HEALTHY_IMAGE: &str = "nginx:1.25.5";
/// Not in tests/sandbox/images.yaml: the simulated kubelet cannot pull it.
const BROKEN_IMAGE: &str = "nginx:1.25.5-bench-missing";
const PULL_REASONS: &[&str] = &["ErrImagePull", "ImagePullBackOff"];

struct Settings {
    healthy: usize,
    healthy_replicas: i32,
    broken: usize,
    broken_replicas: i32,
    namespaces: usize,
    steady: Duration,
    settle: Duration,
    concurrency: usize,
    /// Whether the operator's webhooks see the bench namespaces.
    webhooks: bool,
    out: PathBuf,
}

/// The namespace label the operator's webhooks select: the bench
/// namespaces' own, or one that no namespace carries.
fn webhook_label(settings: &Settings) -> &'static str {
    if settings.webhooks {
        NS_LABEL
    } else {
        "aiops-operator.dev/bench-detect-no-webhooks"
    }
}

impl Settings {
    fn from_env() -> Result<Settings> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
            match std::env::var(name) {
                Ok(value) => value
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}: not a number: {value:?}")),
                Err(_) => Ok(default),
            }
        }
        Ok(Settings {
            healthy: var("BENCH_DETECT_HEALTHY", 100)?,
            healthy_replicas: var("BENCH_DETECT_HEALTHY_REPLICAS", 20)?,
            broken: var("BENCH_DETECT_BROKEN", 20)?,
            broken_replicas: var("BENCH_DETECT_BROKEN_REPLICAS", 10)?,
            namespaces: var("BENCH_DETECT_NAMESPACES", 10usize)?.max(1),
            steady: Duration::from_secs(var("BENCH_DETECT_STEADY_SECONDS", 30)?),
            settle: Duration::from_secs(var("BENCH_DETECT_SETTLE_SECONDS", 15)?),
            concurrency: var("BENCH_DETECT_CONCURRENCY", 8usize)?.max(1),
            webhooks: var("BENCH_DETECT_WEBHOOKS", 1u8)? != 0,
            out: repo_root().join("target/bench/detect.json"),
        })
    }

    fn namespace(&self, i: usize) -> String {
        format!("bench-detect-{}", i % self.namespaces)
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() -> ExitCode {
    if !std::env::args().any(|arg| arg == "--bench") {
        eprintln!("detect: a benchmark; run it with `make bench-detect`");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("detect: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("detect: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn log(message: impl AsRef<str>) {
    eprintln!("bench-detect: {}", message.as_ref());
}

/// The sandbox's files, as `tests/sandbox/cluster.sh` leaves them.
struct Sandbox {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    client: Client,
}

impl Sandbox {
    async fn connect() -> Result<Sandbox> {
        let dir = repo_root().join("target/sandbox");
        let bin_dir = std::fs::read_to_string(dir.join("bin-dir")).with_context(|| {
            format!(
                "the sandbox is not running (no {}/bin-dir): `make cluster-up`",
                dir.display()
            )
        })?;
        let kubeconfig = dir.join("kubeconfig");
        let client = client_from(&kubeconfig).await?;
        client
            .apiserver_version()
            .await
            .context("the sandbox API server is unreachable: `make cluster-up`")?;
        Ok(Sandbox {
            kubeconfig,
            kubectl: PathBuf::from(bin_dir.trim()).join("kubectl"),
            client,
        })
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.kubectl.display()))?;
        if !out.status.success() {
            bail!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

async fn client_from(kubeconfig: &Path) -> Result<Client> {
    let raw = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", kubeconfig.display()))?;
    Client::try_from(config).context("building the client")
}

fn local_sh(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/operator/local.sh"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .context("running tests/operator/local.sh")?;
    if !out.status.success() {
        bail!(
            "tests/operator/local.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Local operator replicas other than ours that are alive: they would
/// contend for the Lease and share the ServiceAccount we count requests of.
fn other_operators() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dirs) = std::fs::read_dir(repo_root().join("target/operator")) else {
        return found;
    };
    for dir in dirs.flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if name == OPERATOR_NAME {
            continue;
        }
        if let Some(pid) = read_pid(&dir.path().join("pid"))
            && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("aiops-operator"))
        {
            found.push(format!("{name} (pid {pid})"));
        }
    }
    found
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `VmHWM` and `VmRSS` of a process, in MiB.
fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

fn loadavg() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let values: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    json!(values)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile of sorted samples (with 20 samples, p99 is the maximum).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The operator's requests so far, as the API server counted them.
async fn operator_requests(client: &Client) -> Result<f64> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .context("building the /metrics request")?;
    let text = client
        .request_text(request)
        .await
        .context("reading the API server's /metrics")?;
    let needle = format!("flow_schema=\"{FLOW_SCHEMA}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(DISPATCHED) && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

// ------------------------------------------------------------ observations

/// What the bench's own watches saw, stamped on arrival.
#[derive(Default)]
struct Observed {
    /// (namespace, deployment) → first pod seen in ErrImagePull or ImagePullBackOff.
    first_failing: HashMap<(String, String), Instant>,
    /// (namespace, deployment) → first pod seen in ImagePullBackOff.
    first_backoff: HashMap<(String, String), Instant>,
    /// (namespace, target name) → the ADDED times of its Remediations.
    added: BTreeMap<(String, String), Vec<(Instant, String)>>,
    /// Remediations first seen by a (re)list rather than an ADDED event.
    listed: BTreeSet<String>,
    pod_events: u64,
    remediation_events: u64,
    relists: u64,
}

type Shared = Arc<Mutex<Observed>>;

fn lock(observed: &Shared) -> std::sync::MutexGuard<'_, Observed> {
    observed.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_bench_namespace(ns: &str) -> bool {
    ns.starts_with("bench-detect-")
}

fn observe_pod(observed: &Shared, at: Instant, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let Some(app) = pod.labels().get("app").cloned() else {
        return;
    };
    let reasons: Vec<&str> = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.as_deref())
        .collect();
    let mut seen = lock(observed);
    seen.pod_events += 1;
    if reasons.iter().any(|r| PULL_REASONS.contains(r)) {
        seen.first_failing
            .entry((ns.clone(), app.clone()))
            .or_insert(at);
    }
    if reasons.contains(&"ImagePullBackOff") {
        seen.first_backoff.entry((ns, app)).or_insert(at);
    }
}

fn observe_remediation(observed: &Shared, at: Instant, r: &Remediation, added: bool) {
    let ns = r.namespace().unwrap_or_default();
    if !is_bench_namespace(&ns) {
        return;
    }
    let name = r.name_any();
    let mut seen = lock(observed);
    seen.remediation_events += 1;
    let key = (ns, r.spec.target.name.clone());
    let entry = seen.added.entry(key).or_default();
    if entry.iter().any(|(_, n)| n == &name) {
        return;
    }
    entry.push((at, name.clone()));
    if !added {
        seen.listed.insert(name);
    }
}

/// A raw watch (so `ADDED` is told apart from `MODIFIED`), relisting on 410.
/// Every event is stamped the moment it arrives.
async fn watch_raw<K, F>(api: Api<K>, labels: Option<&str>, observed: Shared, on_event: F)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(&Shared, Instant, &K, bool),
{
    let mut list_params = ListParams::default();
    let mut watch_params = WatchParams::default().timeout(290);
    if let Some(labels) = labels {
        list_params = list_params.labels(labels);
        watch_params = watch_params.labels(labels);
    }
    let mut first = true;
    loop {
        let list = match api.list(&list_params).await {
            Ok(list) => list,
            Err(error) => {
                log(format!("watch: list failed ({error}); retrying"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !first {
            lock(&observed).relists += 1;
        }
        // Listed objects are not ADDED events (there should be none of
        // ours on the first list: the namespaces are fresh).
        for item in &list.items {
            on_event(&observed, Instant::now(), item, false);
        }
        first = false;
        let mut version = list.metadata.resource_version.unwrap_or_default();
        'watch: loop {
            let stream = match api.watch(&watch_params, &version).await {
                Ok(stream) => stream,
                Err(error) => {
                    log(format!("watch: failed ({error}); relisting"));
                    break 'watch;
                }
            };
            let mut stream = std::pin::pin!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(event)) => {
                        let at = Instant::now();
                        match event {
                            WatchEvent::Added(o) => {
                                version = o.resource_version().unwrap_or_default();
                                on_event(&observed, at, &o, true);
                            }
                            WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                                version = o.resource_version().unwrap_or_default();
                                on_event(&observed, at, &o, false);
                            }
                            WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                            WatchEvent::Error(status) => {
                                log(format!(
                                    "watch: {} {}; relisting",
                                    status.code, status.message
                                ));
                                break 'watch;
                            }
                        }
                    }
                    Ok(None) => continue 'watch,
                    Err(error) => {
                        log(format!("watch: stream error ({error}); relisting"));
                        break 'watch;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------ setup

fn flow_schema() -> Result<FlowSchema> {
    serde_json::from_value(json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": FLOW_SCHEMA, "labels": {NS_LABEL: "true"}},
        "spec": {
            // Same priority level as the built-in `service-accounts` schema
            // (precedence 9000) that the operator's requests fall into
            // otherwise: only the bookkeeping changes, not the treatment.
            "priorityLevelConfiguration": {"name": "workload-low"},
            "matchingPrecedence": 1000,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{"kind": "ServiceAccount",
                    "serviceAccount": {"name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE}}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                    "clusterScope": true, "namespaces": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        },
    }))
    .context("FlowSchema manifest")
}

fn deployment(name: &str, replicas: i32, image: &str) -> Result<Deployment> {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {POD_LABEL: POD_LABEL_VALUE}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, POD_LABEL: POD_LABEL_VALUE}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "web", "image": image}],
                },
            },
        },
    }))
    .context("Deployment manifest")
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {NS_LABEL: "true"}},
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    // The ServiceAccount admission plugin rejects pods until the
    // controller-manager has created the namespace's default account.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    let deadline = Instant::now() + Duration::from_secs(60);
    while accounts.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            bail!("namespace {name}: no default ServiceAccount after 60s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Deletes every bench namespace and waits until they are gone.
async fn delete_namespaces(client: &Client, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let api = Api::<Namespace>::all(client.clone());
    let selector = ListParams::default().labels(&format!("{NS_LABEL}=true"));
    for ns in api.list(&selector).await?.items {
        let _ = api
            .delete(&ns.name_any(), &DeleteParams::background())
            .await;
    }
    loop {
        let left = api.list(&selector).await?.items.len();
        if left == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("{left} bench namespace(s) still terminating after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn create_deployments(
    client: &Client,
    settings: &Settings,
    items: Vec<(String, Deployment)>,
) -> Result<()> {
    futures::stream::iter(items)
        .map(|(ns, d)| {
            let client = client.clone();
            async move {
                Api::<Deployment>::namespaced(client, &ns)
                    .create(&PostParams::default(), &d)
                    .await
                    .with_context(|| format!("creating deployment {ns}/{}", d.name_any()))
            }
        })
        .buffer_unordered(settings.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Waits until every bench Deployment named `prefix-*` is fully rolled out and Ready.
async fn wait_ready(
    client: &Client,
    settings: &Settings,
    prefix: &str,
    want: usize,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let (mut done, mut ready_pods) = (0usize, 0i64);
        for i in 0..settings.namespaces {
            let api = Api::<Deployment>::namespaced(client.clone(), &settings.namespace(i));
            let list = api
                .list(&ListParams::default().labels(&format!("{POD_LABEL}={POD_LABEL_VALUE}")))
                .await?;
            for d in list
                .items
                .iter()
                .filter(|d| d.name_any().starts_with(prefix))
            {
                let want_replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let Some(s) = d.status.as_ref() else { continue };
                ready_pods += i64::from(s.ready_replicas.unwrap_or(0));
                if s.observed_generation == d.metadata.generation
                    && s.ready_replicas == Some(want_replicas)
                    && s.updated_replicas == Some(want_replicas)
                    && s.available_replicas == Some(want_replicas)
                {
                    done += 1;
                }
            }
        }
        if done == want {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("only {done} of {want} {prefix} deployments ready after {timeout:?}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            log(format!(
                "{done}/{want} {prefix} deployments ready, {ready_pods} pods ready ({:.0}s)",
                started.elapsed().as_secs_f64()
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn bench_remediations(client: &Client) -> Result<Vec<Remediation>> {
    Ok(Api::<Remediation>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| r.namespace().is_some_and(|ns| is_bench_namespace(&ns)))
        .collect())
}

fn phase(r: &Remediation) -> Phase {
    r.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// The operator's own view of detection (its histogram), from its /metrics.
fn operator_detection_histogram(port: &str) -> Option<(f64, f64)> {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "5"])
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    Some((
        value("remediation_detection_seconds_sum")?,
        value("remediation_detection_seconds_count")?,
    ))
}

// ------------------------------------------------------------ the run

struct Operator {
    pid: u32,
    port: String,
}

async fn main_async() -> Result<()> {
    let settings = Settings::from_env()?;
    let sandbox = Sandbox::connect().await?;
    let others = other_operators();
    if !others.is_empty() {
        bail!(
            "other local operator replicas are running ({}); they would contend for the \
             Lease and share the ServiceAccount whose requests are counted. Stop them \
             (`bash tests/operator/local.sh stop-all`) or wait for the tests using them",
            others.join(", ")
        );
    }
    let started = Instant::now();
    let result = run(&sandbox, &settings, started).await;
    log("cleaning up");
    let cleanup = cleanup(&sandbox).await;
    let cleanup_seconds = started.elapsed();
    match (result, cleanup) {
        (Ok(mut report), Ok(namespaces_gone)) => {
            report["wall_seconds"]["cleanup"] = json!(round3(namespaces_gone.as_secs_f64()));
            report["wall_seconds"]["total"] = json!(round3(cleanup_seconds.as_secs_f64()));
            report["load_average"]["after_cleanup"] = loadavg();
            write_report(&settings, &report)?;
            check(&report)
        }
        (Ok(report), Err(error)) => {
            write_report(&settings, &report)?;
            Err(error.context("cleanup failed (the report was written)"))
        }
        (Err(error), cleanup) => {
            if let Err(c) = cleanup {
                log(format!("cleanup also failed: {c:#}"));
            }
            Err(error)
        }
    }
}

fn write_report(settings: &Settings, report: &Value) -> Result<()> {
    if let Some(dir) = settings.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(&settings.out, format!("{text}\n"))
        .with_context(|| format!("writing {}", settings.out.display()))?;
    println!("{text}");
    log(format!("wrote {}", settings.out.display()));
    Ok(())
}

/// Correctness is asserted; the latency and memory targets are reported.
fn check(report: &Value) -> Result<()> {
    let want = report["broken_deployments"].as_u64().unwrap_or(0);
    let got = report["remediations"].as_u64().unwrap_or(u64::MAX);
    if got != want {
        bail!("expected exactly {want} Remediations, found {got}");
    }
    if report["duplicates"].as_bool() != Some(false) {
        bail!(
            "a workload got more than one Remediation: {}",
            report["duplicate_targets"]
        );
    }
    if report["false_positives"].as_u64() != Some(0) {
        bail!(
            "healthy Deployments got Remediations: {}",
            report["false_positives"]
        );
    }
    for (key, ok) in report["targets"].as_object().into_iter().flatten() {
        log(format!(
            "target {key}: {}",
            if ok == true { "met" } else { "NOT met" }
        ));
    }
    Ok(())
}

async fn cleanup(sandbox: &Sandbox) -> Result<Duration> {
    let port =
        std::fs::read_to_string(repo_root().join(format!("target/operator/{OPERATOR_NAME}/port")))
            .unwrap_or_default();
    if let Err(error) = local_sh(&["stop", OPERATOR_NAME], &[]) {
        log(format!("stopping the operator: {error:#}"));
    }
    // Remove the webhook registrations only if they still point at our
    // replica (a test may have re-pointed them at its own since).
    let port = port.trim();
    if !port.is_empty()
        && sandbox
            .kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                "aiops-operator-approval",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.url}",
            ])
            .is_ok_and(|url| url.contains(&format!("127.0.0.1:{port}/")))
    {
        local_sh(&["uninstall"], &[])?;
    }
    let gone = delete_namespaces(&sandbox.client, Duration::from_secs(900)).await?;
    let _ = Api::<FlowSchema>::all(sandbox.client.clone())
        .delete(FLOW_SCHEMA, &DeleteParams::default())
        .await;
    Ok(gone)
}

async fn run(sandbox: &Sandbox, settings: &Settings, t0: Instant) -> Result<Value> {
    let client = &sandbox.client;
    let secs = |from: Instant, to: Instant| round3(to.duration_since(from).as_secs_f64());
    let mut load = serde_json::Map::new();
    load.insert("start".into(), loadavg());

    // Leftovers of an aborted run.
    delete_namespaces(client, Duration::from_secs(900)).await?;

    // Count the operator's requests by its identity.
    let schemas = Api::<FlowSchema>::all(client.clone());
    let _ = schemas.delete(FLOW_SCHEMA, &DeleteParams::default()).await;
    schemas
        .create(&PostParams::default(), &flow_schema()?)
        .await
        .context("creating the counting FlowSchema")?;

    for i in 0..settings.namespaces {
        create_namespace(client, &settings.namespace(i)).await?;
    }

    log("starting the operator (release build) as bench-op");
    // The release binary of this build; `BENCH_DETECT_OPERATOR_BIN` measures
    // another one (e.g. a saved baseline) with the same harness.
    let bin = std::env::var("BENCH_DETECT_OPERATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_aiops-operator").to_string());
    let bin = bin.as_str();
    let port = local_sh(
        &["start", OPERATOR_NAME],
        &[
            ("AIOPS_BIN", bin),
            ("AIOPS_WEBHOOK_NAMESPACE_LABEL", webhook_label(settings)),
        ],
    )?
    .trim()
    .to_string();
    let pid = read_pid(&repo_root().join(format!("target/operator/{OPERATOR_NAME}/pid")))
        .context("no pid file for the bench operator")?;
    let operator = Operator { pid, port };
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let lease_deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let holder = leases
            .get_opt(LEASE)
            .await?
            .and_then(|l| l.spec?.holder_identity);
        if holder.as_deref() == Some(OPERATOR_NAME) {
            break;
        }
        if Instant::now() > lease_deadline {
            bail!("bench-op did not get the Lease in 90s (holder: {holder:?})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t_leader = Instant::now();
    log(format!(
        "bench-op (pid {}) leads; port {}",
        operator.pid, operator.port
    ));

    // The bench's own watches.
    let observed: Shared = Arc::default();
    let pod_selector = format!("{POD_LABEL}={POD_LABEL_VALUE}");
    let pod_watch = tokio::spawn({
        let api = Api::<Pod>::all(client.clone());
        let observed = Arc::clone(&observed);
        async move {
            watch_raw(api, Some(&pod_selector), observed, |o, at, pod, _| {
                observe_pod(o, at, pod)
            })
            .await
        }
    });
    let rem_watch = tokio::spawn({
        let api = Api::<Remediation>::all(client.clone());
        let observed = Arc::clone(&observed);
        async move { watch_raw(api, None, observed, observe_remediation).await }
    });
    // Let both watches establish before anything happens.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let requests_start = operator_requests(client).await?;

    // Phase 1: the healthy fleet.
    log(format!(
        "creating {} healthy deployments x {} replicas",
        settings.healthy, settings.healthy_replicas
    ));
    let t_healthy = Instant::now();
    let healthy: Vec<(String, Deployment)> = (0..settings.healthy)
        .map(|i| {
            deployment(
                &format!("healthy-{i:03}"),
                settings.healthy_replicas,
                HEALTHY_IMAGE,
            )
            .map(|d| (settings.namespace(i), d))
        })
        .collect::<Result<_>>()?;
    create_deployments(client, settings, healthy).await?;
    wait_ready(
        client,
        settings,
        "healthy-",
        settings.healthy,
        Duration::from_secs(1200),
    )
    .await?;
    let t_healthy_ready = Instant::now();
    let requests_healthy_ready = operator_requests(client).await?;
    let mem_after_healthy = memory_mib(operator.pid);
    log(format!(
        "healthy fleet ready in {:.1}s; measuring {}s of steady state",
        secs(t_healthy, t_healthy_ready),
        settings.steady.as_secs()
    ));

    // Phase 2: steady state, healthy only.
    tokio::time::sleep(settings.steady).await;
    let t_steady_end = Instant::now();
    let requests_steady_end = operator_requests(client).await?;
    let steady_seconds = t_steady_end.duration_since(t_healthy_ready).as_secs_f64();
    let steady_rate = (requests_steady_end - requests_healthy_ready) / steady_seconds;
    load.insert("before_incidents".into(), loadavg());

    // Phase 3: the incidents.
    log(format!(
        "creating {} broken deployments x {} replicas (image {BROKEN_IMAGE})",
        settings.broken, settings.broken_replicas
    ));
    let t_incidents = Instant::now();
    let broken: Vec<(String, Deployment)> = (0..settings.broken)
        .map(|i| {
            deployment(
                &format!("broken-{i:02}"),
                settings.broken_replicas,
                BROKEN_IMAGE,
            )
            .map(|d| (settings.namespace(i), d))
        })
        .collect::<Result<_>>()?;
    let broken_keys: BTreeSet<(String, String)> = broken
        .iter()
        .map(|(ns, d)| (ns.clone(), d.name_any()))
        .collect();
    create_deployments(client, settings, broken).await?;
    let t_created = Instant::now();

    let detect_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let detected = {
            let seen = lock(&observed);
            broken_keys
                .iter()
                .filter(|k| seen.added.contains_key(*k))
                .count()
        };
        if detected == broken_keys.len() {
            break;
        }
        if Instant::now() > detect_deadline {
            log(format!(
                "only {detected} of {} incidents detected after 180s",
                broken_keys.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t_all_detected = Instant::now();

    // Let the controller finish diagnosing (evidence, proposal, dry run),
    // then let findings settle, so the window holds the whole incident.
    let diagnose_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let all = bench_remediations(client).await?;
        if all.iter().all(|r| phase(r) != Phase::Diagnosing) {
            break;
        }
        if Instant::now() > diagnose_deadline {
            log("some Remediations still Diagnosing after 180s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t_diagnosed = Instant::now();
    tokio::time::sleep(settings.settle).await;
    let t_incidents_end = Instant::now();
    let requests_incidents_end = operator_requests(client).await?;
    load.insert("after_incidents".into(), loadavg());

    // Phase 4: steady state with the incidents open.
    tokio::time::sleep(settings.steady).await;
    let t_after_end = Instant::now();
    let requests_after_end = operator_requests(client).await?;
    let after_rate = (requests_after_end - requests_incidents_end)
        / t_after_end.duration_since(t_incidents_end).as_secs_f64();

    // Results.
    let memory_end = memory_mib(operator.pid).context("the operator exited during the run")?;
    let histogram = operator_detection_histogram(&operator.port);
    let remediations = bench_remediations(client).await?;
    let pods_bench = Api::<Pod>::all(client.clone())
        .list_metadata(&ListParams::default().labels(&format!("{POD_LABEL}={POD_LABEL_VALUE}")))
        .await?
        .items
        .len();
    let pods_cluster = Api::<Pod>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    let nodes = Api::<Node>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    pod_watch.abort();
    rem_watch.abort();

    let seen = lock(&observed);
    let mut latencies = Vec::new();
    let mut from_backoff = Vec::new();
    let mut per_incident = BTreeMap::new();
    for key in &broken_keys {
        let failing = seen.first_failing.get(key);
        let added = seen.added.get(key).and_then(|v| v.first());
        if let (Some(failing), Some((added, name))) = (failing, added) {
            let latency = added.saturating_duration_since(*failing).as_secs_f64();
            latencies.push(latency);
            let backoff = seen
                .first_backoff
                .get(key)
                .map(|b| added.saturating_duration_since(*b).as_secs_f64());
            if let Some(b) = backoff {
                from_backoff.push(b);
            }
            per_incident.insert(
                format!("{}/{}", key.0, key.1),
                json!({
                    "remediation": name,
                    "first_failing_pod_at_s": secs(t0, *failing),
                    "added_at_s": secs(t0, *added),
                    "detection_s": round3(latency),
                    "detection_from_backoff_s": backoff.map(round3),
                }),
            );
        }
    }
    latencies.sort_by(f64::total_cmp);
    from_backoff.sort_by(f64::total_cmp);
    let duplicate_targets: Vec<String> = seen
        .added
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|((ns, name), v)| {
            format!(
                "{ns}/{name}: {:?}",
                v.iter().map(|(_, n)| n).collect::<Vec<_>>()
            )
        })
        .collect();
    let mut final_by_target: BTreeMap<String, usize> = BTreeMap::new();
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for r in &remediations {
        *final_by_target
            .entry(format!(
                "{}/{}",
                r.namespace().unwrap_or_default(),
                r.spec.target.uid
            ))
            .or_default() += 1;
        *phases.entry(format!("{:?}", phase(r))).or_default() += 1;
    }
    let duplicates = !duplicate_targets.is_empty() || final_by_target.values().any(|&n| n > 1);
    let false_positives = remediations
        .iter()
        .filter(|r| !r.spec.target.name.starts_with("broken-"))
        .count();

    let incident_window = t_incidents_end.duration_since(t_incidents).as_secs_f64();
    let incident_requests = requests_incidents_end - requests_steady_end;
    let incidents = settings.broken.max(1) as f64;
    let per_incident_requests =
        ((incident_requests - steady_rate * incident_window) / incidents).max(0.0);
    let p99 = percentile(&latencies, 99.0);
    let rss_peak = memory_end.0;

    Ok(json!({
        "benchmark": "bench-detect",
        "detection_p50_s": round3(percentile(&latencies, 50.0)),
        "detection_p99_s": round3(p99),
        "detection_max_s": round3(latencies.last().copied().unwrap_or(f64::NAN)),
        "detection_mean_s": round3(latencies.iter().sum::<f64>() / latencies.len().max(1) as f64),
        "detection_samples": latencies.len(),
        "detection_note": "per broken Deployment: the bench's pod watch first sees one of its pods in ErrImagePull/ImagePullBackOff -> the bench's Remediation watch sees its Remediation ADDED; one monotonic clock; nearest-rank percentiles (with 20 samples p99 is the maximum)",
        "detection_from_backoff_p50_s": round3(percentile(&from_backoff, 50.0)),
        "detection_from_backoff_p99_s": round3(percentile(&from_backoff, 99.0)),
        "operator_detection_histogram": histogram.map(|(sum, count)| json!({
            "sum_s": round3(sum), "count": count,
            "mean_s": round3(if count > 0.0 { sum / count } else { f64::NAN }),
            "note": "the operator's remediation_detection_seconds: first failing status it saw -> its create returned",
        })),
        "remediations": remediations.len(),
        "broken_deployments": settings.broken,
        "remediation_added_events": seen.added.values().map(Vec::len).sum::<usize>(),
        "remediations_first_seen_by_relist": seen.listed.len(),
        "duplicates": duplicates,
        "duplicate_targets": duplicate_targets,
        "false_positives": false_positives,
        "remediation_phases": phases,
        "rss_peak_mib": round3(rss_peak),
        "rss_end_mib": round3(memory_end.1),
        "rss_peak_after_healthy_fleet_mib": mem_after_healthy.map(|m| round3(m.0)),
        "api_requests_per_incident": round3(per_incident_requests),
        "api_requests": {
            "source": format!("{DISPATCHED}{{flow_schema=\"{FLOW_SCHEMA}\"}} from the API server's /metrics; the FlowSchema matches only system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"),
            "healthy_rollout": requests_healthy_ready - requests_start,
            "healthy_rollout_seconds": secs(t_healthy, t_healthy_ready),
            "healthy_steady": requests_steady_end - requests_healthy_ready,
            "healthy_steady_seconds": round3(steady_seconds),
            "healthy_steady_per_s": round3(steady_rate),
            "incident_window": incident_requests,
            "incident_window_seconds": round3(incident_window),
            "incident_window_minus_steady": round3(incident_requests - steady_rate * incident_window),
            "after_incidents_steady": requests_after_end - requests_incidents_end,
            "after_incidents_steady_per_s": round3(after_rate),
            "per_incident_formula": "(incident_window - healthy_steady_per_s * incident_window_seconds) / broken_deployments",
        },
        "targets": {
            "detection_p99_under_2s": p99 < 2.0,
            "rss_under_150mib": rss_peak < 150.0,
        },
        "per_incident": per_incident,
        "context": {
            "healthy_deployments": settings.healthy,
            "healthy_replicas": settings.healthy_replicas,
            "broken_deployments": settings.broken,
            "broken_replicas": settings.broken_replicas,
            "namespaces": settings.namespaces,
            "pods_bench": pods_bench,
            "pods_cluster": pods_cluster,
            "nodes": nodes,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "operator_binary": bin,
            "operator_webhooks": if settings.webhooks {
                format!("scoped to namespaces labelled {NS_LABEL}=true (the bench namespaces): every bench pod create/update goes through /validate, every Remediation write through /remediations")
            } else {
                "off (BENCH_DETECT_WEBHOOKS=0): the webhooks select no namespace".to_string()
            },
            "healthy_image": HEALTHY_IMAGE,
            "broken_image": BROKEN_IMAGE,
            "other_operator_replicas_at_end": other_operators(),
            "watch_events": {"pods": seen.pod_events, "remediations": seen.remediation_events, "relists": seen.relists},
        },
        "wall_seconds": {
            "operator_leader": secs(t0, t_leader),
            "healthy_rollout_to_ready": secs(t_healthy, t_healthy_ready),
            "broken_creates": secs(t_incidents, t_created),
            "incidents_to_all_detected": secs(t_incidents, t_all_detected),
            "incidents_to_all_diagnosed": secs(t_incidents, t_diagnosed),
        },
        "load_average": Value::Object(load),
        "timestamp": chrono::Utc::now().to_rfc3339(),
    }))
}
