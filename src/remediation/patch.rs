//! Server-side-apply patches as data: merging a partial object into a live
//! object the way the API server's apply does for the fields fixes touch,
//! listing the field-level changes, and building the patch that restores
//! the prior values.
//!
//! The controller trusts the API server's dry run for the real merge; this
//! local merge serves offline checks (`llm propose` without a cluster) and
//! guards, and the diff/restore logic works on either result.
use serde_json::{Map, Value};

use super::crd::FieldChange;

/// Lists whose items are identified by a key field, as in the Kubernetes
/// schema's `x-kubernetes-list-map-keys`, for the lists a fix may touch.
fn list_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "imagePullSecrets"
        | "volumes" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    }
}

/// Merges `patch` (a partial object) into `live`, returning the result.
/// Maps merge recursively; keyed lists merge item by key; other values replace.
pub fn merge_apply(live: &Value, patch: &Value) -> Value {
    merge_value(live, patch, None)
}

fn merge_value(live: &Value, patch: &Value, field: Option<&str>) -> Value {
    match (live, patch) {
        (Value::Object(l), Value::Object(p)) => {
            let mut out = l.clone();
            for (key, value) in p {
                let merged = match l.get(key) {
                    Some(existing) => merge_value(existing, value, Some(key)),
                    None => value.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(p)) => match field.and_then(list_key) {
            Some(key) => merge_keyed_list(l, p, key),
            None => patch.clone(),
        },
        _ => patch.clone(),
    }
}

fn merge_keyed_list(live: &[Value], patch: &[Value], key: &str) -> Value {
    let mut out: Vec<Value> = live.to_vec();
    for item in patch {
        let id = item.get(key);
        match out
            .iter_mut()
            .find(|existing| id.is_some() && existing.get(key) == id)
        {
            Some(existing) => *existing = merge_value(existing, item, None),
            None => out.push(item.clone()),
        }
    }
    Value::Array(out)
}

/// Field-level changes from `before` to `after`, under `root` (e.g. "spec").
/// Keyed list items are addressed by key: `spec.template.spec.containers[app].image`.
pub fn diff(before: &Value, after: &Value, root: &str) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    diff_into(
        before.get(root).unwrap_or(&Value::Null),
        after.get(root).unwrap_or(&Value::Null),
        root,
        None,
        &mut changes,
    );
    changes
}

fn render(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn diff_into(
    before: &Value,
    after: &Value,
    path: &str,
    field: Option<&str>,
    out: &mut Vec<FieldChange>,
) {
    if before == after {
        return;
    }
    // A map that appears or disappears is reported leaf by leaf.
    let empty = Value::Object(Map::new());
    let (before, after) = match (before, after) {
        (Value::Null, Value::Object(_)) => (&empty, after),
        (Value::Object(_), Value::Null) => (before, &empty),
        _ => (before, after),
    };
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                diff_into(
                    b.get(key).unwrap_or(&Value::Null),
                    a.get(key).unwrap_or(&Value::Null),
                    &format!("{path}.{key}"),
                    Some(key),
                    out,
                );
            }
        }
        (Value::Array(b), Value::Array(a)) if field.and_then(list_key).is_some() => {
            let key = field.and_then(list_key).unwrap_or("name");
            let ids: Vec<&Value> = {
                let mut ids: Vec<&Value> = Vec::new();
                for item in b.iter().chain(a.iter()) {
                    if let Some(id) = item.get(key)
                        && !ids.contains(&id)
                    {
                        ids.push(id);
                    }
                }
                ids
            };
            for id in ids {
                let find = |list: &'_ [Value]| -> Value {
                    list.iter()
                        .find(|item| item.get(key) == Some(id))
                        .cloned()
                        .unwrap_or(Value::Null)
                };
                let label = render(id).unwrap_or_default();
                diff_into(&find(b), &find(a), &format!("{path}[{label}]"), None, out);
            }
        }
        _ => out.push(FieldChange {
            path: path.to_string(),
            from: render(before),
            to: render(after),
        }),
    }
}

/// The paths a patch sets, as leaf paths with keyed list items addressed by
/// key (`spec.template.spec.containers[app].resources.limits.memory`).
/// The identity fields of the object and of keyed items are not listed.
pub fn touched_paths(patch: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Object(map) = patch {
        for (key, value) in map {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            collect_paths(value, key, Some(key), &mut out);
        }
        if let Some(Value::Object(meta)) = map.get("metadata") {
            for key in meta.keys() {
                if key != "name" && key != "namespace" {
                    collect_paths(&meta[key], &format!("metadata.{key}"), Some(key), &mut out);
                }
            }
        }
    }
    out
}

fn collect_paths(value: &Value, path: &str, field: Option<&str>, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                collect_paths(child, &format!("{path}.{key}"), Some(key), out);
            }
        }
        Value::Array(items) => match field.and_then(list_key) {
            Some(key) => {
                for item in items {
                    let label = item.get(key).and_then(render).unwrap_or_default();
                    let item_path = format!("{path}[{label}]");
                    match item {
                        Value::Object(fields) if fields.len() > 1 => {
                            for (k, child) in fields.iter().filter(|(k, _)| k.as_str() != key) {
                                collect_paths(child, &format!("{item_path}.{k}"), Some(k), out);
                            }
                        }
                        _ => out.push(item_path),
                    }
                }
            }
            None => out.push(path.to_string()),
        },
        _ => out.push(path.to_string()),
    }
}

