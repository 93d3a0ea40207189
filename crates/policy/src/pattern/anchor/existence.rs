//! `^(key)` — the existence anchor: the resource value must be a list and,
//! for every map in the pattern list, at least one list element must match
//! it. A missing key passes.

use serde_json::{Map, Value};

use super::{ElementHandler, WalkPath};
use crate::pattern::validate::{ElementError, ErrorKind, PatternWalk};

pub struct ExistenceAnchor<'a> {
    pub key: &'a str,
    pub pattern: &'a Value,
}

impl ElementHandler for ExistenceAnchor<'_> {
    fn handle(
        &self,
        walk: &mut PatternWalk,
        resource: &Map<String, Value>,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        let current = path.key(self.key);
        let Some(value) = resource.get(self.key) else {
            return Ok(());
        };
        let plain =
            |message: String| ElementError::new(ErrorKind::Plain, current.to_string(), message);
        let Value::Array(elements) = value else {
            return Err(plain(format!(
                "existence anchor ^() can only be used on a list, found {}",
                type_name(value)
            )));
        };
        let Value::Array(pattern_items) = self.pattern else {
            return Err(plain("existence anchor pattern must be a list".to_string()));
        };
        for pattern_item in pattern_items {
            if !pattern_item.is_object() {
                return Err(plain(
                    "existence anchor pattern list must contain maps".to_string(),
                ));
            }
            let any_element_matches = elements.iter().enumerate().any(|(index, element)| {
                let element_path = current.index(index);
                walk.validate_element(element, pattern_item, &element_path)
                    .is_ok()
            });
            if !any_element_matches {
                return Err(plain(format!(
                    "existence anchor validation failed at path {current}"
                )));
            }
        }
        Ok(())
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}
