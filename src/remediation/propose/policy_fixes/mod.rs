//! Fix rules for policy violations of running workloads: for each violated
//! policy of the project's baseline set, the smallest change of the pod
//! template that makes the workload pass it, or a diagnosis naming the
//! exact fields when no change is safe without a person's judgement.
//!
//! - [`image_pin`]: `disallow-latest-tag`, pinned to the digest the running
//!   pods report.
//! - [`security_context`]: privileged, capabilities, proc mount, seccomp,
//!   SELinux, AppArmor and sysctls, reset to the baseline-compliant value.
//! - [`host_access`]: host namespaces (hostPID/hostIPC only), host paths,
//!   host ports and Windows host processes: mostly diagnoses.
//!
//! The proposal is sealed like any other and then goes through the same
//! guardrails, dry run, approval, apply, verification and rollback.
#[cfg(test)]
mod guard_tests;
pub mod host_access;
pub mod image_pin;
pub mod security_context;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::rules::RULES_SOURCE;
use crate::k8s::pod_spec::{
    ObjectKey, get_dotted, pod_spec_patch, pod_spec_path, pod_template_pointer,
};
use crate::remediation::crd::{Action, CLASS_DIAGNOSIS, Proposal, WorkloadRef, join_classes};
use crate::remediation::patch::merge_apply;

/// The prefix of a policy fix's proposal class, `PolicyFix:<policy>`; a fix
/// of several policies joins one class per policy.
pub const CLASS_PREFIX: &str = "PolicyFix:";

/// One failing rule of a workload, as the policy engine reported it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyFailure {
    pub policy: String,
    pub rule: String,
    pub message: String,
}

/// The `imageID`s the workload's running pods report, by container name.
pub type ReportedImages = BTreeMap<String, BTreeSet<String>>;

/// What a fix rule reads.
pub struct FixContext<'a> {
    pub kind: &'a str,
    /// The workload's pod spec.
    pub spec: &'a Value,
    /// The pod template's metadata (a bare Pod's own).
    pub template_metadata: Option<&'a Value>,
    pub reported: &'a ReportedImages,
}

impl FixContext<'_> {
    /// The dotted path of a pod spec field, for messages.
    fn path(&self, rest: &str) -> String {
        format!("{}.{rest}", pod_spec_path(self.kind))
    }

    /// Containers and init containers, with the list each is in.
    fn containers(&self) -> impl Iterator<Item = (&'static str, &str, &Value)> {
        ["initContainers", "containers"]
            .into_iter()
            .flat_map(move |list| {
                self.spec
                    .get(list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(move |c| Some((list, c.get("name")?.as_str()?, c)))
            })
    }
}

/// Where a change goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// A container entry of `containers`/`initContainers`.
    Container { list: &'static str, name: String },
    /// The pod spec itself.
    Pod,
}

/// One change a rule makes: a partial container (with its name) or pod spec.
#[derive(Clone, Debug)]
pub struct Change {
    pub place: Place,
    pub patch: Value,
    /// "set spec.template.spec.containers[app].securityContext.privileged to false".
    pub says: String,
    /// Only an image may change on a running bare Pod.
    pub image_only: bool,
}

/// What one rule decided for one policy.
#[derive(Clone, Debug, Default)]
pub struct RuleVerdict {
    pub changes: Vec<Change>,
    /// Why a person must decide (exact fields named); empty when fixed.
    pub needs_human: Vec<String>,
    /// What the change could break, for the reviewer.
    pub risks: Vec<String>,
    pub confidence: f64,
}

type FixRule = fn(&FixContext) -> RuleVerdict;

/// The fix rule of a policy of the baseline set, by name (a namespaced
/// policy's `ns/` prefix is ignored).
fn rule_for(policy: &str) -> Option<FixRule> {
    let name = policy.rsplit('/').next().unwrap_or(policy);
    Some(match name {
        "disallow-latest-tag" => image_pin::pin_latest_images,
        "disallow-privileged-containers" => security_context::unprivileged,
        "disallow-capabilities" => security_context::baseline_capabilities,
        "disallow-proc-mount" => security_context::default_proc_mount,
        "restrict-seccomp" => security_context::runtime_default_seccomp,
        "disallow-selinux" => security_context::standard_selinux,
        "restrict-apparmor-profiles" => security_context::confined_apparmor,
        "restrict-sysctls" => security_context::safe_sysctls,
        "disallow-host-namespaces" => host_access::host_namespaces,
        "disallow-host-path" => host_access::host_path,
        "disallow-host-ports" => host_access::host_ports,
        "disallow-host-process" => host_access::host_process,
        _ => return None,
    })
}

