//! End-to-end repair tests in the sandbox (real controllers, kwok nodes):
//! break a workload, see exactly one Remediation with a rule-based fix and a
//! dry-run diff, approve it with plain `kubectl patch`, and watch it end
//! `Verified` (or `RolledBack`). The operator runs as a local process with
//! its ServiceAccount's token (tests/operator/local.sh).
mod support;

use std::sync::OnceLock;
use std::time::Duration;

use aiops_operator::remediation::crd::{Phase, Remediation};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{
    OperatorProcess, Sandbox, TestNamespace, approval_patch, create, create_deployment, phase,
    remediations, wait_deployment_rolled_out, wait_remediation, wait_until,
};

const STEP: Duration = Duration::from_secs(120);

/// One operator for this test binary, started on first use.
fn operator() -> &'static OperatorProcess {
    static OPERATOR: OnceLock<OperatorProcess> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        support::stop_all_operators();
        support::start_operator(
            "op-e2e",
            // The sandbox's crash back-off runs at a tenth of kubelet's
            // speed, so a shorter quiet period still outlasts a crash cycle.
            &[(
                "AIOPS_OPERATOR_ARGS",
                "--verify-timeout-seconds 60 --resolve-after-seconds 15",
            )],
        )
    })
}

/// Waits for the namespace's only Remediation to reach `want`.
async fn wait_phase(client: &Client, ns: &str, want: Phase) -> Remediation {
    let op = operator();
    let found = wait_remediation(client, ns, &[want], STEP).await;
    assert_eq!(
        remediations(client, ns).await.len(),
        1,
        "exactly one Remediation per broken workload; operator log:\n{}",
        op.log_tail(40)
    );
    found
}

/// The proposal is rule-based, guarded, dry-run validated with a diff.
/// An image that does not exist opens its case at `ErrImagePull` (no grace
/// for "not found"); the reason becomes `ImagePullBackOff` once the pods get
/// there. Either is the same finding.
const IMAGE_PULL: &[&str] = &["ErrImagePull", "ImagePullBackOff"];

fn assert_reviewable(r: &Remediation, expect_reasons: &[&str], diff_path_contains: &str) {
    let status = r.status.as_ref().expect("status");
    assert!(
        expect_reasons.contains(&status.reason.as_str()),
        "reason {} not in {expect_reasons:?}: {status:?}",
        status.reason
    );
    let proposal = status.proposal.as_ref().expect("a proposal");
    assert_eq!(proposal.source, "rules");
    assert!(
        !proposal.actions.is_empty(),
        "a fix, not just a diagnosis: {proposal:?}"
    );
    assert!(status.guardrail.as_ref().is_some_and(|g| g.allowed));
    let dry = status.dry_run.as_ref().expect("a dry run");
    assert_eq!(dry.result, "Succeeded");
    assert_eq!(dry.proposal_hash, proposal.hash);
    assert!(
        dry.diff.iter().any(|c| c.path.contains(diff_path_contains)),
        "diff touches {diff_path_contains}: {:?}",
        dry.diff
    );
}

async fn patch_deployment(client: &Client, ns: &str, name: &str, patch: serde_json::Value) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch deployment");
}

fn container(d: &Deployment) -> k8s_openapi::api::core::v1::Container {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .clone()
}

/// Creates a healthy Deployment, breaks it with `breakage`, and returns the
/// namespace once the break is visible as a Proposed Remediation.
async fn healthy_then_broken(
    sandbox: &Sandbox,
    prefix: &str,
    initial: serde_json::Value,
    breakage: serde_json::Value,
) -> (TestNamespace, Remediation) {
    operator();
    let ns = sandbox.e2e_namespace(prefix).await;
    let client = &sandbox.client;
    create_deployment(client, &ns.name, "app", 3, initial).await;
    wait_deployment_rolled_out(client, &ns.name, "app").await;
    patch_deployment(client, &ns.name, "app", breakage).await;
    let proposed = wait_phase(client, &ns.name, Phase::Proposed).await;
    (ns, proposed)
}

