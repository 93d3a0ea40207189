//! `make bench-llm`: how good and how fast the local model's proposals are,
//! next to the rules' on the same broken workloads, through both model
//! routes. In the sandbox, with the operator running (this build's release
//! binary, started by `tests/operator/local.sh`), it runs each scenario
//! below once per mode: `rules` (`llm.provider: none`), `llamacpp` (the
//! `openai` provider and llama.cpp's server, `make llm-up`) and `ollama`
//! (the `ollama` provider and Ollama, `make ollama-up`), both serving
//! Qwen2.5-Coder-0.5B with `llm.always: true`, so the model is asked even
//! where the rules have a fix. The modes alternate scenario by scenario,
//! each scenario starting with the next mode, and the operator restarts for
//! every run, so no mode reuses another's proposal cache. Writes
//! `target/bench/llm.json`.
//!
//! Per scenario and mode: a fresh namespace (routed through the operator's
//! webhooks) and a workload, either rolled out healthy and then broken, or
//! created broken with no history. The bench waits for the one Remediation
//! to leave `Diagnosing`, records its proposal (source, actions, guardrail
//! verdict, dry run), approves it with `kubectl patch` when it is a
//! reviewable fix, and waits for `Verified`, `RolledBack` or `Failed`.
//! Model figures come from the operator's own `/metrics`, read before and
//! after each scenario (one scenario at a time, so the difference is that
//! scenario's one call): the call's result, its seconds, and the prompt and
//! completion tokens the model server reported.
//!
//! Rates are over all scenarios of a mode:
//! - `schema_valid_rate`: of the answers that came from the model server
//!   (cached answers left out), those valid against the incident's schema;
//! - `guardrail_pass_rate`: the shown proposal came from the mode's source
//!   (the model, in a model mode), had at least one action, and passed the
//!   guardrails and the server-side dry run, so a human could approve it;
//! - `verified_rate`: such a proposal, approved, ended `Verified`.
//!
//! Every image the scenarios use is in `tests/sandbox/images.yaml` unless
//! it is meant to be missing. A reference namespace keeps `nginx:1.25.5`,
//! `redis:7.2.5`, `busybox:1.36.1` and `postgres:16.4` running, so image
//! candidates exist "elsewhere in the cluster", as they would in a real one.
//!
//! Model modes also report the first call of the run apart from the warm
//! ones, the prompt tokens the server reused (llama.cpp reports them), its
//! time reading the prompt (time to first token) and its tokens per second.
//!
//! Knobs (environment): `BENCH_LLM_MODES` (`rules,llamacpp,ollama`),
//! `BENCH_LLM_SCENARIOS` (comma-separated names; default all),
//! `BENCH_LLM_VERIFY_TIMEOUT_SECONDS` (90).
//!
//! `cargo test --all-targets` also runs bench targets, without `--bench`;
//! then this does nothing.
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aiops_operator::remediation::crd::Phase;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{OperatorProcess, Sandbox, create, phase, remediations, wait_until};

/// How a scenario's workload is built and broken.
struct Scenario {
    name: &'static str,
    what: &'static str,
    kind: WorkloadKind,
    /// The pod spec of a first, healthy rollout; `None`: created broken.
    healthy: Option<Value>,
    /// The broken pod spec (replaces the healthy one's lists wholesale).
    broken: Value,
}

#[derive(Clone, Copy, PartialEq)]
enum WorkloadKind {
    Deployment,
    StatefulSet,
}

const REPLICAS: i32 = 2;

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image})
}

fn with_memory(mut c: Value, limit: &str) -> Value {
    c["resources"] = json!({"requests": {"memory": limit}, "limits": {"memory": limit}});
    c
}

fn with_env(mut c: Value, env: &[(&str, &str)]) -> Value {
    c["env"] = env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    c
}

fn pod(containers: Vec<Value>) -> Value {
    json!({"containers": containers})
}

