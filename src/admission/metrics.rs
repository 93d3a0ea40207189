//! Prometheus metrics of the admission webhook, served at `GET /metrics` in
//! the text exposition format.
//!
//! - `aiops_admission_requests_total{endpoint, result}`: reviews answered
//!   (`allowed`, `denied`, `exempt`, `invalid`).
//! - `aiops_admission_request_duration_seconds{endpoint}`: latency of every
//!   HTTP request, measured by a tower layer around the router.
//! - `aiops_admission_stage_seconds{stage}`: where a `/validate` review's
//!   time goes: `parse` the body, `match` the rules that select it,
//!   `evaluate` them into a verdict, `encode` the reply.
//! - `aiops_admission_violations_total{policy, rule, mode}`: violated rules.
//! - `aiops_admission_side_effects_total{kind, result}`: Event/PolicyReport
//!   writes (`written`, `failed`) and records dropped because the queue was
//!   full or no cluster is configured (`dropped_full`, `dropped_disabled`).
//! - `aiops_admission_cert_reloads_total{result}`: certificate reloads.
//! - `aiops_admission_config_updates_total{result}`: ConfigMap mode updates
//!   and policy file reloads (`applied`, `applied_with_issues`, `refused`,
//!   `policies_applied`, `policies_refused`, `watch_error`).
//! - `aiops_admission_config_refused{source}`: 1 while the newest version of
//!   `policies` or `configmap` is refused and the last good one serves.
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission::modes::Mode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: Stage,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    policy: String,
    rule: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideEffectLabels {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// How a review was answered, for `aiops_admission_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewResult {
    Allowed,
    Denied,
    Exempt,
    /// The body was not a usable v1 AdmissionReview (400).
    Invalid,
}

impl ReviewResult {
    fn as_str(self) -> &'static str {
        match self {
            ReviewResult::Allowed => "allowed",
            ReviewResult::Denied => "denied",
            ReviewResult::Exempt => "exempt",
            ReviewResult::Invalid => "invalid",
        }
    }
}

/// A step of answering a `/validate` review, for
/// `aiops_admission_stage_seconds`. Together they cover the handler from
/// the body in hand to the reply encoded.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Stage {
    /// The body into a [`crate::admission::review::Request`].
    Parse,
    /// Modes, exemptions and the policy rules that select the object.
    Match,
    /// The selected rules evaluated, and the verdict and response built.
    Evaluate,
    /// The response serialized into the reply body.
    Encode,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Match => "match",
            Stage::Evaluate => "evaluate",
            Stage::Encode => "encode",
        }
    }
}

impl EncodeLabelValue for Stage {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Times the consecutive stages of one review: each [`StageClock::lap`]
/// records the time since the clock started or since the previous lap.
pub struct StageClock<'a> {
    metrics: Option<&'a Metrics>,
    since: Instant,
}

impl StageClock<'_> {
    pub fn lap(&mut self, stage: Stage) {
        let Some(metrics) = self.metrics else {
            return;
        };
        let now = Instant::now();
        metrics.stage(stage, now - self.since);
        self.since = now;
    }
}

/// Buckets from 2 µs to about 0.5 s: a stage normally takes tens of
/// microseconds, and the point of this histogram is the rare slow one.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_002, 2.0, 19))
}

