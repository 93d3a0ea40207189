//! Crash safety and leader election of the repair loop, in the sandbox.
//! These tests kill and start operator replicas, so they run one after the
//! other inside this binary (cargo runs test binaries one at a time).
mod support;

use std::time::Duration;

use aiops_operator::remediation::crd::{Phase, Remediation};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{Sandbox, create_deployment, wait_deployment_rolled_out, wait_until};

const STEP: Duration = Duration::from_secs(120);

async fn one_remediation_in(client: &Client, ns: &str, want: Phase) -> Remediation {
    let api: Api<Remediation> = Api::namespaced(client.clone(), ns);
    wait_until(
        STEP,
        &format!("a remediation in {ns} reaching {want:?}"),
        || async {
            let all = api.list(&ListParams::default()).await.ok()?.items;
            assert!(
                all.len() <= 1,
                "at most one remediation per workload: {all:?}"
            );
            all.into_iter()
                .find(|r| r.status.as_ref().map(|s| s.phase) == Some(want))
        },
    )
    .await
}

async fn break_deployment(sandbox: &Sandbox, ns: &str) {
    let client = &sandbox.client;
    create_deployment(
        client,
        ns,
        "app",
        2,
        json!({"name": "web", "image": "nginx:1.25.5"}),
    )
    .await;
    wait_deployment_rolled_out(client, ns, "app").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let bad = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.25.5-nope"}]}}}});
    api.patch("app", &PatchParams::default(), &Patch::Strategic(&bad))
        .await
        .unwrap();
}

fn managers_of(d: &Deployment) -> Vec<String> {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect()
}

#[tokio::test]
async fn killing_the_operator_mid_apply_neither_applies_twice_nor_gets_stuck() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::connect().await;
    support::stop_all_operators();
    // The fault hook holds the controller between saving the snapshot and applying.
    let first = support::start_operator(
        "op-crash",
        &[("AIOPS_OPERATOR_ARGS", "--verify-timeout-seconds 60")],
    );
    let ns = sandbox.e2e_namespace("crash").await;
    break_deployment(&sandbox, &ns.name).await;
    let proposed = one_remediation_in(&sandbox.client, &ns.name, Phase::Proposed).await;
    let deployments: Api<Deployment> = Api::namespaced(sandbox.client.clone(), &ns.name);
    let generation_before = deployments
        .get("app")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();

    // Restart with the pause armed, so the kill lands mid-apply.
    first.stop();
    let paused = support::start_operator(
        "op-crash",
        &[
            ("AIOPS_OPERATOR_ARGS", "--verify-timeout-seconds 60"),
            ("AIOPS_FAULT_PAUSE_BEFORE_APPLY_MS", "4000"),
        ],
    );
    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "{out}");
    let applying = wait_until(STEP, "the snapshot to be saved", || async {
        let r = Api::<Remediation>::namespaced(sandbox.client.clone(), &ns.name)
            .get(&proposed.name_any())
            .await
            .ok()?;
        let s = r.status.clone()?;
        (s.phase == Phase::Applying && s.snapshot.is_some()).then_some(r)
    })
    .await;
    paused.kill_hard();
    // Nothing was applied yet.
    assert_eq!(
        deployments.get("app").await.unwrap().metadata.generation,
        Some(generation_before)
    );

    let _restarted = support::start_operator(
        "op-crash",
        &[("AIOPS_OPERATOR_ARGS", "--verify-timeout-seconds 60")],
    );
    let verified = one_remediation_in(&sandbox.client, &ns.name, Phase::Verified).await;
    let d = deployments.get("app").await.unwrap();
    assert_eq!(
        d.metadata.generation,
        Some(generation_before + 1),
        "exactly one apply changed the template"
    );
    let status = verified.status.unwrap();
    assert_eq!(
        status.snapshot,
        applying.status.unwrap().snapshot,
        "the snapshot was not retaken"
    );
    let field_manager = format!("aiops-operator/{}", proposed.name_any());
    assert_eq!(
        managers_of(&d)
            .iter()
            .filter(|m| **m == field_manager)
            .count(),
        1
    );
    support::stop_all_operators();
}

