//! Policy cases: a Remediation opened by the background scan for a running
//! workload that violates policies, rather than by the pod detector for a
//! failing one. Its findings carry the reason [`POLICY_REASON`] and the
//! message `<policy>/<rule>: <message>`; its status reason lists the
//! violated policies. The scan, the controller and the guardrails all
//! judge a workload here, with the webhook's engine on a CREATE-like input.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::crd::{Finding, RemediationStatus};
use super::guardrails::AdmissionView;
use super::propose::policy_fixes::{PolicyFailure, ReportedImages};
use crate::policy::{EvalInput, RuleOutcome, RuleStatus};

/// The finding reason of a policy violation.
pub const POLICY_REASON: &str = "PolicyViolation";
/// The label that tells policy cases from pod failures.
pub const CLASS_LABEL: &str = "aiops-operator.dev/class";
/// The value of [`CLASS_LABEL`] on a policy case.
pub const POLICY_CLASS: &str = "Policy";

/// Whether a Remediation's findings are policy violations.
pub fn is_policy_case(status: Option<&RemediationStatus>) -> bool {
    status.is_some_and(|s| {
        !s.findings.is_empty() && s.findings.iter().all(|f| f.reason == POLICY_REASON)
    })
}

/// Every rule outcome of judging `object` as admission would on a CREATE,
/// for the policies that run in the background (`spec.background`).
pub fn judge(object: &Value, view: &AdmissionView) -> Vec<RuleOutcome> {
    let foreground: BTreeSet<String> = view
        .policies
        .policies()
        .filter(|p| !p.background())
        .map(|p| p.display_name())
        .collect();
    let mut input = EvalInput::for_resource(object);
    input.namespace_labels = view.namespace_labels;
    view.policies
        .validate(&input)
        .into_iter()
        .filter(|o| !foreground.contains(&o.policy))
        .collect()
}

/// The failing rules among `outcomes` (an `error` is not a violation a fix
/// could address).
pub fn failures(outcomes: &[RuleOutcome]) -> Vec<PolicyFailure> {
    let mut found: Vec<PolicyFailure> = outcomes
        .iter()
        .filter(|o| o.status == RuleStatus::Fail)
        .map(|o| PolicyFailure {
            policy: o.policy.clone(),
            rule: o.rule.clone(),
            message: o.message.clone(),
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The findings a policy case records.
pub fn findings(failures: &[PolicyFailure]) -> Vec<Finding> {
    failures
        .iter()
        .map(|f| Finding {
            container: String::new(),
            reason: POLICY_REASON.into(),
            message: format!("{}/{}: {}", f.policy, f.rule, f.message),
            ..Finding::default()
        })
        .collect()
}

/// The violated policies a case's findings name, sorted, once each.
pub fn violated_policies(findings: &[Finding]) -> BTreeSet<String> {
    findings
        .iter()
        .filter(|f| f.reason == POLICY_REASON)
        .filter_map(|f| Some(f.message.split_once('/')?.0.to_string()))
        .collect()
}

/// The status reason of a policy case: the violated policies.
pub fn reason(failures: &[PolicyFailure]) -> String {
    failures
        .iter()
        .map(|f| f.policy.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(",")
}

/// The failures of `policies` (by name) in `object`: what a fix claiming
/// them must leave empty.
pub fn still_failing(object: &Value, policies: &[&str], view: &AdmissionView) -> Vec<String> {
    failures(&judge(object, view))
        .into_iter()
        .filter(|f| policies.contains(&f.policy.as_str()))
        .map(|f| format!("policy {}/{} still fails: {}", f.policy, f.rule, f.message))
        .collect()
}

/// The image digests the pods report, by container name (running or
/// terminated containers; a container still pulling reports none).
pub fn reported_images(pods: &[Pod]) -> ReportedImages {
    let mut reported = ReportedImages::new();
    for status in pods.iter().filter_map(|p| p.status.as_ref()) {
        let all = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten());
        for container in all.filter(|c| !c.image_id.is_empty()) {
            reported
                .entry(container.name.clone())
                .or_default()
                .insert(container.image_id.clone());
        }
    }
    reported
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySet;
    use serde_json::json;

    #[test]
    fn findings_round_trip_to_the_violated_policies() {
        let failures = vec![
            PolicyFailure {
                policy: "disallow-latest-tag".into(),
                rule: "autogen-validate-image-tag".into(),
                message: "use a tag".into(),
            },
            PolicyFailure {
                policy: "disallow-privileged-containers".into(),
                rule: "autogen-no-privileged-containers".into(),
                message: "not privileged".into(),
            },
        ];
        let found = findings(&failures);
        let status = RemediationStatus {
            findings: found.clone(),
            ..RemediationStatus::default()
        };
        assert!(is_policy_case(Some(&status)));
        assert_eq!(
            violated_policies(&found).into_iter().collect::<Vec<_>>(),
            vec!["disallow-latest-tag", "disallow-privileged-containers"]
        );
        assert_eq!(
            reason(&failures),
            "disallow-latest-tag,disallow-privileged-containers"
        );
        let pod_failure = RemediationStatus {
            findings: vec![Finding {
                reason: "CrashLoopBackOff".into(),
                ..Finding::default()
            }],
            ..RemediationStatus::default()
        };
        assert!(!is_policy_case(Some(&pod_failure)));
        assert!(!is_policy_case(None));
    }

    #[test]
    fn a_deployment_is_judged_by_the_pod_controller_rules_and_foreground_policies_are_left_out() {
        let set = PolicySet::from_yaml(
            r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: no-latest}
spec:
  background: true
  rules:
  - name: tag
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: no latest
      pattern: {spec: {containers: [{image: "!*:latest"}]}}
---
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: admission-only}
spec:
  background: false
  rules:
  - name: tag
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: no latest
      pattern: {spec: {containers: [{image: "!*:latest"}]}}
"#,
            "test",
        )
        .expect("test policies load");
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:latest"}]}}}});
        let found = failures(&judge(&deployment, &AdmissionView::policies(&set)));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].policy, "no-latest");
        assert_eq!(found[0].rule, "autogen-tag");
        assert_eq!(
            still_failing(&deployment, &["no-latest"], &AdmissionView::policies(&set)).len(),
            1
        );
    }
}
