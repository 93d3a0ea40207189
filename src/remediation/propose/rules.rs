//! Rule-based proposals: the fixes that need no model because the cluster
//! itself says what the right value is.
//!
//! - Image pull failure, and an earlier healthy revision ran another image
//!   for that container → restore that image.
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
//! workload's own earlier template; summaries, causes, risks and rollback
//! plans name fields, never values.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use serde_json::{Map, Value, json};

use crate::remediation::crd::{Action, Evidence, Finding, Proposal};
use crate::remediation::detect::{OOM_KILLED, UNSCHEDULABLE, primary_reason};
use crate::remediation::evidence::{ManagedBy, RevisionTemplate, management_tools};
use crate::remediation::guardrails::pod_spec_path;

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
    },
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
    let spec = workload.pointer(&pointer_of(pod_spec_path(kind)));
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
            proposal.actions = vec![Action {
                target: evidence.workload.clone(),
                namespace: evidence.namespace.clone(),
                patch: workload_patch(evidence, &fixes),
            }];
            let done: Vec<String> = fixes.iter().map(|(f, fix)| describe_fix(f, fix)).collect();
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
        }
        (false, Some(why)) => {
            let advice: Vec<String> = fixes.iter().map(|(f, fix)| describe_fix(f, fix)).collect();
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
            })
        })
        .ok_or_else(|| {
            format!(
                "image {current:?} cannot be pulled and no earlier healthy revision ran another image; \
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
    for field in revertible_fields(&finding.reason) {
        let before = old.get(*field);
        if before == current.get(*field) {
            continue;
        }
        fields.push(*field);
        // An absent command/args means "the image's own", which an empty
        // list also means; an absent env has nothing to write back.
        values.insert(
            (*field).to_string(),
            before.cloned().unwrap_or_else(|| json!([])),
        );
    }
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
    })
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

fn pod_level_advice(finding: &Finding) -> String {
    if finding.reason == UNSCHEDULABLE {
        format!(
            "the scheduler cannot place the pods ({}); lower the requests, add capacity or fix \
             the node selectors, affinities and taints",
            one_line(&finding.message)
        )
    } else {
        format!("{}: {}", finding.reason, one_line(&finding.message))
    }
}

fn other_advice(finding: &Finding, evidence: &Evidence) -> String {
    match finding.reason.as_str() {
        "NotReady" => {
            let probes: Vec<&str> = evidence
                .containers
                .iter()
                .filter(|c| c.name == finding.container)
                .flat_map(|c| c.probes.iter().map(String::as_str))
                .filter(|p| p.starts_with("readiness"))
                .collect();
            if probes.is_empty() {
                "the container runs but never becomes Ready".into()
            } else {
                format!(
                    "the container runs but never becomes Ready; its probe: {}",
                    probes.join("; ")
                )
            }
        }
        _ if finding.message.is_empty() => "no rule covers this failure".into(),
        _ => format!(
            "no rule covers this failure ({})",
            one_line(&finding.message)
        ),
    }
}

/// Why the workload's template cannot take a live fix, if it cannot.
fn template_not_patchable(kind: &str) -> Option<String> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "CronJob" => None,
        "Job" => Some("a Job's pod template is immutable; re-create the Job with the fix".into()),
        "Pod" => Some(
            "a bare Pod is not replaced by anything and only its images can change in place; \
             re-create it with the fix, or run it under a Deployment"
                .into(),
        ),
        "ReplicaSet" | "ReplicationController" => Some(format!(
            "changing a {kind}'s template does not replace its running pods; fix the template, \
             then delete the failing pods"
        )),
        other => Some(format!("{other} is not a kind the rules patch")),
    }
}

fn describe_fix(finding: &Finding, fix: &Fix) -> String {
    let container = &finding.container;
    match fix {
        Fix::RestoreImage {
            current,
            image,
            revision,
        } => format!(
            "restore image {image} (revision {revision}) for container {container}, replacing {current} ({})",
            finding.reason
        ),
        Fix::RaiseMemory { current, limit, .. } => format!(
            "raise the memory limit of container {container} from {current} to {limit} (OOMKilled)"
        ),
        Fix::RevertTemplate {
            revision, fields, ..
        } => format!(
            "revert {} of container {container} to revision {revision}, the last healthy one ({})",
            fields.join(", "),
            finding.reason
        ),
    }
}

