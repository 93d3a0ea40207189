//! `patchesJson6902`: parses a rule's RFC 6902 operations (YAML or JSON
//! text) and applies them with the `json-patch` crate, with the three
//! tolerances Kyverno applies on top of the RFC:
//! - `add` creates missing parents (a list when the next token is an index
//!   or `-`, a map otherwise), so `/spec/tolerations/-` works on a pod
//!   without tolerations;
//! - a `remove` of a path that does not exist does nothing;
//! - a negative index counts from the end (`-1` is the last element; for
//!   `add`, the position after it).
//!
//! Everything else is an error for the rule: a `replace` or `move` of a
//! missing path, a failed `test`, an index past the end.

use serde_json::{Map, Value};

/// Why a patch could not be parsed or applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Json6902Error {
    #[error("patchesJson6902 does not parse: {0}")]
    Parse(String),
    #[error("operation {index} ({operation}) is invalid: {reason}")]
    Invalid {
        index: usize,
        operation: String,
        reason: String,
    },
    #[error("operation {index} ({operation}) failed: {reason}")]
    Failed {
        index: usize,
        operation: String,
        reason: String,
    },
}

/// Parses the operations: JSON when the text is a JSON list, YAML otherwise
/// (YAML is what policies usually carry in a block string).
pub fn parse(text: &str) -> Result<Vec<Value>, Json6902Error> {
    let trimmed = text.trim_start();
    let parsed: Value = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed)
            .or_else(|_| serde_yaml::from_str(text))
            .map_err(|e: serde_yaml::Error| Json6902Error::Parse(e.to_string()))?
    } else {
        serde_yaml::from_str(text).map_err(|e| Json6902Error::Parse(e.to_string()))?
    };
    operations(parsed)
}

/// Checks that `value` is a list of operations, each a map with `op` and
/// `path`.
pub fn operations(value: Value) -> Result<Vec<Value>, Json6902Error> {
    let Value::Array(items) = value else {
        return Err(Json6902Error::Parse(
            "expected a list of operations".to_string(),
        ));
    };
    for (index, item) in items.iter().enumerate() {
        let invalid = |reason: &str| Json6902Error::Invalid {
            index,
            operation: item.to_string(),
            reason: reason.to_string(),
        };
        let op = item
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("needs an op"))?;
        if !matches!(op, "add" | "remove" | "replace" | "move" | "copy" | "test") {
            return Err(invalid(&format!("unknown op {op:?}")));
        }
        let path = item
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("needs a path"))?;
        decode_pointer(path).map_err(|e| invalid(&e))?;
        if matches!(op, "move" | "copy") {
            let from = item
                .get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("needs a from"))?;
            decode_pointer(from).map_err(|e| invalid(&e))?;
        }
    }
    Ok(items)
}

/// Applies `operations` to a copy of `resource`; all or nothing.
pub fn apply(resource: &Value, operations: &[Value]) -> Result<Value, Json6902Error> {
    let mut document = resource.clone();
    for (index, raw) in operations.iter().enumerate() {
        let failed = |reason: String| Json6902Error::Failed {
            index,
            operation: raw.to_string(),
            reason,
        };
        let Some(operation) = normalize(&mut document, raw).map_err(failed)? else {
            continue;
        };
        let parsed: json_patch::PatchOperation = serde_json::from_value(operation.clone())
            .map_err(|e| Json6902Error::Invalid {
                index,
                operation: raw.to_string(),
                reason: e.to_string(),
            })?;
        json_patch::patch(&mut document, std::slice::from_ref(&parsed))
            .map_err(|e| failed(e.kind.to_string()))?;
    }
    Ok(document)
}

/// Rewrites one operation for the RFC-strict crate: resolves negative
/// indices, creates the parents an `add` needs, and drops (`None`) a
/// `remove` of a missing path.
fn normalize(document: &mut Value, raw: &Value) -> Result<Option<Value>, String> {
    let op = raw.get("op").and_then(Value::as_str).unwrap_or("");
    let path = raw.get("path").and_then(Value::as_str).unwrap_or("");
    let mut tokens = decode_pointer(path)?;
    if op == "add" {
        ensure_parents(document, &tokens);
    }
    resolve_negative_indices(document, &mut tokens, op == "add");
    if op == "remove" && lookup(document, &tokens).is_none() {
        return Ok(None);
    }
    let mut operation = raw.clone();
    if let Some(map) = operation.as_object_mut() {
        map.insert("path".to_string(), Value::String(encode_pointer(&tokens)));
    }
    Ok(Some(operation))
}

