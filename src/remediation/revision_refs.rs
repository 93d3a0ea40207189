//! Env values restored by reference.
//!
//! A fix that brings back an env var with a secret-like literal value
//! (`k8s::redact::is_secret_env`) does not carry the value: its action says
//! "restore env X of container C from revision N" ([`EnvFromRevision`]),
//! naming the ReplicaSet, ControllerRevision or Job that holds the revision
//! by uid and by a keyed digest of its template. The approval hash covers
//! the reference like the rest of the action.
//!
//! Whenever the fix must be seen whole (the guardrails' check, the
//! server-side dry run, the apply) the value is read from that object here
//! and written into the patch handed to the API server, and nowhere else:
//! the Remediation keeps the patch without it. An object that is gone,
//! replaced, not a revision of the workload, or whose template no longer
//! has the digest fails the step closed, with a message naming the
//! variable and the revision, never the value.
//!
//! The rollback snapshot follows the same rule: a variable the fix
//! replaces that held a literal value before is kept by reference to the
//! revision holding the workload's template at the time of the apply
//! (a restore of an absent variable is its removal and needs nothing).
//!
//! [`Secrets`] are the values read for one step: every text that leaves
//! the step (an error from the API server, a policy message, the dry run's
//! diff) is scrubbed of them before it is stored, logged or published.
use std::collections::BTreeMap;

use kube::Client;
use serde_json::{Value, json};

use super::approval::ApprovalKey;
use super::crd::{Action, EnvFromRevision, FieldChange, GuardrailVerdict, Proposal, WorkloadRef};
use super::evidence::{
    EvidenceError, RevisionLookupError, current_revision, fetch_revision_template,
};
use crate::k8s::pod_spec::{pod_spec_path, pod_spec_pointer};
use crate::k8s::redact::{MASK, is_secret_env};

/// Why a referenced value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "env {name} of container {container} cannot be restored from revision {revision}: {source}"
    )]
    Lookup {
        name: String,
        container: String,
        revision: i64,
        // Boxed: it carries a kube::Error, and every Result here carries this.
        #[source]
        source: Box<RevisionLookupError>,
    },
    #[error("env {name} of container {container} is not in {kind} {object} (revision {revision})")]
    Missing {
        name: String,
        container: String,
        kind: String,
        object: String,
        revision: i64,
    },
    #[error(
        "the current value of env {name} of container {container} cannot be kept for a rollback \
         without copying it: {why}"
    )]
    Snapshot {
        name: String,
        container: String,
        why: String,
    },
    #[error("reading the workload's revisions: {0}")]
    Evidence(#[from] EvidenceError),
}

impl ReferenceError {
    /// A transient API failure, worth a retry; every other error is final.
    pub fn is_transient(&self) -> bool {
        match self {
            ReferenceError::Lookup { source, .. } => source.is_transient(),
            ReferenceError::Evidence(EvidenceError::Read { .. } | EvidenceError::List { .. }) => {
                true
            }
            _ => false,
        }
    }
}

/// The values read for one step; `Debug` shows how many, never which.
#[derive(Default, Clone)]
pub struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.0.len())
    }
}

impl Secrets {
    fn add(&mut self, value: &str) {
        if !value.is_empty() && !self.0.iter().any(|v| v == value) {
            self.0.push(value.to_string());
            // Longer first, so a value containing another is masked whole.
            self.0.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every value masked.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in &self.0 {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), MASK);
            }
        }
        out
    }

    /// The verdict with every value masked in its messages.
    pub fn scrub_verdict(&self, verdict: &mut GuardrailVerdict) {
        for violation in &mut verdict.violations {
            *violation = self.scrub(violation);
        }
    }

    /// The dry run's field changes as a reviewer may see them: a
    /// referenced variable's value (before and after) shows as where it
    /// comes from, and any value read here is masked wherever it appears.
    pub fn scrub_diff(&self, kind: &str, actions: &[Action], diff: &mut [FieldChange]) {
        for change in diff.iter_mut() {
            let referenced = actions
                .iter()
                .flat_map(|a| &a.env_from_revision)
                .find(|r| change.path.starts_with(&env_path(kind, r)));
            if let Some(reference) = referenced {
                if change.from.is_some() {
                    change.from = Some(MASK.to_string());
                }
                if change.to.is_some() {
                    change.to = Some(format!(
                        "{MASK} (from revision {}, {} {})",
                        reference.revision.revision,
                        reference.revision.kind,
                        reference.revision.name
                    ));
                }
            } else if let Some(name) = env_name(&change.path) {
                // Any other variable's secret-like value, before or after
                // (a literal the fix replaces, say), is not shown either.
                for side in [&mut change.from, &mut change.to] {
                    if side
                        .as_deref()
                        .is_some_and(|value| is_secret_env(&name, value))
                    {
                        *side = Some(MASK.to_string());
                    }
                }
            }
            for side in [&mut change.from, &mut change.to] {
                if let Some(text) = side.as_mut() {
                    *text = self.scrub(text);
                }
            }
        }
    }
}

