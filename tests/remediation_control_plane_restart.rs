//! The API server, then etcd, restarted under the repair loop, live: with
//! one Remediation `Proposed`, one `Applying` (held between its snapshot and
//! its apply by a fault hook) and one `Applied` (its rollout being checked),
//! the API server goes down for 5 s and comes back with the same flags and
//! data. Every case ends `Verified`, each fix changed its workload exactly
//! once, and the approval given after the outage is honoured once. Then
//! the same for etcd with a case `Applying`.
//!
//! Its own test binary: it stops the sandbox's control plane for a while
//! (test binaries run one at a time).
mod support;

use std::time::Duration;

use aiops_operator::remediation::crd::{Phase, Remediation};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::{Client, ResourceExt};
use support::{Sandbox, TestNamespace, wait_until};

const STEP: Duration = Duration::from_secs(180);

/// A rolled-out Deployment broken with a missing tag, once its case is
/// `Proposed`; with the Deployment's generation at that point.
async fn broken(sandbox: &Sandbox, prefix: &str) -> (TestNamespace, Remediation, i64) {
    let (ns, proposed) =
        support::broken_after_a_good_rollout(sandbox, prefix, 2, "nginx:1.25.5-nope", STEP).await;
    let generation = Api::<Deployment>::namespaced(sandbox.client.clone(), &ns.name)
        .get("app")
        .await
        .expect("the deployment")
        .metadata
        .generation
        .expect("a generation");
    (ns, proposed, generation)
}

/// Waits until the only case in `ns` is in `phase` (and, for `Applying`,
/// has its snapshot saved).
async fn wait_case(client: &Client, ns: &str, phase: Phase) -> Remediation {
    wait_until(STEP, &format!("the case in {ns} in {phase:?}"), || async {
        let all = support::remediations(client, ns).await;
        assert!(all.len() <= 1, "one case per workload: {all:?}");
        all.into_iter().find(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase == phase && (phase != Phase::Applying || s.snapshot.is_some())
            })
        })
    })
    .await
}

/// Approves, retrying while the control plane settles after a restart.
async fn approve(sandbox: &Sandbox, ns: &str, name: &str) {
    wait_until(STEP, &format!("an approval of {ns}/{name}"), || async {
        sandbox.approve(ns, name).0.then_some(())
    })
    .await;
}

/// The case ends `Verified`, and its fix changed the workload once.
async fn assert_fixed_once(client: &Client, ns: &str, name: &str, generation_before: i64) {
    wait_case(client, ns, Phase::Verified).await;
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("app")
        .await
        .expect("the deployment");
    assert_eq!(
        d.metadata.generation,
        Some(generation_before + 1),
        "{ns}: exactly one apply changed the template"
    );
    let manager = format!("aiops-operator/{name}");
    let applies = d
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(manager.as_str()))
        .count();
    assert_eq!(applies, 1, "{ns}: one field manager entry for the fix");
}

fn restart(component: &str, down_seconds: u32) {
    let out = std::process::Command::new("bash")
        .arg(support::repo_root().join("tests/sandbox/cluster.sh"))
        .args(["restart", component, &down_seconds.to_string()])
        .output()
        .expect("running cluster.sh restart");
    assert!(
        out.status.success(),
        "restarting {component}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn cases_in_every_phase_survive_an_api_server_and_an_etcd_restart() {
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    support::stop_all_operators();
    let operator = support::start_operator(
        "op-restart",
        &[
            ("AIOPS_OPERATOR_ARGS", "--verify-timeout-seconds 150"),
            ("AIOPS_FAULT_PAUSE_BEFORE_APPLY_MS", "15000"),
            ("AIOPS_FAULT_PAUSE_BEFORE_VERIFY_MS", "3000"),
        ],
    );

    let (proposed_ns, proposed, proposed_gen) = broken(&sandbox, "cp-proposed").await;
    let (applying_ns, applying, applying_gen) = broken(&sandbox, "cp-applying").await;
    let (applied_ns, applied, applied_gen) = broken(&sandbox, "cp-applied").await;

    approve(&sandbox, &applied_ns.name, &applied.name_any()).await;
    wait_case(client, &applied_ns.name, Phase::Applied).await;
    approve(&sandbox, &applying_ns.name, &applying.name_any()).await;
    wait_case(client, &applying_ns.name, Phase::Applying).await;

    restart("kube-apiserver", 5);

    approve(&sandbox, &proposed_ns.name, &proposed.name_any()).await;
    for (ns, case, generation) in [
        (&proposed_ns, &proposed, proposed_gen),
        (&applying_ns, &applying, applying_gen),
        (&applied_ns, &applied, applied_gen),
    ] {
        assert_fixed_once(client, &ns.name, &case.name_any(), generation).await;
    }

    // etcd goes away under a case held before its apply.
    let (etcd_ns, etcd_case, etcd_gen) = broken(&sandbox, "cp-etcd").await;
    approve(&sandbox, &etcd_ns.name, &etcd_case.name_any()).await;
    wait_case(client, &etcd_ns.name, Phase::Applying).await;
    restart("etcd", 5);
    assert_fixed_once(client, &etcd_ns.name, &etcd_case.name_any(), etcd_gen).await;

    assert!(
        operator
            .pid()
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()),
        "the operator rode out both restarts:\n{}",
        operator.log_tail(40)
    );
    support::stop_all_operators();
}
