//! Auto-approval in the sandbox: a rule in the operator's ConfigMap heals an
//! image typo with no person in a labelled namespace, while the same
//! failure elsewhere waits for one; a budget of one fix in flight holds the
//! second of two failures until the first is Verified; `remediate.paused`
//! holds an auto-approved fix until it is lifted.
//!
//! The three tests share the operator's ConfigMap, so they run one at a
//! time (a lock), and each removes its `remediate.*` keys when done.
mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use aiops_operator::remediation::crd::{Phase, Remediation};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{
    OperatorProcess, Sandbox, TestNamespace, create_deployment, phase, remediations,
    wait_deployment_rolled_out, wait_remediation, wait_until,
};

const STEP: Duration = Duration::from_secs(150);
const AUTO_LABEL: &str = "aiops-test/auto-approve";
const APPROVER: &str = "system:aiops-operator:auto-approval/image-typos";
const TYPO: &str = "nginx:1.25.5-typo";

/// One test at a time: they share the ConfigMap and the budgets.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn operator() -> &'static OperatorProcess {
    static OPERATOR: OnceLock<OperatorProcess> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        support::stop_all_operators();
        support::start_operator(
            "op-auto",
            &[(
                "AIOPS_OPERATOR_ARGS",
                "--verify-timeout-seconds 60 --resolve-after-seconds 15",
            )],
        )
    })
}

/// Sets the `remediate.*` keys of the operator's ConfigMap (and removes
/// every other `remediate.*` key a failed earlier run may have left).
async fn set_repair_settings(client: &Client, settings: &[(&str, &str)]) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "aiops-system");
    let current = api
        .get("aiops-operator-config")
        .await
        .expect("the operator's ConfigMap");
    let mut data: BTreeMap<String, Value> = current
        .data
        .unwrap_or_default()
        .into_keys()
        .filter(|k| k.starts_with("remediate."))
        .map(|k| (k, Value::Null))
        .collect();
    for (key, value) in settings {
        data.insert(key.to_string(), Value::String(value.to_string()));
    }
    api.patch(
        "aiops-operator-config",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": data })),
    )
    .await
    .expect("patch the operator's ConfigMap");
}

fn rule(max_in_flight: u32) -> [(&'static str, String); 2] {
    [
        (
            "remediate.autoApprove",
            format!(
                "- name: image-typos\n  classes: [ImageRestore]\n  namespaceSelector:\n    matchLabels: {{{AUTO_LABEL}: \"true\"}}\n"
            ),
        ),
        (
            "remediate.budget",
            format!("maxInFlight: {max_in_flight}\nmaxInFlightPerNamespace: 1\nholdOff: 1m\n"),
        ),
    ]
}

/// Removes the `remediate.*` keys when a test ends, failed or not: a pause
/// left behind would hold every later test's fixes. Drop cannot be async;
/// kubectl works while a panic unwinds.
struct ResetSettings<'a>(&'a Sandbox);

impl Drop for ResetSettings<'_> {
    fn drop(&mut self) {
        let (ok, out) = self.0.kubectl(&[
            "-n",
            "aiops-system",
            "patch",
            "configmap",
            "aiops-operator-config",
            "--type=merge",
            "-p",
            r#"{"data":{"remediate.paused":null,"remediate.autoApprove":null,"remediate.budget":null}}"#,
        ]);
        if !ok {
            eprintln!("could not reset the repair settings: {out}");
        }
    }
}

