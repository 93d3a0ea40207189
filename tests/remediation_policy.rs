//! Live tests of prevention feeding repair: an Audit-mode operator admits
//! violating workloads, its background scan reports them and opens one
//! Remediation each with a fix from the policy fix rules, which is then
//! approved with plain `kubectl patch` (through the approval webhook),
//! applied, verified, and dropped from the PolicyReport on the next scan.
//! Needs the sandbox (`make cluster-up`); fails loudly without it.
//!
//! The guardrails' refusal of a variant that adds anything else to the
//! privileged fix is tested at unit level
//! (src/remediation/propose/policy_fixes/guard_tests.rs): a live
//! Remediation's proposal is signed by the operator and cannot be swapped.
mod support;

use std::sync::OnceLock;
use std::time::Duration;

use aiops_operator::admission::policy_report::report_resource;
use aiops_operator::remediation::crd::{Phase, Remediation};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, DynamicObject};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{
    OperatorProcess, Sandbox, create, create_deployment, remediations, wait_deployment_rolled_out,
    wait_remediation, wait_until,
};

const STEP: Duration = Duration::from_secs(120);
/// What the sandbox catalog says `nginx:latest` runs (tests/sandbox/images.yaml).
const NGINX_LATEST_DIGEST: &str =
    "sha256:3febce43007c4596e183fba74824f94d1224b8e584079e254557f251017fd946";

/// One Audit-mode operator for this test binary, scanning every 3 s.
fn operator() -> &'static OperatorProcess {
    static OPERATOR: OnceLock<OperatorProcess> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        support::stop_all_operators();
        support::start_operator(
            "op-policy",
            &[
                ("AIOPS_MODE", "Audit"),
                (
                    "AIOPS_OPERATOR_ARGS",
                    "--scan-interval 3s --verify-timeout-seconds 90",
                ),
            ],
        )
    })
}

/// Audit for every policy: the shipped ConfigMap keeps
/// disallow-latest-tag in Enforce (`policyModes`), which would refuse the
/// workloads these tests need running. Waits until the operator uses it.
async fn audit_everything(sandbox: &Sandbox) {
    operator();
    let (ok, out) = sandbox.kubectl(&[
        "-n",
        "aiops-system",
        "patch",
        "configmap",
        "aiops-operator-config",
        "--type=merge",
        "-p",
        r#"{"data":{"policyModes":""}}"#,
    ]);
    assert!(ok, "emptying policyModes: {out}");
    wait_until(
        STEP,
        "the operator to take mode Audit for every policy",
        || async {
            operator()
                .log()
                .contains("policy_overrides=0")
                .then_some(())
        },
    )
    .await;
}

