//! Model proposals run on their own tasks: a reconcile starts one and
//! returns at once (requeueing), a later reconcile picks up the result. A
//! slow model therefore never holds a reconcile worker: a call that can take
//! minutes would otherwise stall every other Remediation behind it.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The outcome and when it arrived.
    Done(Outcome, Instant),
}

/// How long a finished call waits for its Remediation to claim it. A
/// Remediation deleted or closed while its call ran never does, and its
/// slot would otherwise stay for the life of the process.
const UNCLAIMED_AFTER: Duration = Duration::from_secs(30 * 60);

/// Model calls by Remediation uid.
pub struct ModelCalls {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    unclaimed_after: Duration,
}

impl Default for ModelCalls {
    fn default() -> Self {
        ModelCalls {
            slots: Arc::default(),
            unclaimed_after: UNCLAIMED_AFTER,
        }
    }
}

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
        let Ok(mut calls) = self.slots.lock() else {
            return ModelCall::Done(Err(FailedCall {
                message: "model call bookkeeping is unavailable".into(),
                outcome: "error",
                seconds: 0.0,
            }));
        };
        let unclaimed_after = self.unclaimed_after;
        calls
            .retain(|_, slot| !matches!(slot, Slot::Done(_, at) if at.elapsed() > unclaimed_after));
        match calls.remove(key) {
            Some(Slot::Done(outcome, _)) => return ModelCall::Done(outcome),
            Some(Slot::Running(handle)) if !handle.is_finished() => {
                calls.insert(key.to_string(), Slot::Running(handle));
                return ModelCall::Running;
            }
            // A task that finished without reporting (it panicked): start again.
            Some(Slot::Running(_)) | None => {}
        }
        let slots = Arc::clone(&self.slots);
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
                calls.insert(id, Slot::Done(outcome, Instant::now()));
            }
        });
        calls.insert(key.to_string(), Slot::Running(handle));
        ModelCall::Running
    }

    /// How many calls are held: running, or finished and not yet claimed.
    pub fn held(&self) -> usize {
        self.slots
            .lock()
            .map(|calls| calls.len())
            .unwrap_or_default()
    }

    /// Forgets a call, stopping it if it still runs: its Remediation has
    /// left `Diagnosing`, so no reconcile will claim the outcome.
    pub fn forget(&self, key: &str) {
        if let Ok(mut calls) = self.slots.lock()
            && let Some(Slot::Running(handle)) = calls.remove(key)
        {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(calls: &ModelCalls, key: &str, at: Instant) {
        let outcome = Err(FailedCall {
            message: "the model server is down".into(),
            outcome: "error",
            seconds: 1.0,
        });
        calls
            .slots
            .lock()
            .unwrap()
            .insert(key.into(), Slot::Done(outcome, at));
    }

    #[test]
    fn outcomes_nobody_claims_do_not_pile_up() {
        let calls = ModelCalls {
            unclaimed_after: Duration::from_secs(60),
            ..ModelCalls::default()
        };
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(120))
            .expect("the clock is past two minutes");
        finished(&calls, "deleted-while-its-call-ran", long_ago);
        finished(&calls, "claimed-next", Instant::now());
        assert_eq!(calls.held(), 2);
        // Claiming one outcome sweeps the stale one.
        let proposer = Arc::new(ModelProposer::new(
            Arc::new(crate::llm::provider::NoProvider),
            &crate::llm::LlmConfig::default(),
            1 << 30,
        ));
        match calls.poll_or_start(
            "claimed-next",
            proposer,
            Evidence::default(),
            vec![],
            vec![],
        ) {
            ModelCall::Done(Err(failed)) => assert_eq!(failed.outcome, "error"),
            _ => panic!("the waiting outcome is returned"),
        }
        assert_eq!(calls.held(), 0, "the stale slot was swept");
    }

    #[test]
    fn a_closed_remediation_forgets_its_call() {
        let calls = ModelCalls::default();
        finished(&calls, "closed", Instant::now());
        calls.forget("closed");
        assert_eq!(calls.held(), 0);
    }
}
