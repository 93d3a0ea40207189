//! `X(key)` — the negation anchor: the key must not be present at all. Its
//! pattern value is never inspected; a present key fails the rule.

use serde_json::{Map, Value};

use super::{ElementHandler, WalkPath};
use crate::pattern::validate::{ElementError, ErrorKind, PatternWalk};

pub struct NegationAnchor<'a> {
    pub key: &'a str,
}

impl ElementHandler for NegationAnchor<'_> {
    fn handle(
        &self,
        _walk: &mut PatternWalk,
        resource: &Map<String, Value>,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        let current = path.key(self.key);
        if resource.contains_key(self.key) {
            return Err(ElementError::new(
                ErrorKind::Negation,
                current.to_string(),
                format!("negation anchor matched in resource: {current} is not allowed"),
            ));
        }
        Ok(())
    }
}
