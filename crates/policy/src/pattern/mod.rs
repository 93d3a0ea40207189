//! Validation patterns: does a resource (or a foreach element) match a
//! Kyverno `pattern`? Anchors live in [`anchor`], scalar matching in
//! [`value`], the tree walk in [`validate`].

pub mod anchor;
mod metadata;
pub mod operator;
pub mod validate;
pub mod value;

use serde_json::Value;

use validate::{ErrorKind, PatternWalk};

/// The verdict of matching one resource against one pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum PatternOutcome {
    Pass,
    /// An anchor decided the pattern does not apply.
    Skip(String),
    /// A mismatch at `path`.
    Fail {
        path: String,
        message: String,
    },
    /// The pattern could not be evaluated meaningfully (anchor keys missing).
    Error(String),
}

/// Matches a resource against a validation pattern from the root.
pub fn match_pattern(resource: &Value, pattern: &Value) -> PatternOutcome {
    let mut walk = PatternWalk::default();
    match walk.validate_element(resource, pattern, &anchor::WalkPath::Root) {
        Ok(()) => PatternOutcome::Pass,
        Err(err) if err.kind.is_skip() => PatternOutcome::Skip(err.message),
        Err(err) if err.kind == ErrorKind::Negation => PatternOutcome::Fail {
            path: err.path,
            message: err.message,
        },
        Err(err) if walk.anchor_keys_missing() => PatternOutcome::Error(err.message),
        Err(err) => PatternOutcome::Fail {
            path: err.path,
            message: err.message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(resource: Value, pattern: Value) -> PatternOutcome {
        match_pattern(&resource, &pattern)
    }

    #[test]
    fn plain_keys_must_match() {
        let pattern = json!({"metadata": {"labels": {"app": "?*"}}});
        assert_eq!(
            outcome(
                json!({"metadata": {"labels": {"app": "x"}}}),
                pattern.clone()
            ),
            PatternOutcome::Pass
        );
        assert!(matches!(
            outcome(json!({"metadata": {}}), pattern),
            PatternOutcome::Fail { .. }
        ));
    }

    #[test]
    fn conditional_anchor_skips_when_condition_fails() {
        let pattern = json!({"spec": {"containers": [{"(name)": "web", "image": "nginx:*"}]}});
        let good = json!({"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}});
        let bad = json!({"spec": {"containers": [{"name": "web", "image": "httpd"}]}});
        let other = json!({"spec": {"containers": [{"name": "db", "image": "httpd"}]}});
        assert_eq!(outcome(good, pattern.clone()), PatternOutcome::Pass);
        assert!(matches!(
            outcome(bad, pattern.clone()),
            PatternOutcome::Fail { .. }
        ));
        assert!(matches!(outcome(other, pattern), PatternOutcome::Skip(_)));
    }

    #[test]
    fn conditional_anchor_missing_key_skips() {
        let pattern = json!({"(metadata)": {"(labels)": {"tier": "web"}}, "spec": {"x": 1}});
        assert!(matches!(
            outcome(json!({"metadata": {}}), pattern),
            PatternOutcome::Skip(_)
        ));
    }

    #[test]
    fn equality_anchor_only_checks_present_keys() {
        let pattern = json!({"spec": {"=(hostPID)": "false"}});
        assert_eq!(
            outcome(json!({"spec": {}}), pattern.clone()),
            PatternOutcome::Pass
        );
        assert_eq!(
            outcome(json!({"spec": {"hostPID": false}}), pattern.clone()),
            PatternOutcome::Pass
        );
        assert!(matches!(
            outcome(json!({"spec": {"hostPID": true}}), pattern),
            PatternOutcome::Fail { .. }
        ));
    }

    #[test]
    fn negation_anchor_forbids_key() {
        let pattern = json!({"spec": {"=(volumes)": [{"X(hostPath)": "null"}]}});
        assert_eq!(
            outcome(
                json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}]}}),
                pattern.clone()
            ),
            PatternOutcome::Pass
        );
        assert!(matches!(
            outcome(
                json!({"spec": {"volumes": [{"name": "a", "hostPath": {"path": "/"}}]}}),
                pattern
            ),
            PatternOutcome::Fail { .. }
        ));
    }

    #[test]
    fn existence_anchor_needs_one_matching_element() {
        let pattern = json!({"spec": {"^(containers)": [{"image": "nginx*"}]}});
        let some = json!({"spec": {"containers": [{"image": "busybox"}, {"image": "nginx:1"}]}});
        let none = json!({"spec": {"containers": [{"image": "busybox"}]}});
        assert_eq!(outcome(some, pattern.clone()), PatternOutcome::Pass);
        assert!(matches!(
            outcome(none, pattern),
            PatternOutcome::Fail { .. }
        ));
    }

    #[test]
    fn global_anchor_skips_whole_rule() {
        let pattern = json!({"spec": {"containers": [{"<(image)": "*:latest", "imagePullPolicy": "Always"}]}});
        let not_latest = json!({"spec": {"containers": [{"image": "nginx:1", "imagePullPolicy": "IfNotPresent"}]}});
        let latest_bad = json!({"spec": {"containers": [{"image": "nginx:latest", "imagePullPolicy": "IfNotPresent"}]}});
        assert!(matches!(
            outcome(not_latest, pattern.clone()),
            PatternOutcome::Skip(_)
        ));
        assert!(matches!(
            outcome(latest_bad, pattern),
            PatternOutcome::Fail { .. }
        ));
    }

    #[test]
    fn wildcard_metadata_keys_expand() {
        let pattern = json!({"=(metadata)": {"=(annotations)": {"=(container.apparmor.security.beta.kubernetes.io/*)": "runtime/default | localhost/*"}}});
        let bad = json!({"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}});
        let good = json!({"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "localhost/x"}}});
        assert!(matches!(
            outcome(bad, pattern.clone()),
            PatternOutcome::Fail { .. }
        ));
        assert_eq!(outcome(good, pattern.clone()), PatternOutcome::Pass);
        assert_eq!(
            outcome(json!({"metadata": {}}), pattern),
            PatternOutcome::Pass
        );
    }

    #[test]
    fn scalar_pattern_against_list_checks_every_item() {
        let pattern = json!({"spec": {"externalIPs": "10.*"}});
        assert_eq!(
            outcome(
                json!({"spec": {"externalIPs": ["10.0.0.1"]}}),
                pattern.clone()
            ),
            PatternOutcome::Pass
        );
        assert!(matches!(
            outcome(
                json!({"spec": {"externalIPs": ["10.0.0.1", "8.8.8.8"]}}),
                pattern
            ),
            PatternOutcome::Fail { .. }
        ));
    }
}
