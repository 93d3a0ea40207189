//! The merge patches a human's decision makes on a Remediation: approve,
//! reject, ask for a new proposal. `kubectl aiops` and the web console send
//! exactly these, so the approval webhook and the controller see one shape
//! whichever door the reviewer used.
use serde_json::{Value, json};

use super::crd::REGENERATE_ANNOTATION;

/// Approves the proposal as read at `resource_version`: the merge patch
/// carries that version, so the API server refuses it (409) when the
/// Remediation changed since the reviewer read it.
pub fn approve_patch(resource_version: Option<&str>) -> Value {
    json!({"metadata": {"resourceVersion": resource_version},
           "spec": {"approved": true}})
}

/// Rejects the proposal; the controller closes the case with nothing applied.
pub fn reject_patch() -> Value {
    json!({"spec": {"rejected": true}})
}

/// Asks for a new proposal: any new value of the annotation does, so the
/// current time in milliseconds is used.
pub fn regenerate_patch() -> Value {
    let token = k8s_openapi::jiff::Timestamp::now()
        .as_millisecond()
        .to_string();
    json!({"metadata": {"annotations": {REGENERATE_ANNOTATION: token}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_approval_is_bound_to_the_version_read_and_the_others_name_one_field() {
        assert_eq!(
            approve_patch(Some("42")),
            json!({"metadata": {"resourceVersion": "42"}, "spec": {"approved": true}})
        );
        assert_eq!(reject_patch(), json!({"spec": {"rejected": true}}));
        let regenerate = regenerate_patch();
        let token = regenerate["metadata"]["annotations"][REGENERATE_ANNOTATION]
            .as_str()
            .unwrap_or_default();
        assert!(token.parse::<i64>().is_ok_and(|t| t > 0), "{regenerate}");
    }
}
