//! What a reviewer does besides approving, live in the sandbox: reject a
//! proposal (nothing is applied, the case closes `Rejected`), ask for a new
//! one (an approval given together with the request is void: the
//! Remediation is proposed again, unapproved), and the retention that
//! deletes closed cases. Every transition leaves an Event on the
//! Remediation and one on the workload.
mod support;

use std::sync::OnceLock;
use std::time::Duration;

use aiops_operator::remediation::crd::{Phase, REGENERATE_ANNOTATION, Remediation};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{OperatorProcess, Sandbox, TestNamespace, phase, remediations, wait_until};

const STEP: Duration = Duration::from_secs(120);
/// Closed cases are deleted this long after they close.
const RETENTION_SECONDS: u64 = 20;

/// One operator for this test binary, with a short retention.
fn operator() -> &'static OperatorProcess {
    static OPERATOR: OnceLock<OperatorProcess> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        support::stop_all_operators();
        let args = format!("--retention-seconds {RETENTION_SECONDS}");
        support::start_operator("op-review", &[("AIOPS_OPERATOR_ARGS", args.as_str())])
    })
}

/// A Deployment that rolled out `nginx:1.25.5` and was then broken with a
/// tag that does not exist, once its Remediation is `Proposed`.
async fn broken_after_a_good_rollout(
    sandbox: &Sandbox,
    prefix: &str,
) -> (TestNamespace, Remediation) {
    operator();
    support::broken_after_a_good_rollout(sandbox, prefix, 2, "nginx:0.0.0-gone", STEP).await
}

async fn image(client: &Client, ns: &str) -> String {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("app")
        .await
        .expect("the deployment");
    d.spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.image)
        .unwrap_or_default()
}

/// The reasons of the Events about the object `kind`/`name` in `ns`.
async fn event_reasons(client: &Client, ns: &str, kind: &str, name: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
        })
        .filter_map(|e| e.reason)
        .collect()
}

/// Waits until both the Remediation and the workload carry an Event with `reason`.
async fn wait_events(client: &Client, ns: &str, remediation: &str, reason: &str) {
    wait_until(
        STEP,
        &format!("{ns}: {reason} Events on both objects"),
        || async {
            let on_case = event_reasons(client, ns, "Remediation", remediation).await;
            let on_workload = event_reasons(client, ns, "Deployment", "app").await;
            (on_case.iter().any(|r| r == reason) && on_workload.iter().any(|r| r == reason))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_rejected_proposal_applies_nothing_and_the_closed_case_is_deleted_after_retention() {
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    let (ns, proposed) = broken_after_a_good_rollout(&sandbox, "review-reject").await;
    let name = proposed.name_any();
    let uid = proposed.uid().expect("a uid");
    wait_events(client, &ns.name, &name, "Proposed").await;

    let (ok, out) = sandbox.kubectl(&[
        "-n",
        &ns.name,
        "patch",
        "remediation",
        &name,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"rejected":true}}"#,
    ]);
    assert!(ok, "{out}");
    let rejected = support::wait_remediation(client, &ns.name, &[Phase::Rejected], STEP).await;
    assert_eq!(rejected.uid().as_deref(), Some(uid.as_str()));
    assert!(
        rejected
            .status
            .as_ref()
            .is_some_and(|s| s.message.contains("nothing was applied"))
    );
    wait_events(client, &ns.name, &name, "Rejected").await;
    assert_eq!(
        image(client, &ns.name).await,
        "nginx:0.0.0-gone",
        "nothing was applied"
    );

    // Retention: the closed case goes once its period is over. The workload
    // goes first, so that no new case opens for it meanwhile.
    support::delete::<Deployment>(client, &ns.name, "app").await;
    wait_until(
        Duration::from_secs(RETENTION_SECONDS + 60),
        &format!(
            "{}: the rejected Remediation deleted after retention",
            ns.name
        ),
        || async {
            (!remediations(client, &ns.name)
                .await
                .iter()
                .any(|r| r.uid().as_deref() == Some(uid.as_str())))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_new_proposal_voids_an_approval_given_with_the_request() {
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    let (ns, proposed) = broken_after_a_good_rollout(&sandbox, "review-regen").await;
    let name = proposed.name_any();

    // The approval and the request for a new proposal arrive together: the
    // approval is of the proposal being replaced, so it must not apply.
    let patch = json!({
        "metadata": {"annotations": {REGENERATE_ANNOTATION: "again-1"}},
        "spec": {"approved": true},
    })
    .to_string();
    let (ok, out) = sandbox.kubectl(&[
        "-n",
        &ns.name,
        "patch",
        "remediation",
        &name,
        "--type",
        "merge",
        "-p",
        &patch,
    ]);
    assert!(ok, "{out}");
    let again = wait_until(STEP, &format!("{}: proposed again", ns.name), || async {
        remediations(client, &ns.name).await.into_iter().find(|r| {
            phase(r) == Phase::Proposed
                && r.status
                    .as_ref()
                    .is_some_and(|s| s.regenerate_token == "again-1")
        })
    })
    .await;
    assert!(!again.spec.approved, "the old approval was cleared");
    assert!(again.spec.approval.is_none());
    wait_events(client, &ns.name, &name, "Regenerate").await;
    // Still unapplied, and still waiting for a human.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(image(client, &ns.name).await, "nginx:0.0.0-gone");
    let current = remediations(client, &ns.name).await;
    assert_eq!(current.len(), 1);
    assert_eq!(
        phase(&current[0]),
        Phase::Proposed,
        "log:\n{}",
        operator().log_tail(40)
    );
}
