//! `=(key)` — the equality anchor: "if the key is present, its value must
//! match". A missing key passes.

use serde_json::{Map, Value};

use super::{ElementHandler, WalkPath};
use crate::pattern::validate::{ElementError, PatternWalk};

pub struct EqualityAnchor<'a> {
    pub key: &'a str,
    pub pattern: &'a Value,
}

impl ElementHandler for EqualityAnchor<'_> {
    fn handle(
        &self,
        walk: &mut PatternWalk,
        resource: &Map<String, Value>,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        match resource.get(self.key) {
            Some(value) => {
                let current = path.key(self.key);
                walk.validate_element(value, self.pattern, &current)
            }
            None => Ok(()),
        }
    }
}
