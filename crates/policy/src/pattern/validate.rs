//! The pattern walk: descends a validation pattern and the resource side by
//! side, evaluating anchored keys before plain ones, and classifies the first
//! problem found (skip-worthy anchor mismatch, negation, or plain mismatch).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::anchor::{Anchor, AnchorKind, WalkPath, handler_with};
use super::metadata::expand_metadata_wildcards;
use super::value::value_matches;

/// What kind of problem a pattern element reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A conditional anchor did not hold: the pattern does not apply.
    Conditional,
    /// A global anchor did not hold: the rule does not apply.
    Global,
    /// Every element of a list was skipped by its anchors.
    AllSkipped,
    /// A negation anchor found a forbidden key.
    Negation,
    /// An ordinary mismatch.
    Plain,
}

impl ErrorKind {
    /// Skip-worthy errors make the rule not apply instead of failing it.
    pub fn is_skip(self) -> bool {
        matches!(
            self,
            ErrorKind::Conditional | ErrorKind::Global | ErrorKind::AllSkipped
        )
    }
}

/// A mismatch found while walking the pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementError {
    pub kind: ErrorKind,
    /// Slash-separated path of the mismatch, e.g. `/spec/containers/0/image/`.
    pub path: String,
    pub message: String,
}

impl ElementError {
    pub fn new(kind: ErrorKind, path: String, message: String) -> ElementError {
        ElementError {
            kind,
            path,
            message,
        }
    }
}

/// Walk state: which conditional/existence/negation anchor keys were seen
/// in the resource, used to tell "anchor key missing" apart from a mismatch.
#[derive(Debug, Default)]
pub struct PatternWalk {
    anchor_keys_present: BTreeMap<String, (AnchorKind, bool)>,
}

impl PatternWalk {
    /// True when some conditional or existence anchor key never appeared in
    /// the resource (negations are expected to be absent).
    pub fn anchor_keys_missing(&self) -> bool {
        self.anchor_keys_present
            .values()
            .any(|(kind, present)| *kind != AnchorKind::Negation && !present)
    }

    /// Notes whether the resource map holds an anchored key of the
    /// pattern. Called for every anchored key on every visit (once per
    /// list element), so a key already recorded costs no allocation.
    fn record_anchor_key(&mut self, raw: &str, anchor: Anchor<'_>, resource: &Map<String, Value>) {
        if !matches!(
            anchor.kind,
            AnchorKind::Conditional | AnchorKind::Existence | AnchorKind::Negation
        ) {
            return;
        }
        match self.anchor_keys_present.get_mut(raw) {
            Some(entry) => {
                if !entry.1 && resource.contains_key(anchor.key) {
                    entry.1 = true;
                }
            }
            None => {
                let present = resource.contains_key(anchor.key);
                self.anchor_keys_present
                    .insert(raw.to_string(), (anchor.kind, present));
            }
        }
    }

    /// Validates one resource element against one pattern element.
    pub fn validate_element(
        &mut self,
        resource: &Value,
        pattern: &Value,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        match pattern {
            Value::Object(pattern_map) => {
                let Value::Object(resource_map) = resource else {
                    return Err(ElementError::new(
                        ErrorKind::Plain,
                        path.to_string(),
                        format!(
                            "pattern and resource have different structures at path {path}: expected a map"
                        ),
                    ));
                };
                self.validate_map(resource_map, pattern_map, path)
            }
            Value::Array(pattern_items) => {
                let Value::Array(resource_items) = resource else {
                    return Err(ElementError::new(
                        ErrorKind::Plain,
                        path.to_string(),
                        format!(
                            "validation rule failed at path {path}, resource does not satisfy the expected overlay pattern"
                        ),
                    ));
                };
                self.validate_array(resource_items, pattern_items, path)
            }
            scalar => {
                let mismatch = || {
                    ElementError::new(
                        ErrorKind::Plain,
                        path.to_string(),
                        format!(
                            "resource value '{}' does not match '{}' at path {path}",
                            compact(resource),
                            compact(scalar)
                        ),
                    )
                };
                match resource {
                    Value::Array(items) => {
                        if items.iter().all(|item| value_matches(item, scalar)) {
                            Ok(())
                        } else {
                            Err(mismatch())
                        }
                    }
                    other => {
                        if value_matches(other, scalar) {
                            Ok(())
                        } else {
                            Err(mismatch())
                        }
                    }
                }
            }
        }
    }

