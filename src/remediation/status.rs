//! Writing a Remediation's status: server-side apply, split between two
//! field managers so that neither ever erases what the other wrote.
//!
//! - [`DETECTOR_MANAGER`] owns what the pod watcher sees: `findings`,
//!   `reason` and `targetDisplay`.
//! - [`OPERATOR_MANAGER`] owns everything else: the phase, conditions,
//!   evidence, proposal, dry run, snapshot and the rest of the record.
//! - Both send `lastUpdateTime` on every write; a field two managers set is
//!   kept as long as either still sends it.
//!
//! Each manager sends its whole part on every apply. A field it leaves out
//! is one it no longer sets, and the API server removes a field whose only
//! owner stopped sending it: that is how `dryRun` or `snapshot` going back
//! to `None` clears them, with no list of keys to null out. And because
//! the operator's part never carries the detector's fields, a transition
//! built from a cached (possibly older) copy of the Remediation can never
//! write back stale findings.
//!
//! Lists in the status have no `x-kubernetes-list-type` marker, so the API
//! server treats each as atomic: one manager owns a list whole and replaces
//! it whole, which is what both writers want (findings and conditions are
//! always computed in full).
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::crd::{Finding, Remediation, RemediationStatus};

/// The field manager of the operator's part of the status.
pub const OPERATOR_MANAGER: &str = "aiops-operator";
/// The field manager of the detector's part of the status.
pub const DETECTOR_MANAGER: &str = "aiops-operator-detector";

/// Status fields (by their JSON names) that only the detector writes.
const DETECTOR_FIELDS: [&str; 3] = ["findings", "reason", "targetDisplay"];
/// Written by both managers, on every write.
const SHARED_FIELDS: [&str; 1] = ["lastUpdateTime"];

/// What the detector writes: the findings, the main reason among them,
/// the target as `kubectl get rem` shows it, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorStatus {
    pub findings: Vec<Finding>,
    pub reason: String,
    pub target_display: String,
    pub last_update_time: Time,
}

/// Applies the operator's part of `status` (everything but the detector's
/// fields) as [`OPERATOR_MANAGER`]. Fields unset in `status` are removed.
pub async fn apply_operator_status(
    api: &Api<Remediation>,
    name: &str,
    status: &RemediationStatus,
) -> Result<Remediation, kube::Error> {
    apply(api, name, OPERATOR_MANAGER, operator_part(status)).await
}

/// Applies the detector's part of the status as [`DETECTOR_MANAGER`].
pub async fn apply_detector_status(
    api: &Api<Remediation>,
    name: &str,
    status: &DetectorStatus,
) -> Result<Remediation, kube::Error> {
    apply(api, name, DETECTOR_MANAGER, detector_part(status)).await
}

async fn apply(
    api: &Api<Remediation>,
    name: &str,
    manager: &str,
    status: Value,
) -> Result<Remediation, kube::Error> {
    let body = json!({
        "apiVersion": Remediation::api_version(&()),
        "kind": Remediation::kind(&()),
        "status": status,
    });
    // Forced: each manager is the only writer of its fields, so a conflict
    // can only come from a hand edit, and the operator's record wins.
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await
}

/// The status as JSON without the detector's fields.
fn operator_part(status: &RemediationStatus) -> Value {
    let mut fields = as_object(status);
    fields.retain(|key, _| !DETECTOR_FIELDS.contains(&key.as_str()));
    Value::Object(fields)
}

/// The detector's fields and the shared ones, nothing else.
fn detector_part(status: &DetectorStatus) -> Value {
    let whole = RemediationStatus {
        findings: status.findings.clone(),
        reason: status.reason.clone(),
        target_display: status.target_display.clone(),
        last_update_time: Some(status.last_update_time.clone()),
        ..RemediationStatus::default()
    };
    let mut fields = as_object(&whole);
    fields.retain(|key, _| {
        DETECTOR_FIELDS.contains(&key.as_str()) || SHARED_FIELDS.contains(&key.as_str())
    });
    Value::Object(fields)
}

fn as_object(status: &RemediationStatus) -> Map<String, Value> {
    // A status is plain data (strings, numbers, maps with string keys):
    // serializing it cannot fail, and an empty object would be a no-op apply.
    match serde_json::to_value(status) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::crd::{DryRun, Phase};
    use k8s_openapi::jiff::Timestamp;

    fn finding() -> Finding {
        Finding {
            container: "app".into(),
            reason: "ImagePullBackOff".into(),
            pods: 3,
            ..Finding::default()
        }
    }

    fn keys(value: &Value) -> Vec<&str> {
        value
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_operator_never_sends_the_detectors_fields() {
        let status = RemediationStatus {
            phase: Phase::Proposed,
            findings: vec![finding()],
            reason: "ImagePullBackOff".into(),
            target_display: "Deployment/web".into(),
            message: "proposed".into(),
            last_update_time: Some(Time(Timestamp::now())),
            ..RemediationStatus::default()
        };
        let part = operator_part(&status);
        for field in DETECTOR_FIELDS {
            assert!(part.get(field).is_none(), "{field} in {part}");
        }
        assert_eq!(part["phase"], "Proposed");
        assert_eq!(part["message"], "proposed");
        assert!(part.get("lastUpdateTime").is_some());
    }

    #[test]
    fn an_unset_optional_field_is_left_out_so_the_apply_removes_it() {
        let mut status = RemediationStatus {
            dry_run: Some(DryRun {
                result: "Succeeded".into(),
                ..DryRun::default()
            }),
            ..RemediationStatus::default()
        };
        assert!(operator_part(&status).get("dryRun").is_some());
        status.dry_run = None;
        let part = operator_part(&status);
        assert!(part.get("dryRun").is_none(), "{part}");
        // Left out, never sent as null: an apply does not take null to mean "remove".
        assert!(
            part.as_object()
                .is_some_and(|o| o.values().all(|v| !v.is_null()))
        );
    }

    #[test]
    fn the_detector_sends_only_its_fields_and_the_time() {
        let part = detector_part(&DetectorStatus {
            findings: vec![finding()],
            reason: "ImagePullBackOff".into(),
            target_display: "Deployment/web".into(),
            last_update_time: Time(Timestamp::now()),
        });
        let mut keys = keys(&part);
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["findings", "lastUpdateTime", "reason", "targetDisplay"]
        );
    }
}
