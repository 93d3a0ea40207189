//! Rule-based proposals: the fixes that need no model because the cluster
//! itself says what the right value is.
//!
//! - Image pull failure, and an earlier healthy revision ran another image
//!   for that container → restore that image (a CronJob's history is its
//!   Jobs: the newest that succeeded with another image).
//! - OOMKilled → double that container's memory limit, up to a cap.
//! - A crash loop that started with a template change (the last healthy
//!   revision differs in image, env, command or args of that container)
//!   → write those fields of the healthy revision back.
//! - Anything else → a diagnosis without actions: it needs a human.
//!
//! Every action is one server-side-apply partial object of the workload
//! itself (apiVersion, kind, metadata name/namespace and the changed
//! container fields), so the guardrails can check it like any other
//! proposal. Env *values* appear only inside a revert patch, copied from the
//! workload's own earlier template, and only when they are not secret-like
//! (`k8s::redact::is_secret_env`): a secret-like literal is restored by
//! reference ("restore env X of container C from revision N", an
//! `EnvFromRevision` on the action), and its value is read from that
//! revision when the fix is checked and applied, never written into the
//! Remediation. Summaries, causes, risks and rollback plans name fields,
//! never values.
//!
//! `words` writes what the proposal says (cause, advice, risks, rollback
//! steps); `tests` covers each failure class, including "no safe fix".
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use serde_json::{Map, Value, json};

use crate::k8s::pod_spec::{containers_patch, pod_spec_pointer};
use crate::k8s::quantity::{format_memory, parse_memory};
use crate::k8s::redact::is_secret_env;
use crate::remediation::crd::{
    Action, CLASS_DIAGNOSIS, EnvFromRevision, Evidence, Finding, Proposal, RevisionRef,
    join_classes,
};
use crate::remediation::detect::{OOM_KILLED, UNSCHEDULABLE, primary_reason};
use crate::remediation::evidence::{ManagedBy, RevisionTemplate, management_tools};

/// The `source` of every proposal made here.
pub const RULES_SOURCE: &str = "rules";

const GI: u64 = 1024 * 1024 * 1024;

/// Limits the rules respect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleConfig {
    /// The highest memory limit the OOM rule proposes, in bytes (default 2Gi).
    pub memory_cap: u64,
}

impl Default for RuleConfig {
    fn default() -> Self {
        RuleConfig { memory_cap: 2 * GI }
    }
}

const IMAGE_PULL_REASONS: &[&str] = &["ImagePullBackOff", "ErrImagePull", "InvalidImageName"];

/// The container fields a template revert may write back, per reason: the
/// same classes the guardrails allow for it.
fn revertible_fields(reason: &str) -> &'static [&'static str] {
    match reason {
        "CrashLoopBackOff" | "RunContainerError" | "CreateContainerError" => {
            &["image", "env", "command", "args"]
        }
        "CreateContainerConfigError" => &["env"],
        _ => &[],
    }
}

/// A fix for one container.
#[derive(Clone, Debug, PartialEq)]
enum Fix {
    RestoreImage {
        current: String,
        image: String,
        revision: i64,
        /// The object holding that revision (a CronJob's Job, by name).
        source: String,
    },
    RaiseMemory {
        current: String,
        limit: String,
        /// Set only when the request would otherwise exceed the new limit.
        request: Option<String>,
    },
    RevertTemplate {
        revision: i64,
        source: String,
        fields: Vec<&'static str>,
        /// Old values of `fields` (env with values: patch only, never text).
        values: Map<String, Value>,
        /// Env names the current template added, which an apply cannot remove.
        added_env: Vec<String>,
        /// Env names whose secret-like values are restored by reference to
        /// `reference` instead of being copied into `values`.
        by_reference: Vec<String>,
        reference: Option<RevisionRef>,
    },
}

impl Fix {
    /// The proposal class this fix belongs to (see `Proposal::class`).
    fn class(&self) -> &'static str {
        match self {
            Fix::RestoreImage { .. } => "ImageRestore",
            Fix::RaiseMemory { .. } => "MemoryRaise",
            Fix::RevertTemplate { .. } => "TemplateRevert",
        }
    }
}

/// What the rules concluded for one failing container (or the pod).
struct Outcome<'a> {
    finding: &'a Finding,
    fix: Result<Fix, String>,
}