async fn settings_with(client: &Client, max_in_flight: u32, extra: &[(&str, &str)]) {
    let rule = rule(max_in_flight);
    let mut all: Vec<(&str, &str)> = rule.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    set_repair_settings(client, &all).await;
    // The watch applies it within moments; give it one.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// A namespace whose requests go through the webhooks, with or without the
/// label the rule selects.
async fn namespace(sandbox: &Sandbox, prefix: &str, auto: bool) -> TestNamespace {
    let ns = sandbox.e2e_namespace(prefix).await;
    if auto {
        let (ok, out) = sandbox.kubectl(&[
            "label",
            "namespace",
            &ns.name,
            &format!("{AUTO_LABEL}=true"),
        ]);
        assert!(ok, "{out}");
    }
    ns
}

async fn healthy(client: &Client, ns: &str) {
    create_deployment(
        client,
        ns,
        "app",
        2,
        json!({"name": "web", "image": "nginx:1.25.5"}),
    )
    .await;
    wait_deployment_rolled_out(client, ns, "app").await;
}

async fn break_image(client: &Client, ns: &str) {
    let broken =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": TYPO}]}}}});
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch("app", &PatchParams::default(), &Patch::Strategic(&broken))
        .await
        .expect("break the image");
}

async fn image(client: &Client, ns: &str) -> String {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("app")
        .await
        .expect("the deployment");
    d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

async fn only_remediation(client: &Client, ns: &str) -> Remediation {
    let all = remediations(client, ns).await;
    assert_eq!(all.len(), 1, "one Remediation per broken workload: {all:?}");
    all.into_iter().next().unwrap()
}

fn approved_by(r: &Remediation) -> Option<String> {
    r.spec.approval.as_ref().map(|a| a.approved_by.clone())
}

/// Reasons of the Events about the Remediation `name` in `ns`.
async fn event_reasons(client: &Client, ns: &str, name: &str) -> Vec<String> {
    events(client, ns, name)
        .await
        .into_iter()
        .map(|(reason, _)| reason)
        .collect()
}

/// (reason, message) of the Events about the Remediation `name` in `ns`.
async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Remediation")
                && e.involved_object.name.as_deref() == Some(name)
        })
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Waits until the namespace's case is Proposed and says the pause holds it.
async fn held_by_the_pause(client: &Client, ns: &str) -> Remediation {
    wait_until(STEP, "the case to say it is held by the pause", || async {
        remediations(client, ns).await.into_iter().find(|r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Proposed && s.message.contains("paused"))
        })
    })
    .await
}

