//! `<(key)` — the global anchor. When the key is present but its value does
//! not match, the whole rule is skipped for this resource. A missing key is
//! not a mismatch.

use serde_json::{Map, Value};

use super::{ElementHandler, WalkPath};
use crate::pattern::validate::{ElementError, ErrorKind, PatternWalk};

pub struct GlobalAnchor<'a> {
    pub key: &'a str,
    pub pattern: &'a Value,
}

impl ElementHandler for GlobalAnchor<'_> {
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
        walk.validate_element(value, self.pattern, &current)
            .map_err(|inner| {
                ElementError::new(
                    ErrorKind::Global,
                    inner.path,
                    format!("global anchor mismatch: {}", inner.message),
                )
            })
    }
}
