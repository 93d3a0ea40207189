//! `make bench-policy`: the policy engine alone, in one thread, on the same
//! reviews `bench-webhook` sends (`tests/bench/make_reviews.py`): all 12
//! policies of `policies/` against a Pod CREATE and a Deployment CREATE.
//! No TLS, HTTP or JSON parsing of the body; this is the share of a review's
//! CPU the engine costs, the one number that decides the webhook's ceiling.
//! Writes `target/bench/policy-eval.json` (microseconds per review).
//!
//! Alongside the engine it times the other stage of the webhook's request
//! path that runs in the same thread: parsing the body (`parse_review`,
//! which /noop also does). The binary's allocator is used here too.
//!
//! Next to the patterns, the same baseline checks as CEL
//! (`ValidatingPolicy`, read in place from
//! `../shared/conformance/kyverno-cel/pod-security-vpol/baseline`), in
//! alternating rounds: `cel_us_per_review` beside `us_per_review`.
//!
//! Knob: `BENCH_POLICY_SECONDS` (3 per review and stage).
//!
//! `cargo test --all-targets` also runs bench targets, without `--bench`;
//! then this does nothing.
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use aiops_operator::admission::review;
use aiops_operator::policy::{EvalInput, Operation, PolicySet, RuleStatus, UserInfo};
use serde_json::{Value, json};
use support::repo_root;

// The shipped binary's allocator (src/main.rs), so the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if !std::env::args().any(|arg| arg == "--bench") {
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-policy: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn reviews_dir() -> Result<PathBuf, String> {
    let dir = repo_root().join("target/bench/reviews");
    let status = Command::new("python3")
        .arg(repo_root().join("tests/bench/make_reviews.py"))
        .arg(&dir)
        .status()
        .map_err(|e| format!("python3 tests/bench/make_reviews.py: {e}"))?;
    if !status.success() {
        return Err(format!("tests/bench/make_reviews.py failed: {status}"));
    }
    Ok(dir)
}

/// The review's body and its `request`.
fn read_review(path: &Path) -> Result<(Vec<u8>, Value), String> {
    let body = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let review: Value =
        serde_json::from_slice(&body).map_err(|e| format!("{}: {e}", path.display()))?;
    let request = review
        .get("request")
        .cloned()
        .ok_or_else(|| format!("{}: no request", path.display()))?;
    Ok((body, request))
}

/// Seconds per call of `f`, after a warm-up, over about `seconds`.
fn seconds_per_call(seconds: f64, mut f: impl FnMut()) -> (u64, f64) {
    for _ in 0..200 {
        f();
    }
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        for _ in 0..50 {
            f();
        }
        n += 50;
    }
    (n, started.elapsed().as_secs_f64() / n as f64)
}

fn micros(seconds: f64) -> f64 {
    (seconds * 1e7).round() / 10.0
}

fn input(request: &Value) -> Result<EvalInput<'_>, String> {
    let object = request
        .get("object")
        .ok_or("the review has no request.object")?;
    let mut input = EvalInput::for_resource(object);
    input.operation = Operation::Create;
    input.admission_info = Some(request);
    input.user_info = UserInfo {
        username: request["userInfo"]["username"]
            .as_str()
            .unwrap_or_default()
            .into(),
        groups: request["userInfo"]["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        ..UserInfo::default()
    };
    Ok(input)
}

fn run() -> Result<(), String> {
    let seconds: f64 = std::env::var("BENCH_POLICY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let policies = PolicySet::load_dir(&repo_root().join("policies")).map_err(|e| e.to_string())?;
    // The same baseline checks written as ValidatingPolicies (CEL), read
    // in place from the shared conformance data.
    let cel_dir = repo_root().join("../shared/conformance/kyverno-cel/pod-security-vpol/baseline");
    let cel_policies =
        PolicySet::load_dir(&cel_dir).map_err(|e| format!("{}: {e}", cel_dir.display()))?;
    let dir = reviews_dir()?;
    let mut rows = BTreeMap::new();
    for name in ["pod", "deployment"] {
        let (body, request) = read_review(&dir.join(format!("{name}-review.json")))?;
        let input = input(&request)?;
        let outcomes = policies.validate(&input);
        let failed: Vec<String> = outcomes
            .iter()
            .filter(|o| o.status != RuleStatus::Pass)
            .map(|o| format!("{}/{}: {:?} {}", o.policy, o.rule, o.status, o.message))
            .collect();
        if outcomes.is_empty() || !failed.is_empty() {
            return Err(format!(
                "the {name} review must pass every rule that applies; got {} outcomes, not passing: {failed:?}",
                outcomes.len()
            ));
        }
        let cel_outcomes = cel_policies.validate(&input);
        if cel_outcomes.is_empty() {
            return Err(format!("no CEL rule applies to the {name} review"));
        }
        // Patterns and CEL alternate, two rounds each, so a change in the
        // machine's load shows in both.
        let mut pattern_rounds = Vec::new();
        let mut cel_rounds = Vec::new();
        let mut n = 0;
        for _ in 0..2 {
            let (count, per) = seconds_per_call(seconds / 2.0, || {
                std::hint::black_box(policies.validate(std::hint::black_box(&input)));
            });
            n += count;
            pattern_rounds.push(per);
            let (_, per) = seconds_per_call(seconds / 2.0, || {
                std::hint::black_box(cel_policies.validate(std::hint::black_box(&input)));
            });
            cel_rounds.push(per);
        }
        let mean = |rounds: &[f64]| rounds.iter().sum::<f64>() / rounds.len() as f64;
        let per = mean(&pattern_rounds);
        let cel_per = mean(&cel_rounds);
        review::parse_review(&body).map_err(|e| e.to_string())?;
        let (_, parse) = seconds_per_call(seconds, || {
            std::hint::black_box(review::parse_review(std::hint::black_box(&body)).ok());
        });
        let row = json!({
            "body_bytes": body.len(),
            "rules_evaluated": outcomes.len(),
            "evaluations": n,
            "us_per_review": micros(per),
            "reviews_per_s_one_core": (1.0 / per).round(),
            "parse_review_us": micros(parse),
            "pattern_us_rounds": pattern_rounds.iter().map(|s| micros(*s)).collect::<Vec<_>>(),
            "cel_rules_evaluated": cel_outcomes.len(),
            "cel_us_per_review": micros(cel_per),
            "cel_us_rounds": cel_rounds.iter().map(|s| micros(*s)).collect::<Vec<_>>(),
            "cel_to_pattern": ((cel_per / per) * 100.0).round() / 100.0,
        });
        eprintln!("bench-policy: {name}: {row}");
        rows.insert(name, row);
    }
    let report = json!({
        "benchmark": "bench-policy",
        "policies": policies.policies().count(),
        "cel_policies": cel_policies.policies().count(),
        "cel_policy_dir": "../shared/conformance/kyverno-cel/pod-security-vpol/baseline",
        "reviews": rows,
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    let out = repo_root().join("target/bench/policy-eval.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n",
    )
    .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("bench-policy: wrote {}", out.display());
    Ok(())
}