/// A server-side-apply patch that, applied by the same field manager,
/// restores `live`'s values of every field `patch` sets. A field absent
/// from `live` is left out, so the apply releases it and it disappears.
pub fn restore_patch(live: &Value, patch: &Value) -> Value {
    let mut out = Map::new();
    for key in ["apiVersion", "kind"] {
        if let Some(v) = patch.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(meta) = patch.get("metadata") {
        let mut m = Map::new();
        for key in ["name", "namespace"] {
            if let Some(v) = meta.get(key) {
                m.insert(key.into(), v.clone());
            }
        }
        out.insert("metadata".into(), Value::Object(m));
    }
    if let (Some(Value::Object(p)), Some(l)) = (patch.get("spec").cloned(), live.get("spec"))
        && let Some(spec) = restore_value(l, &Value::Object(p), None)
    {
        out.insert("spec".into(), spec);
    }
    Value::Object(out)
}

fn restore_value(live: &Value, patch: &Value, field: Option<&str>) -> Option<Value> {
    match (live, patch) {
        (Value::Object(l), Value::Object(p)) => {
            let mut out = Map::new();
            for (key, value) in p {
                if let Some(existing) = l.get(key)
                    && let Some(restored) = restore_value(existing, value, Some(key))
                {
                    out.insert(key.clone(), restored);
                }
            }
            Some(Value::Object(out))
        }
        (Value::Array(l), Value::Array(p)) => match field.and_then(list_key) {
            Some(key) => {
                let items: Vec<Value> = p
                    .iter()
                    .filter_map(|item| {
                        let id = item.get(key)?;
                        let existing = l.iter().find(|e| e.get(key) == Some(id))?;
                        let mut restored = restore_value(existing, item, None)?;
                        if let Value::Object(map) = &mut restored {
                            map.insert(key.to_string(), id.clone());
                        }
                        Some(restored)
                    })
                    .collect();
                Some(Value::Array(items))
            }
            None => Some(live.clone()),
        },
        (existing, _) => Some(existing.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:bad", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "busybox:1.36.1"}
            ]}}}
        })
    }

    fn image_patch(image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})
    }

    #[test]
    fn merge_changes_one_container_by_name_and_keeps_the_rest() {
        let merged = merge_apply(&live(), &image_patch("nginx:1.25.5"));
        let containers = &merged["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:1.25.5");
        assert_eq!(
            containers[0]["env"][0]["value"], "1",
            "untouched fields survive"
        );
        assert_eq!(containers[1]["image"], "busybox:1.36.1");
        assert_eq!(merged["spec"]["replicas"], 3);
    }

    #[test]
    fn diff_addresses_containers_by_name() {
        let after = merge_apply(&live(), &image_patch("nginx:1.25.5"));
        let changes = diff(&live(), &after, "spec");
        assert_eq!(
            changes,
            vec![FieldChange {
                path: "spec.template.spec.containers[app].image".into(),
                from: Some("nginx:bad".into()),
                to: Some("nginx:1.25.5".into()),
            }]
        );
    }

    #[test]
    fn diff_reports_added_fields_with_no_from() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "resources": {"limits": {"memory": "64Mi"}}}]}}}});
        let changes = diff(&live(), &merge_apply(&live(), &patch), "spec");
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].path,
            "spec.template.spec.containers[app].resources.limits.memory"
        );
        assert_eq!(changes[0].from, None);
        assert_eq!(changes[0].to.as_deref(), Some("64Mi"));
    }

    #[test]
    fn touched_paths_lists_leaves_without_identity_fields() {
        let mut patch = image_patch("nginx:1.25.5");
        patch["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "B", "value": "2"}]);
        let paths = touched_paths(&patch);
        assert_eq!(
            paths,
            vec![
                "spec.template.spec.containers[app].env[B].value",
                "spec.template.spec.containers[app].image",
            ]
        );
        let meta = json!({"metadata": {"name": "web", "labels": {"x": "y"}}});
        assert_eq!(touched_paths(&meta), vec!["metadata.labels.x"]);
    }

    #[test]
    fn restore_patch_carries_prior_values_and_drops_new_fields() {
        let mut patch = image_patch("nginx:1.25.5");
        patch["spec"]["template"]["spec"]["containers"][0]["resources"] =
            json!({"limits": {"memory": "64Mi"}});
        let restore = restore_patch(&live(), &patch);
        assert_eq!(
            restore,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"template": {"spec": {"containers": [
                       {"name": "app", "image": "nginx:bad"}]}}}})
        );
        // Applying the fix then the restore gives the original values back.
        let fixed = merge_apply(&live(), &patch);
        let back = merge_apply(&fixed, &restore);
        assert_eq!(
            back["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:bad"
        );
    }
}
