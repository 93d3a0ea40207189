//! The state every request handler shares: one `Arc<AppState>`.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::admission::audit_writer::AuditSink;
use crate::admission::metrics::Metrics;
use crate::admission::modes::ModeConfig;
use crate::policy::PolicySet;

/// The admission modes in force, swapped as a whole when the ConfigMap
/// changes; a request reads one snapshot and keeps it to the end.
#[derive(Clone, Debug)]
pub struct ModeHandle(Arc<ArcSwap<ModeConfig>>);

impl ModeHandle {
    pub fn new(initial: ModeConfig) -> Self {
        ModeHandle(Arc::new(ArcSwap::from_pointee(initial)))
    }

    /// The configuration for the request being handled.
    pub fn current(&self) -> Arc<ModeConfig> {
        self.0.load_full()
    }

    /// Applies a new configuration to every later request.
    pub fn replace(&self, config: ModeConfig) {
        self.0.store(Arc::new(config));
    }
}

/// Everything a handler needs.
pub struct AppState {
    pub policies: Arc<PolicySet>,
    pub modes: ModeHandle,
    pub metrics: Arc<Metrics>,
    pub audit: AuditSink,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(
        policies: Arc<PolicySet>,
        modes: ModeHandle,
        metrics: Arc<Metrics>,
        audit: AuditSink,
    ) -> Self {
        AppState {
            policies,
            modes,
            metrics,
            audit,
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
