//! `make bench-failover`: how long the repair loop is without a leader when
//! the leader crashes. Each run starts two local replicas against the
//! sandbox, waits for one to hold the Lease, kills it with SIGKILL (so the
//! Lease is not released) and times until the other logs that its
//! controller runs. Default Lease settings (15 s duration). Writes
//! `target/bench/failover.json`: `takeover_s` (the median) and every run.
#[path = "../support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use support::{Sandbox, repo_root};

const RUNS_DEFAULT: usize = 5;

fn main() -> ExitCode {
    support::run_benchmark("failover", "bench-failover", measure)
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get("aiops-operator-leader")
        .await
        .ok()?
        .spec?
        .holder_identity
}

async fn measure() -> anyhow::Result<()> {
    let runs: usize = std::env::var("FAILOVER_RUNS")
        .ok()
        .map(|v| v.parse().context("FAILOVER_RUNS"))
        .transpose()?
        .unwrap_or(RUNS_DEFAULT);
    let sandbox = Sandbox::connect().await;
    let leases: Api<Lease> = Api::namespaced(sandbox.client.clone(), "aiops-system");
    let mut results = Vec::new();
    for run in 1..=runs {
        support::stop_all_operators();
        let a = support::try_start_operator("op-fo-a", &[])?;
        let b = support::try_start_operator("op-fo-b", &[("AIOPS_REGISTER_WEBHOOKS", "0")])?;
        let started = Instant::now();
        let first = loop {
            if let Some(name) = holder(&leases).await {
                let replica = if name == a.name { &a } else { &b };
                if (name == a.name || name == b.name) && replica.log().contains("leading:") {
                    break name;
                }
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("run {run}: no replica led within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (leader, follower) = if first == a.name { (&a, &b) } else { (&b, &a) };
        let killed = Instant::now();
        leader.kill_hard();
        let lease_taken = loop {
            if holder(&leases).await.as_deref() == Some(follower.name.as_str()) {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(120) {
                bail!("run {run}: {} never took the Lease", follower.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let acting = loop {
            if follower.log().contains("leading:") {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(120) {
                bail!("run {run}: {} never started its controller", follower.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!(
            "bench-failover: run {run}: {} killed, {} holds the Lease after {:.2} s and acts after {:.2} s",
            leader.name,
            follower.name,
            lease_taken.as_secs_f64(),
            acting.as_secs_f64()
        );
        results.push(json!({
            "killed": leader.name,
            "lease_taken_s": round2(lease_taken.as_secs_f64()),
            "takeover_s": round2(acting.as_secs_f64()),
        }));
    }
    support::stop_all_operators();
    let mut takeovers: Vec<f64> = results
        .iter()
        .filter_map(|r| r["takeover_s"].as_f64())
        .collect();
    takeovers.sort_by(f64::total_cmp);
    let median = takeovers[takeovers.len() / 2];
    let report = json!({
        "takeover_s": median,
        "max_takeover_s": takeovers.last().copied(),
        "target_takeover_at_most_15s": median <= 15.0,
        "setup": {
            "runs": runs,
            "lease_duration_s": 15,
            "lease_grace_s": 5,
            "replicas": "two local processes of this build against the sandbox, the leader killed with SIGKILL",
            "takeover": "from the kill to the follower's `leading:` log line (its controller running)",
        },
        "runs": results,
    });
    let out = repo_root().join("target/bench/failover.json");
    std::fs::create_dir_all(out.parent().context("target/bench")?)?;
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    eprintln!(
        "bench-failover: median take-over {median:.2} s over {runs} runs -> {}",
        out.display()
    );
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
