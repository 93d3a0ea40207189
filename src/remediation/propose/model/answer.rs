//! From a schema-valid answer to a sealed [`Proposal`]: the model fills in
//! a fix object; this code, not the model, writes the server-side-apply
//! partial object, always for the Remediation's own workload and namespace
//! (from the evidence). The checks here repeat what the schema already
//! states (a cached answer or another schema must not slip through) and add
//! what a schema cannot say: an image must be a candidate *for that
//! container*, an OOM-killed container's limit must go up, a request may not
//! exceed its limit.
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::mentions::IncidentWords;
use super::schema::IncidentFacts;
use crate::k8s::pod_spec::containers_patch;
use crate::k8s::quantity::format_memory;
use crate::k8s::redact::{redact, truncate};
use crate::llm::provider::LlmError;
use crate::remediation::crd::{Action, CLASS_DIAGNOSIS, CLASS_MODEL, Evidence, Proposal};

const MIB: u64 = 1024 * 1024;

/// The answer object the schema describes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelFix {
    #[serde(default)]
    pub changes: Vec<ContainerChange>,
    pub confidence: f64,
    /// The model's reading of the evidence, where the schema asks for one
    /// ([`IncidentFacts::explain`]).
    #[serde(default)]
    pub root_cause: String,
}

/// One container's new values; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerChange {
    pub container: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default, rename = "memoryLimitMiB")]
    pub memory_limit_mib: Option<u64>,
    #[serde(default)]
    pub env: Option<Vec<EnvSetting>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSetting {
    pub name: String,
    pub value: String,
}

impl ContainerChange {
    fn is_image_only(&self) -> bool {
        self.memory_limit_mib.is_none() && self.env.is_none()
    }

    fn is_empty(&self) -> bool {
        self.image.is_none() && self.memory_limit_mib.is_none() && self.env.is_none()
    }
}

/// Reads a validated answer as a [`ModelFix`].
pub fn parse_fix(answer: &Value) -> Result<ModelFix, LlmError> {
    ModelFix::deserialize(answer).map_err(|e| LlmError::Unusable {
        reason: format!("the answer does not read as a fix: {e}"),
    })
}

fn unusable(reason: String) -> LlmError {
    LlmError::Unusable { reason }
}