fn cause_of(finding: &Finding, fix: Option<&Fix>, evidence: &Evidence) -> String {
    let container = &finding.container;
    let pods = finding.pods;
    let exit = finding
        .exit_code
        .map(|code| format!(", exit code {code}"))
        .unwrap_or_default();
    let mut cause = match (finding.reason.as_str(), fix) {
        (
            _,
            Some(Fix::RestoreImage {
                current,
                image,
                revision,
            }),
        ) => format!(
            "Container {container} cannot pull image {current} ({} in {pods} pod(s)); revision \
             {revision} ran {image} and had Ready pods.",
            finding.reason
        ),
        (_, Some(Fix::RaiseMemory { current, .. })) => format!(
            "Container {container} uses more memory than its {current} limit and is OOMKilled \
             ({pods} pod(s){exit})."
        ),
        (
            _,
            Some(Fix::RevertTemplate {
                revision,
                source,
                fields,
                ..
            }),
        ) => format!(
            "Container {container} fails ({} in {pods} pod(s){exit}) since its {} changed after \
             revision {revision} ({source}), the last revision that ran healthily.",
            finding.reason,
            fields.join(", ")
        ),
        (_, None) if container.is_empty() => format!(
            "The pods are {} ({pods} pod(s)): {}.",
            finding.reason,
            one_line(&finding.message)
        ),
        (_, None) => {
            let message = if finding.message.is_empty() {
                String::new()
            } else {
                format!(": {}", one_line(&finding.message))
            };
            format!(
                "Container {container} is {} in {pods} pod(s){exit}{message}.",
                finding.reason
            )
        }
    };
    if let Some(line) = evidence
        .logs
        .iter()
        .find(|tail| &tail.container == container)
        .and_then(|tail| tail.lines.last())
    {
        cause.push_str(&format!(" Last log line: {:?}.", one_line(line)));
    }
    cause
}

/// Messages and log lines are tenant text: one line, bounded.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::k8s::redact::truncate(flat.trim(), 240)
}

fn risks(evidence: &Evidence, fixes: &[(&Finding, &Fix)]) -> Vec<String> {
    let mut risks = Vec::new();
    for tool in management_tools(&evidence.management) {
        risks.push(match tool {
            ManagedBy::Helm => "managed by Helm: the next helm upgrade reverts this live patch; \
                                carry the change into the chart values"
                .to_string(),
            ManagedBy::ArgoCd => "managed by Argo CD: a sync from Git (or self-heal) reverts \
                                  this live patch; commit the change to Git"
                .to_string(),
            ManagedBy::Flux => "managed by Flux: the next reconciliation from Git reverts this \
                                live patch; commit the change to Git"
                .to_string(),
        });
    }
    for (finding, fix) in fixes {
        let container = &finding.container;
        match fix {
            Fix::RestoreImage { current, image, .. } => risks.push(format!(
                "container {container} goes back to {image}: whatever {current} was meant to \
                 change (features, fixes, schema migrations) is lost until a working image is released"
            )),
            Fix::RaiseMemory { limit, .. } => risks.push(format!(
                "container {container} may use up to {limit}: nodes need that much free memory \
                 and a ResourceQuota may refuse it; a leak only takes longer to hit the new limit"
            )),
            Fix::RevertTemplate {
                revision,
                fields,
                added_env,
                ..
            } => {
                risks.push(format!(
                    "the {} of container {container} return to revision {revision}'s values: the \
                     configuration change made since is undone",
                    fields.join(", ")
                ));
                if !added_env.is_empty() {
                    risks.push(format!(
                        "env entries added since revision {revision} ({}) stay: server-side apply \
                         sets fields but cannot remove entries another manager owns; remove them \
                         by hand if the crash persists",
                        added_env.join(", ")
                    ));
                }
            }
        }
    }
    risks.push("the change rolls out new pods, replacing the failing ones".into());
    if evidence.workload.kind == "StatefulSet" {
        // The StatefulSet controller waits for the broken pod to become
        // Ready before touching it again ("forced rollback" in the docs).
        risks.push(
            "a StatefulSet does not replace pods stuck on the broken revision: delete the pods \
             that still fail after the apply so they are re-created from the fixed template"
                .into(),
        );
    }
    risks
}

