//! Client-side validation of a model's answer against the JSON Schema the
//! request carried: a server that ignores or only loosely follows the schema
//! (or a cached answer from another schema) never gets past this.
use serde_json::Value;

use super::provider::LlmError;
use crate::k8s::redact::{redact, truncate};

/// How many schema violations an error lists.
const MAX_VIOLATIONS_SHOWN: usize = 8;

/// Parses the model's text and checks it against `schema`. Nothing else
/// looks at an answer that fails here.
pub fn validate_answer(schema: &Value, content: &str) -> Result<Value, LlmError> {
    let answer: Value = serde_json::from_str(content).map_err(|source| LlmError::InvalidJson {
        excerpt: truncate(&redact(content.trim()), 120),
        source,
    })?;
    let validator = jsonschema::validator_for(schema).map_err(|e| LlmError::BadSchema {
        detail: e.to_string(),
    })?;
    let violations: Vec<String> = validator
        .iter_errors(&answer)
        .take(MAX_VIOLATIONS_SHOWN)
        .map(|error| {
            let path = error.instance_path().to_string();
            let at = if path.is_empty() {
                "/".to_string()
            } else {
                path
            };
            // The message quotes the offending value, which may be huge or hostile.
            format!("at {at}: {}", truncate(&redact(&error.to_string()), 200))
        })
        .collect();
    if violations.is_empty() {
        Ok(answer)
    } else {
        Err(LlmError::SchemaViolation { violations })
    }
}