/// Buckets from 0.25 ms to about 4 s: admission must answer well inside the
/// API server's 5 s webhook timeout, so finer resolution at the low end.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// Every metric of the webhook and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    stages: Family<StageLabels, Histogram, fn() -> Histogram>,
    violations: Family<ViolationLabels, Counter>,
    side_effects: Family<SideEffectLabels, Counter>,
    cert_reloads: Family<ResultLabels, Counter>,
    config_updates: Family<ResultLabels, Counter>,
    config_refused: Family<SourceLabels, Gauge>,
    runtime_tasks: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::new_with(|_| {})
    }

    /// The webhook's metrics plus whatever `register` adds to the same
    /// registry (one `/metrics` for the whole operator).
    pub fn new_with(register: impl FnOnce(&mut Registry)) -> Self {
        let mut root = Registry::default();
        register(&mut root);
        // A process-wide figure, so outside the admission prefix: the soak
        // benchmark watches it for tasks that are spawned and never end.
        let runtime_tasks = Gauge::default();
        root.register(
            "aiops_runtime_tasks",
            "Tasks alive on the process's async runtime, read at each scrape",
            runtime_tasks.clone(),
        );
        let registry = root.sub_registry_with_prefix("aiops_admission");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Admission reviews answered, by endpoint and result",
            requests.clone(),
        );
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer an HTTP request, by endpoint",
            latency.clone(),
        );
        let stages = Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            stage_histogram,
        );
        registry.register(
            "stage_seconds",
            "Time spent in each step of answering a /validate review",
            stages.clone(),
        );
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "violations",
            "Violated policy rules, by policy, rule and effective mode",
            violations.clone(),
        );
        let side_effects = Family::<SideEffectLabels, Counter>::default();
        registry.register(
            "side_effects",
            "Audit Events and PolicyReports written, failed or dropped",
            side_effects.clone(),
        );
        let cert_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cert_reloads",
            "Serving certificate reloads from disk, by result",
            cert_reloads.clone(),
        );
        let config_updates = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_updates",
            "Admission ConfigMap updates and policy file reloads, by result",
            config_updates.clone(),
        );
        let config_refused = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "config_refused",
            "1 while the newest version of a configuration source is refused and the last good one serves",
            config_refused.clone(),
        );
        Metrics {
            registry: root,
            requests,
            latency,
            stages,
            violations,
            side_effects,
            cert_reloads,
            config_updates,
            config_refused,
            runtime_tasks,
        }
    }

    pub fn review(&self, endpoint: &str, result: ReviewResult) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                result: result.as_str().to_string(),
            })
            .inc();
    }

    pub fn latency(&self, endpoint: &str, elapsed: Duration) {
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn stage(&self, stage: Stage, elapsed: Duration) {
        self.stages
            .get_or_create(&StageLabels { stage })
            .observe(elapsed.as_secs_f64());
    }

    /// A clock for the stages of one review; `enabled: false` records
    /// nothing (endpoints other than `/validate`).
    pub fn stage_clock(&self, enabled: bool) -> StageClock<'_> {
        StageClock {
            metrics: enabled.then_some(self),
            since: Instant::now(),
        }
    }

    pub fn violation(&self, policy: &str, rule: &str, mode: Mode) {
        self.violations
            .get_or_create(&ViolationLabels {
                policy: policy.to_string(),
                rule: rule.to_string(),
                mode: mode.as_str().to_string(),
            })
            .inc();
    }

    /// `kind` is `event`, `policyreport` or `record`; `result` says what
    /// happened to it.
    pub fn side_effect(&self, kind: &str, result: &str) {
        self.side_effects
            .get_or_create(&SideEffectLabels {
                kind: kind.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn cert_reload(&self, result: &str) {
        self.cert_reloads
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn config_update(&self, result: &str) {
        self.config_updates
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Whether the newest version of `source` is refused.
    pub fn config_refused(&self, source: &str, refused: bool) {
        self.config_refused
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .set(i64::from(refused));
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let alive = runtime.metrics().num_alive_tasks();
            self.runtime_tasks
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_histograms() {
        let metrics = Metrics::new();
        metrics.review("validate", ReviewResult::Denied);
        metrics.latency("validate", Duration::from_millis(3));
        metrics.violation("disallow-latest-tag", "require-image-tag", Mode::Enforce);
        let text = metrics.encode().unwrap_or_default();
        assert!(
            text.contains(
                "aiops_admission_requests_total{endpoint=\"validate\",result=\"denied\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("aiops_admission_violations_total{policy=\"disallow-latest-tag\",rule=\"require-image-tag\",mode=\"Enforce\"} 1"), "{text}");
        assert!(
            text.contains("aiops_admission_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_runtime_task_count_is_read_at_each_scrape() {
        let metrics = Metrics::new();
        let parked = tokio::spawn(std::future::pending::<()>());
        let text = metrics.encode().unwrap_or_default();
        let alive: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("aiops_runtime_tasks "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_default();
        assert!(alive >= 1, "the parked task is counted:\n{text}");
        parked.abort();
    }
}
