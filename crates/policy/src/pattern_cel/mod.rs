//! Kyverno validation patterns as `ValidatingAdmissionPolicy` CEL, for the
//! patterns whose every outcome the API server can reproduce exactly.
//!
//! The subset: plain keys, equality `=()` and negation `X()` anchors,
//! lists of maps or of scalars, scalar values (see [`scalar`]), wildcard
//! label and annotation keys, and `anyPattern` of such patterns. Without
//! conditional, global or existence anchors a pattern only passes or
//! fails (it never skips and never errors), which is exactly what one CEL
//! validation says. Everything else stays in the webhook, with the reason.
//!
//! The CEL mirrors the engine's walk (`pattern::validate`) node by node
//! and guards every test by the run-time type of the value, so a value of
//! an unexpected type fails where the engine fails instead of raising an
//! error.

mod scalar;
mod term;

#[cfg(test)]
mod agreement_tests;

use serde_json::{Map, Value};

use crate::cel::CelExpression;
use crate::pattern::anchor::{Anchor, AnchorKind, strip_anchor};
use crate::pattern::{PatternOutcome, match_pattern};
use crate::spec::KindSelector;
use crate::wildcard;
use scalar::{FieldType, IS_LIST, IS_MAP, is, scalar_term, value_term};
use term::{Term, literal, select, wildcard_test};

/// Where the pod spec sits in the kinds a rule matches (`spec` of a Pod,
/// `spec.template.spec` of a Deployment...), when all of them agree.
pub fn pod_spec_path(kinds: &[&KindSelector]) -> Option<&'static [&'static str]> {
    const POD: &[&str] = &["spec"];
    const TEMPLATE: &[&str] = &["spec", "template", "spec"];
    const JOB_TEMPLATE: &[&str] = &["spec", "jobTemplate", "spec", "template", "spec"];
    let mut found = None;
    for kind in kinds {
        let (group, path) = match kind.kind.as_str() {
            "Pod" => ("", POD),
            "ReplicationController" => ("", TEMPLATE),
            "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" => ("apps", TEMPLATE),
            "Job" => ("batch", TEMPLATE),
            "CronJob" => ("batch", JOB_TEMPLATE),
            _ => return None,
        };
        let group_matches = kind.group.is_empty() || kind.group == "*" || kind.group == group;
        if !group_matches || !kind.subresource.is_empty() || found.is_some_and(|f| f != path) {
            return None;
        }
        found = Some(path);
    }
    found
}

/// The validation expression of a `pattern` (one entry) or `anyPattern`
/// rule: the object matches one of them, or this is an UPDATE whose old
/// object already failed (the engine does not report a violation that did
/// not change).
pub fn pattern_validation(
    patterns: &[&Value],
    pod_spec: Option<&'static [&'static str]>,
) -> Result<String, String> {
    let walk = Walk { pod_spec };
    let passes = |root: &str| -> Result<Term, String> {
        let mut any = Term::Const(false);
        for pattern in patterns {
            any = any.or(walk.element(root, pattern, &mut Vec::new(), Level::Other, 0)?);
        }
        Ok(any)
    };
    let now = passes("object")?;
    let unchanged_violation = Term::test(r#"request.operation == "UPDATE""#)
        .and(Term::test("oldObject != null"))
        .and(passes("oldObject")?.not());
    Ok(now.or(unchanged_violation).text())
}

/// The stack a translated expression is compiled on: the CEL parser
/// recurses several frames per nested term, and a pattern over every
/// container list nests deeper than the 2 MiB of a tokio worker allows.
pub const COMPILE_STACK: usize = 32 << 20;

/// Compiles a translated expression on a thread of its own with
/// [`COMPILE_STACK`]; translation happens at start-up, never per request.
pub fn compile(source: &str) -> Result<CelExpression, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(COMPILE_STACK)
            .spawn_scoped(scope, || CelExpression::compile(source))
            .map_err(|e| format!("no thread to compile on: {e}"))?
            .join()
            .map_err(|_| "the CEL compiler failed".to_string())?
    })
}

/// Where a map sits, for the engine's expansion of wildcard keys under
/// `metadata.labels` and `metadata.annotations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Other,
    Metadata,
    LabelsOrAnnotations,
}

struct Walk {
    pod_spec: Option<&'static [&'static str]>,
}

impl Walk {
    /// `validate_element`: whether the value of the CEL expression `value`
    /// matches `pattern`. `path` holds the keys from the root (`[]` for a
    /// list item), `depth` the number of enclosing comprehensions.
    fn element(
        &self,
        value: &str,
        pattern: &Value,
        path: &mut Vec<String>,
        level: Level,
        depth: usize,
    ) -> Result<Term, String> {
        match pattern {
            Value::Object(map) => self.map(value, map, path, level, depth),
            Value::Array(items) => self.list(value, items, path, depth),
            scalar => scalar_term(value, scalar, self.field_type(path), depth),
        }
    }