/// The results of the operator's PolicyReport about `kind/name`, as
/// (policy, result) pairs; `None` when there is no report.
async fn report_results(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Option<Vec<(String, String)>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &report_resource(true));
    let report = api
        .get_opt(&format!("aiops-{}-{name}", kind.to_lowercase()))
        .await
        .ok()??;
    let value = serde_json::to_value(&report).ok()?;
    Some(
        value["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["policy"].as_str().unwrap_or_default().to_string(),
                    r["result"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    )
}

/// The namespace's only Remediation once it reaches `want`.
async fn only_remediation(client: &Client, ns: &str, want: Phase) -> Remediation {
    let found = wait_remediation(client, ns, &[want], STEP).await;
    let all = remediations(client, ns).await;
    assert_eq!(
        all.len(),
        1,
        "one Remediation per violating workload, scans repeating every 3 s: {:?}; operator log:\n{}",
        all.iter().map(|r| r.name_any()).collect::<Vec<_>>(),
        operator().log_tail(40)
    );
    found
}

#[tokio::test]
async fn a_latest_image_is_pinned_to_the_running_digest_and_leaves_the_policy_report() {
    let sandbox = Sandbox::connect().await;
    audit_everything(&sandbox).await;
    let ns = sandbox.e2e_namespace("policy-latest").await;
    let client = &sandbox.client;
    // Admitted in Audit mode although disallow-latest-tag is violated.
    create_deployment(
        client,
        &ns.name,
        "web",
        2,
        json!({"name": "nginx", "image": "nginx:latest"}),
    )
    .await;
    wait_deployment_rolled_out(client, &ns.name, "web").await;

    let reported = wait_until(
        STEP,
        "the scan's PolicyReport for Deployment/web",
        || async {
            report_results(client, &ns.name, "Deployment", "web")
                .await
                .filter(|results| {
                    results.contains(&("disallow-latest-tag".to_string(), "fail".to_string()))
                })
        },
    )
    .await;
    assert!(!reported.is_empty());

    let proposed = only_remediation(client, &ns.name, Phase::Proposed).await;
    let status = proposed.status.clone().expect("status");
    assert_eq!(status.reason, "disallow-latest-tag");
    let proposal = status.proposal.as_ref().expect("a proposal");
    assert_eq!(proposal.class, "PolicyFix:disallow-latest-tag");
    assert_eq!(proposal.source, "rules");
    let pinned = format!("nginx@{NGINX_LATEST_DIGEST}");
    assert_eq!(
        proposal.actions[0].patch["spec"]["template"]["spec"]["containers"][0]["image"],
        json!(pinned),
        "pinned to what the pods report: {proposal:?}"
    );
    assert!(status.guardrail.as_ref().is_some_and(|g| g.allowed));
    let dry = status.dry_run.as_ref().expect("a dry run");
    assert_eq!(dry.result, "Succeeded", "{dry:?}");
    assert!(
        dry.diff
            .iter()
            .any(|c| c.path.ends_with("containers[nginx].image")
                && c.from.as_deref() == Some("nginx:latest")
                && c.to.as_deref() == Some(pinned.as_str())),
        "{:?}",
        dry.diff
    );

    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "kubectl patch approves: {out}");
    let verified = only_remediation(client, &ns.name, Phase::Verified).await;
    assert_eq!(
        verified.status.and_then(|s| s.approved_by).as_deref(),
        Some("sandbox-admin")
    );
    let rolled = wait_deployment_rolled_out(client, &ns.name, "web").await;
    let image = rolled
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].image.clone());
    assert_eq!(image, Some(Some(pinned)));

    // The next scan finds the Deployment passing: its report goes.
    wait_until(STEP, "the PolicyReport of Deployment/web to go", || async {
        report_results(client, &ns.name, "Deployment", "web")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    // And nothing new is opened for it.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(remediations(client, &ns.name).await.len(), 1);
}

#[tokio::test]
async fn a_privileged_daemonset_gets_a_fix_that_only_removes_privileged() {
    let sandbox = Sandbox::connect().await;
    audit_everything(&sandbox).await;
    let ns = sandbox.e2e_namespace("policy-priv").await;
    let client = &sandbox.client;
    create::<DaemonSet>(
        client,
        &ns.name,
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
               "metadata": {"name": "agent"},
               "spec": {"selector": {"matchLabels": {"app": "agent"}},
                        "template": {"metadata": {"labels": {"app": "agent"}},
                                     "spec": {"containers": [{"name": "agent", "image": "busybox:1.36.1",
                                                              "securityContext": {"privileged": true}}]}}}}),
    )
    .await;

    let proposed = only_remediation(client, &ns.name, Phase::Proposed).await;
    let status = proposed.status.clone().expect("status");
    assert_eq!(status.reason, "disallow-privileged-containers");
    let proposal = status.proposal.as_ref().expect("a proposal");
    assert_eq!(proposal.class, "PolicyFix:disallow-privileged-containers");
    assert_eq!(
        proposal.actions[0].patch["spec"]["template"]["spec"],
        json!({"containers": [{"name": "agent", "securityContext": {"privileged": false}}]}),
        "the fix changes privileged and nothing else"
    );
    let dry = status.dry_run.as_ref().expect("a dry run");
    assert_eq!(dry.result, "Succeeded", "{dry:?}");
    let changes: Vec<(&str, Option<&str>, Option<&str>)> = dry
        .diff
        .iter()
        .map(|c| (c.path.as_str(), c.from.as_deref(), c.to.as_deref()))
        .collect();
    assert_eq!(
        changes,
        vec![(
            "spec.template.spec.containers[agent].securityContext.privileged",
            Some("true"),
            Some("false")
        )],
        "the dry-run diff shows exactly the removed privilege"
    );

    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "kubectl patch approves: {out}");
    only_remediation(client, &ns.name, Phase::Verified).await;
    let live: DaemonSet = Api::namespaced(client.clone(), &ns.name)
        .get("agent")
        .await
        .expect("the DaemonSet");
    let privileged = serde_json::to_value(&live).ok().and_then(|v| {
        v.pointer("/spec/template/spec/containers/0/securityContext/privileged")
            .cloned()
    });
    assert_eq!(privileged, Some(Value::Bool(false)));
}

#[tokio::test]
async fn a_workload_that_violates_nothing_gets_no_remediation_and_no_report() {
    let sandbox = Sandbox::connect().await;
    audit_everything(&sandbox).await;
    let ns = sandbox.e2e_namespace("policy-clean").await;
    let client = &sandbox.client;
    create_deployment(
        client,
        &ns.name,
        "web",
        1,
        json!({"name": "nginx", "image": "nginx:1.25.5"}),
    )
    .await;
    wait_deployment_rolled_out(client, &ns.name, "web").await;
    // Several scans (every 3 s) pass over it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(remediations(client, &ns.name).await.is_empty());
    assert_eq!(
        report_results(client, &ns.name, "Deployment", "web").await,
        None
    );
}
