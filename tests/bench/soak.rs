//! `make bench-soak`: the operator under an hour of churn, watched for
//! growth and for cases that never end. One local replica runs against the
//! sandbox with the local SmolLM2 server as its model. Every round (10 s)
//! a healthy Deployment is created and an old one deleted, Pods are created
//! through the admission webhook (some compliant, some not) and deleted,
//! and a reviewer acts on every proposal. Once a minute a broken workload
//! of one of four kinds joins:
//! - `fix`: rolled out, then broken with a bad tag: approved, verified;
//! - `model`: a misspelled image with no history: the model is asked,
//!   the proposal rejected;
//! - `oom`: a memory limit too small for redis: approved, rolled back;
//! - `gone`: a bad image, deleted before anyone reviews its case.
//!
//! Each minute the replica's resident memory, open descriptors, threads,
//! async tasks (`aiops_runtime_tasks`) and held model calls are sampled.
//! After the warm-up, a series is flat when the second half's highest
//! sample is within 10 % (plus a small absolute slack) of the first half's.
//! A Remediation is stuck when it stays in one open phase for 5 minutes.
//! When the churn stops, every workload is deleted and every open case
//! must close within 4 minutes. Writes `target/bench/soak.json`.
#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aiops_operator::remediation::crd::{Phase, Remediation};
use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{OperatorProcess, Sandbox, phase, repo_root};

const ROUND: Duration = Duration::from_secs(10);
const STUCK_AFTER: Duration = Duration::from_secs(300);
const DRAIN: Duration = Duration::from_secs(240);
const GOOD_IMAGE: &str = "nginx:1.25.5";
/// Pods per round through the admission webhook; the last ones break policy.
const PODS_PER_ROUND: usize = 10;
const NON_COMPLIANT_PER_ROUND: usize = 2;

fn main() -> ExitCode {
    support::run_benchmark("soak", "bench-soak", measure)
}

fn log(message: &str) {
    eprintln!("bench-soak: {message}");
}

fn minutes_from_env(name: &str, default: f64) -> anyhow::Result<f64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

/// The URL `tests/llm/server.sh up` wrote.
fn model_server() -> anyhow::Result<String> {
    let file = repo_root().join("target/llm/url");
    let url = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "the local model server is not running ({}); `make bench-soak` starts it",
            file.display()
        )
    })?;
    Ok(url.trim().trim_end_matches('/').to_string())
}

/// The value of one exact series in Prometheus text.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// What the rounds did, for the report.
#[derive(Default)]
struct Counts {
    deployments_created: u64,
    deployments_deleted: u64,
    pods_admitted: u64,
    pods_denied: u64,
    pod_errors: u64,
    approved: u64,
    rejected: u64,
    api_errors: u64,
}

/// Broken workloads by name, with the round that deletes them.
struct Churn {
    client: Client,
    repair: String,
    admission: String,
    counts: Counts,
    delete_at: BTreeMap<u64, Vec<String>>,
    break_at: BTreeMap<u64, Vec<String>>,
    acted_on: HashSet<String>,
    approved_workloads: HashSet<String>,
    admission_ms: Vec<f64>,
}

