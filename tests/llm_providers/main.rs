//! Model providers against protocol-faithful HTTP doubles (no Kubernetes,
//! no model): the exact request bodies of Ollama's `/api/chat` and the
//! OpenAI chat completions API, their documented response shapes, the
//! redaction of everything sent, the cache, the concurrency limit, and
//! safety against bad or hostile answers (issue 5, §4): every hostile
//! answer ends with no proposal or a proposal the real guardrails refuse,
//! with a clear reason, and the provider keeps serving afterwards.
//!
//! - [`double`]: the HTTP double and the providers' documented replies.
//! - [`protocol`]: requests, responses, redaction, cache, concurrency.
//! - [`bad_answers`]: hostile, malformed, oversized and missing answers.
//! - [`guardrails`]: what passes the schema but not the guardrails.
//! - [`cli`]: `aiops-operator llm propose`.
//!
//! The incident is `support`'s: a brand-new Deployment whose image
//! repository is misspelled.
#[path = "../support/mod.rs"]
mod support;

mod bad_answers;
mod cli;
mod double;
mod guardrails;
mod protocol;

use std::time::Duration;

use aiops_operator::llm::{LlmConfig, LlmError, ProviderKind, build_provider};
use aiops_operator::remediation::crd::{Evidence, Finding};
use aiops_operator::remediation::guardrails::GuardrailLimits;
use aiops_operator::remediation::propose::command::report;
use aiops_operator::remediation::propose::model::{Incident, ModelProposal, ModelProposer};
use serde_json::json;
use support::{baseline_policies, pull_findings};

fn cluster_images() -> Vec<String> {
    vec!["nginx:1.25.5".into(), "redis:7.2.5".into()]
}

fn config(provider: ProviderKind, url: &str, model: &str) -> LlmConfig {
    LlmConfig {
        provider,
        url: url.into(),
        model: model.into(),
        timeout: Duration::from_secs(5),
        max_concurrency: 2,
        retry_backoff: Duration::from_millis(20),
        breaker_threshold: 5,
        breaker_cooldown: Duration::from_millis(300),
        ..LlmConfig::default()
    }
}

fn proposer(config: &LlmConfig) -> ModelProposer {
    ModelProposer::new(build_provider(config).expect("provider"), config, 2 << 30)
}

fn good_answer() -> String {
    json!({
        "changes": [{"container": "app", "image": "nginx:1.25.5"}],
        "confidence": 0.8
    })
    .to_string()
}

/// What a reviewer (or the controller) ends up with: allowed, and why not.
fn verdict(evidence: &Evidence, outcome: Result<ModelProposal, LlmError>) -> (bool, Vec<String>) {
    let (report, allowed) = report(
        "test",
        evidence,
        &pull_findings(),
        outcome,
        &baseline_policies(),
        &GuardrailLimits::default(),
    );
    let violations = report["guardrail"]["violations"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (allowed, violations)
}

/// The incident's parts, owned, so a test can lend them to an [`Incident`]
/// and look at them afterwards.
struct PullIncident {
    evidence: Evidence,
    findings: Vec<Finding>,
    images: Vec<String>,
}

impl PullIncident {
    /// `evidence` with the image-pull findings and the images running
    /// elsewhere in the cluster.
    fn of(evidence: Evidence) -> PullIncident {
        PullIncident {
            evidence,
            findings: pull_findings(),
            images: cluster_images(),
        }
    }

    fn incident(&self) -> Incident<'_> {
        Incident {
            evidence: &self.evidence,
            findings: &self.findings,
            cluster_images: &self.images,
        }
    }
}

async fn ask(proposer: &ModelProposer, evidence: &Evidence) -> Result<ModelProposal, LlmError> {
    let parts = PullIncident::of(evidence.clone());
    proposer.propose(&parts.incident()).await
}

/// The message of a schema violation, failing the test on any other outcome.
fn schema_violation(outcome: &Result<ModelProposal, LlmError>, what: &str) -> String {
    match outcome {
        Err(error @ LlmError::SchemaViolation { .. }) => error.to_string(),
        Err(error) => panic!("{what}: not a schema violation: {error}"),
        Ok(model) => panic!("{what}: accepted: {:?}", model.proposal),
    }
}
