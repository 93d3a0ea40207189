//! A language model's proposal for one incident. The model never writes a
//! patch or chooses a target: it fills in a small "fix" object whose JSON
//! Schema is built per incident from cluster facts (container names,
//! verified candidate images, memory bounds, known env names); the answer is
//! validated against that schema, and this code turns it into a
//! server-side-apply patch of the Remediation's own workload, which the
//! guardrails then check. Nothing a model says is trusted.
//!
//! - [`schema`]: the per-incident JSON Schema and the facts behind it.
//! - [`prompt`]: the prompt, its token budget and the redaction of what goes in.
//! - [`answer`]: from a schema-valid answer to a sealed proposal.
//! - [`cache`]: answers reused for identical failure fingerprints.
//! - [`mentions`]: the model's free text checked against the incident's facts.
//!
//! The pipeline the controller calls for one incident: redact → facts →
//! per-incident schema → prompt within budget → cache or model call
//! (validated against the schema) → fix object → sealed proposal for the
//! Remediation's own workload. The caller then runs the guardrails, the
//! dry run and the approval as for any rule proposal.
//!
//! A model call may take a minute; the controller must run it outside the
//! reconcile worker that serves other Remediations (spawn it, and pick up
//! the result on a later reconcile). The provider's semaphore bounds how
//! many run at once.
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub mod answer;
pub mod cache;
pub mod mentions;
pub mod prompt;
pub mod schema;

use self::answer::{fix_to_proposal, parse_fix};
use self::cache::{ProposalCache, fingerprint};
use self::prompt::{PromptStats, build_prompt, redact_evidence, redact_findings};
use self::schema::{SCHEMA_NAME, answer_schema, answer_token_cap, incident_facts};
use crate::llm::config::{LlmConfig, ProviderKind};
use crate::llm::provider::{LlmError, ProposalRequest, Provider, Usage};
use crate::remediation::crd::{Evidence, Finding, Proposal};

/// One broken workload, as the controller knows it.
#[derive(Clone, Copy, Debug)]
pub struct Incident<'a> {
    pub evidence: &'a Evidence,
    pub findings: &'a [Finding],
    /// Images running in other pods of the cluster (for image candidates).
    pub cluster_images: &'a [String],
}

/// A model's proposal and what it cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelProposal {
    /// Sealed; `source` names the model. Not yet guarded.
    pub proposal: Proposal,
    pub prompt: PromptStats,
    pub usage: Usage,
    /// True when the answer came from the cache, without a model call.
    pub cached: bool,
    pub elapsed_seconds: f64,
}

/// Asks a model for proposals.
pub struct ModelProposer {
    provider: Arc<dyn Provider>,
    cache: ProposalCache,
    prompt_token_budget: usize,
    memory_cap: u64,
    always: bool,
    configured: bool,
}

impl std::fmt::Debug for ModelProposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelProposer")
            .field("provider", &self.provider.name())
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl ModelProposer {
    /// `memory_cap` (bytes) bounds the memory a model may propose; use the
    /// rules' cap so both sources agree.
    pub fn new(provider: Arc<dyn Provider>, config: &LlmConfig, memory_cap: u64) -> Self {
        ModelProposer {
            provider,
            cache: ProposalCache::new(config.cache_capacity, config.cache_ttl),
            prompt_token_budget: config.prompt_token_budget,
            memory_cap,
            always: config.always,
            configured: config.provider != ProviderKind::None,
        }
    }

    /// The proposer the configuration names.
    pub fn from_config(config: &LlmConfig, memory_cap: u64) -> Result<Self, LlmError> {
        Ok(ModelProposer::new(
            crate::llm::provider::build_provider(config)?,
            config,
            memory_cap,
        ))
    }

    pub fn provider_name(&self) -> String {
        self.provider.name()
    }

    /// Reports the provider's circuit breaker (if it has one) to `gauge`.
    pub fn report_breaker_open_to(&self, gauge: prometheus_client::metrics::gauge::Gauge) {
        if let Some(breaker) = self.provider.breaker() {
            breaker.report_open_to(gauge);
        }
    }

    /// Whether to ask the model, given the rules' proposal: when the rules
    /// have no fix, or always if the configuration says so.
    pub fn should_ask(&self, rules: &Proposal) -> bool {
        self.configured && (self.always || rules.actions.is_empty())
    }

    /// Builds the request the model would get (also for tests and the CLI).
    pub fn request_for(&self, incident: &Incident<'_>) -> (ProposalRequest, PromptStats) {
        let prepared = self.prepare(incident);
        (prepared.request, prepared.stats)
    }

    fn prepare(&self, incident: &Incident<'_>) -> Prepared {
        let evidence = redact_evidence(incident.evidence);
        let findings = redact_findings(incident.findings);
        let facts = incident_facts(
            &evidence,
            &findings,
            incident.cluster_images,
            self.memory_cap,
        );
        let schema = answer_schema(&facts);
        let prompt = build_prompt(&evidence, &findings, &facts, self.prompt_token_budget);
        let key = fingerprint(
            &findings,
            &evidence.containers,
            &schema,
            &self.provider.name(),
        );
        Prepared {
            request: ProposalRequest {
                system: prompt.system,
                examples: prompt.examples,
                user: prompt.user,
                max_answer_tokens: answer_token_cap(&schema),
                schema,
                schema_name: SCHEMA_NAME.into(),
            },
            stats: prompt.stats,
            facts,
            key,
        }
    }

    /// Asks the model (or the cache) for a proposal for `incident`.
    #[tracing::instrument(skip_all, fields(
        provider = %self.provider.name(),
        namespace = %incident.evidence.namespace,
        workload = %format!("{}/{}", incident.evidence.workload.kind, incident.evidence.workload.name),
    ))]
    pub async fn propose(&self, incident: &Incident<'_>) -> Result<ModelProposal, LlmError> {
        let started = Instant::now();
        let prepared = self.prepare(incident);
        let (answer, cached) = match self.cache.get(&prepared.key) {
            Some(answer) => (answer, true),
            None => (self.provider.propose(&prepared.request).await?, false),
        };
        let fix = parse_fix(&answer.answer)?;
        let mut proposal = fix_to_proposal(
            &fix,
            incident.evidence,
            &prepared.facts,
            &self.provider.name(),
        )?;
        if !answer.notes.is_empty() {
            // The reviewer reads why this answer deserves less trust; the
            // hash covers risks, so the proposal is sealed again.
            proposal.risks.extend(answer.notes.iter().cloned());
            proposal = proposal.seal();
        }
        if !cached {
            self.cache.insert(prepared.key, answer.clone());
        }
        let elapsed = started.elapsed();
        tracing::info!(
            cached,
            actions = proposal.actions.len(),
            prompt_tokens_estimated = prepared.stats.estimated_tokens,
            prompt_tokens = answer.usage.prompt_tokens,
            completion_tokens = answer.usage.completion_tokens,
            elapsed_s = elapsed.as_secs_f64(),
            "model proposal"
        );
        Ok(ModelProposal {
            proposal,
            prompt: prepared.stats,
            usage: if cached {
                Usage::default()
            } else {
                answer.usage
            },
            cached,
            elapsed_seconds: round_ms(elapsed),
        })
    }
}

struct Prepared {
    request: ProposalRequest,
    stats: PromptStats,
    facts: schema::IncidentFacts,
    key: String,
}

fn round_ms(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1000.0).round() / 1000.0
}