fn scenarios() -> Vec<Scenario> {
    let redis = |limit: &str| with_memory(container("cache", "redis:7.2.5"), limit);
    let db = |env: &[(&str, &str)]| with_env(container("db", "postgres:16.4"), env);
    vec![
        Scenario {
            name: "new-misspelled-repository",
            what: "brand-new Deployment, image ngnix:1.25.5 (the repository is misspelled)",
            kind: WorkloadKind::Deployment,
            healthy: None,
            broken: pod(vec![container("web", "ngnix:1.25.5")]),
        },
        Scenario {
            name: "new-misspelled-tag",
            what: "brand-new Deployment, image redis:7.2.55 (the tag is misspelled)",
            kind: WorkloadKind::Deployment,
            healthy: None,
            broken: pod(vec![with_memory(
                container("cache", "redis:7.2.55"),
                "128Mi",
            )]),
        },
        Scenario {
            name: "new-unknown-image",
            what: "brand-new Deployment of an image nobody runs (no candidate exists)",
            kind: WorkloadKind::Deployment,
            healthy: None,
            broken: pod(vec![container(
                "api",
                "registry.example.com/payments/api:2.1.0",
            )]),
        },
        Scenario {
            name: "bad-tag-after-rollout",
            what: "nginx:1.25.5 rolled out, then nginx:1.25.99",
            kind: WorkloadKind::Deployment,
            healthy: Some(pod(vec![container("web", "nginx:1.25.5")])),
            broken: pod(vec![container("web", "nginx:1.25.99")]),
        },
        Scenario {
            name: "init-container-bad-tag",
            what: "init container busybox:1.36.1 rolled out, then busybox:1.36.9",
            kind: WorkloadKind::Deployment,
            healthy: Some(json!({
                "initContainers": [container("setup", "busybox:1.36.1")],
                "containers": [container("web", "nginx:1.25.5")],
            })),
            broken: json!({
                "initContainers": [container("setup", "busybox:1.36.9")],
                "containers": [container("web", "nginx:1.25.5")],
            }),
        },
        Scenario {
            name: "statefulset-bad-tag",
            what: "StatefulSet redis:7.2.5 rolled out, then redis:7.4.0",
            kind: WorkloadKind::StatefulSet,
            healthy: Some(pod(vec![redis("128Mi")])),
            broken: pod(vec![with_memory(
                container("cache", "redis:7.4.0"),
                "128Mi",
            )]),
        },
        Scenario {
            name: "memory-limit-cut",
            what: "redis with 128Mi rolled out, then its limit cut to 16Mi (OOMKilled)",
            kind: WorkloadKind::Deployment,
            healthy: Some(pod(vec![redis("128Mi")])),
            broken: pod(vec![redis("16Mi")]),
        },
        Scenario {
            name: "new-memory-too-low",
            what: "brand-new Deployment of redis with a 24Mi limit (OOMKilled)",
            kind: WorkloadKind::Deployment,
            healthy: None,
            broken: pod(vec![redis("24Mi")]),
        },
        Scenario {
            name: "required-env-removed",
            what: "postgres with POSTGRES_PASSWORD rolled out, then the variable removed",
            kind: WorkloadKind::Deployment,
            healthy: Some(pod(vec![db(&[
                ("POSTGRES_PASSWORD", "bench-only-value"),
                ("PGDATA", "/var/lib/postgresql/data/pgdata"),
            ])])),
            broken: pod(vec![db(&[("PGDATA", "/var/lib/postgresql/data/pgdata")])]),
        },
        Scenario {
            name: "new-required-env-missing",
            what: "brand-new Deployment of postgres without POSTGRES_PASSWORD",
            kind: WorkloadKind::Deployment,
            healthy: None,
            broken: pod(vec![db(&[])]),
        },
    ]
}

fn manifest(kind: WorkloadKind, name: &str, pod_spec: &Value) -> Value {
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": pod_spec});
    match kind {
        WorkloadKind::Deployment => json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": name}},
                     "template": template},
        }),
        WorkloadKind::StatefulSet => json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": REPLICAS, "serviceName": name, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": name}}, "template": template},
        }),
    }
}

/// Where a mode's proposals come from: the rules alone, or the model
/// through one of the two servers (both serve the same Qwen GGUF).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Rules,
    /// llama.cpp's server through the `openai` provider (`make llm-up`).
    LlamaCpp,
    /// Ollama through the `ollama` provider (`make ollama-up`).
    Ollama,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Rules => "rules",
            Mode::LlamaCpp => "llamacpp",
            Mode::Ollama => "ollama",
        }
    }

    fn parse(name: &str) -> Result<Mode, String> {
        match name {
            "rules" => Ok(Mode::Rules),
            "llamacpp" => Ok(Mode::LlamaCpp),
            "ollama" => Ok(Mode::Ollama),
            other => Err(format!(
                "BENCH_LLM_MODES: unknown mode {other:?} (rules, llamacpp, ollama)"
            )),
        }
    }
}

/// A running model server serving Qwen, and how the operator reaches it.
struct ModelServer {
    provider: &'static str,
    url: String,
    model: String,
}