#[tokio::test]
async fn bad_image_tag_after_a_good_rollout_is_restored_and_verified() {
    let sandbox = Sandbox::connect().await;
    let (ns, proposed) = healthy_then_broken(
        &sandbox,
        "e2e-image",
        json!({"name": "web", "image": "nginx:1.25.5"}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.25.5-typo"}]}}}}),
    )
    .await;
    assert_reviewable(&proposed, IMAGE_PULL, "containers[web].image");
    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "kubectl patch approves: {out}");

    let verified = wait_phase(&sandbox.client, &ns.name, Phase::Verified).await;
    let status = verified.status.unwrap();
    assert_eq!(status.approved_by.as_deref(), Some("sandbox-admin"));
    assert!(status.verified_at.is_some() && status.applied_at.is_some());
    let d = wait_deployment_rolled_out(&sandbox.client, &ns.name, "app").await;
    assert_eq!(container(&d).image.as_deref(), Some("nginx:1.25.5"));

    // One /metrics for the whole operator: repair and admission series.
    let metrics = operator().metrics().await;
    assert!(
        IMAGE_PULL.iter().any(|reason| metrics.contains(&format!(
            "remediation_total{{phase=\"Verified\",reason=\"{reason}\"}}"
        ))),
        "no Verified image-pull remediation in /metrics:\n{metrics}"
    );
    for series in [
        "remediation_detection_seconds_count",
        "remediation_duration_seconds_count",
        "remediation_apply_total{result=\"applied\"}",
        "aiops_admission_requests_total",
    ] {
        assert!(
            metrics.contains(series),
            "missing {series} in /metrics:\n{metrics}"
        );
    }
    // The apply results' series exist from the start at 0; this one moved.
    assert!(
        !metrics.contains("remediation_apply_total{result=\"applied\"} 0\n"),
        "no apply counted:\n{metrics}"
    );
}

#[tokio::test]
async fn memory_limit_cut_below_need_is_raised_and_verified() {
    let sandbox = Sandbox::connect().await;
    let (ns, proposed) = healthy_then_broken(
        &sandbox,
        "e2e-oom",
        json!({"name": "cache", "image": "redis:7.2.5",
               "resources": {"requests": {"memory": "32Mi"}, "limits": {"memory": "128Mi"}}}),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "cache", "resources": {"requests": {"memory": "32Mi"}, "limits": {"memory": "32Mi"}}}]}}}}),
    )
    .await;
    assert_reviewable(&proposed, &["OOMKilled"], "resources.limits.memory");
    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "{out}");
    wait_phase(&sandbox.client, &ns.name, Phase::Verified).await;
    let d = wait_deployment_rolled_out(&sandbox.client, &ns.name, "app").await;
    let resources = container(&d).resources.unwrap();
    let limit = &resources.limits.unwrap()["memory"].0;
    assert_eq!(
        limit, "128Mi",
        "back to the healthy revision's limit, more than doubling 32Mi"
    );
}

#[tokio::test]
async fn removed_required_env_var_is_restored_and_verified() {
    let sandbox = Sandbox::connect().await;
    let (ns, proposed) = healthy_then_broken(
        &sandbox,
        "e2e-env",
        json!({"name": "db", "image": "postgres:16.4",
               "env": [{"name": "POSTGRES_PASSWORD", "value": "from-the-template"}]}),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "db", "env": [{"name": "POSTGRES_PASSWORD", "$patch": "delete"}]}]}}}}),
    )
    .await;
    assert_reviewable(&proposed, &["CrashLoopBackOff"], "containers[db].env");
    // Evidence carries the crash line but never the env value.
    let evidence = serde_json::to_string(&proposed.status.as_ref().unwrap().evidence).unwrap();
    assert!(evidence.contains("superuser password is not specified"));
    assert!(!evidence.contains("from-the-template"));
    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "{out}");
    wait_phase(&sandbox.client, &ns.name, Phase::Verified).await;
    let d = wait_deployment_rolled_out(&sandbox.client, &ns.name, "app").await;
    let env = container(&d).env.unwrap_or_default();
    assert!(env.iter().any(|e| e.name == "POSTGRES_PASSWORD"), "{env:?}");
}

#[tokio::test]
async fn a_case_whose_workload_is_deleted_before_review_closes_saying_so() {
    let sandbox = Sandbox::connect().await;
    operator();
    let ns = sandbox.e2e_namespace("e2e-deleted").await;
    create_deployment(
        &sandbox.client,
        &ns.name,
        "app",
        1,
        json!({"name": "web", "image": "nginx:9.9.9-nope"}),
    )
    .await;
    let open = wait_remediation(&sandbox.client, &ns.name, &[Phase::Proposed], STEP).await;
    support::delete::<Deployment>(&sandbox.client, &ns.name, "app").await;
    let closed = wait_phase(&sandbox.client, &ns.name, Phase::Resolved).await;
    assert_eq!(closed.uid(), open.uid(), "the same case was closed");
    let status = closed.status.unwrap();
    assert!(
        status.message.contains("deleted before any fix"),
        "the message says the workload was deleted: {}",
        status.message
    );
    assert!(status.applied_at.is_none(), "nothing was applied");
}