/// The proposal for `fix`, targeting `evidence.workload` in `evidence.namespace`.
pub fn fix_to_proposal(
    fix: &ModelFix,
    evidence: &Evidence,
    facts: &IncidentFacts,
    source: &str,
) -> Result<Proposal, LlmError> {
    let workload = &evidence.workload;
    let target = format!("{}/{}", workload.kind, workload.name);
    let mut lists: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for change in fix.changes.iter().filter(|c| !c.is_empty()) {
        if !seen.insert(change.container.as_str()) {
            return Err(unusable(format!(
                "container {:?} is changed twice",
                change.container
            )));
        }
        let (list, item) = container_patch(change, facts)?;
        lists.entry(list).or_default().push(item);
    }

    let mut risks = vec![format!(
        "proposed by a language model ({source}), not by a rule: check every value before approving"
    )];
    if facts.image_candidates.is_empty() {
        // Without candidates the schema could only ask for a well-formed
        // reference: say plainly that nothing vouches for the image.
        for change in &fix.changes {
            if let Some(image) = &change.image {
                risks.push(format!(
                    "image {image} is not known to run anywhere in the cluster or in the \
                     workload's history; make sure it exists before approving"
                ));
            }
        }
    }
    let mut rollback_plan = Vec::new();
    // Every word is the operator's: the findings and what the actions do.
    // The model chooses values; where it also explains (a crash's log), its
    // explanation follows, attributed, and only when everything it names is
    // a fact of this incident or of the proposal. Small models copy names
    // from what they have seen into prose that reads as fact, so a reviewer
    // must never have to trust it to know what the patch changes.
    let changes: Vec<String> = fix
        .changes
        .iter()
        .filter(|c| !c.is_empty())
        .map(describe_change)
        .collect();
    let changed = if changes.is_empty() {
        "no change proposed".to_string()
    } else {
        changes.join("; ")
    };
    let mut summary = format!("{target}: {changed}");
    let cause = text(&fix.root_cause, 600);
    let words = IncidentWords::new(evidence, facts, fix);
    // Checked as shown: redacted, so a secret the model repeats is not
    // named again in the risk that flags it.
    let root_cause = match words.unknown_mentions(&cause).as_slice() {
        _ if cause.is_empty() => finding_words(facts),
        [] => format!("{} The model: {cause:?}", finding_words(facts)),
        unknown => {
            risks.push(format!(
                "the model's explanation is not shown: it mentions {}, which this incident \
                 does not contain: {cause:?}",
                unknown.join(", ")
            ));
            finding_words(facts)
        }
    };
    let mut actions = Vec::new();
    if !lists.is_empty() {
        let images_only = fix.changes.iter().all(ContainerChange::is_image_only);
        match not_patchable(&workload.kind, images_only) {
            None => {
                actions.push(Action {
                    target: workload.clone(),
                    namespace: evidence.namespace.clone(),
                    patch: containers_patch(evidence.workload_key(), lists),
                    // A model never restores by reference: it sees no values.
                    env_from_revision: Vec::new(),
                });
                rollback_plan.push(
                    "the operator's snapshot restores the prior values of the changed fields"
                        .into(),
                );
            }
            Some(why) => {
                summary = format!("{target} needs a human: {why}; the model suggested: {changed}");
            }
        }
    }
    let confidence = if fix.confidence.is_finite() {
        fix.confidence.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let actions_empty = actions.is_empty();
    Ok(Proposal {
        summary,
        root_cause,
        actions,
        risks,
        rollback_plan,
        confidence,
        source: source.to_string(),
        class: if actions_empty {
            CLASS_DIAGNOSIS.into()
        } else {
            CLASS_MODEL.into()
        },
        hash: String::new(),
    }
    .seal())
}

/// The findings in the operator's words: "Container app (image
/// ngnix:1.25.5): ErrImagePull."
fn finding_words(facts: &IncidentFacts) -> String {
    let failing: Vec<String> = facts
        .containers
        .iter()
        .filter(|c| !c.reasons.is_empty())
        .map(|c| {
            format!(
                "Container {} (image {}): {}.",
                c.name,
                c.image,
                c.reasons.join(", ")
            )
        })
        .collect();
    if failing.is_empty() {
        "No failing container was reported.".into()
    } else {
        failing.join(" ")
    }
}

/// One container change in words: "container web: image nginx:1.25.5".
fn describe_change(change: &ContainerChange) -> String {
    let mut parts = Vec::new();
    if let Some(image) = &change.image {
        parts.push(format!("image {image}"));
    }
    if let Some(limit) = change.memory_limit_mib {
        parts.push(format!("memory limit {limit}Mi"));
    }
    if let Some(env) = &change.env {
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        parts.push(format!("env {}", names.join(", ")));
    }
    format!("set container {}: {}", change.container, parts.join(", "))
}

/// Model text shown to reviewers: one line, redacted, bounded.
fn text(raw: &str, max: usize) -> String {
    let flat: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(&redact(flat.trim()), max)
}

/// Kinds whose template a live apply cannot fix (as the rules say). A bare
/// Pod takes new images in place, and nothing else.
fn not_patchable(kind: &str, images_only: bool) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "CronJob" => None,
        "Pod" if images_only => None,
        "Job" => Some("a Job's pod template is immutable"),
        "Pod" => Some("a bare Pod's containers can take a new image in place, nothing else"),
        _ => Some("this kind's pods are not replaced by changing its template"),
    }
}