/// The variable a diff path addresses (`...env[NAME].value`), if any.
fn env_name(path: &str) -> Option<String> {
    let start = path.find(".env[")? + ".env[".len();
    let end = path[start..].find(']')? + start;
    Some(path[start..end].to_string())
}

/// `spec.template.spec.containers[db].env[POSTGRES_PASSWORD]`, as the
/// dry run's diff addresses the variable.
fn env_path(kind: &str, reference: &EnvFromRevision) -> String {
    format!(
        "{}.{}[{}].env[{}]",
        pod_spec_path(kind),
        list_of(reference.init),
        reference.container,
        reference.name
    )
}

fn list_of(init: bool) -> &'static str {
    if init { "initContainers" } else { "containers" }
}

/// `actions` with every referenced variable written into its patch (and
/// the references dropped), and the values read: what the guardrails, the
/// dry run and the apply work on. Nothing of it is to be stored.
pub async fn resolve_actions(
    client: &Client,
    key: &ApprovalKey,
    namespace: &str,
    target: &WorkloadRef,
    actions: &[Action],
) -> Result<(Vec<Action>, Secrets), ReferenceError> {
    let mut secrets = Secrets::default();
    let mut resolved = Vec::with_capacity(actions.len());
    for action in actions {
        let templates =
            read_templates(client, key, namespace, target, &action.env_from_revision).await?;
        let patch = fill_env(
            &action.patch,
            &target.kind,
            &action.env_from_revision,
            &templates,
            &mut secrets,
        )?;
        resolved.push(Action {
            patch,
            env_from_revision: Vec::new(),
            ..action.clone()
        });
    }
    Ok((resolved, secrets))
}

/// The restore patch of a snapshot with its referenced variables filled in.
pub async fn resolve_restore(
    client: &Client,
    key: &ApprovalKey,
    namespace: &str,
    target: &WorkloadRef,
    restore_patch: &Value,
    env_from_revision: &[EnvFromRevision],
) -> Result<(Value, Secrets), ReferenceError> {
    let mut secrets = Secrets::default();
    let templates = read_templates(client, key, namespace, target, env_from_revision).await?;
    let patch = fill_env(
        restore_patch,
        &target.kind,
        env_from_revision,
        &templates,
        &mut secrets,
    )?;
    Ok((patch, secrets))
}

/// What a proposal looks like to the checks: its actions resolved.
pub enum CheckedView {
    /// The proposal as the guardrails and the dry run must see it.
    Ready(Box<Proposal>, Secrets),
    /// A reference cannot be used; the proposal must not be shown.
    Refused(String),
}

/// Resolves `proposal` for its checks; transient API failures are errors.
pub async fn checked_view(
    client: &Client,
    key: &ApprovalKey,
    namespace: &str,
    target: &WorkloadRef,
    proposal: &Proposal,
) -> Result<CheckedView, ReferenceError> {
    if proposal
        .actions
        .iter()
        .all(|a| a.env_from_revision.is_empty())
    {
        return Ok(CheckedView::Ready(
            Box::new(proposal.clone()),
            Secrets::default(),
        ));
    }
    match resolve_actions(client, key, namespace, target, &proposal.actions).await {
        Ok((actions, secrets)) => Ok(CheckedView::Ready(
            Box::new(Proposal {
                actions,
                ..proposal.clone()
            }),
            secrets,
        )),
        Err(error) if error.is_transient() => Err(error),
        Err(error) => Ok(CheckedView::Refused(error.to_string())),
    }
}

