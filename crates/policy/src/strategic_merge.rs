//! `mutate.patchStrategicMerge`: merges an overlay into the resource,
//! honouring conditional `(key)` and global `<(key)` anchors (apply only
//! where they match) and add-if-not-present `+(key)` anchors. Lists of maps
//! merge by `name`; other lists are replaced. A `null` value removes its
//! key. The Kubernetes directives `$patch: replace` (a map replaces the
//! resource's map instead of merging; a `{$patch: replace}` list entry
//! makes the other entries replace the list) and `$patch: delete` (a map
//! removes its key; a named list entry removes the element of that name)
//! are honoured.

use serde_json::{Map, Value};

use crate::pattern::anchor::{Anchor, AnchorKind};
use crate::pattern::{PatternOutcome, match_pattern};

/// Why a merge at some level did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotApplied {
    /// A conditional anchor did not match: skip this branch only.
    Condition,
    /// A global anchor did not match: skip the whole patch.
    Global,
}

/// Applies `patch` to `resource`. `Err(NotApplied::Global)` means the whole
/// patch must be discarded.
pub fn apply_patch(resource: &Value, patch: &Value) -> Result<Value, NotApplied> {
    match merge(resource, patch) {
        Ok(merged) => Ok(merged),
        Err(NotApplied::Condition) => Ok(resource.clone()),
        Err(NotApplied::Global) => Err(NotApplied::Global),
    }
}

fn holds(value: Option<&Value>, condition: &Value) -> bool {
    let Some(value) = value else {
        return false;
    };
    match_pattern(value, condition) == PatternOutcome::Pass
}

/// The key of the Kubernetes strategic-merge directive.
const DIRECTIVE: &str = "$patch";

fn directive(value: &Value) -> Option<&str> {
    value.get(DIRECTIVE).and_then(Value::as_str)
}

fn merge(resource: &Value, patch: &Value) -> Result<Value, NotApplied> {
    match patch {
        Value::Object(_) if directive(patch) == Some("replace") => Ok(strip_anchors(patch)),
        Value::Object(patch_map) => {
            let empty = Map::new();
            let resource_map = resource.as_object().unwrap_or(&empty);
            // Anchors that gate this level are checked first.
            for (key, condition) in patch_map {
                match Anchor::parse(key) {
                    Some(a)
                        if a.kind == AnchorKind::Conditional
                            && !holds(resource_map.get(a.key), condition) =>
                    {
                        return Err(NotApplied::Condition);
                    }
                    Some(a)
                        if a.kind == AnchorKind::Global
                            && resource_map.contains_key(a.key)
                            && !holds(resource_map.get(a.key), condition) =>
                    {
                        return Err(NotApplied::Global);
                    }
                    _ => {}
                }
            }
            let mut result = resource_map.clone();
            for (key, value) in patch_map {
                if key == DIRECTIVE {
                    continue;
                }
                match Anchor::parse(key) {
                    Some(a) if matches!(a.kind, AnchorKind::Conditional | AnchorKind::Global) => {}
                    Some(a) if a.kind == AnchorKind::AddIfNotPresent => {
                        if !result.contains_key(a.key) {
                            result.insert(a.key.to_string(), strip_anchors(value));
                        }
                    }
                    Some(a) => {
                        // Other anchors have no meaning in a merge; use the bare key.
                        merge_key(&mut result, a.key, value)?;
                    }
                    None => merge_key(&mut result, key, value)?,
                }
            }
            Ok(Value::Object(result))
        }
        Value::Array(patch_items) => merge_list(resource, patch_items),
        other => Ok(other.clone()),
    }
}

fn merge_key(result: &mut Map<String, Value>, key: &str, value: &Value) -> Result<(), NotApplied> {
    if value.is_null() || directive(value) == Some("delete") {
        result.remove(key);
        return Ok(());
    }
    let current = result.get(key).cloned().unwrap_or(Value::Null);
    match merge(&current, value) {
        Ok(merged) => {
            result.insert(key.to_string(), merged);
            Ok(())
        }
        Err(NotApplied::Condition) => Ok(()),
        Err(NotApplied::Global) => Err(NotApplied::Global),
    }
}

fn has_anchors(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| Anchor::parse(k).is_some() || has_anchors(v)),
        Value::Array(items) => items.iter().any(has_anchors),
        _ => false,
    }
}

