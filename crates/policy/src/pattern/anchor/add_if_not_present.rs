//! `+(key)` — the add-if-not-present anchor. It only has meaning for mutation
//! (see `policy::mutate`); in a validation pattern Kyverno treats it as a
//! literal key, which this handler reproduces.

use serde_json::{Map, Value};

use super::plain::PlainKey;
use super::{ElementHandler, WalkPath};
use crate::pattern::validate::{ElementError, PatternWalk};

pub struct AddIfNotPresentAnchor<'a> {
    pub raw_key: &'a str,
    pub pattern: &'a Value,
}

impl ElementHandler for AddIfNotPresentAnchor<'_> {
    fn handle(
        &self,
        walk: &mut PatternWalk,
        resource: &Map<String, Value>,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        PlainKey {
            key: self.raw_key,
            pattern: self.pattern,
        }
        .handle(walk, resource, path)
    }
}