    fn map(
        &self,
        value: &str,
        pattern: &Map<String, Value>,
        path: &mut Vec<String>,
        level: Level,
        depth: usize,
    ) -> Result<Term, String> {
        let mut keys: Vec<&str> = pattern.keys().map(|k| strip_anchor(k)).collect();
        keys.sort_unstable();
        if let Some(twice) = keys.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!("two pattern keys for {:?}", twice[0]));
        }
        let wildcard_keys = level == Level::LabelsOrAnnotations
            && keys.iter().any(|k| wildcard::contains_wildcard(k));
        if wildcard_keys && pattern.len() > 1 {
            // Expanded keys may collide with each other or with literal
            // ones, and the engine then keeps one of them.
            return Err("a wildcard label or annotation key beside other keys".into());
        }
        let mut term = is(IS_MAP, value);
        for (raw, child) in pattern {
            let anchor = Anchor::parse(raw);
            let key = anchor.map_or(raw.as_str(), |a| a.key);
            let kind = anchor.map(|a| a.kind);
            if matches!(kind, Some(AnchorKind::Conditional | AnchorKind::Global)) {
                return Err(format!("the anchor {raw:?}, which can skip the rule"));
            }
            if matches!(
                kind,
                Some(AnchorKind::Existence | AnchorKind::AddIfNotPresent)
            ) {
                return Err(format!("the anchor {raw:?}"));
            }
            let child_level = match (level, key) {
                (_, "metadata") if child.is_object() => Level::Metadata,
                (Level::Metadata, "labels" | "annotations") if child.is_object() => {
                    Level::LabelsOrAnnotations
                }
                _ => Level::Other,
            };
            path.push(key.to_string());
            let key_term = if wildcard_keys {
                self.wildcard_key(value, key, kind, child, path, depth)
            } else {
                self.key(value, key, kind, child, path, child_level, depth)
            };
            path.pop();
            term = term.and(key_term?);
        }
        Ok(term)
    }

    /// One key of a map pattern; `kind` is its anchor (equality, negation
    /// or none).
    #[allow(clippy::too_many_arguments)]
    fn key(
        &self,
        value: &str,
        key: &str,
        kind: Option<AnchorKind>,
        child: &Value,
        path: &mut Vec<String>,
        level: Level,
        depth: usize,
    ) -> Result<Term, String> {
        let present = Term::test(format!("{} in {value}", literal(key)));
        let selected = select(value, key);
        match kind {
            Some(AnchorKind::Negation) => Ok(present.not()),
            Some(_) => {
                let matches = self.element(&selected, child, path, level, depth)?;
                Ok(present.not().or(matches))
            }
            None if child.as_str() == Some("*") => Ok(present.and(not_null(&selected))),
            None => {
                let matches = self.element(&selected, child, path, level, depth)?;
                Ok(Term::when(
                    present,
                    matches,
                    Term::Const(passes_on_null(child)),
                ))
            }
        }
    }

    /// A wildcard key under labels or annotations: it stands for every key
    /// of the value it matches, with its anchor; with no match it is a
    /// literal key that cannot be present (it would match itself).
    fn wildcard_key(
        &self,
        value: &str,
        key: &str,
        kind: Option<AnchorKind>,
        child: &Value,
        path: &mut Vec<String>,
        depth: usize,
    ) -> Result<Term, String> {
        let name = format!("k{depth}");
        let matched = wildcard_test(key, &name);
        let entry = format!("{value}[{name}]");
        match kind {
            Some(AnchorKind::Negation) => Ok(matched.exists(value, &name).not()),
            Some(_) => {
                let matches = self.element(&entry, child, path, Level::Other, depth + 1)?;
                Ok(matched.not().or(matches).for_all(value, &name))
            }
            None => {
                let each = if child.as_str() == Some("*") {
                    not_null(&entry)
                } else {
                    self.element(&entry, child, path, Level::Other, depth + 1)?
                };
                let all = matched.clone().not().or(each).for_all(value, &name);
                let missing = child.as_str() != Some("*") && passes_on_null(child);
                Ok(Term::when(
                    matched.exists(value, &name),
                    all,
                    Term::Const(missing),
                ))
            }
        }
    }

    /// `validate_array`: a list of maps checks every item against the first
    /// map; a list of scalars checks every item against the first scalar.
    fn list(
        &self,
        value: &str,
        items: &[Value],
        path: &mut Vec<String>,
        depth: usize,
    ) -> Result<Term, String> {
        let Some(first) = items.first() else {
            return Ok(Term::Const(false));
        };
        let item = format!("x{depth}");
        path.push("[]".into());
        let each = match first {
            Value::Object(_) => self.element(&item, first, path, Level::Other, depth + 1),
            Value::Array(_) => Err("a list of lists".to_string()),
            scalar => value_term(&item, scalar, self.field_type(path)),
        };
        path.pop();
        Ok(is(IS_LIST, value).and(each?.for_all(value, &item)))
    }

    /// Integer fields of the pod spec, known from the Kubernetes schema.
    fn field_type(&self, path: &[String]) -> FieldType {
        let Some(prefix) = self.pod_spec else {
            return FieldType::Any;
        };
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let Some(rest) = path.strip_prefix(prefix) else {
            return FieldType::Any;
        };
        let containers = |list: &str| {
            matches!(
                list,
                "containers" | "initContainers" | "ephemeralContainers"
            )
        };
        let integer = match rest {
            [list, "[]", "ports", "[]", "hostPort" | "containerPort"] => containers(list),
            [list, "[]", "securityContext", "runAsUser" | "runAsGroup"] => containers(list),
            ["securityContext", "runAsUser" | "runAsGroup" | "fsGroup"] => true,
            _ => false,
        };
        if integer {
            FieldType::Integer
        } else {
            FieldType::Any
        }
    }
}