/// Reads each revision the references name, once, checked (see
/// `evidence::fetch_revision_template`), by uid.
async fn read_templates(
    client: &Client,
    key: &ApprovalKey,
    namespace: &str,
    target: &WorkloadRef,
    references: &[EnvFromRevision],
) -> Result<BTreeMap<String, Value>, ReferenceError> {
    let mut templates = BTreeMap::new();
    for reference in references {
        let revision = &reference.revision;
        if templates.contains_key(&revision.uid) {
            continue;
        }
        let template = fetch_revision_template(client, namespace, &target.uid, revision, key)
            .await
            .map_err(|source| ReferenceError::Lookup {
                name: reference.name.clone(),
                container: reference.container.clone(),
                revision: revision.revision,
                source: Box::new(source),
            })?;
        templates.insert(revision.uid.clone(), template);
    }
    Ok(templates)
}

/// `patch` with each referenced variable copied from its revision's
/// template (`templates`, by the revision's uid) into the container's env
/// list, in the order that revision lists them.
pub(crate) fn fill_env(
    patch: &Value,
    kind: &str,
    references: &[EnvFromRevision],
    templates: &BTreeMap<String, Value>,
    secrets: &mut Secrets,
) -> Result<Value, ReferenceError> {
    let mut patch = patch.clone();
    for reference in references {
        let revision = &reference.revision;
        let missing = || ReferenceError::Missing {
            name: reference.name.clone(),
            container: reference.container.clone(),
            kind: revision.kind.clone(),
            object: revision.name.clone(),
            revision: revision.revision,
        };
        let env = templates
            .get(&revision.uid)
            .and_then(|template| template_env(template, reference.init, &reference.container))
            .ok_or_else(missing)?;
        let item = env
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(reference.name.as_str()))
            .ok_or_else(missing)?;
        if let Some(value) = item.get("value").and_then(Value::as_str) {
            secrets.add(value);
        }
        let order: Vec<&str> = env
            .iter()
            .filter_map(|e| e.get("name").and_then(Value::as_str))
            .collect();
        insert_env(
            &mut patch,
            kind,
            reference.init,
            &reference.container,
            item.clone(),
            &order,
        );
    }
    Ok(patch)
}

/// The env list of a container in a pod template.
fn template_env<'a>(template: &'a Value, init: bool, container: &str) -> Option<&'a Vec<Value>> {
    template
        .pointer(&format!("/spec/{}", list_of(init)))?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))?
        .get("env")?
        .as_array()
}

/// Puts `item` into the env list of `container` in a workload patch (the
/// container entry and the list are made when missing; an entry of the
/// same name is replaced), then orders the list as `order` does (names it
/// does not list keep their places after those it does).
fn insert_env(
    patch: &mut Value,
    kind: &str,
    init: bool,
    container: &str,
    item: Value,
    order: &[&str],
) {
    let mut spec = &mut *patch;
    for segment in pod_spec_pointer(kind).split('/').skip(1) {
        let Some(object) = spec.as_object_mut() else {
            return;
        };
        spec = object.entry(segment).or_insert_with(|| json!({}));
    }
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    let list = spec
        .entry(list_of(init))
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(containers) = list.as_array_mut() else {
        return;
    };
    let index = match containers
        .iter()
        .position(|c| c.get("name").and_then(Value::as_str) == Some(container))
    {
        Some(index) => index,
        None => {
            containers.push(json!({"name": container}));
            containers.len() - 1
        }
    };
    let Some(entry) = containers[index].as_object_mut() else {
        return;
    };
    let env = entry
        .entry("env")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(env) = env.as_array_mut() else {
        return;
    };
    let name = item.get("name").cloned();
    env.retain(|e| e.get("name") != name.as_ref());
    env.push(item);
    let rank = |e: &Value| {
        e.get("name")
            .and_then(Value::as_str)
            .and_then(|n| order.iter().position(|o| *o == n))
            .unwrap_or(usize::MAX)
    };
    env.sort_by_key(rank);
}