fn container_patch(
    change: &ContainerChange,
    facts: &IncidentFacts,
) -> Result<(&'static str, Value), LlmError> {
    let name = &change.container;
    let container = facts
        .container(name)
        .ok_or_else(|| unusable(format!("container {name:?} is not in the workload")))?;
    let mut item = Map::new();
    item.insert("name".into(), Value::String(name.clone()));

    if let Some(image) = &change.image {
        let all = facts.all_candidates();
        let own = facts.image_candidates.get(name);
        if !all.is_empty() && !own.is_some_and(|c| c.contains(image)) {
            return Err(unusable(format!(
                "image {image:?} is not a verified candidate for container {name:?}"
            )));
        }
        item.insert("image".into(), Value::String(image.clone()));
    }

    let mut resources = Map::new();
    if let Some(limit) = change.memory_limit_mib {
        let bounds = facts
            .memory
            .ok_or_else(|| unusable("memory may not change for these findings".into()))?;
        if !(bounds.min_mib..=bounds.max_mib).contains(&limit) {
            return Err(unusable(format!(
                "memory limit {limit} MiB is outside {}..={} MiB",
                bounds.min_mib, bounds.max_mib
            )));
        }
        let oom = container.reasons.iter().any(|r| r == "OOMKilled");
        if let (true, Some(current)) = (oom, container.memory_limit)
            && limit * MIB <= current
        {
            return Err(unusable(format!(
                "container {name:?} was OOMKilled at {}, and {limit}Mi does not raise its limit",
                format_memory(current)
            )));
        }
        resources.insert("limits".into(), json!({"memory": format!("{limit}Mi")}));
        // A request above the new limit would make the pod invalid: it
        // comes down to the limit.
        if container.memory_request.is_some_and(|r| r > limit * MIB) {
            resources.insert("requests".into(), json!({"memory": format!("{limit}Mi")}));
        }
    }
    if !resources.is_empty() {
        item.insert("resources".into(), Value::Object(resources));
    }

    if let Some(env) = &change.env {
        let mut names = BTreeSet::new();
        let mut entries = Vec::new();
        for setting in env {
            if !facts.env_names.contains(&setting.name) {
                return Err(unusable(format!(
                    "env {:?} is not a name the template has",
                    setting.name
                )));
            }
            if !names.insert(setting.name.as_str()) {
                return Err(unusable(format!("env {:?} is set twice", setting.name)));
            }
            entries.push(json!({"name": setting.name, "value": setting.value}));
        }
        if !entries.is_empty() {
            item.insert("env".into(), Value::Array(entries));
        }
    }
    let list = if container.init {
        "initContainers"
    } else {
        "containers"
    };
    Ok((list, Value::Object(item)))
}