/// Proposes a fix from the rules above. `workload` is the live workload
/// object; `history_templates` its earlier revisions with values (from
/// `evidence::revision_templates`), newest first.
pub fn propose_from_rules(
    workload: &Value,
    evidence: &Evidence,
    findings: &[Finding],
    history_templates: &[RevisionTemplate],
    config: &RuleConfig,
) -> Proposal {
    let kind = evidence.workload.kind.as_str();
    let spec = workload.pointer(pod_spec_pointer(kind));
    let outcomes: Vec<Outcome> = primary_findings(findings)
        .into_iter()
        .map(|finding| Outcome {
            finding,
            fix: decide(finding, spec, evidence, history_templates, config),
        })
        .collect();
    let target = format!("{}/{}", kind, evidence.workload.name);
    let fixes: Vec<(&Finding, &Fix)> = outcomes
        .iter()
        .filter_map(|o| Some((o.finding, o.fix.as_ref().ok()?)))
        .collect();
    let unfixed: Vec<(&Finding, &str)> = outcomes
        .iter()
        .filter_map(|o| Some((o.finding, o.fix.as_ref().err()?.as_str())))
        .collect();
    let not_patchable = template_not_patchable(kind);

    let mut root_cause: Vec<String> = outcomes
        .iter()
        .map(|o| cause_of(o.finding, o.fix.as_ref().ok(), evidence))
        .collect();
    if outcomes.is_empty() {
        root_cause.push("no failing container was reported".into());
    }

    let mut proposal = Proposal {
        source: RULES_SOURCE.into(),
        root_cause: root_cause.join(" "),
        ..Proposal::default()
    };
    match (fixes.is_empty(), not_patchable) {
        (false, None) => {
            let (patch, env_from_revision) = workload_patch(evidence, &fixes);
            proposal.actions = vec![Action {
                target: evidence.workload.clone(),
                namespace: evidence.namespace.clone(),
                patch,
                env_from_revision,
            }];
            let done: Vec<String> = fixes
                .iter()
                .map(|(f, fix)| describe_fix(kind, f, fix))
                .collect();
            let mut summary = format!("{target}: {}", done.join("; "));
            for (finding, why) in &unfixed {
                summary.push_str(&format!(
                    "; container {} ({}) needs a human: {why}",
                    finding.container, finding.reason
                ));
            }
            proposal.summary = summary;
            proposal.risks = risks(evidence, &fixes);
            proposal.rollback_plan = fixes
                .iter()
                .map(|(f, fix)| rollback_step(f, fix, &target))
                .collect();
            let mut confidence = fixes
                .iter()
                .map(|(_, fix)| fix_confidence(fix))
                .fold(1.0, f64::min);
            if !unfixed.is_empty() {
                confidence = confidence.min(0.5);
            }
            proposal.confidence = confidence;
            proposal.class = join_classes(fixes.iter().map(|(_, fix)| fix.class()));
        }
        (false, Some(why)) => {
            let advice: Vec<String> = fixes
                .iter()
                .map(|(f, fix)| describe_fix(kind, f, fix))
                .collect();
            proposal.summary = format!(
                "{target} needs a human: {why}; the fix to make by hand: {}",
                advice.join("; ")
            );
            proposal.risks = vec![format!("no automatic change: {why}")];
            proposal.rollback_plan = vec!["nothing to roll back: no change is proposed".into()];
            proposal.confidence = 0.4;
        }
        (true, _) => {
            let reasons: Vec<String> = unfixed
                .iter()
                .map(|(f, why)| {
                    let who = if f.container.is_empty() {
                        "the pods".to_string()
                    } else {
                        format!("container {}", f.container)
                    };
                    format!("{who} ({}, {} pod(s)): {why}", f.reason, f.pods)
                })
                .collect();
            proposal.summary = if reasons.is_empty() {
                format!("{target} needs a human: nothing to fix automatically")
            } else {
                format!("{target} needs a human: {}", reasons.join("; "))
            };
            proposal.risks =
                vec!["no automatic change is proposed; a human must decide the fix".into()];
            proposal.rollback_plan = vec!["nothing to roll back: no change is proposed".into()];
            proposal.confidence = 0.3;
        }
    }
    if proposal.actions.is_empty() {
        proposal.class = CLASS_DIAGNOSIS.into();
    }
    proposal.seal()
}

/// One finding per container: the most specific reason wins (OOMKilled over
/// CrashLoopBackOff), in the order the findings came.
fn primary_findings(findings: &[Finding]) -> Vec<&Finding> {
    let mut by_container: BTreeMap<(bool, &str), Vec<&Finding>> = BTreeMap::new();
    let mut order = Vec::new();
    for finding in findings {
        let key = (finding.init, finding.container.as_str());
        if !by_container.contains_key(&key) {
            order.push(key);
        }
        by_container.entry(key).or_default().push(finding);
    }
    order
        .into_iter()
        .filter_map(|key| {
            let candidates = by_container.get(&key)?;
            let reason = primary_reason(candidates.iter().map(|f| f.reason.as_str()))?;
            candidates.iter().copied().find(|f| f.reason == reason)
        })
        .collect()
}