fn rollback_step(finding: &Finding, fix: &Fix, target: &str) -> String {
    let container = &finding.container;
    match fix {
        Fix::RestoreImage { current, .. } => {
            format!("re-apply image {current} to container {container} of {target}")
        }
        Fix::RaiseMemory { current, .. } => {
            format!("set the memory limit of container {container} of {target} back to {current}")
        }
        Fix::RevertTemplate { fields, .. } => format!(
            "re-apply the current template's {} of container {container} of {target} (kept in \
             the remediation's snapshot)",
            fields.join(", ")
        ),
    }
}

fn fix_confidence(fix: &Fix) -> f64 {
    match fix {
        Fix::RestoreImage { .. } => 0.85,
        Fix::RaiseMemory { .. } => 0.7,
        Fix::RevertTemplate { added_env, .. } if !added_env.is_empty() => 0.5,
        Fix::RevertTemplate { .. } => 0.75,
    }
}

/// One server-side-apply partial object with every container fix.
fn workload_patch(evidence: &Evidence, fixes: &[(&Finding, &Fix)]) -> Value {
    let mut lists: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
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
            Fix::RevertTemplate { values, .. } => {
                container.extend(values.clone());
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
    let mut body = Value::Object(
        lists
            .into_iter()
            .map(|(list, items)| (list.to_string(), Value::Array(items)))
            .collect(),
    );
    for key in pod_spec_path(&evidence.workload.kind).rsplit('.') {
        body = json!({ key: body });
    }
    let mut patch = json!({
        "apiVersion": evidence.workload.api_version,
        "kind": evidence.workload.kind,
        "metadata": {"name": evidence.workload.name, "namespace": evidence.namespace},
    });
    if let (Some(patch), Value::Object(body)) = (patch.as_object_mut(), body) {
        patch.extend(body);
    }
    patch
}

/// "spec.template.spec" → "/spec/template/spec".
fn pointer_of(dotted: &str) -> String {
    format!("/{}", dotted.replace('.', "/"))
}

/// Bytes in a Kubernetes memory quantity ("16Mi", "1G", "1.5Gi", "128974848",
/// "129e6"); None for what a memory limit cannot be.
pub fn parse_memory(quantity: &str) -> Option<u64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent if exponent.starts_with(['e', 'E']) => {
            10f64.powi(exponent[1..].parse::<i32>().ok()?)
        }
        _ => return None,
    };
    let bytes = (number * multiplier).ceil();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The shortest exact quantity for `bytes`: binary units first ("32Mi"),
