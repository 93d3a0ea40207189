//! Prometheus metrics of the repair loop, registered into the process's
//! one registry (served on the webhook's `/metrics`).
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::crd::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
    reason: String,
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
}