#[tokio::test]
async fn killing_the_operator_while_it_verifies_finishes_the_case_without_a_second_apply() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::connect().await;
    support::stop_all_operators();
    let args = ("AIOPS_OPERATOR_ARGS", "--verify-timeout-seconds 60");
    // The fault hook holds every rollout check, so the kill lands in `Applied`.
    let paused = support::start_operator(
        "op-verify",
        &[args, ("AIOPS_FAULT_PAUSE_BEFORE_VERIFY_MS", "30000")],
    );
    let ns = sandbox.e2e_namespace("crash-verify").await;
    break_deployment(&sandbox, &ns.name).await;
    let proposed = one_remediation_in(&sandbox.client, &ns.name, Phase::Proposed).await;
    let deployments: Api<Deployment> = Api::namespaced(sandbox.client.clone(), &ns.name);
    let generation_before = deployments
        .get("app")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();
    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "{out}");
    let applied = one_remediation_in(&sandbox.client, &ns.name, Phase::Applied).await;
    paused.kill_hard();
    assert_eq!(
        deployments.get("app").await.unwrap().metadata.generation,
        Some(generation_before + 1),
        "the fix was applied before the kill"
    );

    let _restarted = support::start_operator("op-verify", &[args]);
    let verified = one_remediation_in(&sandbox.client, &ns.name, Phase::Verified).await;
    let d = deployments.get("app").await.unwrap();
    assert_eq!(
        d.metadata.generation,
        Some(generation_before + 1),
        "no second apply after the restart"
    );
    let (before, after) = (applied.status.unwrap(), verified.status.unwrap());
    assert_eq!(
        before.applied_at, after.applied_at,
        "the apply time was kept"
    );
    assert_eq!(before.snapshot, after.snapshot, "the snapshot was kept");
    support::stop_all_operators();
}

fn memory_limit(d: &Deployment) -> Option<String> {
    let container = d
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?;
    Some(
        container
            .resources
            .as_ref()?
            .limits
            .as_ref()?
            .get("memory")?
            .0
            .clone(),
    )
}

#[tokio::test]
async fn killing_the_operator_after_it_restored_the_prior_values_records_the_rollback_once() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::connect().await;
    support::stop_all_operators();
    let args = ("AIOPS_OPERATOR_ARGS", "--verify-timeout-seconds 60");
    // The fault hook holds the controller after the restore is written and
    // before `RolledBack` is recorded: the kill lands between the two.
    let paused = support::start_operator(
        "op-rollback",
        &[args, ("AIOPS_FAULT_PAUSE_AFTER_ROLLBACK_MS", "60000")],
    );
    let ns = sandbox.e2e_namespace("crash-rollback").await;
    // 16Mi with no healthy revision: the rule doubles it to 32Mi, still
    // below redis's need, so the fixed pods OOM and the fix is rolled back.
    create_deployment(
        &sandbox.client,
        &ns.name,
        "app",
        3,
        json!({"name": "cache", "image": "redis:7.2.5", "resources": {"limits": {"memory": "16Mi"}}}),
    )
    .await;
    let proposed = one_remediation_in(&sandbox.client, &ns.name, Phase::Proposed).await;
    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "{out}");
    let applied = one_remediation_in(&sandbox.client, &ns.name, Phase::Applied).await;
    let deployments: Api<Deployment> = Api::namespaced(sandbox.client.clone(), &ns.name);
    let restored = wait_until(STEP, "the prior 16Mi limit to be restored", || async {
        let d = deployments.get("app").await.ok()?;
        let generation = d.metadata.generation?;
        (memory_limit(&d).as_deref() == Some("16Mi")
            && generation > applied.status.as_ref()?.applied_generation?)
            .then_some(d)
    })
    .await;
    let remediations: Api<Remediation> = Api::namespaced(sandbox.client.clone(), &ns.name);
    let before_kill = remediations.get(&proposed.name_any()).await.unwrap();
    assert_eq!(
        before_kill.status.as_ref().map(|s| s.phase),
        Some(Phase::Applied),
        "the kill lands before the rollback is recorded"
    );
    paused.kill_hard();

    let _restarted = support::start_operator("op-rollback", &[args]);
    let rolled_back = one_remediation_in(&sandbox.client, &ns.name, Phase::RolledBack).await;
    let d = deployments.get("app").await.unwrap();
    assert_eq!(
        memory_limit(&d).as_deref(),
        Some("16Mi"),
        "the prior value stays"
    );
    assert_eq!(
        d.metadata.generation, restored.metadata.generation,
        "the restarted replica neither re-applied the fix nor changed the template again"
    );
    let status = rolled_back.status.unwrap();
    assert!(status.message.contains("rolled back"), "{}", status.message);
    assert_eq!(
        status.snapshot,
        before_kill.status.unwrap().snapshot,
        "the snapshot was kept"
    );
    support::stop_all_operators();
}