#[tokio::test]
async fn a_fix_whose_rollout_fails_is_rolled_back_to_the_original_values() {
    let sandbox = Sandbox::connect().await;
    // A new Deployment with 16Mi: no healthy revision tells the need, so the
    // rule doubles to 32Mi, still below redis's 64Mi: the fixed pods OOM too.
    operator();
    let ns = sandbox.e2e_namespace("e2e-rollback").await;
    create_deployment(&sandbox.client, &ns.name, "app",
            3,
            json!({"name": "cache", "image": "redis:7.2.5", "resources": {"limits": {"memory": "16Mi"}}}))
    .await;
    let proposed = wait_phase(&sandbox.client, &ns.name, Phase::Proposed).await;
    assert_reviewable(&proposed, &["OOMKilled"], "resources.limits.memory");
    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "{out}");
    let rolled_back = wait_phase(&sandbox.client, &ns.name, Phase::RolledBack).await;
    assert!(rolled_back.status.unwrap().message.contains("rolled back"));
    let d = Api::<Deployment>::namespaced(sandbox.client.clone(), &ns.name)
        .get("app")
        .await
        .unwrap();
    let limit = container(&d).resources.unwrap().limits.unwrap()["memory"]
        .0
        .clone();
    assert_eq!(limit, "16Mi", "the original value is back");
}

#[tokio::test]
async fn statefulset_and_daemonset_bad_images_are_fixed() {
    let sandbox = Sandbox::connect().await;
    operator();
    let ns = sandbox.e2e_namespace("e2e-sts-ds").await;
    let client = &sandbox.client;
    let template = |app: &str| {
        json!({"metadata": {"labels": {"app": app}},
               "spec": {"containers": [{"name": "main", "image": "busybox:1.36.1"}]}})
    };
    create::<StatefulSet>(
        client,
        &ns.name,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "store"},
               "spec": {"replicas": 2, "serviceName": "store", "podManagementPolicy": "Parallel",
                        "selector": {"matchLabels": {"app": "store"}}, "template": template("store")}}),
    )
    .await;
    create::<DaemonSet>(
        client,
        &ns.name,
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
               "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template("agent")}}),
    )
    .await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    wait_until(STEP, "statefulset and daemonset ready", || async {
        let s = sts.get("store").await.ok()?.status?;
        let d = ds.get("agent").await.ok()?.status?;
        (s.ready_replicas == Some(2)
            && d.number_ready == d.desired_number_scheduled
            && d.number_ready > 0)
            .then_some(())
    })
    .await;
    let bad = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:9.9.9"}]}}}});
    sts.patch("store", &PatchParams::default(), &Patch::Strategic(&bad))
        .await
        .unwrap();
    ds.patch("agent", &PatchParams::default(), &Patch::Strategic(&bad))
        .await
        .unwrap();

    let both = wait_until(STEP, "two proposed remediations", || async {
        let all = remediations(client, &ns.name).await;
        (all.len() == 2 && all.iter().all(|r| phase(r) == Phase::Proposed)).then_some(all)
    })
    .await;
    let kinds: std::collections::BTreeSet<_> =
        both.iter().map(|r| r.spec.target.kind.clone()).collect();
    assert_eq!(
        kinds,
        ["DaemonSet".to_string(), "StatefulSet".to_string()].into()
    );
    for r in &both {
        assert_reviewable(r, IMAGE_PULL, "containers[main].image");
        let (ok, out) = sandbox.approve(&ns.name, &r.name_any());
        assert!(ok, "{out}");
    }
    wait_until(STEP, "both verified", || async {
        let all = remediations(client, &ns.name).await;
        all.iter()
            .all(|r| phase(r) == Phase::Verified)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn approvals_that_must_never_apply_are_refused() {
    let sandbox = Sandbox::connect().await;
    let op = operator();
    let (ns, proposed) = healthy_then_broken(
        &sandbox,
        "e2e-refuse",
        json!({"name": "web", "image": "nginx:1.25.5"}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:0.0.0-gone"}]}}}}),
    )
    .await;
    let name = proposed.name_any();

    // 1. The operator's own identity cannot approve.
    let operator_kubeconfig = support::repo_root().join("target/operator/kubeconfig");
    let (ok, out) = support::kubectl(
        &sandbox.kubectl_path(),
        &operator_kubeconfig,
        &approval_patch(&ns.name, &name),
    );
    assert!(!ok && out.contains("own proposals"), "{out}");

    // 2. A proposal edited in the status (even re-hashed) cannot be approved.
    let api: Api<Remediation> = Api::namespaced(sandbox.client.clone(), &ns.name);
    let mut tampered = proposed.status.clone().unwrap().proposal.unwrap();
    tampered.actions[0].patch["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("nginx:1.27.3");
    let tampered = tampered.seal();
    let dry_hash = tampered.hash.clone();
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"proposal": tampered, "dryRun": {"proposalHash": dry_hash}}}),
        ),
    )
    .await
    .unwrap();
    let (ok, out) = sandbox.approve(&ns.name, &name);
    assert!(!ok && out.contains("not issued by the operator"), "{out}");

    // 3. A Remediation created by hand has no proposal: approving it is refused,
    //    and so is creating one already approved.
    let manual = json!({"apiVersion": "aiops-operator.dev/v1alpha1", "kind": "Remediation",
        "metadata": {"name": "by-hand"},
        "spec": {"target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app", "uid": "x"}, "approved": false}});
    create::<Remediation>(&sandbox.client, &ns.name, manual.clone()).await;
    let (ok, out) = sandbox.approve(&ns.name, "by-hand");
    assert!(!ok && out.contains("no proposal"), "{out}");
    let mut approved_at_birth = manual;
    approved_at_birth["metadata"]["name"] = json!("born-approved");
    approved_at_birth["spec"]["approved"] = json!(true);
    let created = api
        .create(
            &Default::default(),
            &serde_json::from_value(approved_at_birth).unwrap(),
        )
        .await;
    assert!(
        created.is_err(),
        "creating an approved Remediation is refused"
    );

    // Nothing was applied: the workload still runs the broken image.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = Api::<Deployment>::namespaced(sandbox.client.clone(), &ns.name)
        .get("app")
        .await
        .unwrap();
    assert_eq!(container(&d).image.as_deref(), Some("nginx:0.0.0-gone"));
    let current = api.get(&name).await.unwrap();
    assert_eq!(
        phase(&current),
        Phase::Proposed,
        "log:\n{}",
        op.log_tail(40)
    );
}