fn decide(
    finding: &Finding,
    spec: Option<&Value>,
    evidence: &Evidence,
    history: &[RevisionTemplate],
    config: &RuleConfig,
) -> Result<Fix, String> {
    if finding.container.is_empty() {
        return Err(pod_level_advice(finding));
    }
    let container = live_container(spec, finding).ok_or_else(|| {
        format!(
            "container {} is not in the workload's template",
            finding.container
        )
    })?;
    let reason = finding.reason.as_str();
    if IMAGE_PULL_REASONS.contains(&reason) {
        restore_image(finding, &container, evidence)
    } else if reason == OOM_KILLED {
        raise_memory(finding, &container, history, config)
    } else if !revertible_fields(reason).is_empty() {
        revert_template(finding, &container, history)
    } else {
        Err(other_advice(finding, evidence))
    }
}

fn restore_image(finding: &Finding, container: &Value, evidence: &Evidence) -> Result<Fix, String> {
    let current = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let cronjob = evidence.workload.kind == "CronJob";
    // Pods made from an older template (a CronJob's Job started before the
    // job template was fixed) fail with an image the template no longer
    // names: restoring an image would change the wrong thing.
    if let Some(failing) = finding.image.as_deref().filter(|i| *i != current) {
        let leftovers = if cronjob {
            "Jobs started before the job template changed keep their pod template: delete \
             those Jobs"
        } else {
            "delete the pods left over from before the template changed"
        };
        return Err(format!(
            "the failing pods run image {failing:?}, but the template already names {current:?}: \
             {leftovers}"
        ));
    }
    evidence
        .history
        .iter()
        .filter(|revision| revision.healthy)
        .find_map(|revision| {
            let image = revision.images.get(&finding.container)?;
            (image != &current).then(|| Fix::RestoreImage {
                current: current.clone(),
                image: image.clone(),
                revision: revision.revision,
                source: revision.source.clone(),
            })
        })
        .ok_or_else(|| {
            let history = if cronjob {
                "no earlier Job of the CronJob succeeded with another image"
            } else {
                "no earlier healthy revision ran another image"
            };
            format!(
                "image {current:?} cannot be pulled and {history}; \
                 check the image name and tag, the registry and imagePullSecrets"
            )
        })
}

/// The memory limit the container had in the newest healthy earlier
/// revision: the need observed when the limit was cut below it.
fn healthy_memory_limit(finding: &Finding, history: &[RevisionTemplate]) -> Option<u64> {
    let list = if finding.init {
        "initContainers"
    } else {
        "containers"
    };
    let healthy = history.iter().find(|r| r.healthy)?;
    healthy
        .template
        .pointer(&format!("/spec/{list}"))?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(finding.container.as_str()))?
        .pointer("/resources/limits/memory")?
        .as_str()
        .and_then(parse_memory)
}

fn raise_memory(
    finding: &Finding,
    container: &Value,
    history: &[RevisionTemplate],
    config: &RuleConfig,
) -> Result<Fix, String> {
    let resources = container.get("resources");
    let limit_text = resources
        .and_then(|r| r.pointer("/limits/memory"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            format!(
                "container {} has no memory limit in its template: the OOM comes from a \
                 LimitRange default or from node memory pressure; set requests and limits deliberately",
                finding.container
            )
        })?;
    let limit = parse_memory(limit_text).ok_or_else(|| {
        format!("memory limit {limit_text:?} is not a quantity the rules understand")
    })?;
    if limit >= config.memory_cap {
        return Err(format!(
            "the memory limit {limit_text} is already at or above the cap of {}: \
             look for a leak or a workload that needs a bigger node",
            format_memory(config.memory_cap)
        ));
    }
    // Double it, or go back to what a healthy revision ran with when the
    // limit was cut below that.
    let raised = limit
        .saturating_mul(2)
        .max(healthy_memory_limit(finding, history).unwrap_or(0))
        .min(config.memory_cap);
    let request = resources
        .and_then(|r| r.pointer("/requests/memory"))
        .and_then(Value::as_str)
        .and_then(parse_memory)
        .filter(|request| *request > raised)
        .map(|_| format_memory(raised));
    Ok(Fix::RaiseMemory {
        current: limit_text.to_string(),
        limit: format_memory(raised),
        request,
    })
}