fn merge_list(resource: &Value, patch_items: &[Value]) -> Result<Value, NotApplied> {
    // `{$patch: replace}` among the entries: the others are the new list.
    if patch_items
        .iter()
        .any(|item| directive(item) == Some("replace"))
    {
        return Ok(Value::Array(
            patch_items
                .iter()
                .filter(|item| directive(item).is_none())
                .map(strip_anchors)
                .collect(),
        ));
    }
    let current: Vec<Value> = resource.as_array().cloned().unwrap_or_default();
    let all_maps = !patch_items.is_empty() && patch_items.iter().all(Value::is_object);
    if !all_maps {
        return Ok(Value::Array(
            patch_items.iter().map(strip_anchors).collect(),
        ));
    }
    if patch_items.iter().any(has_anchors) {
        // Anchored list entries apply to every existing element they match.
        // A global anchor in a list holds when any element satisfies it, as
        // in Kyverno: the patch is discarded only when none does.
        let mut result = current;
        for patch_item in patch_items {
            let mut global_failed = false;
            let mut global_held = false;
            for element in result.iter_mut() {
                match merge(element, patch_item) {
                    Ok(merged) => {
                        *element = merged;
                        global_held = true;
                    }
                    Err(NotApplied::Condition) => {}
                    Err(NotApplied::Global) => global_failed = true,
                }
            }
            if global_failed && !global_held {
                return Err(NotApplied::Global);
            }
        }
        return Ok(Value::Array(result));
    }
    if patch_items.iter().all(|item| item.get("name").is_some()) {
        let mut result = current;
        for patch_item in patch_items {
            let name = patch_item.get("name");
            if directive(patch_item) == Some("delete") {
                result.retain(|element| element.get("name") != name);
                continue;
            }
            match result.iter_mut().find(|e| e.get("name") == name) {
                Some(existing) => *existing = merge(existing, patch_item)?,
                None => result.push(strip_anchors(patch_item)),
            }
        }
        return Ok(Value::Array(result));
    }
    Ok(Value::Array(patch_items.to_vec()))
}

/// Removes anchor decorations from keys of values being inserted verbatim.
fn strip_anchors(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, item) in map {
                if key == DIRECTIVE {
                    continue;
                }
                match Anchor::parse(key) {
                    Some(a) if matches!(a.kind, AnchorKind::Conditional | AnchorKind::Global) => {}
                    Some(a) => {
                        out.insert(a.key.to_string(), strip_anchors(item));
                    }
                    None => {
                        out.insert(key.clone(), strip_anchors(item));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(strip_anchors).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn add_if_not_present_only_adds() {
        let patch = json!({"metadata": {"labels": {"+(team)": "core"}}});
        let without = json!({"metadata": {"labels": {}}});
        let with = json!({"metadata": {"labels": {"team": "web"}}});
        assert_eq!(
            apply_patch(&without, &patch).unwrap(),
            json!({"metadata": {"labels": {"team": "core"}}})
        );
        assert_eq!(apply_patch(&with, &patch).unwrap(), with);
    }

    #[test]
    fn conditional_anchor_gates_list_elements() {
        let patch =
            json!({"spec": {"containers": [{"(image)": "*:latest", "imagePullPolicy": "Always"}]}});
        let pod = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx:latest"},
            {"name": "b", "image": "nginx:1.0"}]}});
        let out = apply_patch(&pod, &patch).unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["imagePullPolicy"],
            json!("Always")
        );
        assert!(
            out["spec"]["containers"][1]
                .get("imagePullPolicy")
                .is_none()
        );
    }

    #[test]
    fn merges_named_lists_and_replaces_scalars() {
        let patch = json!({"spec": {"containers": [{"name": "a", "securityContext": {"runAsNonRoot": true}}], "replicas": 2}});
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "replicas": 1}});
        let out = apply_patch(&pod, &patch).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], json!("x"));
        assert_eq!(
            out["spec"]["containers"][0]["securityContext"]["runAsNonRoot"],
            json!(true)
        );
        assert_eq!(out["spec"]["replicas"], json!(2));
    }

    #[test]
    fn patch_directives_replace_and_delete() {
        let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "app", "image": "x"}, {"name": "debug", "image": "y"}],
                     "tolerations": [{"key": "old"}]}});
        let replace_map = json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}});
        assert_eq!(
            apply_patch(&pod, &replace_map).unwrap()["metadata"]["labels"],
            json!({"c": "3"})
        );
        let delete_map = json!({"metadata": {"labels": {"$patch": "delete"}}});
        assert!(
            apply_patch(&pod, &delete_map).unwrap()["metadata"]
                .get("labels")
                .is_none()
        );
        let delete_element =
            json!({"spec": {"containers": [{"name": "debug", "$patch": "delete"}]}});
        assert_eq!(
            apply_patch(&pod, &delete_element).unwrap()["spec"]["containers"],
            json!([{"name": "app", "image": "x"}])
        );
        let replace_list = json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "z"}]}});
        assert_eq!(
            apply_patch(&pod, &replace_list).unwrap()["spec"]["containers"],
            json!([{"name": "only", "image": "z"}])
        );
        // Without a directive, named entries merge and the rest stay.
        let merge_list = json!({"spec": {"containers": [{"name": "app", "image": "new"}]}});
        assert_eq!(
            apply_patch(&pod, &merge_list).unwrap()["spec"]["containers"][1]["name"],
            json!("debug")
        );
    }

    #[test]
    fn global_anchor_discards_patch() {
        let patch = json!({"metadata": {"<(name)": "special-*", "labels": {"x": "y"}}});
        let pod = json!({"metadata": {"name": "plain"}});
        assert_eq!(apply_patch(&pod, &patch), Err(NotApplied::Global));
    }
}