#[tokio::test]
async fn a_workload_that_recovers_on_its_own_is_resolved_and_pod_churn_causes_no_writes() {
    let sandbox = Sandbox::connect().await;
    // Crash-looping pods change status every few seconds; the Remediation must not.
    let (ns, proposed) = healthy_then_broken(
        &sandbox,
        "e2e-resolve",
        json!({"name": "cache", "image": "redis:7.2.5", "resources": {"limits": {"memory": "128Mi"}}}),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "cache", "resources": {"limits": {"memory": "48Mi"}}}]}}}}),
    )
    .await;
    let api: Api<Remediation> = Api::namespaced(sandbox.client.clone(), &ns.name);
    let before = proposed.resource_version();
    let restarts_before = restarts(&sandbox.client, &ns.name).await;
    wait_until(STEP, "the crash loop to go on", || async {
        (restarts(&sandbox.client, &ns.name).await >= restarts_before + 2).then_some(())
    })
    .await;
    let after = api.get(&proposed.name_any()).await.unwrap();
    assert_eq!(
        after.resource_version(),
        before,
        "no writes while nothing changed"
    );

    // A human fixes it by hand, before any approval: the case is Resolved.
    patch_deployment(
        &sandbox.client,
        &ns.name,
        "app",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "cache", "resources": {"limits": {"memory": "128Mi"}}}]}}}}),
    )
    .await;
    let resolved = wait_phase(&sandbox.client, &ns.name, Phase::Resolved).await;
    assert!(!resolved.spec.approved);
}

async fn restarts(client: &Client, ns: &str) -> i32 {
    support::pods(client, ns, "app=app")
        .await
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum()
}

#[tokio::test]
async fn kubectl_aiops_lists_shows_and_approves() {
    let sandbox = Sandbox::connect().await;
    let (ns, proposed) = healthy_then_broken(
        &sandbox,
        "e2e-plugin",
        json!({"name": "web", "image": "nginx:1.27.3"}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27.3-x"}]}}}}),
    )
    .await;
    // The same binary, invoked under the plugin's name.
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-aiops");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_aiops-operator"), &plugin).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&plugin)
            .env("KUBECONFIG", &sandbox.kubeconfig)
            .args(["-n", &ns.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl-aiops {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let name = proposed.name_any();
    assert!(run(&["list"]).contains(&name));
    let shown = run(&["show", &name]);
    assert!(shown.contains("nginx:1.27.3-x -> nginx:1.27.3"), "{shown}");
    let hash = proposed
        .status
        .as_ref()
        .unwrap()
        .proposal
        .as_ref()
        .unwrap()
        .hash
        .clone();
    let approved = run(&["approve", &name, "--hash", &hash]);
    assert!(approved.contains("by sandbox-admin"), "{approved}");
    wait_phase(&sandbox.client, &ns.name, Phase::Verified).await;
}
