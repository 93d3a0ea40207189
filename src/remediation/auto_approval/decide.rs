//! The auto-approval decision for one Proposed Remediation: which rule (if
//! any) covers its proposal, and whether the budgets let it go now. Pure:
//! the controller gathers the facts, this decides, so every budget is
//! tested without a cluster.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::settings::{AUTO_APPROVER_PREFIX, AutoApprovalRule, RemediateSettings};
use crate::policy::selector_matches;
use crate::remediation::crd::{Phase, Remediation};
use crate::remediation::propose::rules::RULES_SOURCE;

/// What the controller knows about the case being decided.
pub struct CaseFacts<'a> {
    pub remediation: &'a Remediation,
    /// The labels of the Remediation's namespace (`None`: no labels).
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// Ready over desired replicas of the workload, when its kind has them.
    pub ready_fraction: Option<f64>,
    pub now: Timestamp,
}

/// Why an auto-approval waits; the label of the decision metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldReason {
    Paused,
    CoolDown,
    HoldOff,
    InFlight,
    InFlightNamespace,
    Unhealthy,
}

impl HoldReason {
    /// The Event reason. One per hold reason: the Event recorder folds
    /// repeats of one reason into a series that keeps the first note, so a
    /// budget hold after a pause hold would otherwise still read "paused".
    pub fn event_reason(self) -> &'static str {
        match self {
            HoldReason::Paused => "AutoApprovalHeldPaused",
            HoldReason::CoolDown => "AutoApprovalHeldCoolDown",
            HoldReason::HoldOff => "AutoApprovalHeldHoldOff",
            HoldReason::InFlight => "AutoApprovalHeldInFlight",
            HoldReason::InFlightNamespace => "AutoApprovalHeldInFlightNamespace",
            HoldReason::Unhealthy => "AutoApprovalHeldUnhealthy",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Paused => "paused",
            HoldReason::CoolDown => "cool_down",
            HoldReason::HoldOff => "hold_off",
            HoldReason::InFlight => "in_flight",
            HoldReason::InFlightNamespace => "in_flight_namespace",
            HoldReason::Unhealthy => "unhealthy",
        }
    }
}

/// The outcome for one case.
#[derive(Clone, Debug, PartialEq)]
pub enum AutoDecision {
    /// No rule covers it: it waits for a person.
    ForAPerson,
    /// A rule covers it, but a budget (or the pause) holds it for now.
    Hold {
        rule: String,
        reason: HoldReason,
        detail: String,
    },
    Approve {
        rule: String,
    },
}

/// Whether a Remediation's recorded approval came from an auto-approval rule.
pub fn auto_approved(remediation: &Remediation) -> bool {
    remediation
        .spec
        .approval
        .as_ref()
        .is_some_and(|a| a.approved_by.starts_with(AUTO_APPROVER_PREFIX))
}

/// The first rule that covers the case's proposal, if any.
pub fn covering_rule<'a>(
    settings: &'a RemediateSettings,
    case: &CaseFacts<'_>,
) -> Option<&'a AutoApprovalRule> {
    let status = case.remediation.status.as_ref()?;
    let proposal = status.proposal.as_ref()?;
    if status.phase != Phase::Proposed || proposal.actions.is_empty() {
        return None;
    }
    let guarded = status.guardrail.as_ref().is_some_and(|g| g.allowed);
    let validated = status
        .dry_run
        .as_ref()
        .is_some_and(|d| d.result == "Succeeded" && d.proposal_hash == proposal.hash);
    if !guarded || !validated {
        return None;
    }
    let from_rules = proposal.source == RULES_SOURCE;
    let empty = BTreeMap::new();
    let labels = case.namespace_labels.unwrap_or(&empty);
    settings.rules.iter().find(|rule| {
        (from_rules || rule.allow_model)
            && rule.allows_class(&proposal.class)
            && proposal.confidence >= rule.min_confidence
            && rule
                .namespace_selector
                .as_ref()
                .is_none_or(|selector| selector_matches(selector, labels))
    })
}