    fn validate_map(
        &mut self,
        resource: &Map<String, Value>,
        pattern: &Map<String, Value>,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        // A map of one key (most maps of most patterns) has no order to
        // decide: no ranks, no list. Only a `metadata` key can hold
        // wildcard label or annotation keys to expand.
        if pattern.len() == 1
            && let Some((key, value)) = pattern.iter().next()
        {
            let anchor = Anchor::parse(key);
            if anchor.map_or(key.as_str(), |anchor| anchor.key) != "metadata" {
                if let Some(anchor) = anchor {
                    self.record_anchor_key(key, anchor, resource);
                }
                return handler_with(key, anchor, value).handle(self, resource, path);
            }
        }

        let expanded = expand_metadata_wildcards(pattern, resource);
        let pattern = expanded.as_ref().unwrap_or(pattern);

        // One entry per key, its anchor parsed once, in the order keys are
        // handled. The map iterates in key order, so a stable sort by rank
        // alone leaves keys sorted within each rank.
        let mut order: Vec<(u8, &String, Option<Anchor<'_>>, &Value)> =
            Vec::with_capacity(pattern.len());
        for (key, value) in pattern {
            let anchor = Anchor::parse(key);
            if let Some(anchor) = anchor {
                self.record_anchor_key(key, anchor, resource);
            }
            let kind = anchor.map(|anchor| anchor.kind);
            // Conditional, existence, equality and negation anchors first;
            // then global anchors and keys whose values contain anchors, so
            // "does not apply" is decided before an ordinary mismatch can
            // fail the rule; then everything else.
            let rank: u8 = if kind.is_some_and(is_phase_one) {
                0
            } else if kind == Some(AnchorKind::Global) {
                1
            } else if has_nested_anchors(value) {
                2
            } else {
                3
            };
            order.push((rank, key, anchor, value));
        }
        order.sort_by_key(|entry| entry.0);
        for (_, key, anchor, value) in order {
            handler_with(key, anchor, value).handle(self, resource, path)?;
        }
        Ok(())
    }

    fn validate_array(
        &mut self,
        resource: &[Value],
        pattern: &[Value],
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        let Some(first) = pattern.first() else {
            return Err(ElementError::new(
                ErrorKind::Plain,
                path.to_string(),
                "pattern array is empty".to_string(),
            ));
        };
        match first {
            Value::Object(_) => self.validate_array_of_maps(resource, first, path),
            Value::Array(_) => {
                if resource.len() < pattern.len() {
                    return Err(ElementError::new(
                        ErrorKind::Plain,
                        path.to_string(),
                        format!(
                            "validate array failed: resource has {} elements, pattern has {}",
                            resource.len(),
                            pattern.len()
                        ),
                    ));
                }
                let mut applied = 0;
                let mut skipped = Vec::new();
                for (index, pattern_item) in pattern.iter().enumerate() {
                    let item_path = path.index(index);
                    match self.validate_element(&resource[index], pattern_item, &item_path) {
                        Ok(()) => applied += 1,
                        Err(err) if err.kind.is_skip() => skipped.push(err.message),
                        Err(err) => return Err(err),
                    }
                }
                all_skipped(applied, skipped, path)
            }
            scalar => self.validate_element(&Value::Array(resource.to_vec()), scalar, path),
        }
    }

    fn validate_array_of_maps(
        &mut self,
        resource: &[Value],
        pattern: &Value,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        let mut applied = 0;
        let mut skipped = Vec::new();
        for (index, element) in resource.iter().enumerate() {
            let element_path = path.index(index);
            match self.validate_element(element, pattern, &element_path) {
                Ok(()) => applied += 1,
                Err(err) if err.kind.is_skip() => skipped.push(err.message),
                Err(err) => return Err(err),
            }
        }
        all_skipped(applied, skipped, path)
    }
}

fn all_skipped(
    applied: usize,
    skipped: Vec<String>,
    path: &WalkPath<'_>,
) -> Result<(), ElementError> {
    if applied == 0 && !skipped.is_empty() {
        return Err(ElementError::new(
            ErrorKind::AllSkipped,
            path.to_string(),
            skipped.join("; "),
        ));
    }
    Ok(())
}

fn is_phase_one(kind: AnchorKind) -> bool {
    matches!(
        kind,
        AnchorKind::Conditional
            | AnchorKind::Existence
            | AnchorKind::Equality
            | AnchorKind::Negation
    )
}

/// True when a pattern value contains a validation anchor at any depth.
pub fn has_nested_anchors(pattern: &Value) -> bool {
    match pattern {
        Value::Object(map) => map.iter().any(|(key, value)| {
            Anchor::parse(key).is_some_and(|a| a.kind != AnchorKind::AddIfNotPresent)
                || has_nested_anchors(value)
        }),
        Value::Array(items) => items.iter().any(has_nested_anchors),
        _ => false,
    }
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