/// Splits an RFC 6901 pointer into its decoded tokens (`""` is the root).
fn decode_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("path {pointer:?} does not start with /"));
    };
    Ok(rest
        .split('/')
        .map(|token| token.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn encode_pointer(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|token| format!("/{}", token.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn is_index_token(token: &str) -> bool {
    token == "-" || token.parse::<i64>().is_ok()
}

/// Creates the missing parents of the last token. A missing (or null)
/// entry becomes a list when the token after it is an index, a map
/// otherwise; a new list gets nulls up to the index it is asked for.
fn ensure_parents(document: &mut Value, tokens: &[String]) {
    let mut current = document;
    for (position, token) in tokens.iter().enumerate() {
        let Some(next) = tokens.get(position + 1) else {
            return;
        };
        let fresh = || {
            if is_index_token(next) {
                let padding = next.parse::<usize>().unwrap_or(0);
                Value::Array(vec![Value::Null; padding])
            } else {
                Value::Object(Map::new())
            }
        };
        current = match current {
            Value::Object(map) => {
                let entry = map.entry(token.clone()).or_insert_with(fresh);
                if entry.is_null() {
                    *entry = fresh();
                }
                entry
            }
            Value::Array(items) => match token.parse::<usize>() {
                Ok(index) if index < items.len() => &mut items[index],
                _ => return,
            },
            _ => return,
        };
    }
}

/// Turns `-N` tokens that index a list into positions from its start:
/// `len - N`, or `len + 1 - N` for the last token of an `add` (which
/// inserts before that position).
fn resolve_negative_indices(document: &Value, tokens: &mut [String], is_add: bool) {
    let mut current = Some(document);
    let count = tokens.len();
    for (position, token) in tokens.iter_mut().enumerate() {
        let Some(node) = current else {
            return;
        };
        if let (Value::Array(items), Ok(index)) = (node, token.parse::<i64>())
            && index < 0
        {
            let last_of_add = is_add && position + 1 == count;
            let length = items.len() as i64 + i64::from(last_of_add);
            if index >= -length {
                *token = (length + index).to_string();
            }
        }
        current = child(node, token);
    }
}

fn child<'v>(node: &'v Value, token: &str) -> Option<&'v Value> {
    match node {
        Value::Object(map) => map.get(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

fn lookup<'v>(document: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    tokens
        .iter()
        .try_fold(document, |node, token| child(node, token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"spec": {"containers": [{"name": "a", "image": "x"}]}})
    }

    fn run(resource: &Value, patch: &str) -> Result<Value, Json6902Error> {
        apply(resource, &parse(patch)?)
    }

    #[test]
    fn parses_yaml_and_json_lists() {
        let yaml = "- op: add\n  path: /metadata/labels/a\n  value: b\n";
        let json = r#"[{"op": "add", "path": "/metadata/labels/a", "value": "b"}]"#;
        assert_eq!(parse(yaml).unwrap(), parse(json).unwrap());
        assert!(matches!(
            parse("op: add"),
            Err(Json6902Error::Parse(message)) if message.contains("list")
        ));
        assert!(matches!(
            parse("- op: frobnicate\n  path: /a\n"),
            Err(Json6902Error::Invalid { index: 0, .. })
        ));
        assert!(matches!(
            parse("- op: add\n  path: a\n  value: 1\n"),
            Err(Json6902Error::Invalid { reason, .. }) if reason.contains("does not start with /")
        ));
    }

    #[test]
    fn add_creates_missing_parents() {
        let out = run(
            &pod(),
            "- op: add\n  path: /spec/tolerations/-\n  value: {key: k}\n\
             - op: add\n  path: /metadata/labels/team\n  value: core\n",
        )
        .unwrap();
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "k"}]));
        assert_eq!(out["metadata"]["labels"]["team"], json!("core"));
    }

    #[test]
    fn add_with_dash_and_negative_index_appends() {
        let out = run(
            &pod(),
            "- op: add\n  path: /spec/containers/-\n  value: {name: b}\n\
             - op: add\n  path: /spec/containers/-1\n  value: {name: c}\n",
        )
        .unwrap();
        let names: Vec<&Value> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, [&json!("a"), &json!("b"), &json!("c")]);
        let replaced = run(
            &out,
            "- op: replace\n  path: /spec/containers/-1/name\n  value: last\n",
        )
        .unwrap();
        assert_eq!(replaced["spec"]["containers"][2]["name"], json!("last"));
    }

    #[test]
    fn remove_of_a_missing_path_does_nothing() {
        let out = run(
            &pod(),
            "- op: remove\n  path: /metadata/annotations/x\n\
             - op: remove\n  path: /spec/containers/5\n",
        )
        .unwrap();
        assert_eq!(out, pod());
    }

    #[test]
    fn replace_of_a_missing_path_fails_and_changes_nothing() {
        let error = run(
            &pod(),
            "- op: add\n  path: /metadata/labels/a\n  value: b\n\
             - op: replace\n  path: /spec/nodeName\n  value: n\n",
        )
        .unwrap_err();
        assert!(
            matches!(error, Json6902Error::Failed { index: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn failed_test_operation_fails() {
        let error = run(
            &pod(),
            "- op: test\n  path: /spec/containers/0/image\n  value: y\n",
        )
        .unwrap_err();
        assert!(matches!(error, Json6902Error::Failed { index: 0, .. }));
        assert!(
            run(
                &pod(),
                "- op: test\n  path: /spec/containers/0/image\n  value: x\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn pointer_escapes_round_trip() {
        let out = run(
            &json!({"metadata": {"annotations": {}}}),
            "- op: add\n  path: /metadata/annotations/example.com~1owner\n  value: me\n",
        )
        .unwrap();
        assert_eq!(
            out["metadata"]["annotations"]["example.com/owner"],
            json!("me")
        );
    }
}
