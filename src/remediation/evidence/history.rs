//! The rollout history: earlier revisions of the workload's template
//! (ReplicaSets, ControllerRevisions, a CronJob's Jobs), what changed
//! against the current one, and whether each ran healthily.
//!
//! # "Ran healthily"
//!
//! A revision counts as healthy only when something showed it working:
//!
//! - **Ready now**: a ReplicaSet reports `readyReplicas > 0` or
//!   `availableReplicas > 0`; a Ready pod of a StatefulSet or DaemonSet
//!   carries the ControllerRevision's `controller-revision-hash`. During a
//!   failed rollout the controllers keep some of the previous revision's
//!   pods running (a Deployment always; a StatefulSet or DaemonSet with
//!   more than one pod), so the revision that worked is seen serving.
//! - **Seen Ready by the operator**: the operator's pod watch saw a pod of
//!   the revision Ready for at least [`MIN_READY`] (see [`ReadyRevisions`]).
//!   A one-replica StatefulSet or a one-node DaemonSet replaces its only
//!   pod, so once the new revision fails nothing of the old one is left to
//!   look at; the operator remembers that it saw it working. The memory
//!   lasts as long as the replica leads (a restarted or newly elected
//!   operator has not seen what ran before it), and [`MIN_READY`] keeps a
//!   container that is Ready for a moment before it crashes from counting.
//! - **A CronJob's Job succeeded** (`status.succeeded > 0` or a `Complete`
//!   condition): the Job is the CronJob's own record of a run that worked.
//!
//! Not used: a StatefulSet's `status.currentRevision`. The controller sets
//! it to the first revision when the StatefulSet is created and advances it
//! when a rollout completes with zero replicas, so it proves nothing about
//! pods that ran. A revision nobody saw working counts as not healthy:
//! proposing nothing is better than going back to a revision no one saw
//! working.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::SignedDuration;

use super::*;
use crate::remediation::approval::ApprovalKey;
use crate::remediation::crd::RevisionRef;

/// How long a pod must have been Ready for the operator to count its
/// revision as one that ran healthily.
pub const MIN_READY: SignedDuration = SignedDuration::from_secs(10);

/// Revisions remembered at most; beyond it the oldest sightings go first.
const MAX_READY_REVISIONS: usize = 50_000;

/// Revisions whose pods the operator saw Ready for at least [`MIN_READY`],
/// by the uid of the pod's controller (a StatefulSet, DaemonSet or
/// ReplicaSet) and the pod's revision label (`controller-revision-hash`, or
/// `pod-template-hash`). Filled from the pod watch (`stores`), read when a
/// diagnosis judges the history. Cloning shares it.
#[derive(Clone, Default)]
pub struct ReadyRevisions(Arc<Mutex<HashMap<(String, String), Timestamp>>>);

impl std::fmt::Debug for ReadyRevisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyRevisions")
            .field("remembered", &self.len())
            .finish()
    }
}