/// Decides one case against the rules and budgets, given every
/// Remediation in the cluster (`others`; the case itself may be among them).
pub fn decide(
    settings: &RemediateSettings,
    case: &CaseFacts<'_>,
    others: &[Remediation],
) -> AutoDecision {
    let Some(rule) = covering_rule(settings, case) else {
        return AutoDecision::ForAPerson;
    };
    let hold = |reason: HoldReason, detail: String| AutoDecision::Hold {
        rule: rule.name.clone(),
        reason,
        detail,
    };
    if settings.paused {
        return hold(
            HoldReason::Paused,
            "applies are paused (remediate.paused)".into(),
        );
    }
    let budget = &settings.budget;
    let me = case.remediation.metadata.uid.as_deref().unwrap_or_default();
    let namespace = case.remediation.metadata.namespace.as_deref();
    let target = &case.remediation.spec.target.uid;
    let auto_others: Vec<&Remediation> = others
        .iter()
        .filter(|r| r.metadata.uid.as_deref().unwrap_or_default() != me && auto_approved(r))
        .collect();

    let since = |time: Option<Timestamp>| -> Option<Duration> {
        let time = time?;
        Duration::try_from(case.now.duration_since(time)).ok()
    };
    if let Some(rolled_back) = auto_others.iter().find(|r| {
        phase_of(r) == Phase::RolledBack
            && since(closed_at(r)).is_some_and(|age| age < budget.cool_down)
    }) {
        return hold(
            HoldReason::CoolDown,
            format!(
                "the auto-approved fix {}/{} was rolled back less than {} ago",
                rolled_back
                    .metadata
                    .namespace
                    .as_deref()
                    .unwrap_or_default(),
                rolled_back.metadata.name.as_deref().unwrap_or_default(),
                words(budget.cool_down)
            ),
        );
    }
    if auto_others.iter().any(|r| {
        &r.spec.target.uid == target
            && since(r.spec.approval.as_ref().map(|a| a.approved_at.0))
                .is_some_and(|age| age < budget.hold_off)
    }) {
        return hold(
            HoldReason::HoldOff,
            format!(
                "this workload had an auto-approved fix less than {} ago",
                words(budget.hold_off)
            ),
        );
    }
    // In flight from the approval on: an approved case is still Proposed
    // until its next reconcile moves it to Applying.
    let in_flight: Vec<&&Remediation> = auto_others
        .iter()
        .filter(|r| !phase_of(r).is_closed())
        .collect();
    if in_flight.len() as u64 >= u64::from(budget.max_in_flight) {
        return hold(
            HoldReason::InFlight,
            format!(
                "{} auto-approved fix(es) in flight, the cluster's budget is {}",
                in_flight.len(),
                budget.max_in_flight
            ),
        );
    }
    let here = in_flight
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == namespace)
        .count();
    if here as u64 >= u64::from(budget.max_in_flight_per_namespace) {
        return hold(
            HoldReason::InFlightNamespace,
            format!(
                "{here} auto-approved fix(es) in flight in this namespace, its budget is {}",
                budget.max_in_flight_per_namespace
            ),
        );
    }
    if budget.min_healthy_fraction > 0.0 {
        match case.ready_fraction {
            Some(ready) if ready >= budget.min_healthy_fraction => {}
            Some(ready) => {
                return hold(
                    HoldReason::Unhealthy,
                    format!(
                        "{:.0}% of the workload's replicas are ready, the budget asks for {:.0}%",
                        ready * 100.0,
                        budget.min_healthy_fraction * 100.0
                    ),
                );
            }
            None => {
                return hold(
                    HoldReason::Unhealthy,
                    "the workload's kind has no replica count to check minHealthyFraction against"
                        .into(),
                );
            }
        }
    }
    AutoDecision::Approve {
        rule: rule.name.clone(),
    }
}

