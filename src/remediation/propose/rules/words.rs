//! What a rules proposal says to the reviewer: the cause, the advice when
//! there is no fix, the description of each fix, its risks, the rollback
//! steps and the confidence.
use super::*;

pub(super) fn pod_level_advice(finding: &Finding) -> String {
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

pub(super) fn other_advice(finding: &Finding, evidence: &Evidence) -> String {
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
pub(super) fn template_not_patchable(kind: &str) -> Option<String> {
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

pub(super) fn describe_fix(finding: &Finding, fix: &Fix) -> String {
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

pub(super) fn cause_of(finding: &Finding, fix: Option<&Fix>, evidence: &Evidence) -> String {
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
pub(super) fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::k8s::redact::truncate(flat.trim(), 240)
}

pub(super) fn risks(evidence: &Evidence, fixes: &[(&Finding, &Fix)]) -> Vec<String> {
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

pub(super) fn rollback_step(finding: &Finding, fix: &Fix, target: &str) -> String {
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

pub(super) fn fix_confidence(fix: &Fix) -> f64 {
    match fix {
        Fix::RestoreImage { .. } => 0.85,
        Fix::RaiseMemory { .. } => 0.7,
        Fix::RevertTemplate { added_env, .. } if !added_env.is_empty() => 0.5,
        Fix::RevertTemplate { .. } => 0.75,
    }
}
