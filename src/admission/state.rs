//! The state every request handler shares: one `Arc<AppState>`.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::admission::api_server_policies::ApiServerRules;
use crate::admission::audit_writer::AuditSink;
use crate::admission::metrics::Metrics;
use crate::admission::modes::ModeConfig;
use crate::admission::namespace_labels::NamespaceLabels;
use crate::admission::refusals::ConfigRefusals;
use crate::policy::{ClusterData, PolicySet};

/// A value that is swapped as a whole while requests read it: a request
/// takes one snapshot and keeps it to the end, so it never sees half of an
/// update.
#[derive(Debug)]
pub struct Live<T>(Arc<ArcSwap<T>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(Arc::clone(&self.0))
    }
}

impl<T> Live<T> {
    pub fn new(initial: T) -> Self {
        Live(Arc::new(ArcSwap::from_pointee(initial)))
    }

    /// The value for the request being handled.
    pub fn current(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// Applies a new value to every later request.
    pub fn replace(&self, value: T) {
        self.0.store(Arc::new(value));
    }
}

/// The admission modes in force, swapped when the ConfigMap changes.
pub type ModeHandle = Live<ModeConfig>;

/// The policies in force, swapped when the policy files change; the
/// webhook and the repair loop's guardrails read the same handle.
pub type PolicyHandle = Live<PolicySet>;

/// Everything a handler needs.
pub struct AppState {
    pub policies: PolicyHandle,
    pub modes: ModeHandle,
    pub config_refusals: ConfigRefusals,
    pub metrics: Arc<Metrics>,
    pub audit: AuditSink,
    /// Rules the API server enforces as ValidatingAdmissionPolicies; the
    /// webhook skips them.
    pub api_server_rules: ApiServerRules,
    /// Where `configMap`/`apiCall` context entries are read; `None`
    /// without a cluster (such rules are then `error`s).
    pub cluster_data: Option<Arc<dyn ClusterData + Send + Sync>>,
    /// Namespace labels for `namespaceSelector` and `namespaceObject`;
    /// `None` without a cluster (selectors then see no labels).
    pub namespaces: Option<NamespaceLabels>,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(
        policies: PolicyHandle,
        modes: ModeHandle,
        metrics: Arc<Metrics>,
        audit: AuditSink,
    ) -> Self {
        AppState {
            policies,
            modes,
            config_refusals: ConfigRefusals::default(),
            metrics,
            audit,
            api_server_rules: ApiServerRules::new(Default::default()),
            cluster_data: None,
            namespaces: None,
            draining: AtomicBool::new(false),
        }
    }

    /// Marks the server as shutting down: `/readyz` starts failing so the
    /// Service stops routing new requests here while in-flight ones finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
