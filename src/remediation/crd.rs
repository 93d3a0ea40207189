//! The `Remediation` custom resource (`remediations.aiops-operator.dev/v1alpha1`).
//!
//! One Remediation per broken *workload* (never per pod): the spec names the
//! workload and carries the human decision; the status carries everything
//! the operator found, proposed, validated and did. The CRD YAML in
//! `manifests/crd.yaml` is generated from these types (`aiops-operator crd`).
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::k8s::pod_spec::ObjectKey;

/// The annotation a human sets (to any new value) to ask for a new proposal.
pub const REGENERATE_ANNOTATION: &str = "aiops-operator.dev/regenerate";

/// A broken workload and the human decision about its proposed fix.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "aiops-operator.dev",
    version = "v1alpha1",
    kind = "Remediation",
    namespaced,
    shortname = "rem",
    status = "RemediationStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.targetDisplay"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Class","type":"string","jsonPath":".status.proposal.class","priority":1}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Approved","type":"boolean","jsonPath":".spec.approved"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemediationSpec {
    /// The broken workload: the owning Deployment, StatefulSet, DaemonSet,
    /// Job or CronJob, or a bare Pod only when nothing owns it.
    pub target: WorkloadRef,
    /// Set to true by a human to approve the proposal shown in the status.
    /// Always serialized, so "not approved yet" is visible.
    #[serde(default)]
    pub approved: bool,
    /// Set to true by a human to reject the proposal; nothing is applied.
    #[serde(default)]
    pub rejected: bool,
    /// Written by the operator's admission webhook when `approved` turns
    /// true: who approved which proposal. Never set by hand; an approval
    /// without a valid record is not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRecord>,
}

/// The class of a proposal that changes nothing: a human must act.
pub const CLASS_DIAGNOSIS: &str = "Diagnosis";
/// The class of every model proposal that changes something: what a model
/// proposes is auto-approved only where a rule allows models explicitly.
pub const CLASS_MODEL: &str = "Model";

/// Joins proposal classes the one way `Proposal::class` is written:
/// sorted, without repeats, separated by `,`.
pub fn join_classes<'a>(classes: impl IntoIterator<Item = &'a str>) -> String {
    let set: std::collections::BTreeSet<&str> = classes.into_iter().collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// A reference to a workload, pinned by uid so a re-created namesake is not touched.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// The binding between a human approval and the exact proposal approved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// The approving user, from the admission request's userInfo.
    pub approved_by: String,
    /// `status.proposal.hash` at the moment of approval.
    pub proposal_hash: String,
    /// When the approval was admitted.
    pub approved_at: Time,
    /// HMAC over (remediation uid, proposal hash, approver) with the
    /// operator's key: an approval written around the webhook fails closed.
    pub signature: String,
}

/// Where a Remediation is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    #[default]
    Diagnosing,
    Proposed,
    Applying,
    Applied,
    Verified,
    Failed,
    RolledBack,
    Rejected,
    /// The workload recovered on its own before any fix.
    Resolved,
}

impl Phase {
    /// Closed Remediations are kept for the retention period, then deleted.
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            Phase::Verified | Phase::RolledBack | Phase::Rejected | Phase::Resolved | Phase::Failed
        )
    }
}