impl Churn {
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.repair)
    }

    async fn create(&mut self, name: &str, replicas: i32, container: Value) {
        let manifest = support::deployment(name, replicas, container);
        let created = match serde_json::from_value::<Deployment>(manifest) {
            Ok(d) => self.deployments().create(&PostParams::default(), &d).await,
            Err(e) => {
                log(&format!("manifest {name}: {e}"));
                self.counts.api_errors += 1;
                return;
            }
        };
        match created {
            Ok(_) => self.counts.deployments_created += 1,
            Err(e) => {
                log(&format!("create {name}: {e}"));
                self.counts.api_errors += 1;
            }
        }
    }

    async fn delete(&mut self, name: &str) {
        match self
            .deployments()
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => self.counts.deployments_deleted += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                log(&format!("delete {name}: {e}"));
                self.counts.api_errors += 1;
            }
        }
    }

    async fn round(&mut self, round: u64, sandbox: &Sandbox) {
        // Healthy churn: about six live at a time.
        self.create(
            &format!("ok-{round}"),
            1,
            json!({"name": "web", "image": GOOD_IMAGE}),
        )
        .await;
        if round >= 6 {
            self.delete(&format!("ok-{}", round - 6)).await;
        }
        if round.is_multiple_of(6) {
            self.add_broken(round).await;
        }
        for name in self.break_at.remove(&round).unwrap_or_default() {
            let bad = json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1.25.5-nope"}]}}}});
            if let Err(e) = self
                .deployments()
                .patch(&name, &PatchParams::default(), &Patch::Strategic(&bad))
                .await
            {
                log(&format!("break {name}: {e}"));
                self.counts.api_errors += 1;
            }
        }
        for name in self.delete_at.remove(&round).unwrap_or_default() {
            self.delete(&name).await;
        }
        self.review(sandbox).await;
        self.admission_traffic(round).await;
    }

    async fn add_broken(&mut self, round: u64) {
        let kind = (round / 6) % 4;
        let (name, keep_rounds) = match kind {
            0 => {
                let name = format!("fix-{round}");
                self.create(&name, 2, json!({"name": "web", "image": GOOD_IMAGE}))
                    .await;
                self.break_at
                    .entry(round + 3)
                    .or_default()
                    .push(name.clone());
                (name, 30)
            }
            1 => {
                let name = format!("model-{round}");
                self.create(&name, 1, json!({"name": "web", "image": "ngnix:1.25.5"}))
                    .await;
                (name, 30)
            }
            2 => {
                let name = format!("oom-{round}");
                self.create(
                    &name,
                    2,
                    json!({"name": "cache", "image": "redis:7.2.5",
                           "resources": {"limits": {"memory": "16Mi"}}}),
                )
                .await;
                (name, 30)
            }
            _ => {
                let name = format!("gone-{round}");
                self.create(
                    &name,
                    1,
                    json!({"name": "web", "image": "nginx:9.9.9-nope"}),
                )
                .await;
                (name, 9)
            }
        };
        self.delete_at
            .entry(round + keep_rounds)
            .or_default()
            .push(name);
    }

    /// The reviewer: approves the first proposal for `fix-` and `oom-`
    /// workloads, rejects every other one, and leaves `gone-` cases alone.
    async fn review(&mut self, sandbox: &Sandbox) {
        let all = support::remediations(&self.client, &self.repair).await;
        for r in all {
            if phase(&r) != Phase::Proposed || self.acted_on.contains(&r.name_any()) {
                continue;
            }
            let workload = r.spec.target.name.clone();
            if workload.starts_with("gone-") {
                continue;
            }
            let approve = (workload.starts_with("fix-") || workload.starts_with("oom-"))
                && !self.approved_workloads.contains(&workload);
            let (ok, out) = if approve {
                sandbox.approve(&self.repair, &r.name_any())
            } else {
                sandbox.kubectl(&[
                    "-n",
                    &self.repair,
                    "patch",
                    "rem",
                    &r.name_any(),
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"rejected":true}}"#,
                ])
            };
            if !ok {
                log(&format!("review of {}: {out}", r.name_any()));
                self.counts.api_errors += 1;
                continue;
            }
            self.acted_on.insert(r.name_any());
            if approve {
                self.approved_workloads.insert(workload);
                self.counts.approved += 1;
            } else {
                self.counts.rejected += 1;
            }
        }
    }

    /// Pods created through the API server (so through the webhook), then
    /// deleted; the last of each round use `:latest`, which policy denies.
    async fn admission_traffic(&mut self, round: u64) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.admission);
        let _ = pods
            .delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels("soak=traffic"),
            )
            .await;
        for i in 0..PODS_PER_ROUND {
            let image = if i >= PODS_PER_ROUND - NON_COMPLIANT_PER_ROUND {
                "nginx:latest"
            } else {
                GOOD_IMAGE
            };
            let pod: Pod = match serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p-{round}-{i}"), "labels": {"soak": "traffic"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            })) {
                Ok(pod) => pod,
                Err(_) => continue,
            };
            let started = Instant::now();
            let result = pods.create(&PostParams::default(), &pod).await;
            self.admission_ms
                .push(started.elapsed().as_secs_f64() * 1000.0);
            match result {
                Ok(_) => self.counts.pods_admitted += 1,
                Err(kube::Error::Api(e)) if e.code == 400 || e.code == 403 => {
                    self.counts.pods_denied += 1
                }
                Err(e) => {
                    log(&format!("pod create: {e}"));
                    self.counts.pod_errors += 1;
                }
            }
        }
    }

    /// Deletes every workload the churn made.
    async fn delete_everything(&mut self) {
        let names: Vec<String> = self
            .deployments()
            .list(&ListParams::default())
            .await
            .map(|l| l.items.iter().map(|d| d.name_any()).collect())
            .unwrap_or_default();
        for name in names {
            self.delete(&name).await;
        }
        let _ = Api::<Pod>::namespaced(self.client.clone(), &self.admission)
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await;
    }
}

/// Open phases by Remediation, and since when, to find stuck cases.
#[derive(Default)]
struct PhaseTracker {
    seen: HashMap<String, (String, Phase, Instant)>,
    stuck: BTreeMap<String, Value>,
    created: usize,
}

