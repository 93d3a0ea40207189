//! A key without an anchor: the resource must have a matching value. The
//! pattern `"*"` only requires the key to be present and non-null.

use serde_json::{Map, Value};

use super::{ElementHandler, WalkPath};
use crate::pattern::validate::{ElementError, ErrorKind, PatternWalk};

pub struct PlainKey<'a> {
    pub key: &'a str,
    pub pattern: &'a Value,
}

impl ElementHandler for PlainKey<'_> {
    fn handle(
        &self,
        walk: &mut PatternWalk,
        resource: &Map<String, Value>,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        let value = resource.get(self.key).unwrap_or(&Value::Null);
        if self.pattern.as_str() == Some("*") {
            if value.is_null() {
                return Err(ElementError::new(
                    ErrorKind::Plain,
                    path.to_string(),
                    format!("{path}{} not found", self.key),
                ));
            }
            return Ok(());
        }
        let current = path.key(self.key);
        walk.validate_element(value, self.pattern, &current)
    }
}