fn not_null(value: &str) -> Term {
    Term::test(format!("type({value}) != null_type"))
}

/// What the engine makes of a missing key (read as null) under `pattern`.
fn passes_on_null(pattern: &Value) -> bool {
    match_pattern(&Value::Null, pattern) == PatternOutcome::Pass
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translated(pattern: Value) -> String {
        pattern_validation(&[&pattern], Some(&["spec"])).unwrap()
    }

    #[test]
    fn equality_anchors_check_present_keys_only() {
        let text = translated(json!({"spec": {"=(hostPID)": false}}));
        assert!(
            text.starts_with(
                r#"(type(object) == map && "spec" in object && type(object.spec) == map && (!("hostPID" in object.spec) || "#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"(type(object.spec.hostPID) == bool && object.spec.hostPID == false)"#),
            "{text}"
        );
        assert!(text.contains(r#"request.operation == "UPDATE" && oldObject != null && !("#));
    }

    #[test]
    fn negation_anchors_forbid_the_key_in_every_item() {
        let text = translated(json!({"spec": {"=(volumes)": [{"X(hostPath)": "null"}]}}));
        assert!(
            text.contains(r#"object.spec.volumes.all(x0, type(x0) == map && !("hostPath" in x0))"#),
            "{text}"
        );
    }

    #[test]
    fn wildcard_annotation_keys_cover_every_matching_key() {
        let text = translated(json!({"=(metadata)": {"=(annotations)": {
            "=(container.apparmor.security.beta.kubernetes.io/*)": "runtime/default | localhost/*"}}}));
        assert!(
            text.contains(
                r#"object.metadata.annotations.all(k0, !(k0.startsWith("container.apparmor.security.beta.kubernetes.io/")) || "#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_required_key_that_is_missing_fails() {
        let text = translated(json!({"spec": {"containers": [{"image": "!*:latest"}]}}));
        assert!(
            text.contains(r#""containers" in object.spec && type(object.spec.containers) == list"#),
            "{text}"
        );
        let star = translated(json!({"metadata": {"labels": {"app": "*"}}}));
        assert!(star.contains(r#""app" in object.metadata.labels && type(object.metadata.labels.app) != null_type"#), "{star}");
    }

    #[test]
    fn any_pattern_passes_when_one_alternative_does() {
        let (a, b) = (json!({"spec": {"x": "a"}}), json!({"spec": {"y": "b"}}));
        let text = pattern_validation(&[&a, &b], None).unwrap();
        assert!(text.contains(r#") || (type(object) == map"#), "{text}");
    }

    #[test]
    fn anchors_that_can_skip_and_numbers_on_unknown_fields_are_refused() {
        for pattern in [
            json!({"spec": {"(name)": "a", "image": "b"}}),
            json!({"spec": {"<(image)": "a"}}),
            json!({"spec": {"^(containers)": [{"name": "a"}]}}),
            json!({"spec": {"+(name)": "a"}}),
            json!({"spec": {"replicas": ">1"}}),
            json!({"spec": {"=(a)": 1, "a": 2}}),
            json!({"spec": [["a"]]}),
        ] {
            assert!(
                pattern_validation(&[&pattern], Some(&["spec"])).is_err(),
                "{pattern}"
            );
        }
    }

    #[test]
    fn pod_spec_paths_follow_the_matched_kinds() {
        let kinds = |names: &[&str]| -> Vec<KindSelector> {
            names.iter().map(|n| KindSelector::parse(n)).collect()
        };
        let path = |names: &[&str]| pod_spec_path(&kinds(names).iter().collect::<Vec<_>>());
        assert_eq!(path(&["Pod"]), Some(&["spec"][..]));
        assert_eq!(
            path(&["Deployment", "apps/v1/StatefulSet", "Job"]),
            Some(&["spec", "template", "spec"][..])
        );
        assert_eq!(path(&["Pod", "Deployment"]), None);
        assert_eq!(path(&["ConfigMap"]), None);
        assert_eq!(path(&["example.io/v1/Deployment"]), None);
    }
}