impl ModelServer {
    /// The llama.cpp server `make llm-up` started.
    fn llamacpp() -> Result<ModelServer, String> {
        let dir = support::repo_root().join("target/llm");
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    format!(
                        "the local model server is not running ({}/{file}: {e}); \
                         start it with `make llm-up` (make bench-llm does)",
                        dir.display()
                    )
                })
        };
        let model = read("model")?;
        if model != "qwen" {
            return Err(format!(
                "the local model server runs {model}; bench-llm measures Qwen: `make llm-up MODEL=qwen`"
            ));
        }
        Ok(ModelServer {
            provider: "openai",
            url: read("url")?,
            model: "qwen2.5-coder-0.5b-instruct".into(),
        })
    }

    /// The Ollama `make ollama-up` started.
    fn ollama() -> Result<ModelServer, String> {
        let file = support::repo_root().join("target/ollama/env");
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "Ollama is not running ({}: {e}); start it with `make ollama-up MODEL=qwen` \
                 (make bench-llm does)",
                file.display()
            )
        })?;
        let var = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| format!("{} lacks {name}", file.display()))
        };
        let model = var("OLLAMA_MODEL")?;
        if !model.starts_with("qwen") {
            return Err(format!(
                "Ollama serves {model}; bench-llm measures Qwen: `make ollama-up MODEL=qwen`"
            ));
        }
        Ok(ModelServer {
            provider: "ollama",
            url: var("OLLAMA_URL")?,
            model,
        })
    }
}

fn log(message: impl AsRef<str>) {
    eprintln!("bench-llm: {}", message.as_ref());
}