/// The server-side-apply partial object: identity from the evidence, the
/// container items under the kind's pod spec.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::fixtures::{self, evidence};
    use crate::remediation::guardrails::ChangeClass;
    use crate::remediation::propose::model::schema::{ContainerFacts, MemoryBounds};

    fn facts() -> IncidentFacts {
        IncidentFacts {
            containers: vec![
                ContainerFacts {
                    name: "app".into(),
                    image: "ngnix:1.25".into(),
                    memory_limit: Some(64 * MIB),
                    memory_request: Some(64 * MIB),
                    reasons: vec!["OOMKilled".into()],
                    ..ContainerFacts::default()
                },
                ContainerFacts {
                    name: "init-db".into(),
                    init: true,
                    image: "busybox:1.36".into(),
                    reasons: vec!["ImagePullBackOff".into()],
                    ..ContainerFacts::default()
                },
            ],
            classes: [ChangeClass::Image, ChangeClass::Resources].into(),
            image_candidates: [("init-db".to_string(), vec!["busybox:1.36.1".to_string()])].into(),
            env_names: vec![],
            memory: Some(MemoryBounds {
                min_mib: 65,
                max_mib: 2048,
            }),
            memory_choices: vec![128, 256, 512],
            explain: true,
        }
    }

    fn fix(changes: Vec<ContainerChange>) -> ModelFix {
        ModelFix {
            changes,
            confidence: 0.9,
            root_cause: "because".into(),
        }
    }

    #[test]
    fn the_patch_targets_the_evidence_workload_only() {
        let proposal = fix_to_proposal(
            &fix(vec![
                ContainerChange {
                    container: "app".into(),
                    memory_limit_mib: Some(128),
                    ..ContainerChange::default()
                },
                ContainerChange {
                    container: "init-db".into(),
                    image: Some("busybox:1.36.1".into()),
                    ..ContainerChange::default()
                },
            ]),
            &evidence("Deployment"),
            &facts(),
            "ollama:qwen2.5:7b",
        )
        .unwrap();
        assert_eq!(proposal.source, "ollama:qwen2.5:7b");
        assert_eq!(proposal.hash, proposal.content_hash());
        assert_eq!(proposal.actions.len(), 1);
        let action = &proposal.actions[0];
        assert_eq!(action.namespace, "shop");
        assert_eq!(action.target.uid, fixtures::UID);
        assert_eq!(
            action.patch,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"template": {"spec": {
                       "containers": [{"name": "app", "resources": {"limits": {"memory": "128Mi"}}}],
                       "initContainers": [{"name": "init-db", "image": "busybox:1.36.1"}]}}}})
        );
        assert!(proposal.risks.iter().any(|r| r.contains("language model")));
    }

    #[test]
    fn a_request_above_the_new_limit_comes_down_to_it() {
        let mut high_request = facts();
        high_request.containers[0].memory_request = Some(512 * MIB);
        let raise = fix(vec![ContainerChange {
            container: "app".into(),
            memory_limit_mib: Some(128),
            ..ContainerChange::default()
        }]);
        let resources = |facts: &IncidentFacts| {
            let proposal = fix_to_proposal(&raise, &evidence("Deployment"), facts, "m").unwrap();
            proposal.actions[0].patch["spec"]["template"]["spec"]["containers"][0]["resources"]
                .clone()
        };
        assert_eq!(
            resources(&high_request),
            json!({"limits": {"memory": "128Mi"}, "requests": {"memory": "128Mi"}})
        );
        // A request within the new limit is left as it is.
        assert_eq!(resources(&facts()), json!({"limits": {"memory": "128Mi"}}));
    }

    #[test]
    fn what_a_schema_cannot_say_is_checked_here() {
        let cases = [
            (
                ContainerChange {
                    container: "app".into(),
                    image: Some("busybox:1.36.1".into()),
                    ..ContainerChange::default()
                },
                "not a verified candidate",
            ),
            (
                ContainerChange {
                    container: "app".into(),
                    memory_limit_mib: Some(64),
                    ..ContainerChange::default()
                },
                "outside",
            ),
            (
                ContainerChange {
                    container: "payments".into(),
                    image: Some("busybox:1.36.1".into()),
                    ..ContainerChange::default()
                },
                "not in the workload",
            ),
        ];
        for (change, reason) in cases {
            let err = fix_to_proposal(&fix(vec![change]), &evidence("Deployment"), &facts(), "m")
                .unwrap_err();
            assert!(err.to_string().contains(reason), "{err}");
        }
    }

    #[test]
    fn no_change_or_an_unpatchable_kind_gives_a_diagnosis() {
        let diagnosis =
            fix_to_proposal(&fix(vec![]), &evidence("Deployment"), &facts(), "m").unwrap();
        assert!(diagnosis.actions.is_empty());
        let job = fix_to_proposal(
            &fix(vec![ContainerChange {
                container: "app".into(),
                memory_limit_mib: Some(128),
                ..ContainerChange::default()
            }]),
            &evidence("Job"),
            &facts(),
            "m",
        )
        .unwrap();
        assert!(job.actions.is_empty());
        assert!(job.summary.contains("needs a human"));
    }

    #[test]
    fn a_bare_pod_gets_an_image_patch_in_place_but_other_changes_stay_a_diagnosis() {
        let pod = evidence("Pod");
        let image = fix_to_proposal(
            &fix(vec![ContainerChange {
                container: "init-db".into(),
                image: Some("busybox:1.36.1".into()),
                ..ContainerChange::default()
            }]),
            &pod,
            &facts(),
            "m",
        )
        .unwrap();
        assert_eq!(
            image.actions[0].patch,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"initContainers": [{"name": "init-db", "image": "busybox:1.36.1"}]}})
        );
        let memory = fix_to_proposal(
            &fix(vec![ContainerChange {
                container: "app".into(),
                memory_limit_mib: Some(128),
                ..ContainerChange::default()
            }]),
            &pod,
            &facts(),
            "m",
        )
        .unwrap();
        assert!(memory.actions.is_empty());
        assert!(
            memory.summary.contains("needs a human"),
            "{}",
            memory.summary
        );
    }

    #[test]
    fn a_cause_copied_from_elsewhere_is_not_shown_and_the_operators_words_lead() {
        let mut copied = fix(vec![ContainerChange {
            container: "init-db".into(),
            image: Some("busybox:1.36.1".into()),
            ..ContainerChange::default()
        }]);
        copied.root_cause = "The tag 1.25.55 is a typo".into();
        let proposal = fix_to_proposal(&copied, &evidence("Deployment"), &facts(), "m").unwrap();
        assert!(
            proposal
                .root_cause
                .starts_with("Container app (image ngnix:1.25): OOMKilled."),
            "{}",
            proposal.root_cause
        );
        assert!(
            !proposal.root_cause.contains("1.25.55"),
            "{}",
            proposal.root_cause
        );
        assert!(
            !proposal.summary.contains("the model:"),
            "{}",
            proposal.summary
        );
        assert!(
            proposal
                .risks
                .iter()
                .any(|r| r.contains("explanation is not shown") && r.contains("1.25.55")),
            "{:?}",
            proposal.risks
        );

        let mut faithful = copied.clone();
        faithful.root_cause = "busybox:1.36.11 does not exist; busybox:1.36.1 runs".into();
        let mut with_typo = facts();
        with_typo.containers[1].image = "busybox:1.36.11".into();
        let proposal =
            fix_to_proposal(&faithful, &evidence("Deployment"), &with_typo, "m").unwrap();
        assert!(
            proposal
                .root_cause
                .ends_with("The model: \"busybox:1.36.11 does not exist; busybox:1.36.1 runs\""),
            "{}",
            proposal.root_cause
        );
        assert_eq!(
            proposal.summary,
            "Deployment/web: set container init-db: image busybox:1.36.1"
        );
    }

    #[test]
    fn model_text_is_redacted_and_bounded() {
        let mut f = fix(vec![]);
        f.root_cause = format!("the cache outgrew its limit {}", "x".repeat(1000));
        let p = fix_to_proposal(&f, &evidence("Deployment"), &facts(), "m").unwrap();
        assert!(p.root_cause.contains("The model:"), "{}", p.root_cause);
        assert!(p.root_cause.len() <= 720, "{}", p.root_cause.len());
        // A secret is masked wherever the text goes (here to the risks:
        // `hunter2` is not a fact of this incident).
        f.root_cause = format!("password=hunter2 {}", "x".repeat(1000));
        let p = fix_to_proposal(&f, &evidence("Deployment"), &facts(), "m").unwrap();
        assert!(!p.root_cause.contains("hunter2"), "{}", p.root_cause);
        assert!(
            p.risks
                .iter()
                .all(|r| !r.contains("hunter2") && r.len() <= 800),
            "{:?}",
            p.risks
        );
    }

    #[test]
    fn an_image_no_one_runs_is_flagged_as_unverified() {
        let mut bare = facts();
        bare.image_candidates.clear();
        let f = fix(vec![ContainerChange {
            container: "app".into(),
            image: Some("acme/app:2.0".into()),
            ..ContainerChange::default()
        }]);
        let p = fix_to_proposal(&f, &evidence("Deployment"), &bare, "m").unwrap();
        assert!(
            p.risks
                .iter()
                .any(|r| r.contains("acme/app:2.0 is not known to run anywhere")),
            "{:?}",
            p.risks
        );
    }

    #[test]
    fn the_summary_names_what_the_patch_changes_and_a_decision_has_no_model_words() {
        let mut f = fix(vec![ContainerChange {
            container: "app".into(),
            memory_limit_mib: Some(128),
            ..ContainerChange::default()
        }]);
        f.root_cause.clear();
        let p = fix_to_proposal(&f, &evidence("Deployment"), &facts(), "m").unwrap();
        assert_eq!(
            p.summary,
            "Deployment/web: set container app: memory limit 128Mi"
        );
        assert_eq!(
            p.root_cause,
            "Container app (image ngnix:1.25): OOMKilled. Container init-db (image busybox:1.36): ImagePullBackOff."
        );
        assert!(!p.root_cause.contains("The model"), "{}", p.root_cause);
    }
}
