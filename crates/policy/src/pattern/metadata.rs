//! Wildcard keys under `metadata.labels` / `metadata.annotations` in a
//! pattern (e.g. `=(container.apparmor.security.beta.kubernetes.io/*)`) are
//! expanded to the matching keys of the resource before validation.

use serde_json::{Map, Value};

use super::anchor::{Anchor, strip_anchor};
use crate::wildcard;

/// Returns a rewritten pattern map when it has wildcard label/annotation
/// keys that match resource keys; `None` when nothing needs expanding.
pub fn expand_metadata_wildcards(
    pattern: &Map<String, Value>,
    resource: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    let (pattern_metadata_key, Value::Object(pattern_metadata)) = find_tag(pattern, "metadata")?
    else {
        return None;
    };
    let Some(Value::Object(resource_metadata)) = resource.get("metadata") else {
        return None;
    };
    // Copied only once a key expands: most patterns have no wildcard key,
    // and this runs for every map the walk visits.
    let mut new_metadata: Option<Map<String, Value>> = None;
    for tag in ["labels", "annotations"] {
        let Some((pattern_tag_key, Value::Object(pattern_entries))) =
            find_tag(pattern_metadata, tag)
        else {
            continue;
        };
        let Some(Value::Object(resource_entries)) = resource_metadata.get(tag) else {
            continue;
        };
        if let Some(expanded) = expand_keys(pattern_entries, resource_entries) {
            new_metadata
                .get_or_insert_with(|| pattern_metadata.clone())
                .insert(pattern_tag_key.clone(), Value::Object(expanded));
        }
    }
    let new_metadata = new_metadata?;
    let mut new_pattern = pattern.clone();
    new_pattern.insert(pattern_metadata_key.clone(), Value::Object(new_metadata));
    Some(new_pattern)
}

fn find_tag<'a>(map: &'a Map<String, Value>, tag: &str) -> Option<(&'a String, &'a Value)> {
    map.iter().find(|(key, _)| strip_anchor(key) == tag)
}

/// Replaces each wildcard key with every resource key it matches, keeping
/// the key's anchor. Keys that match nothing stay as they are.
fn expand_keys(
    pattern_entries: &Map<String, Value>,
    resource_entries: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    // Nothing to expand is the common case: decide it before copying.
    if !pattern_entries
        .keys()
        .any(|raw_key| wildcard::contains_wildcard(strip_anchor(raw_key)))
    {
        return None;
    }
    let mut result = Map::new();
    let mut changed = false;
    for (raw_key, value) in pattern_entries {
        let anchor = Anchor::parse(raw_key);
        let bare = anchor.map_or(raw_key.as_str(), |a| a.key);
        if !wildcard::contains_wildcard(bare) {
            result.insert(raw_key.clone(), value.clone());
            continue;
        }
        let wildcard = wildcard::Wildcard::new(bare);
        let matched: Vec<&String> = resource_entries
            .keys()
            .filter(|candidate| wildcard.matches(candidate))
            .collect();
        if matched.is_empty() {
            result.insert(raw_key.clone(), value.clone());
            continue;
        }
        changed = true;
        for resource_key in matched {
            let new_key = match anchor {
                Some(a) => Anchor::render(a.kind, resource_key),
                None => resource_key.clone(),
            };
            result.insert(new_key, value.clone());
        }
    }
    changed.then_some(result)
}
