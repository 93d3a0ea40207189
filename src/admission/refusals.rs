//! Refused configuration updates. A policy file or an admission ConfigMap
//! that does not parse must never replace what is in force: admission
//! would otherwise change under people's feet (every policy gone, or every
//! mode back to its default) because of one typo. So the webhook keeps the
//! last good version and says so everywhere someone might look: the log,
//! a Warning Event, `aiops_admission_config_refused{source}` and the
//! `/readyz` body.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::admission::metrics::Metrics;

/// A source of the webhook's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigSource {
    /// The policy files (`--policies-dir`, `--extra-policies`).
    Policies,
    /// The admission ConfigMap.
    ConfigMap,
}

impl ConfigSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigSource::Policies => "policies",
            ConfigSource::ConfigMap => "configmap",
        }
    }
}

/// The sources whose latest version was refused, with why; the webhook
/// keeps serving the last good version of each.
#[derive(Debug, Clone, Default)]
pub struct ConfigRefusals(Arc<Mutex<BTreeMap<ConfigSource, String>>>);

impl ConfigRefusals {
    /// The latest version of `source` was refused for `reason`; true when
    /// that is news (a different reason, or the source was in force).
    pub fn refuse(&self, source: ConfigSource, reason: String) -> bool {
        self.lock().insert(source, reason.clone()).as_ref() != Some(&reason)
    }

    /// The latest version of `source` is in force.
    pub fn accept(&self, source: ConfigSource) {
        self.lock().remove(&source);
    }

    /// Every refused source and why, in a fixed order.
    pub fn list(&self) -> Vec<(ConfigSource, String)> {
        self.lock().iter().map(|(s, r)| (*s, r.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ConfigSource, String>> {
        // A panic while holding this lock cannot leave the map half
        // written (each operation is one map call), so a poisoned lock is
        // still a valid map.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reports refusals and recoveries of one source.
#[derive(Clone)]
pub struct RefusalReporter {
    refusals: ConfigRefusals,
    metrics: Arc<Metrics>,
    /// Writes the Warning Events; `None` without a cluster.
    recorder: Option<Recorder>,
}

impl RefusalReporter {
    pub fn new(
        refusals: ConfigRefusals,
        metrics: Arc<Metrics>,
        client: Option<kube::Client>,
        reporter: Reporter,
    ) -> Self {
        RefusalReporter {
            refusals,
            metrics,
            recorder: client.map(|client| Recorder::new(client, reporter)),
        }
    }

    /// The newest version of `source` is refused; the last good one stays.
    /// The Warning Event goes on `object` (the ConfigMap, or this
    /// replica's Pod for the policy files), once per distinct reason.
    pub async fn refused(
        &self,
        source: ConfigSource,
        reason: String,
        object: Option<ObjectReference>,
    ) {
        self.metrics
            .config_update(&format!("{}_refused", source.as_str()));
        self.metrics.config_refused(source.as_str(), true);
        if !self.refusals.refuse(source, reason.clone()) {
            return;
        }
        tracing::warn!(
            source = source.as_str(),
            %reason,
            "configuration update refused; the last good version stays in force"
        );
        let (Some(recorder), Some(object)) = (&self.recorder, object) else {
            return;
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "ConfigRefused".into(),
            note: Some(
                format!(
                    "{} update refused, the last good version stays in force: {reason}",
                    source.as_str()
                )
                .chars()
                .take(1000)
                .collect(),
            ),
            action: "LoadConfig".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &object).await {
            tracing::warn!(%error, source = source.as_str(), "cannot publish the ConfigRefused Event");
        }
    }

    /// The newest version of `source` is in force.
    pub fn accepted(&self, source: ConfigSource) {
        self.metrics.config_refused(source.as_str(), false);
        self.refusals.accept(source);
    }
}
