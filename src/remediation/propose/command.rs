//! `aiops-operator llm propose`: the model pipeline on one evidence
//! document, without a cluster. It prints the model's proposal with its
//! guardrail verdict (the real guardrails with the policies from
//! `--policies`, against a workload rebuilt from the evidence), so a user
//! can try a model before pointing the operator at it.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value, json};

use super::model::{Incident, ModelProposal, ModelProposer};
use crate::k8s::pod_spec::containers_patch;
use crate::llm::config::{ConfigError, LlmConfig, ProviderKind};
use crate::llm::provider::LlmError;
use crate::policy::{PolicyError, PolicySet};
use crate::remediation::crd::{Evidence, Finding, GuardrailVerdict};
use crate::remediation::guardrails::{AdmissionView, GuardrailLimits, guard_proposal};
use crate::remediation::propose::rules::RuleConfig;

/// `llm` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LlmCommand {
    /// Ask a model for a proposal for one evidence document and print it,
    /// with its guardrail verdict, as JSON.
    Propose(ProposeArgs),
}

/// Flags of `llm propose`.
#[derive(Debug, clap::Args)]
pub struct ProposeArgs {
    #[arg(long, value_enum)]
    pub provider: ProviderKind,
    /// Server base URL (default: Ollama's, or OLLAMA_URL; llama.cpp's for openai).
    #[arg(long)]
    pub url: Option<String>,
    /// Model name (default for Ollama: qwen2.5:7b, or OLLAMA_MODEL).
    #[arg(long)]
    pub model: Option<String>,
    /// A Remediation, its status, or its `status.evidence` (JSON or YAML).
    /// Without findings, they are derived from the observed container states.
    #[arg(long)]
    pub evidence: PathBuf,
    /// Directory with the baseline policies the guardrails apply.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// An image running elsewhere in the cluster (repeatable): a candidate
    /// when it is of the failing image's repository.
    #[arg(long = "cluster-image")]
    pub cluster_images: Vec<String>,
    /// Per HTTP attempt, including reading the whole answer.
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
    /// Sampling seed (the temperature is always 0).
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    /// The operator's namespace, which is never patched.
    #[arg(long, default_value = "aiops-system")]
    pub operator_namespace: String,
}

/// Why `llm propose` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path}: no evidence found: {detail}")]
    NoEvidence { path: PathBuf, detail: String },
    #[error("loading policies from {dir}: {source}")]
    Policies {
        dir: PathBuf,
        #[source]
        source: PolicyError,
    },
    #[error("model settings: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Llm(#[from] LlmError),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Runs `llm <command>` and returns the exit code: 0 when the proposal