/// Everything the operator knows and did about the workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationStatus {
    #[serde(default)]
    pub phase: Phase,
    /// "Kind/name" of the target, for `kubectl get rem`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_display: String,
    /// The main finding's reason (ImagePullBackOff, OOMKilled, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What is wrong, per container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<Proposal>,
    /// The operator's signature over the proposal hash: a proposal edited
    /// by anyone else (even with status write access) cannot be approved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proposal_signature: String,
    /// Why a proposal was refused before it could be shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<GuardrailVerdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRun>,
    /// The prior values of exactly the fields the fix changes, for rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// Apply attempts so far; bounded by the operator's retry limit.
    #[serde(default)]
    pub attempts: u32,
    /// The workload generation the applied fix produced; verification waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,
    /// The value of the `aiops-operator.dev/regenerate` annotation last acted on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub regenerate_token: String,
    /// A human-readable account of the last transition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One container's problem, aggregated over the workload's pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub container: String,
    /// True for an init container.
    #[serde(default)]
    pub init: bool,
    /// ImagePullBackOff, ErrImagePull, CrashLoopBackOff, OOMKilled, Unschedulable, NotReady, …
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// How many of the workload's pods show this finding.
    pub pods: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Compact, bounded, redacted evidence (at most 16 KiB serialized).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub workload: WorkloadRef,
    pub namespace: String,
    /// The owner's pod template, per container.
    #[serde(default)]
    pub containers: Vec<ContainerTemplate>,
    /// Observed statuses of failing containers (one per pod and container, capped).
    #[serde(default)]
    pub statuses: Vec<ObservedContainer>,
    /// Events of the failing pods and of the workload, matched by uid, newest first.
    #[serde(default)]
    pub events: Vec<EventSummary>,
    /// Previous-container log tails.
    #[serde(default)]
    pub logs: Vec<LogTail>,
    /// Earlier revisions of the pod template, newest first.
    #[serde(default)]
    pub history: Vec<Revision>,
    /// Labels and annotations that mark GitOps or Helm management.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub management: BTreeMap<String, String>,
    /// True when parts were dropped to stay within the size bound.
    #[serde(default)]
    pub truncated: bool,
}

/// What the pod template says about one container (env values never included).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTemplate {
    pub name: String,
    #[serde(default)]
    pub init: bool,
    pub image: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
    /// Names only: values can be secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Probes, summarised ("readiness: httpGet :8080/healthz every 10s").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<i32>,
}

/// One failing container as observed in one pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedContainer {
    pub pod: String,
    pub container: String,
    /// "waiting: CrashLoopBackOff", "running", "terminated: Error (exit 1)".
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_state: String,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default)]
    pub ready: bool,
    pub image: String,
}

/// A Kubernetes Event, deduplicated by (reason, message).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSummary {
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// "Pod/web-abc" or "Deployment/web".
    pub object: String,
    #[serde(default)]
    pub count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
}

/// The tail of one container's previous log.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogTail {
    pub pod: String,
    pub container: String,
    pub previous: bool,
    pub lines: Vec<String>,
}

/// One earlier revision of the workload's pod template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// The revision number; for a CronJob's Jobs, the Job's creation time
    /// (seconds since the epoch), which orders them the same way.
    pub revision: i64,
    /// The object that holds it: a ReplicaSet, a ControllerRevision or,
    /// for a CronJob, one of its Jobs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Container name → image in that revision.
    pub images: BTreeMap<String, String>,
    /// Fields that differ from the current template ("containers[app].env").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Whether the revision ran healthily: its pods were seen Ready (a
    /// CronJob's Job: it succeeded).
    #[serde(default)]
    pub healthy: bool,
}

/// A proposed fix, whatever its source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    pub summary: String,
    pub root_cause: String,
    /// Empty means "needs a human": a diagnosis with no safe automatic fix.
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default)]
    pub risks: Vec<String>,
    #[serde(default)]
    pub rollback_plan: Vec<String>,
    /// 0.0 to 1.0.
    pub confidence: f64,
    /// `rules`, or the model's name.
    pub source: String,
    /// What kind of fix this is, for review and for auto-approval rules:
    /// `ImageRestore`, `MemoryRaise`, `TemplateRevert`, `Diagnosis` (no
    /// change), `PolicyFix:<policy>`, or `Model`; several kinds are joined
    /// by `,` in sorted order.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub class: String,
    /// sha256 of the canonical actions, summary, source and class; approvals bind to it.
    pub hash: String,
}

/// One server-side-apply patch of the target workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub target: WorkloadRef,
    pub namespace: String,
    /// A partial object for server-side apply (apiVersion, kind, metadata.name and the changed fields).
    #[schemars(schema_with = "preserve_unknown_object")]
    pub patch: serde_json::Value,
    /// Env vars the patch does not carry the values of: each is read from
    /// the named revision when the patch is dry-run, checked and applied,
    /// and written only into the patch sent to the API server. Secret-like
    /// literal values are restored this way, so they never enter the
    /// Remediation; the proposal hash covers these references and the
    /// revisions' digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from_revision: Vec<EnvFromRevision>,
}