fn phase_of(r: &Remediation) -> Phase {
    r.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// When a closed case closed: its last transition.
fn closed_at(r: &Remediation) -> Option<Timestamp> {
    r.status.as_ref()?.last_update_time.as_ref().map(|t| t.0)
}

fn words(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 3600 && seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else if seconds >= 60 && seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::auto_approval::settings::{Budget, auto_approver};
    use crate::remediation::crd::{
        Action, ApprovalRecord, DryRun, GuardrailVerdict, Proposal, RemediationSpec,
        RemediationStatus, WorkloadRef,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn case(name: &str, namespace: &str, target: &str, class: &str, source: &str) -> Remediation {
        let proposal = Proposal {
            summary: "fix".into(),
            actions: vec![Action::default()],
            source: source.into(),
            class: class.into(),
            confidence: 0.9,
            ..Proposal::default()
        }
        .seal();
        let mut r = Remediation::new(
            name,
            RemediationSpec {
                target: WorkloadRef {
                    uid: target.into(),
                    ..WorkloadRef::default()
                },
                approved: false,
                rejected: false,
                approval: None,
            },
        );
        r.metadata.uid = Some(format!("uid-{name}"));
        r.metadata.namespace = Some(namespace.into());
        r.status = Some(RemediationStatus {
            phase: Phase::Proposed,
            guardrail: Some(GuardrailVerdict {
                allowed: true,
                violations: vec![],
            }),
            dry_run: Some(DryRun {
                result: "Succeeded".into(),
                proposal_hash: proposal.hash.clone(),
                ..DryRun::default()
            }),
            proposal: Some(proposal),
            ..RemediationStatus::default()
        });
        r
    }

    /// `r`, auto-approved at `approved` and now in `phase` since `updated`.
    fn auto(mut r: Remediation, phase: Phase, approved: i64, updated: i64) -> Remediation {
        r.spec.approved = true;
        r.spec.approval = Some(ApprovalRecord {
            approved_by: auto_approver("images"),
            proposal_hash: String::new(),
            approved_at: Time(at(approved)),
            signature: String::new(),
        });
        let status = r.status.as_mut().unwrap();
        status.phase = phase;
        status.last_update_time = Some(Time(at(updated)));
        r
    }

    fn settings() -> RemediateSettings {
        RemediateSettings {
            paused: false,
            rules: vec![AutoApprovalRule {
                name: "images".into(),
                classes: vec!["ImageRestore".into()],
                namespace_selector: Some(json!({"matchLabels": {"auto": "true"}})),
                min_confidence: 0.8,
                allow_model: false,
            }],
            budget: Budget::default(),
            ..RemediateSettings::default()
        }
    }

    fn labelled() -> BTreeMap<String, String> {
        BTreeMap::from([("auto".to_string(), "true".to_string())])
    }

    fn decide_for(
        r: &Remediation,
        settings: &RemediateSettings,
        others: &[Remediation],
    ) -> AutoDecision {
        let labels = labelled();
        decide(
            settings,
            &CaseFacts {
                remediation: r,
                namespace_labels: Some(&labels),
                ready_fraction: Some(0.5),
                now: at(NOW),
            },
            others,
        )
    }

    fn reason(decision: AutoDecision) -> Option<HoldReason> {
        match decision {
            AutoDecision::Hold { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn a_covered_case_is_approved_and_an_uncovered_one_waits_for_a_person() {
        let r = case("a", "shop", "w1", "ImageRestore", "rules");
        assert_eq!(
            decide_for(&r, &settings(), &[]),
            AutoDecision::Approve {
                rule: "images".into()
            }
        );
        // Unlabelled namespace.
        let unlabelled = decide(
            &settings(),
            &CaseFacts {
                remediation: &r,
                namespace_labels: None,
                ready_fraction: None,
                now: at(NOW),
            },
            &[],
        );
        assert_eq!(unlabelled, AutoDecision::ForAPerson);
        // Another class, a model's proposal, low confidence, no dry run.
        let memory = case("b", "shop", "w1", "MemoryRaise", "rules");
        assert_eq!(
            decide_for(&memory, &settings(), &[]),
            AutoDecision::ForAPerson
        );
        let model = case("c", "shop", "w1", "ImageRestore", "qwen");
        assert_eq!(
            decide_for(&model, &settings(), &[]),
            AutoDecision::ForAPerson
        );
        let mut allow_model = settings();
        allow_model.rules[0].allow_model = true;
        assert!(matches!(
            decide_for(&model, &allow_model, &[]),
            AutoDecision::Approve { .. }
        ));
        let mut unsure = case("d", "shop", "w1", "ImageRestore", "rules");
        unsure
            .status
            .as_mut()
            .unwrap()
            .proposal
            .as_mut()
            .unwrap()
            .confidence = 0.5;
        assert_eq!(
            decide_for(&unsure, &settings(), &[]),
            AutoDecision::ForAPerson
        );
        let mut untested = case("e", "shop", "w1", "ImageRestore", "rules");
        untested.status.as_mut().unwrap().dry_run = None;
        assert_eq!(
            decide_for(&untested, &settings(), &[]),
            AutoDecision::ForAPerson
        );
    }

    #[test]
    fn the_pause_holds_a_covered_case() {
        let mut paused = settings();
        paused.paused = true;
        let r = case("a", "shop", "w1", "ImageRestore", "rules");
        assert_eq!(
            reason(decide_for(&r, &paused, &[])),
            Some(HoldReason::Paused)
        );
    }

    #[test]
    fn budgets_count_only_auto_approved_fixes_in_flight() {
        let r = case("a", "shop", "w1", "ImageRestore", "rules");
        let applying = auto(
            case("b", "other", "w2", "ImageRestore", "rules"),
            Phase::Applied,
            NOW - 10,
            NOW - 5,
        );
        assert_eq!(
            reason(decide_for(&r, &settings(), std::slice::from_ref(&applying))),
            Some(HoldReason::InFlight)
        );
        // A person's approval in flight does not count.
        let mut human = applying.clone();
        human.spec.approval.as_mut().unwrap().approved_by = "alice".into();
        assert!(matches!(
            decide_for(&r, &settings(), &[human]),
            AutoDecision::Approve { .. }
        ));
        // Approved a moment ago and not yet Applying is in flight too.
        let just_approved = auto(
            case("e", "other", "w5", "ImageRestore", "rules"),
            Phase::Proposed,
            NOW - 1,
            NOW - 1,
        );
        assert_eq!(
            reason(decide_for(&r, &settings(), &[just_approved])),
            Some(HoldReason::InFlight)
        );
        // Verified fixes are no longer in flight.
        let verified = auto(
            case("c", "other", "w3", "ImageRestore", "rules"),
            Phase::Verified,
            NOW - 100,
            NOW - 50,
        );
        assert!(matches!(
            decide_for(&r, &settings(), &[verified]),
            AutoDecision::Approve { .. }
        ));
        // Per namespace, with room cluster-wide.
        let mut roomy = settings();
        roomy.budget.max_in_flight = 5;
        let same_ns = auto(
            case("d", "shop", "w4", "ImageRestore", "rules"),
            Phase::Applying,
            NOW - 10,
            NOW - 5,
        );
        assert_eq!(
            reason(decide_for(&r, &roomy, &[same_ns])),
            Some(HoldReason::InFlightNamespace)
        );
        // The case itself is not counted against itself.
        let itself = auto(r.clone(), Phase::Applying, NOW - 10, NOW - 5);
        assert!(matches!(
            decide_for(&r, &settings(), &[itself]),
            AutoDecision::Approve { .. }
        ));
    }

    #[test]
    fn a_rollback_trips_the_cool_down_and_a_workload_is_held_off() {
        let r = case("a", "shop", "w1", "ImageRestore", "rules");
        let rolled = auto(
            case("b", "x", "w2", "ImageRestore", "rules"),
            Phase::RolledBack,
            NOW - 600,
            NOW - 300,
        );
        assert_eq!(
            reason(decide_for(&r, &settings(), std::slice::from_ref(&rolled))),
            Some(HoldReason::CoolDown)
        );
        let mut short = settings();
        short.budget.cool_down = Duration::from_secs(60);
        assert!(matches!(
            decide_for(&r, &short, &[rolled]),
            AutoDecision::Approve { .. }
        ));
        let earlier_fix = auto(
            case("c", "shop", "w1", "ImageRestore", "rules"),
            Phase::Verified,
            NOW - 120,
            NOW - 60,
        );
        assert_eq!(
            reason(decide_for(
                &r,
                &settings(),
                std::slice::from_ref(&earlier_fix)
            )),
            Some(HoldReason::HoldOff)
        );
        short.budget.hold_off = Duration::from_secs(60);
        assert!(matches!(
            decide_for(&r, &short, &[earlier_fix]),
            AutoDecision::Approve { .. }
        ));
    }

    #[test]
    fn too_few_ready_replicas_hold_when_the_budget_asks_for_them() {
        let r = case("a", "shop", "w1", "ImageRestore", "rules");
        let mut strict = settings();
        strict.budget.min_healthy_fraction = 0.75;
        assert_eq!(
            reason(decide_for(&r, &strict, &[])),
            Some(HoldReason::Unhealthy)
        );
        strict.budget.min_healthy_fraction = 0.5;
        assert!(matches!(
            decide_for(&r, &strict, &[]),
            AutoDecision::Approve { .. }
        ));
    }
}