/// then decimal ("200M"), then plain bytes.
pub fn format_memory(bytes: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (1024 * 1024 * 1024 * 1024, "Ti"),
        (1024 * 1024 * 1024, "Gi"),
        (1024 * 1024, "Mi"),
        (1024, "Ki"),
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ];
    if bytes == 0 {
        return "0".into();
    }
    UNITS
        .iter()
        .find(|(unit, _)| bytes.is_multiple_of(*unit))
        .map(|(unit, suffix)| format!("{}{suffix}", bytes / unit))
        .unwrap_or_else(|| bytes.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::crd::{ContainerTemplate, Revision};
    use crate::remediation::fixtures::evidence;

    fn deployment(containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "uid": "web-uid"},
               "spec": {"template": {"spec": {"containers": containers}}}})
    }

    fn finding(container: &str, reason: &str) -> Finding {
        Finding {
            container: container.into(),
            reason: reason.into(),
            pods: 3,
            ..Finding::default()
        }
    }

    fn revision(number: i64, image: &str, healthy: bool) -> Revision {
        Revision {
            revision: number,
            images: BTreeMap::from([("nginx".to_string(), image.to_string())]),
            changed: vec!["containers[nginx].image".into()],
            healthy,
        }
    }

    fn patch_containers(proposal: &Proposal) -> &Value {
        proposal.actions[0]
            .patch
            .pointer("/spec/template/spec/containers")
            .expect("containers in patch")
    }

    #[test]
    fn image_pull_failure_restores_the_last_healthy_image() {
        let live = deployment(json!([{"name": "nginx", "image": "nginx:does-not-exist"}]));
        let mut ev = evidence("Deployment");
        ev.history = vec![
            revision(3, "nginx:also-broken", false),
            revision(2, "nginx:1.25.5", true),
            revision(1, "nginx:1.24.0", true),
        ];
        let proposal = propose_from_rules(
            &live,
            &ev,
            &[finding("nginx", "ImagePullBackOff")],
            &[],
            &RuleConfig::default(),
        );
        assert_eq!(proposal.actions.len(), 1);
        let action = &proposal.actions[0];
        assert_eq!(action.target, ev.workload);
        assert_eq!(action.namespace, "shop");
        assert_eq!(
            action.patch,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25.5"}]}}}})
        );
        assert_eq!(proposal.source, "rules");
        assert_eq!(proposal.hash, proposal.content_hash(), "sealed");
        assert!(
            proposal.summary.contains("restore image nginx:1.25.5"),
            "{}",
            proposal.summary
        );
        assert!(
            proposal.root_cause.contains("revision 2"),
            "{}",
            proposal.root_cause
        );
        assert!(proposal
            .rollback_plan
            .iter()
            .any(|step| step.contains("re-apply image nginx:does-not-exist to container nginx")));
        assert!(
            proposal
                .risks
                .iter()
                .any(|r| r.contains("goes back to nginx:1.25.5"))
        );
        assert!(proposal.confidence > 0.8);
    }

    #[test]
    fn image_pull_failure_without_a_healthy_alternative_needs_a_human() {
        let live = deployment(json!([{"name": "nginx", "image": "nginx:does-not-exist"}]));
        let mut ev = evidence("Deployment");
        ev.history = vec![
            revision(2, "nginx:1.25.5", false),
            // Healthy, but the same image: restoring it changes nothing.
            revision(1, "nginx:does-not-exist", true),
        ];
        let proposal = propose_from_rules(
            &live,
            &ev,
            &[finding("nginx", "ErrImagePull")],
            &[],
            &RuleConfig::default(),
        );
        assert!(proposal.actions.is_empty());
        assert!(
            proposal.summary.contains("needs a human"),
            "{}",
            proposal.summary
        );
        assert!(proposal.summary.contains("imagePullSecrets"));
        assert!(!proposal.rollback_plan.is_empty());
        assert!(proposal.confidence < 0.5);
    }

    #[test]
    fn init_container_image_is_restored_under_init_containers() {
        let mut live = deployment(json!([{"name": "app", "image": "app:1"}]));
        live["spec"]["template"]["spec"]["initContainers"] =
            json!([{"name": "setup", "image": "busybox:0.0.0-missing"}]);
        let mut ev = evidence("Deployment");
        ev.history = vec![Revision {
            revision: 1,
            images: BTreeMap::from([
                ("setup".into(), "busybox:1.36.1".into()),
                ("app".into(), "app:1".into()),
            ]),
            changed: vec!["initContainers[setup].image".into()],
            healthy: true,
        }];
        let mut init_finding = finding("setup", "ImagePullBackOff");
        init_finding.init = true;
        let proposal = propose_from_rules(&live, &ev, &[init_finding], &[], &RuleConfig::default());
        assert_eq!(
            proposal.actions[0]
                .patch
                .pointer("/spec/template/spec/initContainers"),
            Some(&json!([{"name": "setup", "image": "busybox:1.36.1"}]))
        );
        assert!(
            proposal.actions[0]
                .patch
                .pointer("/spec/template/spec/containers")
                .is_none()
        );
    }

    #[test]
    fn oom_doubles_the_memory_limit() {
        let live = deployment(json!([{"name": "redis", "image": "redis:7.2.5",
            "resources": {"requests": {"memory": "8Mi"}, "limits": {"memory": "16Mi", "cpu": "1"}}}]));
        let mut oom = finding("redis", OOM_KILLED);
        oom.exit_code = Some(137);
        let proposal = propose_from_rules(
            &live,
            &evidence("Deployment"),
            &[finding("redis", "CrashLoopBackOff"), oom],
            &[],
            &RuleConfig::default(),
        );
        assert_eq!(
            patch_containers(&proposal),
            &json!([{"name": "redis", "resources": {"limits": {"memory": "32Mi"}}}]),
            "only the memory limit; the request (8Mi) already fits"
        );
        assert!(
            proposal.summary.contains("from 16Mi to 32Mi"),
            "{}",
            proposal.summary
        );
        assert!(proposal.rollback_plan[0].contains("back to 16Mi"));
        assert!(
            proposal.root_cause.contains("exit code 137"),
            "{}",
            proposal.root_cause
        );
    }

    #[test]
    fn oom_stops_at_the_cap_and_lowers_an_oversized_request() {
        let live = deployment(json!([{"name": "app", "image": "app:1",
            "resources": {"requests": {"memory": "1536Mi"}, "limits": {"memory": "1536Mi"}}}]));
        let proposal = propose_from_rules(
            &live,
            &evidence("Deployment"),
            &[finding("app", OOM_KILLED)],
            &[],
            &RuleConfig::default(),
        );
        assert_eq!(
            patch_containers(&proposal),
            &json!([{"name": "app", "resources": {"limits": {"memory": "2Gi"}}}])
        );

        // A request above the new limit (only possible with an odd cap) is lowered to it.
        let live = deployment(json!([{"name": "app", "image": "app:1",
            "resources": {"requests": {"memory": "900Mi"}, "limits": {"memory": "800Mi"}}}]));
        let proposal = propose_from_rules(
            &live,
            &evidence("Deployment"),
            &[finding("app", OOM_KILLED)],
            &[],
            &RuleConfig {
                memory_cap: 850 * 1024 * 1024,
            },
        );
        assert_eq!(
            patch_containers(&proposal),
            &json!([{"name": "app", "resources": {"limits": {"memory": "850Mi"}, "requests": {"memory": "850Mi"}}}])
        );
    }

    #[test]
    fn oom_at_the_cap_or_without_a_limit_needs_a_human() {
        for resources in [json!({"limits": {"memory": "2Gi"}}), json!({})] {
            let live =
                deployment(json!([{"name": "app", "image": "app:1", "resources": resources}]));
            let proposal = propose_from_rules(
                &live,
                &evidence("Deployment"),
                &[finding("app", OOM_KILLED)],
                &[],
                &RuleConfig::default(),
            );
            assert!(proposal.actions.is_empty(), "{resources}");
            assert!(proposal.summary.contains("needs a human"));
        }
    }

    #[test]
    fn cronjob_patches_go_under_the_job_template() {
        let live = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "nginx", "image": "nginx:broken",
                                "resources": {"limits": {"memory": "64Mi"}}}]}}}}}});
        let mut ev = evidence("CronJob");
        ev.history = vec![revision(1, "nginx:1.25.5", true)];
        let config = RuleConfig::default();
        let pull = propose_from_rules(
            &live,
            &ev,
            &[finding("nginx", "ImagePullBackOff")],
            &[],
            &config,
        );
        assert_eq!(
            pull.actions[0].patch,
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
                       {"name": "nginx", "image": "nginx:1.25.5"}]}}}}}})
        );
        let oom = propose_from_rules(&live, &ev, &[finding("nginx", OOM_KILLED)], &[], &config);
        assert_eq!(
            oom.actions[0].patch.pointer(
                "/spec/jobTemplate/spec/template/spec/containers/0/resources/limits/memory"
            ),
            Some(&json!("128Mi"))
        );
    }

    fn revision_template(number: i64, container: Value, healthy: bool) -> RevisionTemplate {
        RevisionTemplate {
            revision: number,
            source: format!("db-{number}"),
            template: json!({"metadata": {"labels": {"app": "db"}},
                             "spec": {"containers": [container]}}),
            healthy,
            changed: vec!["containers[db].env".into()],
        }
    }

    #[test]
    fn oom_after_a_limit_cut_goes_back_to_the_healthy_limit_when_doubling_is_not_enough() {
        let live = deployment(json!([{"name": "redis", "image": "redis:7.2.5",
            "resources": {"limits": {"memory": "16Mi"}}}]));
        let mut oom = finding("redis", OOM_KILLED);
        oom.exit_code = Some(137);
        let healthy = revision_template(
            1,
            json!({"name": "redis", "image": "redis:7.2.5",
                   "resources": {"limits": {"memory": "128Mi"}}}),
            true,
        );
        let unhealthy = revision_template(
            2,
            json!({"name": "redis", "image": "redis:7.2.5",
                   "resources": {"limits": {"memory": "1Gi"}}}),
            false,
        );
        let proposal = propose_from_rules(
            &live,
            &evidence("Deployment"),
            &[oom.clone()],
            &[unhealthy, healthy.clone()],
            &RuleConfig::default(),
        );
        assert_eq!(
            patch_containers(&proposal),
            &json!([{"name": "redis", "resources": {"limits": {"memory": "128Mi"}}}]),
            "the newest healthy revision's limit, not 32Mi and not the unhealthy 1Gi"
        );
        // Doubling wins when it is more than the healthy limit was.
        let small = revision_template(
            1,
            json!({"name": "redis", "resources": {"limits": {"memory": "20Mi"}}}),
            true,
        );
        let proposal = propose_from_rules(
            &live,
            &evidence("Deployment"),
            &[oom],
            &[small],
            &RuleConfig::default(),
        );
        assert_eq!(
            patch_containers(&proposal),
            &json!([{"name": "redis", "resources": {"limits": {"memory": "32Mi"}}}]),
        );
    }

    #[test]
    fn crash_after_a_template_change_reverts_the_changed_fields() {
        let live = deployment(json!([{"name": "db", "image": "postgres:16.4",
            "args": ["--bad-flag"],
            "env": [{"name": "POSTGRES_USER", "value": "app"}]}]));
        let healthy_env = json!([
            {"name": "POSTGRES_USER", "value": "app"},
            {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "API_TOKEN", "value": "sk-live-PLANTED123456789"}
        ]);
        let history = vec![
            revision_template(3, json!({"name": "db", "image": "postgres:16.4"}), false),
            revision_template(
                2,
                json!({"name": "db", "image": "postgres:16.4", "env": healthy_env}),
                true,
            ),
        ];
        let ev = evidence("Deployment").with_previous_log(
            "db-1",
            "db",
            vec![
                "Error: Database is uninitialized and superuser password is not specified.".into(),
            ],
        );
        let mut crash = finding("db", "CrashLoopBackOff");
        crash.exit_code = Some(1);
        let proposal = propose_from_rules(&live, &ev, &[crash], &history, &RuleConfig::default());
        assert_eq!(
            patch_containers(&proposal),
            &json!([{"name": "db", "env": healthy_env, "args": []}]),
            "env and args revert to revision 2; the unchanged image is left alone"
        );
        assert!(
            proposal
                .summary
                .contains("revert env, args of container db to revision 2"),
            "{}",
            proposal.summary
        );
        assert!(
            proposal
                .root_cause
                .contains("superuser password is not specified"),
            "{}",
            proposal.root_cause
        );
        assert!(proposal.root_cause.contains("exit code 1"));
        // Values live only in the patch, never in the text a model or reviewer reads.
        let text = serde_json::to_string(&(
            &proposal.summary,
            &proposal.root_cause,
            &proposal.risks,
            &proposal.rollback_plan,
        ))
        .unwrap();
        assert!(!text.contains("PLANTED"), "{text}");
        assert!(!text.contains("secretKeyRef"), "{text}");
    }

    #[test]
    fn env_entries_added_by_the_bad_revision_are_named_as_a_risk() {
        let live = deployment(json!([{"name": "db", "image": "postgres:16.4",
            "env": [{"name": "DATABASE_URL", "value": "postgres://u:p@wrong/db"}]}]));
        let history = vec![revision_template(
            1,
            json!({"name": "db", "image": "postgres:16.4", "env": [{"name": "POSTGRES_PASSWORD", "value": "x"}]}),
            true,
        )];
        let proposal = propose_from_rules(
            &live,
            &evidence("Deployment"),
            &[finding("db", "CrashLoopBackOff")],
            &history,
            &RuleConfig::default(),
        );
        assert_eq!(proposal.actions.len(), 1);
        assert!(
            proposal
                .risks
                .iter()
                .any(|r| r.contains("(DATABASE_URL) stay")),
            "{:?}",
            proposal.risks
        );
        assert!(
            !serde_json::to_string(&proposal.risks)
                .unwrap()
                .contains("wrong")
        );
        assert!(proposal.confidence <= 0.5);
    }

    #[test]
    fn crash_without_a_template_change_or_healthy_revision_needs_a_human() {
        let container = json!({"name": "db", "image": "postgres:16.4"});
        let live = deployment(json!([container.clone()]));
        let same = vec![revision_template(1, container, true)];
        let unhealthy = vec![revision_template(
            1,
            json!({"name": "db", "image": "postgres:16.3"}),
            false,
        )];
        for history in [same, unhealthy, Vec::new()] {
            let proposal = propose_from_rules(
                &live,
                &evidence("Deployment"),
                &[finding("db", "CrashLoopBackOff")],
                &history,
                &RuleConfig::default(),
            );
            assert!(proposal.actions.is_empty(), "{history:?}");
            assert!(
                proposal.summary.contains("needs a human"),
                "{}",
                proposal.summary
            );
        }
    }

    #[test]
    fn config_errors_revert_env_only() {
        let live = deployment(json!([{"name": "db", "image": "postgres:16.5",
            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}}]}]));
        let history = vec![revision_template(
            1,
            json!({"name": "db", "image": "postgres:16.4", "env": [{"name": "P", "value": "x"}]}),
            true,
        )];
        let proposal = propose_from_rules(
            &live,
            &evidence("Deployment"),
            &[finding("db", "CreateContainerConfigError")],
            &history,
            &RuleConfig::default(),
        );
        let container = &patch_containers(&proposal)[0];
        assert!(container.get("env").is_some());
        assert!(
            container.get("image").is_none(),
            "image is not an env fix: {container}"
        );
    }

    #[test]
    fn managed_workloads_warn_that_a_sync_reverts_the_patch() {
        let live = deployment(json!([{"name": "nginx", "image": "nginx:bad"}]));
        let mut ev = evidence("Deployment");
        ev.history = vec![revision(1, "nginx:1.25.5", true)];
        ev.management = BTreeMap::from([
            ("app.kubernetes.io/managed-by".into(), "Helm".into()),
            (
                "argocd.argoproj.io/tracking-id".into(),
                "shop:apps/Deployment:shop/web".into(),
            ),
        ]);
        let proposal = propose_from_rules(
            &live,
            &ev,
            &[finding("nginx", "ImagePullBackOff")],
            &[],
            &RuleConfig::default(),
        );
        let risks = proposal.risks.join("\n");
        assert!(
            risks.contains("helm upgrade reverts this live patch"),
            "{risks}"
        );
        assert!(risks.contains("sync from Git"), "{risks}");
    }

    #[test]
    fn statefulset_fixes_warn_about_stuck_pods() {
        let mut live = deployment(json!([{"name": "nginx", "image": "nginx:bad"}]));
        live["kind"] = json!("StatefulSet");
        let mut ev = evidence("StatefulSet");
        ev.history = vec![revision(1, "nginx:1.25.5", true)];
        let proposal = propose_from_rules(
            &live,
            &ev,
            &[finding("nginx", "ImagePullBackOff")],
            &[],
            &RuleConfig::default(),
        );
        assert_eq!(proposal.actions.len(), 1);
        assert!(
            proposal
                .risks
                .iter()
                .any(|r| r.contains("does not replace pods stuck")),
            "{:?}",
            proposal.risks
        );
    }

    #[test]
    fn kinds_without_a_patchable_template_get_advice_only() {
        for kind in ["Job", "Pod", "ReplicaSet"] {
            let live = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "web"},
                "spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:bad"}]}},
                         "containers": [{"name": "nginx", "image": "nginx:bad"}]}});
            let mut ev = evidence(kind);
            ev.history = vec![revision(1, "nginx:1.25.5", true)];
            let proposal = propose_from_rules(
                &live,
                &ev,
                &[finding("nginx", "ImagePullBackOff")],
                &[],
                &RuleConfig::default(),
            );
            assert!(proposal.actions.is_empty(), "{kind}");
            assert!(
                proposal.summary.contains("needs a human"),
                "{}",
                proposal.summary
            );
            assert!(
                proposal.summary.contains("restore image nginx:1.25.5"),
                "{}",
                proposal.summary
            );
        }
    }

    #[test]
    fn other_failures_are_diagnosed_without_actions() {
        let live = deployment(json!([{"name": "app", "image": "app:1"}]));
        let mut ev = evidence("Deployment");
        ev.containers = vec![ContainerTemplate {
            name: "app".into(),
            probes: vec!["readiness: httpGet :8080/ready every 10s, timeout 1s, 3 failures".into()],
            ..ContainerTemplate::default()
        }];
        let mut unschedulable = finding("", UNSCHEDULABLE);
        unschedulable.message = "0/4 nodes are available: 4 Insufficient memory.".into();
        let proposal = propose_from_rules(
            &live,
            &ev,
            &[unschedulable, finding("app", "NotReady")],
            &[],
            &RuleConfig::default(),
        );
        assert!(proposal.actions.is_empty());
        assert!(
            proposal.summary.contains("Insufficient memory"),
            "{}",
            proposal.summary
        );
        assert!(
            proposal.summary.contains("httpGet :8080/ready"),
            "{}",
            proposal.summary
        );
        assert!(
            proposal.root_cause.contains("Unschedulable"),
            "{}",
            proposal.root_cause
        );
        assert!(!proposal.risks.is_empty() && !proposal.rollback_plan.is_empty());
        assert_eq!(proposal.hash, proposal.content_hash());
    }

    #[test]
    fn one_fix_and_one_unfixable_container_share_a_proposal() {
        let live = deployment(json!([
            {"name": "nginx", "image": "nginx:bad"},
            {"name": "side", "image": "side:1"}
        ]));
        let mut ev = evidence("Deployment");
        ev.history = vec![revision(1, "nginx:1.25.5", true)];
        let proposal = propose_from_rules(
            &live,
            &ev,
            &[
                finding("nginx", "ImagePullBackOff"),
                finding("side", "NotReady"),
            ],
            &[],
            &RuleConfig::default(),
        );
        assert_eq!(
            patch_containers(&proposal).as_array().map(Vec::len),
            Some(1)
        );
        assert!(
            proposal
                .summary
                .contains("container side (NotReady) needs a human"),
            "{}",
            proposal.summary
        );
        assert!(proposal.confidence <= 0.5);
    }

    #[test]
    fn memory_quantities_parse_and_format() {
        assert_eq!(parse_memory("16Mi"), Some(16 * 1024 * 1024));
        assert_eq!(parse_memory("1.5Gi"), Some(1536 * 1024 * 1024));
        assert_eq!(parse_memory("100M"), Some(100_000_000));
        assert_eq!(parse_memory("129e6"), Some(129_000_000));
        assert_eq!(parse_memory("128974848"), Some(128_974_848));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("5Xi"), None);
        assert_eq!(format_memory(32 * 1024 * 1024), "32Mi");
        assert_eq!(format_memory(2 * GI), "2Gi");
        assert_eq!(format_memory(200_000_000), "200M");
        assert_eq!(format_memory(1536 * 1024 * 1024), "1536Mi");
        assert_eq!(format_memory(1001), "1001");
    }
}
