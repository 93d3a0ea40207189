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

#[path = "../../support/mod.rs"]
mod support;

mod fleet;
mod observe;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::flowcontrol::v1::FlowSchema;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use support::{Sandbox, operators_dir, repo_root};

use fleet::{delete_namespaces, other_operators};
use run::{round3, run};
use support::loadavg;

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

fn main() -> ExitCode {
    support::run_benchmark("detect", "bench-detect", main_async)
}

fn log(message: impl AsRef<str>) {
    eprintln!("bench-detect: {}", message.as_ref());
}

async fn main_async() -> Result<()> {
    let settings = Settings::from_env()?;
    let sandbox = Sandbox::try_connect().await?;
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
    let port = std::fs::read_to_string(operators_dir().join(OPERATOR_NAME).join("port"))
        .unwrap_or_default();
    if let Err(error) = support::local_sh(&["stop", OPERATOR_NAME], &[]) {
        log(format!("stopping the operator: {error:#}"));
    }
    // Remove the webhook registrations only if they still point at our
    // replica (a test may have re-pointed them at its own since).
    let port = port.trim();
    if !port.is_empty() {
        let (ok, url) = sandbox.kubectl(&[
            "get",
            "mutatingwebhookconfiguration",
            "aiops-operator-approval",
            "-o",
            "jsonpath={.webhooks[0].clientConfig.url}",
        ]);
        if ok && url.contains(&format!("127.0.0.1:{port}/")) {
            support::local_sh(&["uninstall"], &[])?;
        }
    }
    let gone = delete_namespaces(&sandbox.client, Duration::from_secs(900)).await?;
    let _ = Api::<FlowSchema>::all(sandbox.client.clone())
        .delete(FLOW_SCHEMA, &DeleteParams::default())
        .await;
    Ok(gone)
}
