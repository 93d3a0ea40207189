//! Status conditions derived from the phase, so they can never contradict
//! each other: each phase implies exactly one value for every condition,
//! and a later success clears `Failed`.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::crd::{Phase, RemediationStatus};

/// The conditions every Remediation carries, in display order.
pub const CONDITION_TYPES: [&str; 7] = [
    "Diagnosing",
    "Proposed",
    "ReadyForReview",
    "Applied",
    "Verified",
    "Failed",
    "RolledBack",
];

/// The truth value of each condition type for a phase. `has_actions`
/// distinguishes a fix awaiting review from a "needs a human" diagnosis.
fn truth(phase: Phase, has_actions: bool, condition: &str) -> bool {
    use Phase::*;
    match condition {
        "Diagnosing" => phase == Diagnosing,
        "Proposed" => matches!(phase, Proposed | Applying | Applied | Verified | RolledBack),
        "ReadyForReview" => phase == Proposed && has_actions,
        "Applied" => matches!(phase, Applied | Verified),
        "Verified" => phase == Verified,
        "Failed" => phase == Failed,
        "RolledBack" => phase == RolledBack,
        _ => false,
    }
}

/// Rewrites `status.conditions` for the current phase. A condition's
/// `lastTransitionTime` moves only when its value flips; `reason` and
/// `message` describe the transition that set the phase.
pub fn set_phase_conditions(
    status: &mut RemediationStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let has_actions = status
        .proposal
        .as_ref()
        .is_some_and(|p| !p.actions.is_empty());
    let previous = std::mem::take(&mut status.conditions);
    status.conditions = CONDITION_TYPES
        .iter()
        .map(|&type_| {
            let value = if truth(status.phase, has_actions, type_) {
                "True"
            } else {
                "False"
            };
            let old = previous.iter().find(|c| c.type_ == type_);
            let transitioned = old.is_none_or(|c| c.status != value);
            Condition {
                type_: type_.to_string(),
                status: value.to_string(),
                reason: if transitioned || value == "True" {
                    reason.to_string()
                } else {
                    old.map(|c| c.reason.clone())
                        .unwrap_or_else(|| reason.to_string())
                },
                message: if value == "True" {
                    message.to_string()
                } else {
                    String::new()
                },
                observed_generation: generation,
                last_transition_time: if transitioned {
                    now.clone()
                } else {
                    old.map(|c| c.last_transition_time.clone())
                        .unwrap_or_else(|| now.clone())
                },
            }
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::crd::{Action, Proposal};

    fn now(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn status(phase: Phase, actions: usize) -> RemediationStatus {
        RemediationStatus {
            phase,
            proposal: Some(Proposal {
                actions: vec![Action::default(); actions],
                ..Proposal::default()
            }),
            ..RemediationStatus::default()
        }
    }

    fn value(s: &RemediationStatus, type_: &str) -> String {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
            .status
            .clone()
    }

    #[test]
    fn every_phase_sets_every_condition_without_contradiction() {
        for phase in [
            Phase::Diagnosing,
            Phase::Proposed,
            Phase::Applying,
            Phase::Applied,
            Phase::Verified,
            Phase::Failed,
            Phase::RolledBack,
            Phase::Rejected,
            Phase::Resolved,
        ] {
            let mut s = status(phase, 1);
            set_phase_conditions(&mut s, Some(2), "Test", "m", &now(0));
            assert_eq!(s.conditions.len(), CONDITION_TYPES.len());
            let is = |t| value(&s, t) == "True";
            // Contradictions that must never show.
            assert!(!(is("Failed") && is("Verified")), "{phase:?}");
            assert!(!(is("Diagnosing") && is("Proposed")), "{phase:?}");
            assert!(!is("Verified") || is("Applied"), "{phase:?}");
            assert!(!(is("RolledBack") && is("Applied")), "{phase:?}");
            assert!(
                s.conditions
                    .iter()
                    .all(|c| c.observed_generation == Some(2))
            );
        }
    }

    #[test]
    fn a_later_success_clears_failed() {
        let mut s = status(Phase::Failed, 1);
        set_phase_conditions(&mut s, Some(1), "ApplyFailed", "boom", &now(0));
        assert_eq!(value(&s, "Failed"), "True");
        s.phase = Phase::Verified;
        set_phase_conditions(&mut s, Some(1), "RolloutComplete", "ok", &now(10));
        assert_eq!(value(&s, "Failed"), "False");
        assert_eq!(value(&s, "Verified"), "True");
    }

    #[test]
    fn transition_time_moves_only_on_flips() {
        let mut s = status(Phase::Proposed, 1);
        set_phase_conditions(&mut s, Some(1), "Proposed", "", &now(0));
        s.phase = Phase::Applying;
        set_phase_conditions(&mut s, Some(1), "Approved", "", &now(50));
        let proposed = s.conditions.iter().find(|c| c.type_ == "Proposed").unwrap();
        assert_eq!(
            proposed.last_transition_time,
            now(0),
            "Proposed stayed True"
        );
        let review = s
            .conditions
            .iter()
            .find(|c| c.type_ == "ReadyForReview")
            .unwrap();
        assert_eq!(
            review.last_transition_time,
            now(50),
            "ReadyForReview flipped"
        );
    }

    #[test]
    fn a_diagnosis_without_actions_is_not_ready_for_review() {
        let mut s = status(Phase::Proposed, 0);
        set_phase_conditions(&mut s, None, "NeedsHuman", "", &now(0));
        assert_eq!(value(&s, "Proposed"), "True");
        assert_eq!(value(&s, "ReadyForReview"), "False");
    }
}
