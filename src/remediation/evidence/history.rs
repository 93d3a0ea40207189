//! The rollout history: earlier revisions of the workload's template
//! (ReplicaSets or ControllerRevisions), what changed against the current
//! one, and whether each ran healthily.
use super::*;

/// Earlier revisions of the workload's template, newest first.
///
/// Deployments keep one ReplicaSet per template (revision in the
/// `deployment.kubernetes.io/revision` annotation); StatefulSets and
/// DaemonSets keep ControllerRevisions. The revision whose template equals
/// the current one is the current revision and is left out.
///
/// `healthy` heuristic: a revision is healthy when it has Ready pods at the
/// time of gathering: its ReplicaSet reports `readyReplicas > 0` or
/// `availableReplicas > 0`, or (ControllerRevisions) a Ready pod of the
/// workload carries its `controller-revision-hash`. During a failed rollout
/// the controllers keep the previous revision's pods running, so the
/// revision that worked is seen serving. A revision already scaled to zero
/// cannot be observed and counts as not healthy: proposing nothing is
/// better than rolling back to a revision no one saw working.
pub(super) async fn earlier_revisions(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    live: &Value,
    current: &PodTemplateSpec,
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
                .filter_map(|rs| replicaset_revision(rs, &current))
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
                .filter_map(|cr| controller_revision(cr, &current, &serving))
                .collect()
        }
        _ => Vec::new(),
    };
    revisions.retain(|r| !r.changed.is_empty());
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

pub(super) fn replicaset_revision(rs: &ReplicaSet, current: &Value) -> Option<RevisionTemplate> {
    let revision = rs
        .metadata
        .annotations
        .as_ref()?
        .get(DEPLOYMENT_REVISION)?
        .parse()
        .ok()?;
    let template = normalized_template(rs.spec.as_ref()?.template.as_ref()?);
    let status = rs.status.as_ref();
    let healthy = status.is_some_and(|s| {
        s.ready_replicas.unwrap_or(0) > 0 || s.available_replicas.unwrap_or(0) > 0
    });
    Some(RevisionTemplate {
        revision,
        source: rs.metadata.name.clone().unwrap_or_default(),
        changed: template_changes(&template, current),
        template,
        healthy,
    })
}

pub(super) fn controller_revision(
    cr: &ControllerRevision,
    current: &Value,
    serving: &BTreeSet<String>,
) -> Option<RevisionTemplate> {
    let name = cr.metadata.name.clone()?;
    // Both controllers store `{"spec": {"template": {..., "$patch": "replace"}}}`.
    let mut raw = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(object) = raw.as_object_mut() {
        object.remove("$patch");
    }
    let template: PodTemplateSpec = serde_json::from_value(raw).ok()?;
    let template = normalized_template(&template);
    // StatefulSet pods carry the full revision name, DaemonSet pods only the hash.
    let healthy = serving
        .iter()
        .any(|hash| *hash == name || name.ends_with(&format!("-{hash}")));
    Some(RevisionTemplate {
        revision: cr.revision,
        source: name,
        changed: template_changes(&template, current),
        template,
        healthy,
    })
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

// ---------------------------------------------------------------- template
