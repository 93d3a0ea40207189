//! The two writers of a Remediation's status against a real API server:
//! the operator's part and the detector's part are server-side applies
//! under their own field managers, so a field one writer stops sending
//! goes away, and the other writer's fields stay whatever either sends.
//! No operator runs here: this test is the only writer.
mod support;

use aiops_operator::remediation::crd::{
    DryRun, Finding, Phase, Remediation, RemediationSpec, RemediationStatus, Snapshot, WorkloadRef,
};
use aiops_operator::remediation::status::{
    DETECTOR_MANAGER, DetectorStatus, OPERATOR_MANAGER, apply_detector_status,
    apply_operator_status,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::Sandbox;

fn finding(reason: &str, pods: u32) -> Finding {
    Finding {
        container: "app".into(),
        reason: reason.into(),
        pods,
        image: Some("nginx:0.0.0-gone".into()),
        ..Finding::default()
    }
}

fn seen(findings: Vec<Finding>) -> DetectorStatus {
    DetectorStatus {
        reason: findings[0].reason.clone(),
        findings,
        target_display: "Deployment/web".into(),
        last_update_time: Time(Timestamp::now()),
    }
}

/// The status fields (top-level keys) `manager` owns, from managedFields.
fn owned_by(remediation: &Remediation, manager: &str) -> Vec<String> {
    let mut fields: Vec<String> = remediation
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some(manager))
        .filter(|entry| entry.subresource.as_deref() == Some("status"))
        .filter_map(|entry| entry.fields_v1.as_ref())
        .filter_map(|fields| fields.0.get("f:status")?.as_object().cloned())
        .flat_map(|status| status.into_iter().map(|(key, _)| key))
        .filter_map(|key| key.strip_prefix("f:").map(str::to_string))
        .collect();
    fields.sort();
    fields
}

#[tokio::test]
async fn each_status_writer_clears_what_it_stops_sending_and_never_the_others_fields() {
    let sandbox = Sandbox::connect().await;
    support::stop_all_operators();
    let crd = support::repo_root().join("manifests/crd.yaml");
    let (ok, out) = sandbox.kubectl(&["apply", "-f", &crd.to_string_lossy()]);
    assert!(ok, "installing the CRD: {out}");
    let ns = sandbox.namespace("status").await;
    let api: Api<Remediation> = Api::namespaced(sandbox.client.clone(), &ns.name);
    let target = WorkloadRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        uid: "web-uid".into(),
    };
    let spec = RemediationSpec {
        target,
        approved: false,
        rejected: false,
        approval: None,
    };
    let name = "web-status";
    api.create(&PostParams::default(), &Remediation::new(name, spec))
        .await
        .expect("create the Remediation");

    // The detector opens the case; the operator proposes, with a dry run
    // and a snapshot whose restore patch is free-form JSON.
    apply_detector_status(&api, name, &seen(vec![finding("ErrImagePull", 1)]))
        .await
        .expect("the detector's apply");
    let proposed = RemediationStatus {
        phase: Phase::Proposed,
        message: "proposed".into(),
        dry_run: Some(DryRun {
            result: "Succeeded".into(),
            proposal_hash: "sha256:x".into(),
            ..DryRun::default()
        }),
        snapshot: Some(Snapshot {
            generation: 3,
            restore_patch: json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.25.5"}]}}}}),
            env_from_revision: Vec::new(),
        }),
        last_update_time: Some(Time(Timestamp::now())),
        ..RemediationStatus::default()
    };
    apply_operator_status(&api, name, &proposed)
        .await
        .expect("the operator's apply");
    let both = api.get_status(name).await.expect("read back");
    let status = both.status.clone().expect("a status");
    assert_eq!(status.phase, Phase::Proposed);
    assert_eq!(status.findings, vec![finding("ErrImagePull", 1)]);
    assert_eq!(status.target_display, "Deployment/web");
    assert!(status.dry_run.is_some());
    assert_eq!(
        status.snapshot, proposed.snapshot,
        "the restore patch kept whole"
    );

    // The operator goes back to Diagnosing from an older copy that still
    // carries other findings, and with no dry run and no snapshot: those
    // two go, the detector's fields stay as the detector wrote them.
    let stale_copy = RemediationStatus {
        phase: Phase::Diagnosing,
        message: "a new proposal was requested".into(),
        findings: vec![finding("Stale", 9)],
        reason: "Stale".into(),
        target_display: "Stale/stale".into(),
        last_update_time: Some(Time(Timestamp::now())),
        ..RemediationStatus::default()
    };
    apply_operator_status(&api, name, &stale_copy)
        .await
        .expect("the operator's second apply");
    let status = api
        .get_status(name)
        .await
        .expect("read back")
        .status
        .expect("a status");
    assert_eq!(status.phase, Phase::Diagnosing);
    assert_eq!(status.dry_run, None, "an unset dry run is cleared");
    assert_eq!(status.snapshot, None, "an unset snapshot is cleared");
    assert_eq!(status.findings, vec![finding("ErrImagePull", 1)]);
    assert_eq!(status.reason, "ErrImagePull");
    assert_eq!(status.target_display, "Deployment/web");

    // New findings replace the old ones whole and leave the operator's
    // fields alone.
    let now = vec![finding("ImagePullBackOff", 3)];
    apply_detector_status(&api, name, &seen(now.clone()))
        .await
        .expect("the detector's second apply");
    let after = api.get_status(name).await.expect("read back");
    let status = after.status.clone().expect("a status");
    assert_eq!(status.findings, now);
    assert_eq!(status.reason, "ImagePullBackOff");
    assert_eq!(status.phase, Phase::Diagnosing);
    assert_eq!(status.message, "a new proposal was requested");

    assert_eq!(
        owned_by(&after, DETECTOR_MANAGER),
        ["findings", "lastUpdateTime", "reason", "targetDisplay"]
    );
    let operator = owned_by(&after, OPERATOR_MANAGER);
    assert!(operator.contains(&"phase".to_string()), "{operator:?}");
    for field in ["findings", "reason", "targetDisplay", "dryRun", "snapshot"] {
        assert!(
            !operator.contains(&field.to_string()),
            "{field} in {operator:?}"
        );
    }
}
