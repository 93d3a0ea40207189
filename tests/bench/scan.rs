//! `make bench-scan`: what the background policy scan costs. In the sandbox,
//! it creates `BENCH_SCAN_WORKLOADS` Deployments (default 1,000, replicas 0
//! so that kwok has no pods to play) over `BENCH_SCAN_NAMESPACES` (10)
//! namespaces, one in `BENCH_SCAN_VIOLATING_EVERY` (2) with a privileged
//! container, then starts the operator (this build's release binary) with
//! `--scan-interval 20s` and the shipped ConfigMap (mode `Policy`, so
//! violations are reported and no Remediation is opened). Writes
//! `target/bench/scan.json`:
//!
//! - `first_scan_s`: the scan on start, which writes one PolicyReport per
//!   violating Deployment (checked: the count must match);
//! - `idle_scan_s`: the median of the next `BENCH_SCAN_IDLE_SCANS` (3)
//!   scans, which find nothing changed and write nothing;
//! - `cpu_ms_per_idle_scan` and `cpu_us_per_object`: the operator's CPU
//!   time (user + system, from `/proc/PID/stat`) over the idle scans, per
//!   scan and per judged object (it includes the controller's and the
//!   webhook's idle work, which is small beside it);
//! - `rss_mib`: the operator's peak RSS (`VmHWM`).
//!
//! The scan durations come from the operator's own
//! `remediation_policy_scan_seconds` histogram. Everything it creates is
//! removed at the end, also when it fails. `cargo test --all-targets` runs
//! bench targets without `--bench`; then this does nothing.
#[path = "../support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use support::{OperatorProcess, Sandbox, create_namespace, repo_root};

const OPERATOR: &str = "bench-scan-op";
const NS_LABEL: &str = "aiops-operator.dev/bench-scan";

fn main() -> ExitCode {
    support::run_benchmark("scan", "bench-scan", measure)
}

fn knob(name: &str, default: usize) -> Result<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().with_context(|| format!("{name}={v}")))
        .transpose()
        .map(|v| v.unwrap_or(default))
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("/proc stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // The kernel's clock ticks are 100 per second on Linux x86-64.
    Ok(ticks / 100.0)
}

/// (count, sum) of the operator's scan-duration histogram.
async fn scans(op: &OperatorProcess) -> Result<(u64, f64)> {
    let text = op.try_metrics().await?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok())
    };
    Ok((
        value("remediation_policy_scan_seconds_count").unwrap_or(0.0) as u64,
        value("remediation_policy_scan_seconds_sum").unwrap_or(0.0),
    ))
}

async fn wait_scans(op: &OperatorProcess, at_least: u64, timeout: Duration) -> Result<(u64, f64)> {
    let started = Instant::now();
    loop {
        let seen = scans(op).await?;
        if seen.0 >= at_least {
            return Ok(seen);
        }
        if started.elapsed() > timeout {
            bail!(
                "only {} scan(s) after {timeout:?}; operator log:\n{}",
                seen.0,
                op.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn deployment(name: &str, privileged: bool) -> Result<Deployment> {
    let mut container = json!({"name": "web", "image": "nginx:1.25.5"});
    if privileged {
        container["securityContext"] = json!({"privileged": true});
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [container]}}}
    }))?)
}

async fn policy_reports(sandbox: &Sandbox, namespaces: &[String]) -> Result<usize> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "wgpolicyk8s.io",
        "v1alpha2",
        "PolicyReport",
    ));
    let mut count = 0;
    for ns in namespaces {
        let api: Api<DynamicObject> = Api::namespaced_with(sandbox.client.clone(), ns, &resource);
        count += api.list(&ListParams::default()).await?.items.len();
    }
    Ok(count)
}

async fn cleanup(sandbox: &Sandbox, namespaces: &[String]) {
    support::stop_all_operators();
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(sandbox.client.clone());
    for ns in namespaces {
        let _ = api.delete(ns, &DeleteParams::default()).await;
    }
}

async fn measure() -> Result<()> {
    let workloads = knob("BENCH_SCAN_WORKLOADS", 1000)?;
    let namespace_count = knob("BENCH_SCAN_NAMESPACES", 10)?.max(1);
    let every = knob("BENCH_SCAN_VIOLATING_EVERY", 2)?.max(1);
    let idle_scans = knob("BENCH_SCAN_IDLE_SCANS", 3)?.max(1) as u64;
    let sandbox = Sandbox::connect().await;
    support::stop_all_operators();
    let run = std::process::id();
    let namespaces: Vec<String> = (0..namespace_count)
        .map(|i| format!("bench-scan-{run:x}-{i}"))
        .collect();
    let result = async {
        for ns in &namespaces {
            create_namespace(&sandbox.client, ns, &[(NS_LABEL, "true")]).await?;
        }
        let mut violating = 0;
        let mut specs = Vec::new();
        for i in 0..workloads {
            let privileged = i % every == 0;
            violating += usize::from(privileged);
            specs.push((
                namespaces[i % namespace_count].clone(),
                format!("app-{i}"),
                privileged,
            ));
        }
        futures::stream::iter(specs)
            .map(|(ns, name, privileged)| {
                let client = sandbox.client.clone();
                async move {
                    let api: Api<Deployment> = Api::namespaced(client, &ns);
                    api.create(&PostParams::default(), &deployment(&name, privileged)?)
                        .await
                        .with_context(|| format!("creating {ns}/{name}"))
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;

        let binary = repo_root().join("target/release/aiops-operator");
        let binary = binary.to_string_lossy().into_owned();
        let op = support::try_start_operator(
            OPERATOR,
            &[
                ("AIOPS_BIN", binary.as_str()),
                ("AIOPS_OPERATOR_ARGS", "--scan-interval 20s"),
            ],
        )?;
        let pid = op.pid().context("the operator's pid")?;
        let (_, first_sum) = wait_scans(&op, 1, Duration::from_secs(300)).await?;
        let reports = policy_reports(&sandbox, &namespaces).await?;
        if reports != violating {
            bail!("{reports} PolicyReports for {violating} violating Deployments");
        }
        let (count_before, sum_before) = scans(&op).await?;
        let cpu_before = cpu_seconds(pid)?;
        let (count_after, sum_after) = wait_scans(
            &op,
            count_before + idle_scans,
            Duration::from_secs(30 * (idle_scans + 2)),
        )
        .await?;
        let cpu_after = cpu_seconds(pid)?;
        let idle = (count_after - count_before) as f64;
        let idle_scan_s = (sum_after - sum_before) / idle;
        let cpu_ms_per_scan = (cpu_after - cpu_before) * 1000.0 / idle;
        let rss_mib = support::memory_mib(pid).map(|(peak, _)| peak);
        let report = json!({
            "workloads": workloads,
            "violating": violating,
            "namespaces": namespace_count,
            "policy_reports": reports,
            "first_scan_s": first_sum,
            "idle_scans": count_after - count_before,
            "idle_scan_s": idle_scan_s,
            "cpu_ms_per_idle_scan": cpu_ms_per_scan,
            "cpu_us_per_object": cpu_ms_per_scan * 1000.0 / workloads as f64,
            "rss_mib": rss_mib,
            "loadavg": support::loadavg(),
        });
        let out = repo_root().join("target/bench");
        std::fs::create_dir_all(&out)?;
        std::fs::write(
            out.join("scan.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    }
    .await;
    cleanup(&sandbox, &namespaces).await;
    result
}