fn main() -> ExitCode {
    support::run_benchmark("llm", "bench-llm", || async {
        run().await.map_err(anyhow::Error::msg)
    })
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

async fn run() -> Result<(), String> {
    let sandbox = Sandbox::connect().await;
    let verify_timeout: u64 = std::env::var("BENCH_LLM_VERIFY_TIMEOUT_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    let modes: Vec<Mode> = env_list("BENCH_LLM_MODES")
        .unwrap_or_else(|| vec!["rules".into(), "llamacpp".into(), "ollama".into()])
        .iter()
        .map(|m| Mode::parse(m))
        .collect::<Result<_, _>>()?;
    let mut servers: BTreeMap<&'static str, ModelServer> = BTreeMap::new();
    for mode in &modes {
        match mode {
            Mode::Rules => {}
            Mode::LlamaCpp => {
                servers.insert(mode.as_str(), ModelServer::llamacpp()?);
            }
            Mode::Ollama => {
                servers.insert(mode.as_str(), ModelServer::ollama()?);
            }
        }
    }
    let wanted = env_list("BENCH_LLM_SCENARIOS");
    let scenarios: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| {
            wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|n| n == s.name))
        })
        .collect();
    if scenarios.is_empty() {
        return Err("BENCH_LLM_SCENARIOS selects no scenario".into());
    }

    let reference = sandbox.namespace("llm-bench-ref").await;
    for (name, c) in [
        ("ref-web", container("web", "nginx:1.25.5")),
        (
            "ref-cache",
            with_memory(container("cache", "redis:7.2.5"), "128Mi"),
        ),
        ("ref-tools", container("tools", "busybox:1.36.1")),
        (
            "ref-db",
            with_env(
                container("db", "postgres:16.4"),
                &[("POSTGRES_PASSWORD", "reference-only")],
            ),
        ),
    ] {
        support::create_deployment(&sandbox.client, &reference.name, name, 1, c).await;
        wait_rolled_out(
            &sandbox.client,
            &reference.name,
            WorkloadKind::Deployment,
            name,
        )
        .await?;
    }
    log("reference workloads running (image candidates elsewhere in the cluster)");

    let started = Instant::now();
    let mut results: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
    // Modes alternate scenario by scenario, each scenario starting with a
    // different mode, so that neither the time of the run nor the state a
    // previous mode left (a warm cache, a busy node) favours one mode.
    for (index, scenario) in scenarios.iter().enumerate() {
        for turn in 0..modes.len() {
            let mode = modes[(index + turn) % modes.len()];
            support::stop_all_operators();
            let verify = format!("--verify-timeout-seconds {verify_timeout}");
            let mut env = vec![("AIOPS_OPERATOR_ARGS", verify.as_str())];
            if let Some(server) = servers.get(mode.as_str()) {
                env.extend([
                    ("AIOPS_LLM_PROVIDER", server.provider),
                    ("AIOPS_LLM_URL", server.url.as_str()),
                    ("AIOPS_LLM_MODEL", server.model.as_str()),
                    ("AIOPS_LLM_ALWAYS", "true"),
                ]);
            }
            let operator = support::start_operator(&format!("bench-llm-{}", mode.as_str()), &env);
            let row = run_scenario(&sandbox, &operator, mode, scenario, verify_timeout).await;
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    operator.stop();
                    return Err(format!(
                        "{} / {}: {e}\noperator log tail:\n{}",
                        mode.as_str(),
                        scenario.name,
                        operator.log_tail(30)
                    ));
                }
            };
            operator.stop();
            log(format!("{} / {}: {row}", mode.as_str(), scenario.name));
            results.entry(mode.as_str()).or_default().push(row);
        }
    }
    drop(reference);
    // No registration may point at the stopped operator afterwards.
    support::uninstall_webhooks();

    let report = json!({
        "model": "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M",
        "model_servers": servers.iter().map(|(mode, server)| (mode.to_string(), json!({
            "provider": server.provider,
            "model": server.model,
            "server": match *mode {
                "ollama" => "Ollama built from its Go module (make ollama-up)",
                _ => "llama.cpp server from the PyPI wheel xllamacpp (make llm-up)",
            },
        }))).collect::<serde_json::Map<_, _>>(),
        "order": "modes alternate per scenario, each scenario starting with the next mode",
        "scenarios": scenarios.iter().map(|s| json!({"name": s.name, "what": s.what})).collect::<Vec<_>>(),
        "replicas": REPLICAS,
        "verify_timeout_seconds": verify_timeout,
        "elapsed_s": round3(started.elapsed().as_secs_f64()),
        "modes": results.iter().map(|(mode, rows)| (mode.to_string(), summarize(mode, rows))).collect::<serde_json::Map<_, _>>(),
        "rows": results,
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    let mut flat = report.clone();
    // The headline keys, for the llama.cpp route, at the top level.
    if let Some(model) = report["modes"].get("llamacpp").and_then(Value::as_object) {
        for (key, value) in model {
            flat[key] = value.clone();
        }
    }
    let dir = support::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("llm.json");
    let text = serde_json::to_string_pretty(&flat).map_err(|e| e.to_string())?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    log(format!("wrote {}", path.display()));
    println!(
        "{}",
        serde_json::to_string_pretty(&report["modes"]).unwrap_or_default()
    );
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The aggregate figures of one mode.
fn summarize(mode: &str, rows: &[Value]) -> Value {
    let n = rows.len().max(1) as f64;
    let count = |f: &dyn Fn(&Value) -> bool| rows.iter().filter(|r| f(r)).count();
    let from_mode = |r: &Value| {
        let source = r["source"].as_str().unwrap_or("");
        if mode != "rules" {
            source != "rules" && !source.is_empty()
        } else {
            source == "rules"
        }
    };
    let reviewable = count(&|r| from_mode(r) && r["reviewable"] == true);
    let verified = count(&|r| from_mode(r) && r["final_phase"] == "Verified");
    let mut model_seconds: Vec<f64> = rows
        .iter()
        .filter_map(|r| r["model"]["seconds"].as_f64())
        .collect();
    let mut proposal_seconds: Vec<f64> = rows
        .iter()
        .filter_map(|r| r["proposal_seconds"].as_f64())
        .collect();
    // Token counts are known for answers that became proposals (shown or
    // refused by the guardrails); a cache hit costs none and is not a call.
    let mean = |key: &str| {
        let values: Vec<f64> = rows
            .iter()
            .filter(|r| matches!(r["model"]["result"].as_str(), Some("ok" | "refused")))
            .filter_map(|r| r["model"][key].as_f64())
            .collect();
        if values.is_empty() {
            Value::Null
        } else {
            json!(round3(values.iter().sum::<f64>() / values.len() as f64))
        }
    };
    let mut summary = json!({
        "scenarios": rows.len(),
        "guardrail_pass_rate": round3(reviewable as f64 / n),
        "verified_rate": round3(verified as f64 / n),
        "proposal_latency_p50_s": median(&mut proposal_seconds),
        "rolled_back": count(&|r| r["final_phase"] == "RolledBack"),
        "needs_human": count(&|r| r["phase"] == "Proposed" && r["actions"] == 0),
        "guardrail_rejected": count(&|r| r["phase"] == "Failed" && r["guardrail_allowed"] == false),
        "dry_run_failed": count(&|r| r["dry_run"] == "Failed"),
        "resolved_without_fix": count(&|r| r["phase"] == "Resolved"),
    });
    if mode != "rules" {
        // Over the answers that came from the model server: a cached
        // answer was validated when it first arrived.
        let called = |r: &Value| r["model"]["result"] != "cached" && !r["model"].is_null();
        let calls = count(&called).max(1) as f64;
        let valid = count(&|r| {
            called(r)
                && matches!(
                    r["model"]["result"].as_str(),
                    Some("ok" | "unusable" | "refused")
                )
        });
        summary["schema_valid_rate"] = json!(round3(valid as f64 / calls));
        summary["latency_p50_s"] = median(&mut model_seconds);
        // The run's first call meets a server that has not read this
        // prompt's fixed prefix yet; the later ones may reuse it.
        let mut timed = rows.iter().filter_map(|r| r["model"]["seconds"].as_f64());
        summary["first_call_s"] = json!(timed.next());
        let mut warm: Vec<f64> = timed.collect();
        summary["warm_latency_p50_s"] = median(&mut warm);
        summary["prompt_tokens_mean"] = mean("prompt_tokens");
        summary["cached_prompt_tokens_mean"] = mean("cached_prompt_tokens");
        summary["completion_tokens_mean"] = mean("completion_tokens");
        // The server's own time reading the prompt: the time to the first
        // answer token, less queueing.
        summary["prompt_seconds_mean"] = mean("prompt_seconds");
        summary["tokens_per_second_mean"] = mean("tokens_per_second");
        summary["rules_fallbacks"] = json!(count(&|r| r["source"] == "rules"));
        summary["model_calls"] = json!(model_seconds.len());
        summary["cache_hits"] = json!(count(&|r| r["model"]["result"] == "cached"));
    } else {
        // Rules answer in-process: the proposal latency is the whole cost.
        summary["schema_valid_rate"] = Value::Null;
        summary["latency_p50_s"] = summary["proposal_latency_p50_s"].clone();
        summary["prompt_tokens_mean"] = json!(0);
        summary["completion_tokens_mean"] = json!(0);
    }
    summary
}

fn median(values: &mut [f64]) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let m = if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    };
    json!(round3(m))
}

