//! The ValidatingAdmissionPolicies of the `vap*` backends, as the operator
//! generates them, scoped to the bench namespace.
use aiops_operator::policy::{PolicySet, vap};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::BENCH_LABEL;
use crate::support::repo_root;

/// The label on the benchmark's admission policies.
pub const VAP_LABEL: &str = "aiops-operator.dev/bench-e2e-vap";
/// The CEL policies of the `vap` backends, read in place.
pub const CEL_POLICIES: &str = "../shared/conformance/kyverno-cel/pod-security-vpol/baseline";

/// The (policy, binding) objects the operator would generate for the CEL
/// baseline, every rule enforced, scoped to the bench namespace.
pub fn admission_policies(id: &str, merged: bool) -> Result<Vec<(Value, Value)>> {
    let dir = repo_root().join(CEL_POLICIES);
    let set = PolicySet::load_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let translation = set.api_server_translation();
    ensure!(
        translation.not_translated.is_empty(),
        "rules without an exact translation: {:?}",
        translation.not_translated
    );
    let rules: Vec<&vap::ApiServerRule> = translation.rules.iter().collect();
    let specs: Vec<Value> = if merged {
        vap::merge(&rules).into_iter().map(|m| m.spec).collect()
    } else {
        rules.iter().map(|r| r.spec.clone()).collect()
    };
    Ok(specs
        .into_iter()
        .enumerate()
        .map(|(index, spec)| {
            let name = format!("{}{index}", if merged { "m" } else { "u" });
            admission_policy_pair(id, &name, spec)
        })
        .collect())
}

/// The admission policies `--admission-backend vap` makes of `policies/`
/// with every rule enforced, merged; the rules without a CEL form are left
/// out.
pub fn project_policies(id: &str) -> Result<Vec<(Value, Value)>> {
    let dir = repo_root().join("policies");
    let set = PolicySet::load_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let translation = set.api_server_translation();
    let rules: Vec<&vap::ApiServerRule> = translation.rules.iter().collect();
    ensure!(!rules.is_empty(), "no rule of policies/ has a CEL form");
    Ok(vap::merge(&rules)
        .into_iter()
        .enumerate()
        .map(|(index, merged)| admission_policy_pair(id, &format!("p{index}"), merged.spec))
        .collect())
}

/// The (policy, binding) pair for `spec`, Deny, scoped to the bench namespace.
pub fn admission_policy_pair(id: &str, suffix: &str, mut spec: Value) -> (Value, Value) {
    let name = format!("aiops-bench-e2e-{id}-{suffix}");
    spec["matchConstraints"]["namespaceSelector"] = json!({"matchLabels": {BENCH_LABEL: id}});
    let labels = json!({VAP_LABEL: id});
    (
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": labels}, "spec": spec}),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": labels},
            "spec": {"policyName": name, "validationActions": ["Deny"]}}),
    )
}

/// One expression on pods, enough for the activation probe (a privileged
/// first container) to be denied.
pub fn one_check_spec() -> Value {
    json!({
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": [{
            "apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"], "resources": ["pods"],
        }]},
        "validations": [{
            "expression": "!object.spec.containers[0].?securityContext.?privileged.orValue(false)",
            "message": "privileged",
        }],
    })
}
