//! The controller's part of a policy case: the proposal comes from the
//! policy fix rules (never a model), judged on the live workload and the
//! digests its pods report; a fix is verified only when the rollout is
//! complete *and* the workload passes the policies it claims to fix.

use super::*;
use crate::k8s::pod_spec::{get_dotted, pod_spec_path};
use crate::remediation::crd::WorkloadRef;
use crate::remediation::policy_case::{failures, judge, reported_images, still_failing};
use crate::remediation::propose::policy_fixes::image_pin::awaiting_digests;
use crate::remediation::propose::policy_fixes::{fixed_policies, propose_policy_fixes};

/// How long a new policy case waits for starting pods to report the digest
/// of a floating image before it proposes without one (a diagnosis).
pub(super) const DIGEST_WAIT: Duration = Duration::from_secs(60);

/// What the fix rules make of the live workload.
pub(super) enum PolicyProposal {
    /// A fix, or a diagnosis when no change is safe.
    Ready(Proposal),
    /// It passes every policy now: nothing to fix any more.
    Passes,
    /// A floating image's pods are starting and report no digest yet.
    AwaitingDigests(Vec<String>),
}

/// The policy fix proposal for the live workload. While `may_wait`, a
/// `:latest` image whose pods report no digest yet waits for them rather
/// than ending as a diagnosis.
pub(super) async fn policy_proposal(
    shared: &Shared,
    namespace: &str,
    target: &WorkloadRef,
    live: &Value,
    may_wait: bool,
) -> Result<PolicyProposal, ReconcileError> {
    let labels = namespace_labels(&shared.client, namespace).await?;
    let policies = shared.policies.current();
    let view = AdmissionView {
        policies: &policies,
        namespace_labels: labels.as_ref(),
    };
    let found = failures(&judge(live, &view));
    if found.is_empty() {
        return Ok(PolicyProposal::Passes);
    }
    let pods = shared
        .stores
        .workload_pods(&shared.client, namespace, live)
        .await?;
    let reported = reported_images(&pods);
    if may_wait && wants_pods(&target.kind, live) && found.iter().any(|f| f.policy == LATEST_TAG) {
        let empty = Value::Null;
        let spec = get_dotted(live, pod_spec_path(&target.kind)).unwrap_or(&empty);
        let waiting = awaiting_digests(spec, &reported);
        if !waiting.is_empty() {
            return Ok(PolicyProposal::AwaitingDigests(waiting));
        }
    }
    Ok(PolicyProposal::Ready(propose_policy_fixes(
        live, target, namespace, &found, &reported,
    )))
}

const LATEST_TAG: &str = "disallow-latest-tag";

/// Whether the workload means to run pods now, so that their digests will
/// come: not a CronJob between runs, nor a controller scaled to zero.
fn wants_pods(kind: &str, live: &Value) -> bool {
    match kind {
        "Pod" => true,
        "Deployment" | "StatefulSet" => {
            live.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                > 0
        }
        "DaemonSet" => {
            live.pointer("/status/desiredNumberScheduled")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
        }
        _ => false,
    }
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