/// The value of one exact series in Prometheus text (0 when absent).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            rest.starts_with(' ')
                .then(|| rest.trim().parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

/// What the operator's model metrics say happened between two scrapes.
fn model_delta(before: &str, after: &str) -> Value {
    let delta = |name: &str| series(after, name) - series(before, name);
    let results: Vec<&str> = [
        "ok",
        "cached",
        "refused",
        "schema_invalid",
        "unusable",
        "error",
    ]
    .into_iter()
    .filter(|r| {
        delta(&format!(
            "remediation_model_proposal_total{{result=\"{r}\"}}"
        )) > 0.0
    })
    .collect();
    if results.is_empty() {
        return Value::Null;
    }
    let calls = delta("remediation_model_proposal_seconds_count");
    let completion_tokens = delta("remediation_model_completion_tokens_total");
    let generation_seconds = delta("remediation_model_generation_seconds_total");
    let mut model = json!({
        "result": results.join(","),
        "prompt_tokens": delta("remediation_model_prompt_tokens_total"),
        "cached_prompt_tokens": delta("remediation_model_cached_prompt_tokens_total"),
        "completion_tokens": completion_tokens,
        "prompt_seconds": round3(delta("remediation_model_prompt_seconds_total")),
        "generation_seconds": round3(generation_seconds),
    });
    if generation_seconds > 0.0 {
        model["tokens_per_second"] = json!(round3(completion_tokens / generation_seconds));
    }
    if calls > 0.0 {
        model["seconds"] = json!(round3(
            delta("remediation_model_proposal_seconds_sum") / calls
        ));
    }
    model
}

/// Waits until the scenario's workload has rolled out healthy.
async fn wait_rolled_out(
    client: &Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
) -> Result<(), String> {
    let rolled_out = match kind {
        WorkloadKind::Deployment => support::try_wait_deployment_rolled_out(client, ns, name)
            .await
            .map(drop),
        WorkloadKind::StatefulSet => support::try_wait_statefulset_rolled_out(client, ns, name)
            .await
            .map(drop),
    };
    rolled_out.map_err(|e| format!("{ns}/{name} did not roll out healthy: {e}"))
}

async fn run_scenario(
    sandbox: &Sandbox,
    operator: &OperatorProcess,
    mode: Mode,
    scenario: &Scenario,
    verify_timeout: u64,
) -> Result<Value, String> {
    let client = &sandbox.client;
    let ns = sandbox
        .e2e_namespace(&format!("llm-bench-{}", mode.as_str()))
        .await;
    let name = "app";
    let before = operator.metrics().await;
    match &scenario.healthy {
        Some(healthy) => {
            create_workload(client, &ns.name, scenario.kind, name, healthy).await;
            wait_rolled_out(client, &ns.name, scenario.kind, name).await?;
            let patch = json!({"spec": {"template": {"spec": scenario.broken}}});
            let params = PatchParams::default();
            let patched = match scenario.kind {
                WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), &ns.name)
                    .patch(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop),
                WorkloadKind::StatefulSet => {
                    Api::<StatefulSet>::namespaced(client.clone(), &ns.name)
                        .patch(name, &params, &Patch::Merge(&patch))
                        .await
                        .map(drop)
                }
            };
            patched.map_err(|e| format!("breaking the workload: {e}"))?;
        }
        None => create_workload(client, &ns.name, scenario.kind, name, &scenario.broken).await,
    }

    // The one Remediation: when it appears, and when it has left
    // Diagnosing (the model may take a while on two shared cores). The
    // difference is the proposal latency the reviewer sees.
    wait_until(
        Duration::from_secs(120),
        &format!("{}: a Remediation", ns.name),
        || async { remediations(client, &ns.name).await.into_iter().next() },
    )
    .await;
    let opened = Instant::now();
    let decided = wait_until(
        Duration::from_secs(300),
        &format!("{}: a Remediation past Diagnosing", ns.name),
        || async {
            remediations(client, &ns.name)
                .await
                .into_iter()
                .find(|r| !matches!(phase(r), Phase::Diagnosing))
        },
    )
    .await;
    let proposal_seconds = opened.elapsed().as_secs_f64();
    let count = remediations(client, &ns.name).await.len();
    if count != 1 {
        return Err(format!("{count} Remediations for one workload"));
    }
    let status = decided.status.clone().unwrap_or_default();
    let proposal = status.proposal.clone().unwrap_or_default();
    let allowed = status.guardrail.as_ref().is_some_and(|g| g.allowed);
    let dry_ok = status
        .dry_run
        .as_ref()
        .is_some_and(|d| d.result == "Succeeded");
    let reviewable =
        status.phase == Phase::Proposed && !proposal.actions.is_empty() && allowed && dry_ok;

    let mut final_phase = status.phase;
    if reviewable {
        let (ok, out) = sandbox.approve(&ns.name, &decided.name_any());
        if !ok {
            return Err(format!("kubectl patch (approve) failed: {out}"));
        }
        let closed = wait_until(
            Duration::from_secs(verify_timeout + 120),
            &format!("{}: the approved fix to end", ns.name),
            || async {
                remediations(client, &ns.name).await.into_iter().find(|r| {
                    matches!(
                        phase(r),
                        Phase::Verified | Phase::RolledBack | Phase::Failed | Phase::Resolved
                    )
                })
            },
        )
        .await;
        final_phase = phase(&closed);
    }
    let after = operator.metrics().await;
    let changed: Vec<String> = status
        .dry_run
        .as_ref()
        .map(|d| {
            d.diff
                .iter()
                .map(|c| format!("{}: {} -> {}", c.path, show(&c.from), show(&c.to)))
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({
        "scenario": scenario.name,
        "source": proposal.source,
        "reason": status.reason,
        "phase": format!("{:?}", status.phase),
        "actions": proposal.actions.len(),
        "guardrail_allowed": allowed,
        "violations": status.guardrail.as_ref().map(|g| g.violations.clone()).unwrap_or_default(),
        "dry_run": status.dry_run.as_ref().map(|d| d.result.clone()),
        "reviewable": reviewable,
        "final_phase": format!("{final_phase:?}"),
        "summary": proposal.summary,
        "message": status.message,
        "model_discarded": proposal.risks.iter().find(|r| r.contains("model's proposal was discarded")),
        "changes": changed,
        "proposal_seconds": round3(proposal_seconds),
        "model": model_delta(&before, &after),
    }))
}

fn show(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("(none)")
}

async fn create_workload(
    client: &Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    pod_spec: &Value,
) {
    let manifest = manifest(kind, name, pod_spec);
    match kind {
        WorkloadKind::Deployment => {
            create::<Deployment>(client, ns, manifest).await;
        }
        WorkloadKind::StatefulSet => {
            create::<StatefulSet>(client, ns, manifest).await;
        }
    }
}
