//! Prometheus metrics of the repair loop, registered into the process's
//! one registry (served on the webhook's `/metrics`).
//!
//! Counters and histograms are recorded as things happen; the gauges of the
//! cases that exist now (`remediation_in_phase`,
//! `remediation_review_wait_oldest_seconds`) are recomputed from the
//! leader's cache of Remediations by [`RemediationMetrics::observe_cases`],
//! so alerts can ask how long a fix has waited for a person.
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use k8s_openapi::jiff::Timestamp;

use super::crd::{Phase, Remediation};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseOnlyLabels {
    phase: String,
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
    model_breaker_open: Gauge,
    in_phase: Family<PhaseOnlyLabels, Gauge>,
    review_wait_oldest: Gauge<f64, AtomicU64>,
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
            model_breaker_open: Gauge::default(),
            in_phase: Family::default(),
            review_wait_oldest: Gauge::default(),
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
        registry.register(
            "remediation_model_breaker_open",
            "1 from the model server's circuit breaker opening until a call succeeds again (open, or waiting for its probe)",
            metrics.model_breaker_open.clone(),
        );
        registry.register(
            "remediation_in_phase",
            "Remediations that exist now, by phase (the leading replica's cache; 0 on the others)",
            metrics.in_phase.clone(),
        );
        registry.register(
            "remediation_review_wait_oldest_seconds",
            "How long the oldest fix ready for review has waited for a decision; 0 when none waits",
            metrics.review_wait_oldest.clone(),
        );
        // The closed label sets start at 0, so their series exist before the
        // first event and an alert's increase() sees that event (a series
        // that appears at 1 shows no increase).
        for result in APPLY_RESULTS {
            metrics.count_apply_by(result, 0);
        }
        for result in MODEL_RESULTS {
            metrics
                .model_calls
                .get_or_create(&ResultLabels {
                    result: result.to_string(),
                })
                .inc_by(0);
        }
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

    /// The gauge the model server's circuit breaker reports to
    /// (`crate::llm::breaker::CircuitBreaker::report_open_to`).
    pub fn model_breaker_open(&self) -> Gauge {
        self.model_breaker_open.clone()
    }

    /// Recomputes the gauges of the cases that exist now from `cases` (the
    /// controller's cache): the count per phase, every phase included so
    /// a phase that empties reads 0, and the oldest wait for a review.
    pub fn observe_cases<'a>(
        &self,
        cases: impl IntoIterator<Item = &'a Remediation>,
        now: Timestamp,
    ) {
        let mut counts = [0_i64; PHASES.len()];
        let mut oldest = 0.0_f64;
        for case in cases {
            let Some(status) = case.status.as_ref() else {
                counts[slot(Phase::Diagnosing)] += 1;
                continue;
            };
            counts[slot(status.phase)] += 1;
            if let Some(since) = review_wait_since(status) {
                let waited = now.duration_since(since).as_secs_f64();
                oldest = oldest.max(waited);
            }
        }
        for (phase, count) in PHASES.iter().zip(counts) {
            self.in_phase
                .get_or_create(&PhaseOnlyLabels {
                    phase: format!("{phase:?}"),
                })
                .set(count);
        }
        self.review_wait_oldest.set(oldest);
    }

    /// The leader stopped leading: its cache is gone, so it reports no case
    /// (the new leader reports them; a sum over replicas stays right).
    pub fn forget_cases(&self) {
        self.observe_cases([], Timestamp::now());
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

    /// `result`: one of `APPLY_RESULTS`.
    pub fn count_apply(&self, result: &str) {
        self.count_apply_by(result, 1);
    }

    fn count_apply_by(&self, result: &str, by: u64) {
        self.applies
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc_by(by);
    }
}

/// The results of `remediation_apply_total`.
const APPLY_RESULTS: [&str; 4] = ["applied", "failed", "rolled-back", "rollback-failed"];

/// The results of `remediation_model_proposal_total`.
const MODEL_RESULTS: [&str; 6] = [
    "ok",
    "cached",
    "refused",
    "schema_invalid",
    "unusable",
    "error",
];

/// Every phase, in the order of the enum; a missing status is `Diagnosing`.
const PHASES: [Phase; 9] = [
    Phase::Diagnosing,
    Phase::Proposed,
    Phase::Applying,
    Phase::Applied,
    Phase::Verified,
    Phase::Failed,
    Phase::RolledBack,
    Phase::Rejected,
    Phase::Resolved,
];

/// The phase's index in [`PHASES`]; exhaustive, so a new phase does not
/// compile until it is placed there.
fn slot(phase: Phase) -> usize {
    match phase {
        Phase::Diagnosing => 0,
        Phase::Proposed => 1,
        Phase::Applying => 2,
        Phase::Applied => 3,
        Phase::Verified => 4,
        Phase::Failed => 5,
        Phase::RolledBack => 6,
        Phase::Rejected => 7,
        Phase::Resolved => 8,
    }
}

/// Since when a case has waited for a decision: its `ReadyForReview`
/// condition's last flip to True (a diagnosis with no fix to approve is
/// not waiting for an approval).
fn review_wait_since(status: &super::crd::RemediationStatus) -> Option<Timestamp> {
    if status.phase != Phase::Proposed {
        return None;
    }
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "ReadyForReview" && c.status == "True")
        .map(|c| c.last_transition_time.0)
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
        assert!(
            text.contains("remediation_apply_total{result=\"rollback-failed\"} 0"),
            "closed label sets start at 0: {text}"
        );
        assert!(text.contains("remediation_model_proposal_total{result=\"error\"} 0"));
    }

    #[test]
    fn the_case_gauges_count_every_phase_and_the_oldest_fix_waiting_for_review() {
        use crate::remediation::conditions::set_phase_conditions;
        use crate::remediation::crd::{Action, Proposal, RemediationSpec, RemediationStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut registry = Registry::default();
        let metrics = RemediationMetrics::register(&mut registry);
        let now = Timestamp::now();
        let spec = || RemediationSpec {
            target: Default::default(),
            approved: false,
            rejected: false,
            approval: None,
        };
        let case = |phase: Phase, actions: bool, age_s: i64| {
            let mut status = RemediationStatus {
                phase,
                ..RemediationStatus::default()
            };
            if actions {
                status.proposal = Some(Proposal {
                    actions: vec![Action::default()],
                    ..Proposal::default()
                });
            }
            let at = Time(now - k8s_openapi::jiff::SignedDuration::from_secs(age_s));
            set_phase_conditions(&mut status, Some(1), "Test", "", &at);
            let mut r = Remediation::new("r", spec());
            r.status = Some(status);
            r
        };
        let cases = [
            case(Phase::Proposed, true, 600),
            case(Phase::Proposed, true, 90),
            // A diagnosis has nothing to approve: it is not waiting.
            case(Phase::Proposed, false, 7200),
            case(Phase::Verified, true, 9000),
            Remediation::new("fresh", spec()),
        ];
        metrics.observe_cases(&cases, now);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "remediation_in_phase{phase=\"Proposed\"} 3",
            "remediation_in_phase{phase=\"Verified\"} 1",
            "remediation_in_phase{phase=\"Diagnosing\"} 1",
            "remediation_in_phase{phase=\"RolledBack\"} 0",
            "remediation_review_wait_oldest_seconds 600.0",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        metrics.forget_cases();
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("remediation_in_phase{phase=\"Proposed\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("remediation_review_wait_oldest_seconds 0.0"),
            "{text}"
        );
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
