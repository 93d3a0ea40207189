//! Model proposals run on their own tasks: a reconcile starts one and
//! returns at once (requeueing), a later reconcile picks up the result. A
//! slow model therefore never holds a reconcile worker: a call that can take
//! minutes would otherwise stall every other Remediation behind it.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::remediation::crd::{Evidence, Finding};
use crate::remediation::propose::model::{Incident, ModelProposal, ModelProposer};

type Outcome = Result<Box<ModelProposal>, FailedCall>;

/// Why a model call gave no proposal.
#[derive(Clone, Debug)]
pub struct FailedCall {
    pub message: String,
    /// The metric label (see [`crate::llm::provider::LlmError::outcome_label`]).
    pub outcome: &'static str,
    /// How long the call took.
    pub seconds: f64,
}

impl std::fmt::Display for FailedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

enum Slot {
    Running(tokio::task::JoinHandle<()>),
    Done(Outcome),
}

/// Model calls by Remediation uid.
#[derive(Default)]
pub struct ModelCalls(Arc<Mutex<HashMap<String, Slot>>>);

/// Where the model call for one Remediation stands.
pub enum ModelCall {
    Running,
    Done(Outcome),
}

impl ModelCalls {
    /// Returns the finished outcome (once), or starts the call if none runs.
    pub fn poll_or_start(
        &self,
        key: &str,
        proposer: Arc<ModelProposer>,
        evidence: Evidence,
        findings: Vec<Finding>,
        cluster_images: Vec<String>,
    ) -> ModelCall {
        let Ok(mut calls) = self.0.lock() else {
            return ModelCall::Done(Err(FailedCall {
                message: "model call bookkeeping is unavailable".into(),
                outcome: "error",
                seconds: 0.0,
            }));
        };
        match calls.remove(key) {
            Some(Slot::Done(outcome)) => return ModelCall::Done(outcome),
            Some(Slot::Running(handle)) if !handle.is_finished() => {
                calls.insert(key.to_string(), Slot::Running(handle));
                return ModelCall::Running;
            }
            // A task that finished without reporting (it panicked): start again.
            Some(Slot::Running(_)) | None => {}
        }
        let slots = Arc::clone(&self.0);
        let id = key.to_string();
        let handle = tokio::spawn(async move {
            let incident = Incident {
                evidence: &evidence,
                findings: &findings,
                cluster_images: &cluster_images,
            };
            let started = std::time::Instant::now();
            let outcome = proposer
                .propose(&incident)
                .await
                .map(Box::new)
                .map_err(|e| FailedCall {
                    message: e.to_string(),
                    outcome: e.outcome_label(),
                    seconds: started.elapsed().as_secs_f64(),
                });
            if let Ok(mut calls) = slots.lock() {
                calls.insert(id, Slot::Done(outcome));
            }
        });
        calls.insert(key.to_string(), Slot::Running(handle));
        ModelCall::Running
    }

    /// Forgets a call (when its Remediation is regenerated or closed).
    pub fn forget(&self, key: &str) {
        if let Ok(mut calls) = self.0.lock()
            && let Some(Slot::Running(handle)) = calls.remove(key)
        {
            handle.abort();
        }
    }
}