/// passes the guardrails, 1 otherwise (the JSON says why).
pub fn run_llm_command(command: LlmCommand) -> ExitCode {
    match command {
        LlmCommand::Propose(args) => match propose_command(&args) {
            Ok((report, allowed)) => {
                println!("{}", pretty(&report));
                if allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(error) => {
                println!("{}", pretty(&json!({"error": error.to_string()})));
                eprintln!("aiops-operator llm propose: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn propose_command(args: &ProposeArgs) -> Result<(Value, bool), CommandError> {
    let text = std::fs::read_to_string(&args.evidence).map_err(|source| CommandError::Read {
        path: args.evidence.clone(),
        source,
    })?;
    let (evidence, findings) = load_incident(&text, &args.evidence)?;
    let policies =
        PolicySet::load_dir(&args.policies).map_err(|source| CommandError::Policies {
            dir: args.policies.clone(),
            source,
        })?;
    let mut data = BTreeMap::new();
    data.insert(
        "llm.provider".to_string(),
        args.provider.as_str().to_string(),
    );
    if let Some(url) = &args.url {
        data.insert("llm.url".into(), url.clone());
    }
    if let Some(model) = &args.model {
        data.insert("llm.model".into(), model.clone());
    }
    data.insert(
        "llm.timeoutSeconds".into(),
        args.timeout_seconds.to_string(),
    );
    data.insert("llm.seed".into(), args.seed.to_string());
    let config = LlmConfig::from_config_map(&data, |name| std::env::var(name).ok())?;
    let proposer = ModelProposer::from_config(&config, RuleConfig::default().memory_cap)?;
    let limits = GuardrailLimits {
        operator_namespace: args.operator_namespace.clone(),
        ..GuardrailLimits::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)?;
    let incident = Incident {
        evidence: &evidence,
        findings: &findings,
        cluster_images: &args.cluster_images,
    };
    let outcome = runtime.block_on(proposer.propose(&incident));
    Ok(report(
        &proposer.provider_name(),
        &evidence,
        &findings,
        outcome,
        &policies,
        &limits,
    ))
}

/// The printed report: the proposal and its verdict, or why it was discarded.
pub fn report(
    source: &str,
    evidence: &Evidence,
    findings: &[Finding],
    outcome: Result<ModelProposal, LlmError>,
    policies: &PolicySet,
    limits: &GuardrailLimits,
) -> (Value, bool) {
    match outcome {
        Ok(model) => {
            let verdict = guard_offline(evidence, findings, &model, policies, limits);
            let allowed = verdict.allowed;
            let mut value = serde_json::to_value(&model).unwrap_or_else(|_| json!({}));
            value["source"] = json!(source);
            value["guardrail"] = serde_json::to_value(&verdict).unwrap_or_default();
            (value, allowed)
        }
        Err(error) => (
            json!({
                "source": source,
                "discarded": true,
                "error": error.to_string(),
                "guardrail": {"allowed": false, "violations": [format!("no usable proposal: {error}")]},
            }),
            false,
        ),
    }
}

/// The real guardrails against the workload rebuilt from the evidence.
pub fn guard_offline(
    evidence: &Evidence,
    findings: &[Finding],
    model: &ModelProposal,
    policies: &PolicySet,
    limits: &GuardrailLimits,
) -> GuardrailVerdict {
    guard_proposal(
        &evidence.namespace,
        &evidence.workload,
        findings,
        &model.proposal,
        &offline_workload(evidence),
        // Offline: the namespace's labels are not known.
        &AdmissionView::policies(policies),
        limits,
    )
}

/// Evidence and findings from a Remediation, a status, or bare evidence.
pub fn load_incident(text: &str, path: &Path) -> Result<(Evidence, Vec<Finding>), CommandError> {
    let document: Value = serde_yaml::from_str(text).map_err(|source| CommandError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let status = document.get("status").unwrap_or(&document);
    let (evidence_value, findings_value) = match status.get("evidence") {
        Some(evidence) => (evidence.clone(), status.get("findings").cloned()),
        None => (status.clone(), None),
    };
    let evidence: Evidence =
        serde_json::from_value(evidence_value).map_err(|e| CommandError::NoEvidence {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let findings: Vec<Finding> = findings_value
        .and_then(|f| serde_json::from_value(f).ok())
        .filter(|f: &Vec<Finding>| !f.is_empty())
        .unwrap_or_else(|| findings_from_statuses(&evidence));
    Ok((evidence, findings))
}

/// Findings as the detector would report them, from observed states
/// ("waiting: ImagePullBackOff", last state "terminated: OOMKilled …").
pub fn findings_from_statuses(evidence: &Evidence) -> Vec<Finding> {
    let mut found: BTreeMap<(String, String), Finding> = BTreeMap::new();
    for status in &evidence.statuses {
        let waiting = status
            .state
            .strip_prefix("waiting: ")
            .or_else(|| status.state.strip_prefix("terminated: "))
            .map(|r| r.split([' ', '(']).next().unwrap_or_default().to_string());
        let reason = if status.last_state.contains("OOMKilled") {
            Some("OOMKilled".to_string())
        } else {
            waiting.filter(|r| !r.is_empty())
        };
        let Some(reason) = reason else { continue };
        let init = evidence
            .containers
            .iter()
            .any(|c| c.name == status.container && c.init);
        found
            .entry((status.container.clone(), reason.clone()))
            .and_modify(|f| f.pods += 1)
            .or_insert(Finding {
                container: status.container.clone(),
                init,
                reason,
                pods: 1,
                image: Some(status.image.clone()),
                ..Finding::default()
            });
    }
    found.into_values().collect()
}

/// A minimal workload object rebuilt from the evidence's container
/// templates (env as names only: values are never in evidence), for the
/// guardrails' path, no-op and policy checks offline.
pub fn offline_workload(evidence: &Evidence) -> Value {
    let mut lists: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for container in &evidence.containers {
        let mut item = Map::new();
        item.insert("name".into(), json!(container.name));
        item.insert("image".into(), json!(container.image));
        let mut resources = Map::new();
        if !container.requests.is_empty() {
            resources.insert("requests".into(), json!(container.requests));
        }
        if !container.limits.is_empty() {
            resources.insert("limits".into(), json!(container.limits));
        }
        if !resources.is_empty() {
            item.insert("resources".into(), Value::Object(resources));
        }
        let env: Vec<Value> = container
            .env_names
            .iter()
            .filter(|n| !n.starts_with("envFrom:"))
            .map(|n| json!({ "name": n }))
            .collect();
        if !env.is_empty() {
            item.insert("env".into(), Value::Array(env));
        }
        if !container.command.is_empty() {
            item.insert("command".into(), json!(container.command));
        }
        if !container.args.is_empty() {
            item.insert("args".into(), json!(container.args));
        }
        let list = if container.init {
            "initContainers"
        } else {
            "containers"
        };
        lists.entry(list).or_default().push(Value::Object(item));
    }
    let mut object = containers_patch(evidence.workload_key(), lists);
    object["metadata"]["uid"] = json!(evidence.workload.uid);
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_load_from_a_remediation_a_status_or_bare_evidence() {
        let evidence = json!({
            "workload": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u1"},
            "namespace": "shop",
            "containers": [{"name": "app", "image": "ngnix:1.25"}],
            "statuses": [
                {"pod": "web-1", "container": "app", "state": "waiting: ImagePullBackOff", "image": "ngnix:1.25"},
                {"pod": "web-2", "container": "app", "state": "waiting: ErrImagePull", "image": "ngnix:1.25"},
                {"pod": "web-3", "container": "app", "state": "waiting: ImagePullBackOff", "image": "ngnix:1.25"}
            ]
        });
        let path = Path::new("x.json");
        let (ev, findings) = load_incident(&evidence.to_string(), path).unwrap();
        assert_eq!(ev.workload.name, "web");
        let reasons: Vec<(&str, u32)> = findings
            .iter()
            .map(|f| (f.reason.as_str(), f.pods))
            .collect();
        assert_eq!(reasons, vec![("ErrImagePull", 1), ("ImagePullBackOff", 2)]);

        let remediation = json!({"apiVersion": "aiops-operator.dev/v1alpha1", "kind": "Remediation",
            "status": {"evidence": evidence, "findings": [{"container": "app", "reason": "OOMKilled", "pods": 1}]}});
        let (_, findings) = load_incident(&remediation.to_string(), path).unwrap();
        assert_eq!(findings[0].reason, "OOMKilled");
        assert!(load_incident("{}", path).is_err());
    }

    #[test]
    fn the_offline_workload_has_the_templates_containers() {
        let ev: Evidence = serde_json::from_value(json!({
            "workload": {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "u2"},
            "namespace": "ops",
            "containers": [{"name": "job", "image": "busybox:1.36", "limits": {"memory": "64Mi"},
                            "envNames": ["A", "envFrom:secret/x"]}]
        }))
        .unwrap();
        let object = offline_workload(&ev);
        assert_eq!(
            object.pointer("/spec/jobTemplate/spec/template/spec/containers/0"),
            Some(&json!({"name": "job", "image": "busybox:1.36",
                         "resources": {"limits": {"memory": "64Mi"}}, "env": [{"name": "A"}]}))
        );
        assert_eq!(object["metadata"]["uid"], "u2");
    }
}
