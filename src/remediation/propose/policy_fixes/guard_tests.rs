//! Policy fixes through the guardrails: the rules' fix passes; a variant
//! that changes anything the fixed policy does not need, adds a violation,
//! or leaves the policy failing is refused.
use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::policy::PolicySet;
use crate::remediation::crd::{Finding, GuardrailVerdict};
use crate::remediation::guardrails::{AdmissionView, GuardrailLimits, guard_proposal};
use crate::remediation::policy_case::{failures, findings, judge};

fn policies() -> PolicySet {
    PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
        .expect("the project's policies load")
}

fn daemon_set() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
           "metadata": {"name": "agent", "namespace": "ops", "uid": "u-2"},
           "spec": {"selector": {"matchLabels": {"app": "agent"}},
                    "template": {"metadata": {"labels": {"app": "agent"}},
                                 "spec": {"containers": [{"name": "agent", "image": "busybox:1.36.1",
                                                          "securityContext": {"privileged": true}}]}}}})
}

fn target() -> WorkloadRef {
    WorkloadRef {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: "agent".into(),
        uid: "u-2".into(),
    }
}

struct Case {
    set: PolicySet,
    live: Value,
    findings: Vec<Finding>,
    proposal: Proposal,
}

fn case() -> Case {
    let set = policies();
    let live = daemon_set();
    let found = failures(&judge(&live, &AdmissionView::policies(&set)));
    let proposal = propose_policy_fixes(&live, &target(), "ops", &found, &ReportedImages::new());
    Case {
        findings: findings(&found),
        set,
        live,
        proposal,
    }
}

fn guard(case: &Case, proposal: &Proposal) -> GuardrailVerdict {
    guard_proposal(
        "ops",
        &target(),
        &case.findings,
        proposal,
        &case.live,
        &AdmissionView::policies(&case.set),
        &GuardrailLimits::default(),
    )
}

/// The rules' proposal with one more field in its container entry.
fn variant(case: &Case, extra: Value) -> Proposal {
    let mut proposal = case.proposal.clone();
    let entry = &mut proposal.actions[0].patch["spec"]["template"]["spec"]["containers"][0];
    *entry = merge_apply(entry, &extra);
    proposal.seal()
}

#[test]
fn the_rules_privileged_fix_passes_the_guardrails() {
    let case = case();
    assert_eq!(
        case.proposal.class,
        "PolicyFix:disallow-privileged-containers"
    );
    let verdict = guard(&case, &case.proposal);
    assert!(verdict.allowed, "{:?}", verdict.violations);
}

#[test]
fn a_variant_that_also_changes_the_image_or_resources_is_refused() {
    let case = case();
    for extra in [
        json!({"image": "busybox:1.36.2"}),
        json!({"resources": {"limits": {"memory": "1Gi"}}}),
        json!({"env": [{"name": "DEBUG", "value": "1"}]}),
    ] {
        let verdict = guard(&case, &variant(&case, extra.clone()));
        assert!(!verdict.allowed, "{extra} must be refused");
        assert!(
            verdict
                .violations
                .iter()
                .any(|v| v.contains("not allowed for these findings")),
            "{extra}: {:?}",
            verdict.violations
        );
    }
}

#[test]
fn a_variant_that_adds_a_capability_is_refused_as_a_new_violation() {
    let case = case();
    let verdict = guard(
        &case,
        &variant(
            &case,
            json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
        ),
    );
    assert!(!verdict.allowed);
    assert!(
        verdict
            .violations
            .iter()
            .any(|v| v.contains("disallow-capabilities")),
        "{:?}",
        verdict.violations
    );
}

#[test]
fn a_variant_that_leaves_the_policy_failing_is_refused() {
    let case = case();
    let mut proposal = variant(
        &case,
        json!({"securityContext": {"privileged": true, "procMount": "Default"}}),
    );
    proposal.actions[0].patch["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
        json!({"privileged": true, "procMount": "Default"});
    let verdict = guard(&case, &proposal.seal());
    assert!(!verdict.allowed);
    assert!(
        verdict.violations.iter().any(|v| v.contains("still fails")),
        "{:?}",
        verdict.violations
    );
}

#[test]
fn a_fix_the_class_does_not_claim_may_change_nothing() {
    let case = case();
    let mut proposal = case.proposal.clone();
    proposal.class = "ImageRestore".into();
    let verdict = guard(&case, &proposal.seal());
    assert!(!verdict.allowed);
    assert!(
        verdict
            .violations
            .iter()
            .any(|v| v.contains("not allowed for these findings")),
        "{:?}",
        verdict.violations
    );
}
