//! `(key)` — the conditional anchor. When the key is missing, or its value
//! does not match, the enclosing pattern does not apply (the rule is
//! skipped rather than failed).

use serde_json::{Map, Value};

use super::{ElementHandler, WalkPath};
use crate::pattern::validate::{ElementError, ErrorKind, PatternWalk};

pub struct ConditionalAnchor<'a> {
    pub key: &'a str,
    pub pattern: &'a Value,
}

impl ElementHandler for ConditionalAnchor<'_> {
    fn handle(
        &self,
        walk: &mut PatternWalk,
        resource: &Map<String, Value>,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        let current = path.key(self.key);
        match resource.get(self.key) {
            Some(value) => walk
                .validate_element(value, self.pattern, &current)
                .map_err(|inner| {
                    ElementError::new(
                        ErrorKind::Conditional,
                        inner.path,
                        format!("conditional anchor mismatch: {}", inner.message),
                    )
                }),
            None => Err(ElementError::new(
                ErrorKind::Conditional,
                current.to_string(),
                "conditional anchor key doesn't exist in the resource".to_string(),
            )),
        }
    }
}
