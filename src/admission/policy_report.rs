//! Builds `wgpolicyk8s.io/v1alpha2` PolicyReport (or ClusterPolicyReport)
//! documents for audited violations. Pure: the caller supplies the time and
//! applies the document.
//!
//! One report per admitted object, named after its kind and name, holding
//! the audited results of its latest admission. It is written with
//! server-side apply, so each write replaces the previous results.
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::admission::verdict::Violation;

/// Value of `results[].source`.
pub const REPORT_SOURCE: &str = "aiops-operator";
const GROUP: &str = "wgpolicyk8s.io";
const VERSION: &str = "v1alpha2";

/// The API resource of PolicyReport (namespaced) or ClusterPolicyReport.
pub fn report_resource(namespaced: bool) -> ApiResource {
    let (kind, plural) = if namespaced {
        ("PolicyReport", "policyreports")
    } else {
        ("ClusterPolicyReport", "clusterpolicyreports")
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

/// Report name for `subject`, or `None` when the object has no name yet
/// (a CREATE with generateName): such a report could never be found again.
pub fn report_name(subject: &ObjectReference) -> Option<String> {
    let name = subject.name.as_deref().filter(|n| !n.is_empty())?;
    let kind = subject
        .kind
        .as_deref()
        .unwrap_or("object")
        .to_ascii_lowercase();
    let mut full = format!("aiops-{kind}-{name}");
    // Object names are DNS subdomains already; only the length can overflow.
    if full.len() > 253 {
        full.truncate(253);
        while full.ends_with(['-', '.']) {
            full.pop();
        }
    }
    Some(full)
}

/// The report document for `subject` holding one `fail` (or `error`)
/// result per violation.
pub fn build_report(
    name: &str,
    subject: &ObjectReference,
    operation: &str,
    violations: &[Violation],
    observed_at: SystemTime,
) -> Value {
    let since_epoch = observed_at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let timestamp = json!({
        "seconds": since_epoch.as_secs(),
        "nanos": since_epoch.subsec_nanos(),
    });
    let resource = object_reference_json(subject);
    let results: Vec<Value> = violations
        .iter()
        .map(|v| {
            json!({
                "source": REPORT_SOURCE,
                "policy": v.policy,
                "rule": v.rule,
                "result": if v.errored { "error" } else { "fail" },
                "message": v.message,
                "scored": true,
                "timestamp": timestamp,
                "resources": [resource],
                "properties": {
                    "mode": v.mode.as_str(),
                    "operation": operation,
                },
            })
        })
        .collect();
    let errors = violations.iter().filter(|v| v.errored).count();
    let namespaced = subject
        .namespace
        .as_deref()
        .is_some_and(|ns| !ns.is_empty());
    let resource_type = report_resource(namespaced);
    let mut metadata = json!({
        "name": name,
        "labels": {"app.kubernetes.io/managed-by": REPORT_SOURCE},
    });
    if let (true, Some(ns)) = (namespaced, subject.namespace.as_deref()) {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": resource_type.api_version,
        "kind": resource_type.kind,
        "metadata": metadata,
        "scope": resource,
        "summary": {
            "pass": 0,
            "fail": violations.len() - errors,
            "warn": 0,
            "error": errors,
            "skip": 0,
        },
        "results": results,
    })
}

fn object_reference_json(subject: &ObjectReference) -> Value {
    let mut reference = serde_json::Map::new();
    let fields = [
        ("apiVersion", &subject.api_version),
        ("kind", &subject.kind),
        ("namespace", &subject.namespace),
        ("name", &subject.name),
        ("uid", &subject.uid),
    ];
    for (key, value) in fields {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            reference.insert(key.to_string(), json!(value));
        }
    }
    Value::Object(reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::modes::Mode;

    fn pod(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        }
    }

    #[test]
    fn report_lists_each_audited_violation() {
        let violations = vec![
            Violation {
                policy: "disallow-host-path".into(),
                rule: "no-host-path-volumes".into(),
                message: "use emptyDir".into(),
                mode: Mode::Audit,
                errored: false,
            },
            Violation {
                policy: "restrict-seccomp".into(),
                rule: "no-unconfined-seccomp".into(),
                message: "boom".into(),
                mode: Mode::Audit,
                errored: true,
            },
        ];
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let report = build_report("aiops-pod-web", &pod("web"), "CREATE", &violations, at);
        assert_eq!(report["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(report["kind"], "PolicyReport");
        assert_eq!(report["metadata"]["namespace"], "team-a");
        assert_eq!(report["scope"]["name"], "web");
        assert_eq!(report["summary"]["fail"], 1);
        assert_eq!(report["summary"]["error"], 1);
        assert_eq!(report["results"][0]["policy"], "disallow-host-path");
        assert_eq!(report["results"][0]["result"], "fail");
        assert_eq!(
            report["results"][0]["timestamp"]["seconds"],
            1_700_000_000u64
        );
        assert_eq!(report["results"][1]["result"], "error");
        assert_eq!(report["results"][0]["resources"][0]["kind"], "Pod");
    }

    #[test]
    fn cluster_scoped_objects_get_a_cluster_report() {
        let mut subject = pod("node-x");
        subject.namespace = None;
        let report = build_report("n", &subject, "UPDATE", &[], SystemTime::now());
        assert_eq!(report["kind"], "ClusterPolicyReport");
        assert!(report["metadata"].get("namespace").is_none());
    }

    #[test]
    fn names_are_derived_and_bounded() {
        assert_eq!(report_name(&pod("web")).as_deref(), Some("aiops-pod-web"));
        assert_eq!(report_name(&pod("")), None);
        let long = "a".repeat(300);
        assert_eq!(report_name(&pod(&long)).map(|n| n.len()), Some(253));
    }
}