#[tokio::test]
async fn when_the_leader_is_killed_the_follower_takes_over_and_finishes_the_case() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::connect().await;
    support::stop_all_operators();
    let a = support::start_operator("op-a", &[]);
    let b = support::start_operator("op-b", &[("AIOPS_REGISTER_WEBHOOKS", "0")]);

    let leases: Api<Lease> = Api::namespaced(sandbox.client.clone(), "aiops-system");
    let holder_is = |want: Option<String>| {
        let leases = leases.clone();
        async move {
            let now = leases
                .get("aiops-operator-leader")
                .await
                .ok()?
                .spec?
                .holder_identity?;
            match &want {
                Some(want) => (now == *want).then_some(now),
                None => Some(now),
            }
        }
    };
    let holder = wait_until(STEP, "a lease holder", || holder_is(None)).await;
    assert!(holder == "op-a" || holder == "op-b", "{holder}");
    let (leader, follower) = if holder == "op-a" { (&a, &b) } else { (&b, &a) };

    let ns = sandbox.e2e_namespace("leader").await;
    break_deployment(&sandbox, &ns.name).await;
    let proposed = one_remediation_in(&sandbox.client, &ns.name, Phase::Proposed).await;
    let name = proposed.name_any();
    assert!(leader.log().contains(&name), "the leader acted on {name}");
    assert!(
        !follower.log().contains(&name),
        "the follower never acted:\n{}",
        follower.log()
    );
    assert!(
        !follower.log().contains("leading:"),
        "the follower never led"
    );

    // The leader crashes (its Lease is not released) with the case open,
    // and the webhooks are pointed at the survivor, as the Service would.
    leader.kill_hard();
    follower.take_webhooks();
    wait_until(STEP, "the follower to take the lease", || {
        holder_is(Some(follower.name.clone()))
    })
    .await;
    wait_until(STEP, "the follower's controller to start", || async {
        follower.log().contains("leading:").then_some(())
    })
    .await;
    // The API server may still dial the dead replica for a moment (the
    // approval webhook fails closed): retry until the survivor answers.
    wait_until(
        STEP,
        "an approval through the follower's webhook",
        || async { sandbox.approve(&ns.name, &name).0.then_some(()) },
    )
    .await;
    let verified = one_remediation_in(&sandbox.client, &ns.name, Phase::Verified).await;
    let follower_log = follower.log();
    assert!(
        follower_log.contains(&name),
        "the follower finished {name}:\n{}",
        follower.log_tail(40)
    );
    let d = Api::<Deployment>::namespaced(sandbox.client.clone(), &ns.name)
        .get("app")
        .await
        .unwrap();
    let field_manager = format!("aiops-operator/{name}");
    assert_eq!(
        managers_of(&d)
            .iter()
            .filter(|m| **m == field_manager)
            .count(),
        1,
        "applied once: {:?}",
        verified.status
    );
    support::stop_all_operators();
}

/// The tests stop and start the shared operator replicas: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