#[tokio::test]
async fn a_rule_heals_a_labelled_namespace_with_no_person_and_the_same_failure_elsewhere_waits() {
    let _one_at_a_time = SERIAL.lock().await;
    let op = operator();
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    let _reset = ResetSettings(&sandbox);
    settings_with(client, 1, &[]).await;
    let auto = namespace(&sandbox, "auto-yes", true).await;
    let manual = namespace(&sandbox, "auto-no", false).await;
    healthy(client, &auto.name).await;
    healthy(client, &manual.name).await;
    break_image(client, &auto.name).await;
    break_image(client, &manual.name).await;

    let verified = wait_remediation(client, &auto.name, &[Phase::Verified], STEP).await;
    assert_eq!(
        approved_by(&verified).as_deref(),
        Some(APPROVER),
        "{verified:?}"
    );
    let status = verified.status.clone().unwrap();
    assert_eq!(status.approved_by.as_deref(), Some(APPROVER));
    assert_eq!(status.proposal.as_ref().unwrap().class, "ImageRestore");
    assert_eq!(image(client, &auto.name).await, "nginx:1.25.5");
    let reasons = event_reasons(client, &auto.name, &verified.name_any()).await;
    assert!(reasons.iter().any(|r| r == "AutoApproved"), "{reasons:?}");

    // The unlabelled namespace's case has been Proposed all along, unapproved.
    let waiting = wait_remediation(client, &manual.name, &[Phase::Proposed], STEP).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let waiting = Api::<Remediation>::namespaced(client.clone(), &manual.name)
        .get(&waiting.name_any())
        .await
        .unwrap();
    assert_eq!(phase(&waiting), Phase::Proposed);
    assert!(
        !waiting.spec.approved && waiting.spec.approval.is_none(),
        "{waiting:?}"
    );
    assert_eq!(image(client, &manual.name).await, TYPO);
    // A person approves it as before.
    let (ok, out) = sandbox.approve(&manual.name, &waiting.name_any());
    assert!(ok, "{out}");
    let verified = wait_remediation(client, &manual.name, &[Phase::Verified], STEP).await;
    assert_eq!(approved_by(&verified).as_deref(), Some("sandbox-admin"));

    let metrics = op.metrics().await;
    assert!(
        metrics.contains(r#"remediation_auto_approval_total{decision="approved",reason="rule"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_budget_of_one_holds_the_second_of_two_failures_until_the_first_is_verified() {
    let _one_at_a_time = SERIAL.lock().await;
    operator();
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    let _reset = ResetSettings(&sandbox);
    // Paused first, so both cases are ready when the budget decides: the
    // two failures are then simultaneous whatever the detection times.
    settings_with(client, 1, &[("remediate.paused", "true")]).await;
    let first = namespace(&sandbox, "budget-a", true).await;
    let second = namespace(&sandbox, "budget-b", true).await;
    healthy(client, &first.name).await;
    healthy(client, &second.name).await;
    break_image(client, &first.name).await;
    break_image(client, &second.name).await;
    held_by_the_pause(client, &first.name).await;
    held_by_the_pause(client, &second.name).await;
    settings_with(client, 1, &[]).await;

    wait_remediation(client, &first.name, &[Phase::Verified], STEP * 2).await;
    wait_remediation(client, &second.name, &[Phase::Verified], STEP * 2).await;
    let mut cases = vec![
        only_remediation(client, &first.name).await,
        only_remediation(client, &second.name).await,
    ];
    for case in &cases {
        assert_eq!(approved_by(case).as_deref(), Some(APPROVER), "{case:?}");
    }
    let approved_at = |r: &Remediation| r.spec.approval.as_ref().unwrap().approved_at.0;
    cases.sort_by_key(approved_at);
    let earlier_verified = cases[0]
        .status
        .as_ref()
        .unwrap()
        .verified_at
        .clone()
        .unwrap()
        .0;
    assert!(
        approved_at(&cases[1]) >= earlier_verified,
        "the second fix was approved at {} before the first was verified at {earlier_verified}",
        approved_at(&cases[1])
    );
    let later = &cases[1];
    let said = events(client, &later.namespace().unwrap(), &later.name_any()).await;
    assert!(
        said.iter()
            .any(|(reason, message)| reason == "AutoApprovalHeldInFlight"
                && message.contains("in flight")),
        "the second case says the budget held it: {said:?}"
    );
}

#[tokio::test]
async fn remediate_paused_holds_an_auto_approved_fix_until_it_is_lifted() {
    let _one_at_a_time = SERIAL.lock().await;
    operator();
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    let _reset = ResetSettings(&sandbox);
    settings_with(client, 1, &[("remediate.paused", "true")]).await;
    let ns = namespace(&sandbox, "paused", true).await;
    healthy(client, &ns.name).await;
    break_image(client, &ns.name).await;

    let held = held_by_the_pause(client, &ns.name).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let still = only_remediation(client, &ns.name).await;
    assert_eq!(phase(&still), Phase::Proposed, "{still:?}");
    assert!(!still.spec.approved, "nothing is approved while paused");
    assert_eq!(image(client, &ns.name).await, TYPO);
    let reasons = event_reasons(client, &ns.name, &held.name_any()).await;
    assert!(
        reasons.iter().any(|r| r == "AutoApprovalHeldPaused"),
        "{reasons:?}"
    );

    settings_with(client, 1, &[("remediate.paused", "false")]).await;
    let verified = wait_remediation(client, &ns.name, &[Phase::Verified], STEP).await;
    assert_eq!(approved_by(&verified).as_deref(), Some(APPROVER));
    assert_eq!(image(client, &ns.name).await, "nginx:1.25.5");
}
