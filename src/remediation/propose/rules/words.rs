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

/// How the text names an earlier revision: "revision 3", or for a
/// CronJob (whose revisions are its Jobs, numbered by creation time) "Job
/// nightly-29012345".
pub(super) fn revision_label(kind: &str, revision: i64, source: &str) -> String {
    if kind == "CronJob" && !source.is_empty() {
        format!("Job {source}")
    } else {
        format!("revision {revision}")
    }
}

pub(super) fn describe_fix(kind: &str, finding: &Finding, fix: &Fix) -> String {
    let container = &finding.container;
    match fix {
        Fix::RestoreImage {
            current,
            image,
            revision,
            source,
        } => {
            let from = if kind == "CronJob" {
                format!("from Job {source}, the newest that succeeded with it")
            } else {
                format!("revision {revision}")
            };
            format!(
                "restore image {image} ({from}) for container {container}, replacing {current} ({})",
                finding.reason
            )
        }
        Fix::RaiseMemory { current, limit, .. } => format!(
            "raise the memory limit of container {container} from {current} to {limit} (OOMKilled)"
        ),
        Fix::RevertTemplate {
            revision,
            source,
            fields,
            by_reference,
            reference,
            ..
        } => {
            let label = revision_label(kind, *revision, source);
            let mut text = format!(
                "revert {} of container {container} to {label}, the last healthy one ({})",
                fields.join(", "),
                finding.reason
            );
            if let Some(reference) = reference {
                for name in by_reference {
                    text.push_str(&format!(
                        "; restore env {name} of container {container} from {label} (a \
                         secret-like value: read from {} {} when the fix is applied, never \
                         shown or stored)",
                        reference.kind, reference.name
                    ));
                }
            }
            text
        }
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
                source,
                ..
            }),
        ) if evidence.workload.kind == "CronJob" => format!(
            "Container {container} cannot pull image {current} ({} in {pods} pod(s)); Job \
             {source}, the newest of the CronJob's Jobs that succeeded with another image, ran \
             {image}.",
            finding.reason
        ),
        (
            _,
            Some(Fix::RestoreImage {
                current,
                image,
                revision,
                ..
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
             {}, the last revision that ran healthily.",
            finding.reason,
            fields.join(", "),
            if evidence.workload.kind == "CronJob" {
                format!("Job {source}")
            } else {
                format!("revision {revision} ({source})")
            }
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
                source,
                fields,
                added_env,
                by_reference,
                reference,
                ..
            } => {
                let label = revision_label(&evidence.workload.kind, *revision, source);
                risks.push(format!(
                    "the {} of container {container} return to {label}'s values: the \
                     configuration change made since is undone",
                    fields.join(", ")
                ));
                if let Some(reference) = reference.as_ref().filter(|_| !by_reference.is_empty()) {
                    risks.push(format!(
                        "env {} of container {container} is restored by reference: the value is \
                         read from {} {} when the fix is applied; if that object is deleted or \
                         changed before then, the apply fails and nothing changes",
                        by_reference.join(", "),
                        reference.kind,
                        reference.name
                    ));
                }
                if !added_env.is_empty() {
                    risks.push(format!(
                        "env entries added since {label} ({}) stay: server-side apply \
                         sets fields but cannot remove entries another manager owns; remove them \
                         by hand if the crash persists",
                        added_env.join(", ")
                    ));
                }
            }
        }
    }
    if evidence.workload.kind == "CronJob" {
        risks.push(
            "the fix changes the job template: the next scheduled Job uses it; Jobs already \
             started from the broken template keep failing until they are deleted (with \
             concurrencyPolicy Forbid the next run waits for them)"
                .into(),
        );
    } else {
        risks.push("the change rolls out new pods, replacing the failing ones".into());
    }
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
        Fix::RevertTemplate {
            fields,
            by_reference,
            ..
        } if !by_reference.is_empty() => format!(
            "re-apply the current template's {} of container {container} of {target} (kept in \
             the remediation's snapshot; secret-like values by reference to the revision that \
             holds them, never as copies)",
            fields.join(", ")
        ),
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