impl PhaseTracker {
    fn observe(&mut self, all: &[Remediation], now: Instant) {
        for r in all {
            let uid = r.uid().unwrap_or_default();
            let current = phase(r);
            let created = &mut self.created;
            let entry = self.seen.entry(uid).or_insert_with(|| {
                *created += 1;
                (r.name_any(), current, now)
            });
            if entry.1 != current {
                *entry = (r.name_any(), current, now);
            }
            let open_for = now.duration_since(entry.2);
            if !current.is_closed() && open_for >= STUCK_AFTER {
                self.stuck.insert(
                    r.name_any(),
                    json!({
                        "phase": format!("{current:?}"),
                        "minutes": round1(open_for.as_secs_f64() / 60.0),
                        "message": r.status.as_ref().map(|s| s.message.clone()),
                    }),
                );
            }
        }
    }
}

fn by_phase(all: &[Remediation]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in all {
        *counts.entry(format!("{:?}", phase(r))).or_insert(0) += 1;
    }
    counts
}

async fn sample(
    operator: &OperatorProcess,
    pid: u32,
    minute: f64,
    all: &[Remediation],
) -> anyhow::Result<Value> {
    let (_, rss) = support::memory_mib(pid).context("the operator exited")?;
    let metrics = operator.try_metrics().await?;
    Ok(json!({
        "minute": round1(minute),
        "rss_mib": round1(rss),
        "open_fds": support::open_fds(pid),
        "threads": support::threads(pid),
        "runtime_tasks": series(&metrics, "aiops_runtime_tasks"),
        "model_calls_held": series(&metrics, "remediation_model_calls_held"),
        "remediations": by_phase(all),
        "load": support::loadavg(),
    }))
}

/// Whether a series stayed flat after the warm-up: the second half's peak
/// is at most the first half's peak plus 10 % and `slack`.
fn flatness(samples: &[Value], field: &str, warmup_minutes: f64, slack: f64) -> Value {
    let values: Vec<f64> = samples
        .iter()
        .filter(|s| s["minute"].as_f64().unwrap_or(0.0) >= warmup_minutes)
        .filter_map(|s| s[field].as_f64())
        .collect();
    if values.len() < 4 {
        return json!({"flat": null, "why": "fewer than 4 samples after the warm-up"});
    }
    let (first, second) = values.split_at(values.len() / 2);
    let peak = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let (first_peak, second_peak) = (peak(first), peak(second));
    json!({
        "flat": second_peak <= first_peak * 1.10 + slack,
        "first_half_peak": first_peak,
        "second_half_peak": second_peak,
        "after_warmup_min": values.iter().copied().fold(f64::MAX, f64::min),
        "slack": slack,
    })
}