fn revert_template(
    finding: &Finding,
    container: &Value,
    history: &[RevisionTemplate],
) -> Result<Fix, String> {
    let healthy = history.iter().find(|r| r.healthy).ok_or_else(|| {
        "no earlier revision is known to have run healthily, so the crash cannot be tied to a \
         template change; read the log tail"
            .to_string()
    })?;
    let list = if finding.init {
        "initContainers"
    } else {
        "containers"
    };
    let old = healthy
        .template
        .pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .and_then(|items| {
            items
                .iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(finding.container.as_str()))
        })
        .ok_or_else(|| {
            format!(
                "container {} did not exist in revision {}, the last healthy one",
                finding.container, healthy.revision
            )
        })?;
    let current = normalized_container(container);
    let mut fields = Vec::new();
    let mut values = Map::new();
    let mut by_reference = Vec::new();
    for field in revertible_fields(&finding.reason) {
        let before = old.get(*field);
        if before == current.get(*field) {
            continue;
        }
        fields.push(*field);
        // An absent command/args means "the image's own", which an empty
        // list also means; an absent env has nothing to write back.
        let mut value = before.cloned().unwrap_or_else(|| json!([]));
        if *field == "env" {
            by_reference = split_secret_env(&mut value, current.get("env"));
        }
        values.insert((*field).to_string(), value);
    }
    let reference = if by_reference.is_empty() {
        None
    } else {
        Some(healthy.reference().ok_or_else(|| {
            format!(
                "env {} of container {} had secret-like values in revision {}, which can only \
                 be restored by reference, and the revision has no digest to pin it by",
                by_reference.join(", "),
                finding.container,
                healthy.revision
            )
        })?)
    };
    if fields.is_empty() {
        return Err(format!(
            "revision {} (the last healthy one) has the same {} for container {}, so the crash \
             did not start with a template change; read the log tail",
            healthy.revision,
            revertible_fields(&finding.reason).join(", "),
            finding.container
        ));
    }
    let env_names = |c: &Value| -> Vec<String> {
        c.get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e.get("name")?.as_str()?.to_string()))
            .collect()
    };
    let old_env = env_names(old);
    let added_env = if fields.contains(&"env") {
        env_names(&current)
            .into_iter()
            .filter(|name| !old_env.contains(name))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Fix::RevertTemplate {
        revision: healthy.revision,
        source: healthy.source.clone(),
        fields,
        values,
        added_env,
        by_reference,
        reference,
    })
}

/// Takes the secret-like literal values out of `env` (an earlier
/// revision's env list): one that differs from (or is missing in) the
/// current env is returned by name, to be restored by reference; one the
/// current env already has unchanged is left out of the patch, where the
/// apply leaves it as it is.
fn split_secret_env(env: &mut Value, current: Option<&Value>) -> Vec<String> {
    let Some(items) = env.as_array_mut() else {
        return Vec::new();
    };
    let current: Vec<&Value> = current
        .and_then(Value::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default();
    let mut by_reference = Vec::new();
    items.retain(|item| {
        let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
        let secret = item
            .get("value")
            .and_then(Value::as_str)
            .is_some_and(|value| is_secret_env(name, value));
        if !secret {
            return true;
        }
        if !current.contains(&item) {
            by_reference.push(name.to_string());
        }
        false
    });
    by_reference
}

/// The live container in the same canonical form as revision templates.
fn normalized_container(container: &Value) -> Value {
    serde_json::from_value::<Container>(container.clone())
        .ok()
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or_else(|| container.clone())
}

fn live_container(spec: Option<&Value>, finding: &Finding) -> Option<Value> {
    let list = if finding.init {
        "initContainers"
    } else {
        "containers"
    };
    spec?
        .get(list)?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(finding.container.as_str()))
        .cloned()
}

/// One server-side-apply partial object with every container fix, and the
/// env vars it restores by reference.
fn workload_patch(
    evidence: &Evidence,
    fixes: &[(&Finding, &Fix)],
) -> (Value, Vec<EnvFromRevision>) {
    let mut lists: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut env_from_revision = Vec::new();
    for (finding, fix) in fixes {
        let mut container = Map::new();
        container.insert("name".into(), Value::String(finding.container.clone()));
        match fix {
            Fix::RestoreImage { image, .. } => {
                container.insert("image".into(), Value::String(image.clone()));
            }
            Fix::RaiseMemory { limit, request, .. } => {
                let mut resources = json!({"limits": {"memory": limit}});
                if let Some(request) = request {
                    resources["requests"] = json!({"memory": request});
                }
                container.insert("resources".into(), resources);
            }
            Fix::RevertTemplate {
                values,
                by_reference,
                reference,
                ..
            } => {
                container.extend(values.clone());
                if let Some(reference) = reference {
                    env_from_revision.extend(by_reference.iter().map(|name| EnvFromRevision {
                        container: finding.container.clone(),
                        init: finding.init,
                        name: name.clone(),
                        revision: reference.clone(),
                    }));
                }
            }
        }
        let list = if finding.init {
            "initContainers"
        } else {
            "containers"
        };
        lists
            .entry(list)
            .or_default()
            .push(Value::Object(container));
    }
    (
        containers_patch(evidence.workload_key(), lists),
        env_from_revision,
    )
}

mod words;
use words::*;
#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod tests;