impl ReadyRevisions {
    /// Records `pod`'s revision when the pod has been Ready for at least
    /// [`MIN_READY`] at `now`.
    pub fn observe(&self, pod: &Pod, now: Timestamp) {
        let Some(labels) = pod.metadata.labels.as_ref() else {
            return;
        };
        let Some(hash) = labels
            .get("controller-revision-hash")
            .or_else(|| labels.get("pod-template-hash"))
        else {
            return;
        };
        let Some(controller) = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
        else {
            return;
        };
        let since = pod
            .status
            .as_ref()
            .and_then(crate::k8s::pod::ready_condition)
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref());
        let Some(since) = since else {
            return;
        };
        if now.duration_since(since.0) < MIN_READY {
            return;
        }
        let Ok(mut seen) = self.0.lock() else {
            return;
        };
        seen.insert((controller.uid.clone(), hash.clone()), now);
        if seen.len() > MAX_READY_REVISIONS {
            // Keep the newest three quarters.
            let mut times: Vec<Timestamp> = seen.values().copied().collect();
            times.sort_unstable();
            let cut = times[MAX_READY_REVISIONS / 4];
            seen.retain(|_, at| *at >= cut);
        }
    }

    /// Whether a pod of `controller_uid` with a revision label that
    /// `matches` was seen Ready.
    pub fn seen(&self, controller_uid: &str, matches: impl Fn(&str) -> bool) -> bool {
        self.0.lock().is_ok_and(|seen| {
            seen.keys()
                .any(|(uid, hash)| uid == controller_uid && matches(hash))
        })
    }

    /// How many revisions are remembered.
    pub fn len(&self) -> usize {
        self.0.lock().map(|seen| seen.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Earlier revisions of the workload's template, newest first.
///
/// Deployments keep one ReplicaSet per template (revision in the
/// `deployment.kubernetes.io/revision` annotation); StatefulSets and
/// DaemonSets keep ControllerRevisions; a CronJob keeps its last Jobs
/// (`successfulJobsHistoryLimit`, `failedJobsHistoryLimit`). The revision
/// whose template equals the current one is the current revision and is
/// left out. See the module documentation for `healthy`.
pub(super) async fn earlier_revisions(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    live: &Value,
    current: &PodTemplateSpec,
    seen: &ReadyRevisions,
) -> Result<Vec<RevisionTemplate>, EvidenceError> {
    let mut revisions = all_revisions(client, namespace, workload, live, current, seen).await?;
    revisions.retain(|r| !r.changed.is_empty());
    Ok(revisions)
}

/// Every revision of the workload's template the cluster keeps, the
/// current one included (with nothing `changed`), newest first.
pub(super) async fn all_revisions(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    live: &Value,
    current: &PodTemplateSpec,
    seen: &ReadyRevisions,
) -> Result<Vec<RevisionTemplate>, EvidenceError> {
    let current = normalized_template(current);
    let list_error = |what: &'static str| {
        move |source| EvidenceError::List {
            what,
            workload: describe(namespace, workload),
            source: Box::new(source),
        }
    };
    // An empty selector lists everything; ownership filters below.
    let params = ListParams::default().labels_from(&pod_selector(live));
    let mut revisions: Vec<RevisionTemplate> = match workload.kind.as_str() {
        "Deployment" => {
            let api: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
            let sets = api.list(&params).await.map_err(list_error("ReplicaSets"))?;
            sets.items
                .iter()
                .filter(|rs| controlled_by(&rs.metadata, &workload.uid))
                .filter_map(|rs| replicaset_revision(rs, &current, seen))
                .collect()
        }
        "StatefulSet" | "DaemonSet" => {
            let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
            let list = api
                .list(&params)
                .await
                .map_err(list_error("ControllerRevisions"))?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let pods = pods.list(&params).await.map_err(list_error("Pods"))?;
            let serving = ready_revision_hashes(&pods.items);
            list.items
                .iter()
                .filter(|cr| controlled_by(&cr.metadata, &workload.uid))
                .filter_map(|cr| controller_revision(cr, &current, &serving, seen))
                .collect()
        }
        "CronJob" => {
            // A CronJob's Jobs carry the job template's labels, not its pod
            // template's: list them all and keep the CronJob's own.
            let api: Api<Job> = Api::namespaced(client.clone(), namespace);
            let jobs = api
                .list(&ListParams::default())
                .await
                .map_err(list_error("Jobs"))?;
            jobs.items
                .iter()
                .filter(|job| controlled_by(&job.metadata, &workload.uid))
                .filter_map(|job| job_revision(job, &current))
                .collect()
        }
        _ => Vec::new(),
    };
    revisions.sort_by_key(|r| std::cmp::Reverse(r.revision));
    Ok(revisions)
}

pub(super) fn controlled_by(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> bool {
    metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

fn revision_of(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
    api_version: &str,
    revision: i64,
    template: Value,
    current: &Value,
    healthy: bool,
) -> RevisionTemplate {
    RevisionTemplate {
        revision,
        source: metadata.name.clone().unwrap_or_default(),
        source_kind: kind.to_string(),
        source_api_version: api_version.to_string(),
        source_uid: metadata.uid.clone().unwrap_or_default(),
        digest: String::new(),
        changed: template_changes(&template, current),
        template,
        healthy,
    }
}

/// A ReplicaSet's normalised pod template.
fn replicaset_template(rs: &ReplicaSet) -> Option<Value> {
    Some(normalized_template(rs.spec.as_ref()?.template.as_ref()?))
}

pub(super) fn replicaset_revision(
    rs: &ReplicaSet,
    current: &Value,
    seen: &ReadyRevisions,
) -> Option<RevisionTemplate> {
    let revision = rs
        .metadata
        .annotations
        .as_ref()?
        .get(DEPLOYMENT_REVISION)?
        .parse()
        .ok()?;
    let template = replicaset_template(rs)?;
    let status = rs.status.as_ref();
    let ready_now = status.is_some_and(|s| {
        s.ready_replicas.unwrap_or(0) > 0 || s.available_replicas.unwrap_or(0) > 0
    });
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    // A ReplicaSet has one template: any of its pods seen Ready counts.
    let healthy = ready_now || (!uid.is_empty() && seen.seen(uid, |_| true));
    Some(revision_of(
        &rs.metadata,
        "ReplicaSet",
        "apps/v1",
        revision,
        template,
        current,
        healthy,
    ))
}

/// A ControllerRevision's normalised pod template. Both controllers store
/// `{"spec": {"template": {..., "$patch": "replace"}}}`.
fn controller_revision_template(cr: &ControllerRevision) -> Option<Value> {
    let mut raw = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(object) = raw.as_object_mut() {
        object.remove("$patch");
    }
    let template: PodTemplateSpec = serde_json::from_value(raw).ok()?;
    Some(normalized_template(&template))
}

pub(super) fn controller_revision(
    cr: &ControllerRevision,
    current: &Value,
    serving: &BTreeSet<String>,
    seen: &ReadyRevisions,
) -> Option<RevisionTemplate> {
    let name = cr.metadata.name.clone()?;
    let template = controller_revision_template(cr)?;
    // StatefulSet pods carry the full revision name, DaemonSet pods only the hash.
    let is_this = |hash: &str| hash == name || name.ends_with(&format!("-{hash}"));
    let owner = cr
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
        .unwrap_or_default();
    let healthy = serving.iter().any(|hash| is_this(hash))
        || (!owner.is_empty() && seen.seen(owner, is_this));
    Some(revision_of(
        &cr.metadata,
        "ControllerRevision",
        "apps/v1",
        cr.revision,
        template,
        current,
        healthy,
    ))
}

/// A Job's normalised pod template.
fn job_template(job: &Job) -> Option<Value> {
    Some(normalized_template(&job.spec.as_ref()?.template))
}

/// One of a CronJob's Jobs as a revision of its job template: numbered by
/// its creation time, healthy when it succeeded.
pub(super) fn job_revision(job: &Job, current: &Value) -> Option<RevisionTemplate> {
    let created = job.metadata.creation_timestamp.as_ref()?.0.as_second();
    let template = job_template(job)?;
    let status = job.status.as_ref();
    let succeeded = status.is_some_and(|s| {
        s.succeeded.unwrap_or(0) > 0
            || s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Complete" && c.status == "True")
    });
    Some(revision_of(
        &job.metadata,
        "Job",
        "batch/v1",
        created,
        template,
        current,
        succeeded,
    ))
}

/// `controller-revision-hash` labels of the Ready pods.
pub(super) fn ready_revision_hashes(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|pod| pod_is_ready(pod))
        .filter_map(|pod| {
            pod.metadata
                .labels
                .as_ref()?
                .get("controller-revision-hash")
                .cloned()
        })
        .collect()
}

/// Why a referenced revision cannot give a value back.
#[derive(Debug, thiserror::Error)]
pub enum RevisionLookupError {
    #[error("{kind} {name} (revision {revision}) no longer exists")]
    Gone {
        kind: String,
        name: String,
        revision: i64,
    },
    #[error("{kind} {name} was replaced (uid {found}, not {expected})")]
    Replaced {
        kind: String,
        name: String,
        found: String,
        expected: String,
    },
    #[error("{kind} {name} is not a revision of this workload")]
    NotOwned { kind: String, name: String },
    #[error("{kind} {name} holds no readable pod template")]
    Unreadable { kind: String, name: String },
    #[error("{kind} {name} (revision {revision}) changed since the proposal: its digest differs")]
    Changed {
        kind: String,
        name: String,
        revision: i64,
    },
    #[error("{kind} is not a kind of revision the operator reads")]
    UnknownKind { kind: String },
    #[error("reading {kind} {name}: {source}")]
    Api {
        kind: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl RevisionLookupError {
    /// A transient API failure, worth a retry; every other error is final.
    pub fn is_transient(&self) -> bool {
        matches!(self, RevisionLookupError::Api { .. })
    }
}

/// Reads the revision `reference` names and returns its normalised pod
/// template, checked to be the object it pins (uid), a revision of the
/// workload `owner_uid`, and unchanged (its digest under `key`).
pub async fn fetch_revision_template(
    client: &Client,
    namespace: &str,
    owner_uid: &str,
    reference: &RevisionRef,
    key: &ApprovalKey,
) -> Result<Value, RevisionLookupError> {
    let kind = reference.kind.clone();
    let name = reference.name.clone();
    let read = match (reference.api_version.as_str(), kind.as_str()) {
        ("apps/v1", "ControllerRevision") => {
            read_revision(client, namespace, &name, controller_revision_template).await
        }
        ("apps/v1", "ReplicaSet") => {
            read_revision(client, namespace, &name, replicaset_template).await
        }
        ("batch/v1", "Job") => read_revision(client, namespace, &name, job_template).await,
        _ => return Err(RevisionLookupError::UnknownKind { kind }),
    };
    let (metadata, template) = read
        .map_err(|source| RevisionLookupError::Api {
            kind: kind.clone(),
            name: name.clone(),
            source: Box::new(source),
        })?
        .ok_or_else(|| RevisionLookupError::Gone {
            kind: kind.clone(),
            name: name.clone(),
            revision: reference.revision,
        })?;
    check_revision(&metadata, template, owner_uid, reference, key)
}

/// The object `name` of kind `K` (if it exists): its metadata and its
/// normalised pod template, as `template_of` reads it.
async fn read_revision<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    template_of: fn(&K) -> Option<Value>,
) -> Result<
    Option<(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        Option<Value>,
    )>,
    kube::Error,
>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .get_opt(name)
        .await?
        .map(|object| (object.meta().clone(), template_of(&object))))
}

/// The checks of [`fetch_revision_template`] on an object already read.
pub(super) fn check_revision(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    template: Option<Value>,
    owner_uid: &str,
    reference: &RevisionRef,
    key: &ApprovalKey,
) -> Result<Value, RevisionLookupError> {
    let (kind, name) = (reference.kind.clone(), reference.name.clone());
    let found = metadata.uid.clone().unwrap_or_default();
    if found != reference.uid {
        return Err(RevisionLookupError::Replaced {
            kind,
            name,
            found,
            expected: reference.uid.clone(),
        });
    }
    if !controlled_by(metadata, owner_uid) {
        return Err(RevisionLookupError::NotOwned { kind, name });
    }
    let template = template.ok_or_else(|| RevisionLookupError::Unreadable {
        kind: kind.clone(),
        name: name.clone(),
    })?;
    if key.revision_digest(&template) != reference.digest {
        return Err(RevisionLookupError::Changed {
            kind,
            name,
            revision: reference.revision,
        });
    }
    Ok(template)
}

/// The fields in which `old` differs from `current` (both normalised
/// `PodTemplateSpec`s): `containers[app].image`, `initContainers[setup]`
/// (added or removed), pod-level fields (`volumes`) and `metadata.labels`.
/// Names only: values never leave this function.
pub fn template_changes(old: &Value, current: &Value) -> Vec<String> {
    let mut changed = Vec::new();
    for list in ["initContainers", "containers"] {
        let old_containers = containers_by_name(old.pointer(&format!("/spec/{list}")));
        let new_containers = containers_by_name(current.pointer(&format!("/spec/{list}")));
        let names: BTreeSet<&str> = old_containers
            .keys()
            .chain(new_containers.keys())
            .copied()
            .collect();
        for name in names {
            match (old_containers.get(name), new_containers.get(name)) {
                (Some(before), Some(after)) => {
                    for field in differing_keys(before, after) {
                        changed.push(format!("{list}[{name}].{field}"));
                    }
                }
                _ => changed.push(format!("{list}[{name}]")),
            }
        }
    }
    let (old_spec, new_spec) = (
        old.get("spec").unwrap_or(&Value::Null),
        current.get("spec").unwrap_or(&Value::Null),
    );
    for field in differing_keys(old_spec, new_spec) {
        if field != "containers" && field != "initContainers" {
            changed.push(field);
        }
    }
    for field in ["labels", "annotations"] {
        let path = format!("/metadata/{field}");
        if old.pointer(&path) != current.pointer(&path) {
            changed.push(format!("metadata.{field}"));
        }
    }
    changed
}

pub(super) fn containers_by_name(list: Option<&Value>) -> BTreeMap<&str, &Value> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("name")?.as_str()?, c)))
        .collect()
}

/// Top-level keys of two objects whose values differ (missing = null).
pub(super) fn differing_keys(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|key| key.to_string())
        .collect()
}

/// Container name → image in a `PodTemplateSpec` (init containers too).
pub fn template_images(template: &Value) -> BTreeMap<String, String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| containers_by_name(template.pointer(&format!("/spec/{list}"))))
        .filter_map(|(name, c)| Some((name.to_string(), c.get("image")?.as_str()?.to_string())))
        .collect()
}