/// For a fix about to be applied to `live`: keeps the prior state of the
/// variables its actions restore by reference, which `patch::restore_patch`
/// on the stored (value-less) patches cannot see. A variable `live` does
/// not have needs nothing (the rollback releases it, which removes it); one
/// set from a Secret or ConfigMap (`valueFrom`) is copied into `restore` as
/// it is; one with a literal value is kept by reference to the revision
/// that holds `live`'s template, returned for the snapshot.
pub async fn snapshot_env(
    client: &Client,
    key: &ApprovalKey,
    namespace: &str,
    target: &WorkloadRef,
    live: &Value,
    actions: &[Action],
    restore: &mut Value,
) -> Result<Vec<EnvFromRevision>, ReferenceError> {
    // The variables whose prior literal values are kept by reference:
    // those the actions restore by reference, and any secret-like literal
    // `restore_patch` copied from `live` for a variable a plain revert sets.
    let mut by_reference = take_secret_env(restore, &target.kind);
    let mut kept = Vec::new();
    let mut current = None;
    for reference in actions.iter().flat_map(|a| &a.env_from_revision) {
        let live_env = live
            .pointer(pod_spec_pointer(&target.kind))
            .and_then(|spec| spec.get(list_of(reference.init)))
            .and_then(Value::as_array)
            .and_then(|list| {
                list.iter().find(|c| {
                    c.get("name").and_then(Value::as_str) == Some(reference.container.as_str())
                })
            })
            .and_then(|c| c.get("env"))
            .and_then(Value::as_array);
        let Some(item) = live_env
            .into_iter()
            .flatten()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(reference.name.as_str()))
        else {
            continue;
        };
        if item.get("value").is_none() {
            let order: Vec<&str> = live_env
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("name").and_then(Value::as_str))
                .collect();
            insert_env(
                restore,
                &target.kind,
                reference.init,
                &reference.container,
                item.clone(),
                &order,
            );
            continue;
        }
        by_reference.push((
            reference.init,
            reference.container.clone(),
            reference.name.clone(),
        ));
    }
    by_reference.sort();
    by_reference.dedup();
    for (init, container, name) in by_reference {
        if current.is_none() {
            current = Some(current_revision(client, namespace, target, live).await?);
        }
        let unkeepable = |why: &str| ReferenceError::Snapshot {
            name: name.clone(),
            container: container.clone(),
            why: why.to_string(),
        };
        let mut revision = current.as_ref().and_then(|c| c.clone()).ok_or_else(|| {
            unkeepable(
                "no ReplicaSet, ControllerRevision or Job holds the workload's current \
                     template",
            )
        })?;
        revision.digest = key.revision_digest(&revision.template);
        let pinned = revision
            .reference()
            .ok_or_else(|| unkeepable("the revision holding the current template has no digest"))?;
        kept.push(EnvFromRevision {
            container,
            init,
            name,
            revision: pinned,
        });
    }
    Ok(kept)
}

/// Removes from a restore patch every env item with a secret-like literal
/// value, returning (init, container, name) of each.
fn take_secret_env(restore: &mut Value, kind: &str) -> Vec<(bool, String, String)> {
    let mut taken = Vec::new();
    let Some(spec) = restore.pointer_mut(pod_spec_pointer(kind)) else {
        return taken;
    };
    for init in [false, true] {
        let Some(containers) = spec.get_mut(list_of(init)).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) else {
                continue;
            };
            env.retain(|item| {
                let var = item.get("name").and_then(Value::as_str).unwrap_or_default();
                let secret = item
                    .get("value")
                    .and_then(Value::as_str)
                    .is_some_and(|value| is_secret_env(var, value));
                if secret {
                    taken.push((init, name.clone(), var.to_string()));
                }
                !secret
            });
        }
    }
    taken
}

#[cfg(test)]
mod tests;
