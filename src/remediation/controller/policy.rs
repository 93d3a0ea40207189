//! The controller's part of a policy case: the proposal comes from the
//! policy fix rules (never a model), judged on the live workload and the
//! digests its pods report; a fix is verified only when the rollout is
//! complete *and* the workload passes the policies it claims to fix.

use super::*;
use crate::remediation::crd::WorkloadRef;
use crate::remediation::policy_case::{failures, judge, reported_images, still_failing};
use crate::remediation::propose::policy_fixes::{fixed_policies, propose_policy_fixes};

/// The policy fix proposal for the live workload, or `None` when it
/// passes every policy now (nothing to fix any more).
pub(super) async fn policy_proposal(
    shared: &Shared,
    namespace: &str,
    target: &WorkloadRef,
    live: &Value,
) -> Result<Option<Proposal>, ReconcileError> {
    let labels = namespace_labels(&shared.client, namespace).await?;
    let policies = shared.policies.current();
    let view = AdmissionView {
        policies: &policies,
        namespace_labels: labels.as_ref(),
    };
    let found = failures(&judge(live, &view));
    if found.is_empty() {
        return Ok(None);
    }
    let pods = shared
        .stores
        .workload_pods(&shared.client, namespace, live)
        .await?;
    let reported = reported_images(&pods);
    Ok(Some(propose_policy_fixes(
        live, target, namespace, &found, &reported,
    )))
}

/// What still fails of the policies an applied fix claims to fix (empty
/// for any other proposal).
pub(super) async fn unfixed_policies(
    shared: &Shared,
    namespace: &str,
    live: &Value,
    proposal: Option<&Proposal>,
) -> Result<Vec<String>, ReconcileError> {
    let fixed = proposal
        .map(|p| fixed_policies(&p.class))
        .unwrap_or_default();
    if fixed.is_empty() {
        return Ok(Vec::new());
    }
    let labels = namespace_labels(&shared.client, namespace).await?;
    let policies = shared.policies.current();
    let view = AdmissionView {
        policies: &policies,
        namespace_labels: labels.as_ref(),
    };
    Ok(still_failing(live, &fixed, &view))
}