/// The proposal for a workload's failing rules: one action with every safe
/// change, and a diagnosis for the rest. `live` is the workload object.
pub fn propose_policy_fixes(
    live: &Value,
    target: &WorkloadRef,
    namespace: &str,
    failures: &[PolicyFailure],
    reported: &ReportedImages,
) -> Proposal {
    let kind = target.kind.as_str();
    let empty = json!({});
    let ctx = FixContext {
        kind,
        spec: get_dotted(live, pod_spec_path(kind)).unwrap_or(&empty),
        template_metadata: live.pointer(&format!("{}/metadata", pod_template_pointer(kind))),
        reported,
    };
    let policies: BTreeSet<&str> = failures.iter().map(|f| f.policy.as_str()).collect();
    let mut fixed: Vec<&str> = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut needs_human: Vec<String> = Vec::new();
    let mut risks: Vec<String> = Vec::new();
    let mut confidence: f64 = 1.0;
    for policy in &policies {
        let Some(rule) = rule_for(policy) else {
            needs_human.push(format!("{policy}: no fix rule exists for this policy"));
            continue;
        };
        let mut verdict = rule(&ctx);
        if kind == "Pod" && verdict.changes.iter().any(|c| !c.image_only) {
            // Only images of a running Pod may change: the rest of its spec
            // is immutable, so the fix belongs in whatever creates it.
            let said: Vec<String> = verdict.changes.drain(..).map(|c| c.says).collect();
            verdict.needs_human.push(format!(
                "a running Pod's spec cannot change except images; change what creates it: {}",
                said.join("; ")
            ));
        }
        for why in &verdict.needs_human {
            needs_human.push(format!("{policy}: {why}"));
        }
        if verdict.changes.is_empty() {
            if verdict.needs_human.is_empty() {
                needs_human.push(format!(
                    "{policy}: no field this rule fixes was found failing"
                ));
            }
            continue;
        }
        // A partly fixed policy still fails: its fix is not shown as one.
        if !verdict.needs_human.is_empty() {
            continue;
        }
        fixed.push(policy);
        confidence = confidence.min(verdict.confidence);
        risks.extend(verdict.risks);
        changes.extend(verdict.changes);
    }

    let display = format!("{kind}/{}", target.name);
    let root_cause = failures
        .iter()
        .map(|f| format!("violates {}/{}: {}", f.policy, f.rule, f.message))
        .collect::<Vec<_>>()
        .join(" ");
    let mut proposal = Proposal {
        source: RULES_SOURCE.into(),
        root_cause,
        ..Proposal::default()
    };
    if changes.is_empty() {
        proposal.summary = format!("{display} needs a human: {}", needs_human.join("; "));
        proposal.risks =
            vec!["no automatic change is proposed; a human must decide the fix".into()];
        proposal.rollback_plan = vec!["nothing to roll back: no change is proposed".into()];
        proposal.confidence = 0.3;
        proposal.class = CLASS_DIAGNOSIS.into();
        return proposal.seal();
    }
    let key = ObjectKey {
        api_version: &target.api_version,
        kind,
        name: &target.name,
        namespace,
    };
    proposal.actions = vec![Action {
        target: target.clone(),
        namespace: namespace.to_string(),
        patch: assemble(key, &changes),
        // A policy fix resets fields to baseline values; it restores no env.
        env_from_revision: Vec::new(),
    }];
    let said: Vec<String> = changes.iter().map(|c| c.says.clone()).collect();
    let mut summary = format!("{display}: {}", said.join("; "));
    if !needs_human.is_empty() {
        summary.push_str(&format!("; needs a human: {}", needs_human.join("; ")));
        confidence = confidence.min(0.5);
    }
    proposal.summary = summary;
    proposal.risks = risks;
    proposal.rollback_plan = vec![format!(
        "restore the prior values of exactly these fields of {display} with the same field manager"
    )];
    proposal.confidence = confidence;
    let classes: Vec<String> = fixed.iter().map(|p| format!("{CLASS_PREFIX}{p}")).collect();
    proposal.class = join_classes(classes.iter().map(String::as_str));
    proposal.seal()
}

/// The policies a proposal's class says it fixes.
pub fn fixed_policies(class: &str) -> Vec<&str> {
    class
        .split(',')
        .filter_map(|c| c.strip_prefix(CLASS_PREFIX))
        .filter(|p| !p.is_empty())
        .collect()
}

/// One server-side-apply patch holding every change, container entries
/// merged by name.
fn assemble(key: ObjectKey<'_>, changes: &[Change]) -> Value {
    let mut containers: BTreeMap<(&'static str, String), Value> = BTreeMap::new();
    let mut pod = json!({});
    for change in changes {
        match &change.place {
            Place::Container { list, name } => {
                let entry = containers
                    .entry((list, name.clone()))
                    .or_insert_with(|| json!({"name": name}));
                *entry = merge_apply(entry, &change.patch);
            }
            Place::Pod => pod = merge_apply(&pod, &change.patch),
        }
    }
    let mut fields: Map<String, Value> = match pod {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for ((list, _), entry) in containers {
        match fields.entry(list.to_string()).or_insert_with(|| json!([])) {
            Value::Array(items) => items.push(entry),
            other => *other = json!([entry]),
        }
    }
    pod_spec_patch(key, fields)
}

/// A change of one container's fields.
fn container_change(list: &'static str, name: &str, patch: Value, says: String) -> Change {
    Change {
        place: Place::Container {
            list,
            name: name.to_string(),
        },
        patch,
        says,
        image_only: false,
    }
}

/// A change of pod-level fields.
fn pod_change(patch: Value, says: String) -> Change {
    Change {
        place: Place::Pod,
        patch,
        says,
        image_only: false,
    }
}