/// "Restore env `name` of container `container` from revision N": the
/// variable, exactly as that revision defines it, without its value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromRevision {
    pub container: String,
    /// True for an init container.
    #[serde(default)]
    pub init: bool,
    /// The variable's name.
    pub name: String,
    pub revision: RevisionRef,
}

/// The object holding one revision of a workload's pod template, pinned by
/// uid and by a digest of its template: a value read from it at apply time
/// is the value the proposal was made from, or the apply fails.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRef {
    /// The revision number (a CronJob's Job: its creation time in seconds).
    pub revision: i64,
    /// `apps/v1` or `batch/v1`.
    pub api_version: String,
    /// ReplicaSet, ControllerRevision or Job.
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// HMAC-SHA256, with the operator's key, of the revision's pod
    /// template: it changes with any value in it, and being keyed it cannot
    /// be used to guess a value offline.
    pub digest: String,
}

/// The guardrails' verdict on a proposal.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardrailVerdict {
    pub allowed: bool,
    #[serde(default)]
    pub violations: Vec<String>,
}

/// The result of the server-side dry run of the proposal.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// Succeeded or Failed.
    pub result: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default)]
    pub diff: Vec<FieldChange>,
    /// The proposal hash the dry run validated.
    pub proposal_hash: String,
}

/// One field changed by the fix.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Prior values of the patched fields, restored on rollback.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The workload's generation before the apply.
    pub generation: i64,
    /// A server-side-apply patch that restores the prior values.
    #[schemars(schema_with = "preserve_unknown_object")]
    pub restore_patch: serde_json::Value,
    /// Prior env values kept by reference, as in a proposal's actions: a
    /// secret-like value the fix replaces is restored from the revision
    /// that held the workload's template before the apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from_revision: Vec<EnvFromRevision>,
}

fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

impl Evidence {
    /// The workload this evidence is about, as the key of a patch to it.
    pub fn workload_key(&self) -> ObjectKey<'_> {
        ObjectKey {
            api_version: &self.workload.api_version,
            kind: &self.workload.kind,
            name: &self.workload.name,
            namespace: &self.namespace,
        }
    }
}

impl Proposal {
    /// The content hash approvals bind to: sha256 over the canonical JSON of
    /// what would change (actions) and what the reviewer read (summary,
    /// root cause, risks, rollback plan, source, class). Any edit changes it.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut canonical = serde_json::json!({
            "summary": self.summary,
            "rootCause": self.root_cause,
            "actions": self.actions,
            "risks": self.risks,
            "rollbackPlan": self.rollback_plan,
            "source": self.source,
        });
        // The class decides what an auto-approval rule may approve, so it is
        // bound like the rest; left out when empty so that proposals made
        // before it existed keep their hash.
        if !self.class.is_empty() {
            canonical["class"] = serde_json::Value::String(self.class.clone());
        }
        // serde_json maps are sorted (no preserve_order feature), so this is canonical.
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        format!("sha256:{}", hex::encode(digest))
    }

    /// Sets `hash` from the content; call after any change.
    pub fn seal(mut self) -> Self {
        self.hash = self.content_hash();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_is_bound_by_the_hash_and_joined_one_way() {
        let proposal = Proposal {
            summary: "restore image".into(),
            source: "rules".into(),
            class: "ImageRestore".into(),
            ..Proposal::default()
        }
        .seal();
        let relabelled = Proposal {
            class: "MemoryRaise".into(),
            ..proposal.clone()
        };
        assert_ne!(proposal.hash, relabelled.content_hash());
        let unclassed = Proposal {
            class: String::new(),
            ..proposal.clone()
        };
        assert_ne!(proposal.hash, unclassed.content_hash());
        assert_eq!(
            join_classes(["PolicyFix:b", "ImageRestore", "PolicyFix:b"]),
            "ImageRestore,PolicyFix:b"
        );
    }
}
