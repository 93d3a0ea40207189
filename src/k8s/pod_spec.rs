//! Where each workload kind keeps its pod spec, and the server-side-apply
//! partial object that changes containers there. Rules, model answers,
//! guardrails and evidence all address containers through these, so they
//! agree on the path for every kind.
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The pod spec inside a workload of this kind, as a dotted path:
/// `spec.template.spec`, a CronJob's `spec.jobTemplate.spec.template.spec`,
/// or a bare Pod's `spec`.
pub fn pod_spec_path(kind: &str) -> &'static str {
    match kind {
        "Pod" => "spec",
        "CronJob" => "spec.jobTemplate.spec.template.spec",
        _ => "spec.template.spec",
    }
}

/// The pod spec as a JSON pointer (`/spec/template/spec`).
pub fn pod_spec_pointer(kind: &str) -> &'static str {
    match kind {
        "Pod" => "/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => "/spec/template/spec",
    }
}

/// The pod template (metadata and spec) as a JSON pointer; "" for a bare
/// Pod, which is its own template.
pub fn pod_template_pointer(kind: &str) -> &'static str {
    match kind {
        "Pod" => "",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => "/spec/template",
    }
}

/// The value at a dotted path (`spec.template.spec`).
pub fn get_dotted<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(value, |v, key| v.get(key))
}

/// The identity of the object a partial object is for.
#[derive(Clone, Copy, Debug)]
pub struct ObjectKey<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
}

/// A server-side-apply partial object of `key` that sets the given container
/// entries (`containers` / `initContainers` → items, each with its `name`)
/// inside the kind's pod spec, and nothing else.
pub fn containers_patch(key: ObjectKey<'_>, lists: BTreeMap<&str, Vec<Value>>) -> Value {
    pod_spec_patch(
        key,
        lists
            .into_iter()
            .map(|(list, items)| (list.to_string(), Value::Array(items)))
            .collect(),
    )
}

/// A server-side-apply partial object of `key` that sets the given fields
/// of the kind's pod spec (containers lists, `securityContext`, `hostPID`,
/// ...), and nothing else.
pub fn pod_spec_patch(key: ObjectKey<'_>, fields: Map<String, Value>) -> Value {
    let mut body = Value::Object(fields);
    for field in pod_spec_path(key.kind).rsplit('.') {
        body = json!({ field: body });
    }
    let mut patch = Map::new();
    patch.insert("apiVersion".into(), json!(key.api_version));
    patch.insert("kind".into(), json!(key.kind));
    patch.insert(
        "metadata".into(),
        json!({"name": key.name, "namespace": key.namespace}),
    );
    if let Value::Object(body) = body {
        patch.extend(body);
    }
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_the_pod_spec_location_agrees_for_each_kind() {
        for kind in ["Pod", "CronJob", "Deployment", "StatefulSet", "Job"] {
            let dotted = pod_spec_path(kind);
            assert_eq!(
                pod_spec_pointer(kind),
                format!("/{}", dotted.replace('.', "/"))
            );
            let template = pod_template_pointer(kind);
            assert_eq!(format!("{template}/spec"), pod_spec_pointer(kind), "{kind}");
        }
    }

    #[test]
    fn a_containers_patch_sets_only_the_given_entries_in_the_kinds_pod_spec() {
        let lists = BTreeMap::from([(
            "initContainers",
            vec![json!({"name": "init", "image": "busybox:1.36.1"})],
        )]);
        let key = ObjectKey {
            api_version: "batch/v1",
            kind: "CronJob",
            name: "nightly",
            namespace: "ops",
        };
        let patch = containers_patch(key, lists);
        assert_eq!(
            patch,
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
                   "metadata": {"name": "nightly", "namespace": "ops"},
                   "spec": {"jobTemplate": {"spec": {"template": {"spec": {
                       "initContainers": [{"name": "init", "image": "busybox:1.36.1"}]}}}}}})
        );
        assert_eq!(
            get_dotted(&patch, "spec.jobTemplate.spec.template.spec")
                .and_then(|s| s.get("initContainers")),
            Some(&json!([{"name": "init", "image": "busybox:1.36.1"}]))
        );
    }
}
