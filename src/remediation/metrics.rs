//! Prometheus metrics of the repair loop, registered into the process's
//! one registry (served on the webhook's `/metrics`).
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::crd::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    receiver: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// The repair loop's metrics; cheap to clone (the families are shared).
#[derive(Clone)]
pub struct RemediationMetrics {
    transitions: Family<PhaseLabels, Counter>,
    detection: Histogram,
    duration: Histogram,
    applies: Family<ResultLabels, Counter>,
    model_calls: Family<ResultLabels, Counter>,
    model_seconds: Histogram,
    model_prompt_tokens: Counter,
    model_completion_tokens: Counter,
    model_cached_prompt_tokens: Counter,
    model_prompt_seconds: Counter<f64, AtomicU64>,
    model_generation_seconds: Counter<f64, AtomicU64>,
    model_calls_held: Gauge,
    auto_approvals: Family<DecisionLabels, Counter>,
    notifications: Family<DeliveryLabels, Counter>,
    scan_seconds: Histogram,
    scan_objects: Counter,
    scan_violating: Gauge,
}

impl RemediationMetrics {
    /// Creates the metrics and registers them under `registry`
    /// (names: `remediation_total`, `remediation_detection_seconds`,
    /// `remediation_duration_seconds`, `remediation_apply_total`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = RemediationMetrics {
            transitions: Family::default(),
            detection: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            duration: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            applies: Family::default(),
            model_calls: Family::default(),
            model_seconds: Histogram::new(exponential_buckets(0.25, 2.0, 12)),
            model_prompt_tokens: Counter::default(),
            model_completion_tokens: Counter::default(),
            model_cached_prompt_tokens: Counter::default(),
            model_prompt_seconds: Counter::default(),
            model_generation_seconds: Counter::default(),
            model_calls_held: Gauge::default(),
            auto_approvals: Family::default(),
            notifications: Family::default(),
            scan_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            scan_objects: Counter::default(),
            scan_violating: Gauge::default(),
        };
        registry.register(
            "remediation",
            "Remediations entering each phase, by phase and finding reason",
            metrics.transitions.clone(),
        );
        registry.register(
            "remediation_detection_seconds",
            "From the first failing pod status seen to the Remediation created",
            metrics.detection.clone(),
        );
        registry.register(
            "remediation_duration_seconds",
            "From the Remediation created to Verified",
            metrics.duration.clone(),
        );
        registry.register(
            "remediation_apply",
            "Server-side applies of fixes and rollbacks, by result",
            metrics.applies.clone(),
        );
        registry.register(
            "remediation_model_proposal",
            "Model proposals asked for, by result: ok, cached, refused (set aside by the guardrails or the dry run), schema_invalid, unusable, error",
            metrics.model_calls.clone(),
        );
        registry.register(
            "remediation_model_proposal_seconds",
            "Time of model calls that reached the model (cache hits excluded)",
            metrics.model_seconds.clone(),
        );
        registry.register(
            "remediation_model_prompt_tokens",
            "Prompt tokens the model server reported",
            metrics.model_prompt_tokens.clone(),
        );
        registry.register(
            "remediation_model_completion_tokens",
            "Completion tokens the model server reported",
            metrics.model_completion_tokens.clone(),
        );
        registry.register(
            "remediation_model_cached_prompt_tokens",
            "Prompt tokens the model server reused from its previous prompt (llama.cpp reports them)",
            metrics.model_cached_prompt_tokens.clone(),
        );
        registry.register(
            "remediation_model_prompt_seconds",
            "Model server time reading prompts, as the server reports it (time to first token less queueing)",
            metrics.model_prompt_seconds.clone(),
        );
        registry.register(
            "remediation_model_generation_seconds",
            "Model server time generating answers, as the server reports it",
            metrics.model_generation_seconds.clone(),
        );
        registry.register(
            "remediation_auto_approval",
            "Auto-approval decisions, by decision (approved, held, apply_paused) and reason (rule, or the budget that held it: paused, cool_down, hold_off, in_flight, in_flight_namespace, unhealthy)",
            metrics.auto_approvals.clone(),
        );
        registry.register(
            "remediation_notifications",
            "Notifications to receivers, by receiver and result (sent, failed after retries, dropped when too many were in flight)",
            metrics.notifications.clone(),
        );
        registry.register(
            "remediation_policy_scan_seconds",
            "Time of each background policy scan of the running workloads",
            metrics.scan_seconds.clone(),
        );
        registry.register(
            "remediation_policy_scan_objects",
            "Workloads judged by the background policy scans",
            metrics.scan_objects.clone(),
        );
        registry.register(
            "remediation_policy_scan_violating",
            "Workloads with policy violations at the last scan",
            metrics.scan_violating.clone(),
        );
        registry.register(
            "remediation_model_calls_held",
            "Model calls running or finished and not yet claimed by their Remediation",
            metrics.model_calls_held.clone(),
        );
        metrics
    }

    /// Metrics that are recorded but not exported (tests, offline commands).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    pub fn count_phase(&self, phase: Phase, reason: &str) {
        self.transitions
            .get_or_create(&PhaseLabels {
                phase: format!("{phase:?}"),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// How many model calls the process holds (see `ModelCalls::held`).
    pub fn model_calls_held(&self, held: usize) {
        self.model_calls_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// One auto-approval decision (counted when it changes, not per recheck).
    pub fn auto_approval(&self, decision: &str, reason: &str) {
        self.auto_approvals
            .get_or_create(&DecisionLabels {
                decision: decision.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// One notification's outcome.
    pub fn notification(&self, receiver: &str, result: &str) {
        self.notifications
            .get_or_create(&DeliveryLabels {
                receiver: receiver.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// One finished policy scan.
    pub fn observe_scan(&self, elapsed: Duration, judged: usize, violating: usize) {
        self.scan_seconds.observe(elapsed.as_secs_f64());
        self.scan_objects.inc_by(judged as u64);
        self.scan_violating
            .set(i64::try_from(violating).unwrap_or(i64::MAX));
    }

    pub fn observe_detection(&self, elapsed: Duration) {
        self.detection.observe(elapsed.as_secs_f64());
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// `result`: applied, failed, rolled-back, rollback-failed.
    pub fn count_apply(&self, result: &str) {
        self.applies
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }
}

impl RemediationMetrics {
    /// A model call that produced a proposal, counted once the guardrails
    /// and the dry run decided: `shown` when it is what the reviewer sees,
    /// else `refused` (the rules' proposal stood in for it).
    pub fn observe_model_answer(
        &self,
        answer: &crate::remediation::propose::model::ModelProposal,
        shown: bool,
    ) {
        let result = match (shown, answer.cached) {
            (false, _) => "refused",
            (true, true) => "cached",
            (true, false) => "ok",
        };
        self.count_model_call(result);
        if answer.cached {
            return;
        }
        self.model_seconds.observe(answer.elapsed_seconds);
        self.model_prompt_tokens
            .inc_by(answer.usage.prompt_tokens.unwrap_or(0));
        self.model_completion_tokens
            .inc_by(answer.usage.completion_tokens.unwrap_or(0));
        self.model_cached_prompt_tokens
            .inc_by(answer.usage.cached_prompt_tokens.unwrap_or(0));
        let seconds = |ms: Option<u64>| ms.unwrap_or(0) as f64 / 1000.0;
        self.model_prompt_seconds
            .inc_by(seconds(answer.usage.prompt_ms));
        self.model_generation_seconds
            .inc_by(seconds(answer.usage.generation_ms));
    }

    /// A model call that gave no proposal; `outcome`: schema_invalid,
    /// unusable or error. An answer that arrived counts in the latency.
    pub fn observe_model_failure(&self, outcome: &str, seconds: f64) {
        if outcome != "error" {
            self.model_seconds.observe(seconds);
        }
        self.count_model_call(outcome);
    }

    fn count_model_call(&self, outcome: &str) {
        self.model_calls
            .get_or_create(&ResultLabels {
                result: outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn exports_the_documented_names() {
        let mut registry = Registry::default();
        let metrics = RemediationMetrics::register(&mut registry);
        metrics.count_phase(Phase::Verified, "OOMKilled");
        metrics.observe_detection(Duration::from_millis(300));
        metrics.observe_duration(Duration::from_secs(40));
        metrics.count_apply("applied");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("remediation_total{phase=\"Verified\",reason=\"OOMKilled\"} 1"),
            "{text}"
        );
        assert!(text.contains("remediation_detection_seconds_count 1"));
        assert!(text.contains("remediation_duration_seconds_sum 40.0"));
        assert!(text.contains("remediation_apply_total{result=\"applied\"} 1"));
    }

    #[test]
    fn model_calls_count_tokens_and_time_but_not_cache_hits_and_refusals_by_name() {
        use crate::llm::provider::Usage;
        use crate::remediation::propose::model::ModelProposal;
        let mut registry = Registry::default();
        let metrics = RemediationMetrics::register(&mut registry);
        let answer = ModelProposal {
            proposal: Default::default(),
            prompt: Default::default(),
            usage: Usage {
                prompt_tokens: Some(900),
                completion_tokens: Some(60),
                cached_prompt_tokens: Some(400),
                prompt_ms: Some(1500),
                generation_ms: Some(3000),
            },
            cached: false,
            elapsed_seconds: 4.5,
        };
        metrics.observe_model_answer(&answer, true);
        // Set aside by the guardrails: counted as refused, its cost still counts.
        metrics.observe_model_answer(&answer, false);
        metrics.observe_model_answer(
            &ModelProposal {
                cached: true,
                ..answer
            },
            true,
        );
        metrics.observe_model_failure("schema_invalid", 2.0);
        metrics.observe_model_failure("error", 30.0);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "remediation_model_proposal_total{result=\"ok\"} 1",
            "remediation_model_proposal_total{result=\"refused\"} 1",
            "remediation_model_proposal_total{result=\"cached\"} 1",
            "remediation_model_proposal_total{result=\"schema_invalid\"} 1",
            "remediation_model_proposal_total{result=\"error\"} 1",
            "remediation_model_proposal_seconds_sum 11.0",
            "remediation_model_proposal_seconds_count 3",
            "remediation_model_prompt_tokens_total 1800",
            "remediation_model_completion_tokens_total 120",
            "remediation_model_cached_prompt_tokens_total 800",
            "remediation_model_prompt_seconds_total 3.0",
            "remediation_model_generation_seconds_total 6.0",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }
}