async fn measure() -> anyhow::Result<()> {
    let minutes = minutes_from_env("SOAK_MINUTES", 60.0)?;
    let warmup = minutes_from_env("SOAK_WARMUP_MINUTES", 10.0)?;
    let sample_every = Duration::from_secs_f64(minutes_from_env("SOAK_SAMPLE_SECONDS", 60.0)?);
    if warmup >= minutes {
        bail!("SOAK_WARMUP_MINUTES ({warmup}) must be shorter than SOAK_MINUTES ({minutes})");
    }
    let url = model_server()?;
    let sandbox = Sandbox::connect().await;
    // Image candidates elsewhere in the cluster, as in a real one.
    let reference = sandbox.namespace("soak-ref").await;
    let reference_deployment: Deployment = serde_json::from_value(support::deployment(
        "ref-web",
        1,
        json!({"name": "web", "image": GOOD_IMAGE}),
    ))?;
    Api::<Deployment>::namespaced(sandbox.client.clone(), &reference.name)
        .create(&PostParams::default(), &reference_deployment)
        .await
        .context("the reference Deployment")?;

    support::stop_all_operators();
    let operator = support::try_start_operator(
        "op-soak",
        &[
            (
                "AIOPS_OPERATOR_ARGS",
                "--verify-timeout-seconds 60 --resolve-after-seconds 15 --retention-seconds 120",
            ),
            ("AIOPS_LLM_URL", url.as_str()),
            ("AIOPS_LLM_MODEL", "smollm2"),
        ],
    )?;
    let pid = operator.pid().context("the operator's pid")?;
    let repair = sandbox.e2e_namespace("soak-repair").await;
    let admission = sandbox.e2e_namespace("soak-admit").await;
    log(&format!(
        "{minutes} min ({warmup} warm-up), operator pid {pid}, namespaces {} and {}",
        repair.name, admission.name
    ));
    let mut churn = Churn {
        client: sandbox.client.clone(),
        repair: repair.name.clone(),
        admission: admission.name.clone(),
        counts: Counts::default(),
        delete_at: BTreeMap::new(),
        break_at: BTreeMap::new(),
        acted_on: HashSet::new(),
        approved_workloads: HashSet::new(),
        admission_ms: Vec::new(),
    };
    let mut tracker = PhaseTracker::default();
    let mut samples = Vec::new();
    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut next_sample = started;
    let mut round = 0u64;
    while started.elapsed() < total {
        let round_started = Instant::now();
        churn.round(round, &sandbox).await;
        round += 1;
        let all = support::remediations(&sandbox.client, &repair.name).await;
        tracker.observe(&all, Instant::now());
        if Instant::now() >= next_sample {
            let minute = started.elapsed().as_secs_f64() / 60.0;
            let s = sample(&operator, pid, minute, &all).await?;
            log(&format!("{s}"));
            samples.push(s);
            next_sample += sample_every;
        }
        tokio::time::sleep(ROUND.saturating_sub(round_started.elapsed())).await;
    }

    log("churn stopped; deleting every workload, waiting for open cases to close");
    churn.delete_everything().await;
    let drain_started = Instant::now();
    let open_after_drain = loop {
        let all = support::remediations(&sandbox.client, &repair.name).await;
        tracker.observe(&all, Instant::now());
        let open: Vec<Value> = all
            .iter()
            .filter(|r| !phase(r).is_closed())
            .map(|r| json!({"name": r.name_any(), "phase": format!("{:?}", phase(r))}))
            .collect();
        if open.is_empty() || drain_started.elapsed() > DRAIN {
            break open;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let drained_s = drain_started.elapsed().as_secs_f64();
    let all = support::remediations(&sandbox.client, &repair.name).await;
    let last = sample(&operator, pid, started.elapsed().as_secs_f64() / 60.0, &all).await?;
    let operator_log = operator.log();
    let panics = operator_log.matches("panicked").count();
    operator.stop();
    support::stop_all_operators();

    let mut latencies = churn.admission_ms.clone();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
    };
    let verdicts = json!({
        "rss_mib": flatness(&samples, "rss_mib", warmup, 5.0),
        "open_fds": flatness(&samples, "open_fds", warmup, 4.0),
        "threads": flatness(&samples, "threads", warmup, 2.0),
        "runtime_tasks": flatness(&samples, "runtime_tasks", warmup, 20.0),
        "model_calls_held": flatness(&samples, "model_calls_held", warmup, 2.0),
    });
    let all_flat = verdicts
        .as_object()
        .map(|v| v.values().all(|s| s["flat"] == json!(true)))
        .unwrap_or(false);
    let c = &churn.counts;
    let report = json!({
        "flat_after_warmup": all_flat,
        "stuck_remediations": tracker.stuck,
        "open_after_drain": open_after_drain,
        "drained_s": round1(drained_s),
        "panics_in_log": panics,
        "verdicts": verdicts,
        "after_drain": last,
        "churn": {
            "rounds": round,
            "remediations_seen": tracker.created,
            "deployments_created": c.deployments_created,
            "deployments_deleted": c.deployments_deleted,
            "approved": c.approved,
            "rejected": c.rejected,
            "pods_admitted": c.pods_admitted,
            "pods_denied": c.pods_denied,
            "pod_errors": c.pod_errors,
            "api_errors": c.api_errors,
            "pod_create_ms": {"p50": percentile(0.5), "p99": percentile(0.99), "max": latencies.last()},
        },
        "setup": {
            "minutes": minutes,
            "warmup_minutes": warmup,
            "sample_seconds": sample_every.as_secs_f64(),
            "round_seconds": ROUND.as_secs(),
            "stuck_after_minutes": STUCK_AFTER.as_secs() / 60,
            "operator": "one local replica of this build, --verify-timeout-seconds 60 --resolve-after-seconds 15 --retention-seconds 120, model SmolLM2 on llama.cpp's server",
            "flat": "second half's peak <= first half's peak x 1.10 + slack, over the samples after the warm-up",
        },
        "samples": samples,
    });
    let out = repo_root().join("target/bench/soak.json");
    std::fs::create_dir_all(out.parent().context("target/bench")?)?;
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    log(&format!(
        "flat after warm-up: {all_flat}; stuck: {}; open after drain: {}; {} rounds, {} remediations -> {}",
        report["stuck_remediations"]
            .as_object()
            .map_or(0, |m| m.len()),
        report["open_after_drain"].as_array().map_or(0, Vec::len),
        round,
        tracker.created,
        out.display()
    ));
    drop(reference);
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
