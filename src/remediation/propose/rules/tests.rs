//! Unit tests of the rules, per failure class, including the "no safe fix" cases.
use super::*;
use crate::remediation::crd::{ContainerTemplate, Revision};
use crate::remediation::fixtures::evidence;

pub(super) fn deployment(containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "shop", "uid": "web-uid"},
           "spec": {"template": {"spec": {"containers": containers}}}})
}

pub(super) fn finding(container: &str, reason: &str) -> Finding {
    Finding {
        container: container.into(),
        reason: reason.into(),
        pods: 3,
        ..Finding::default()
    }
}

fn revision(number: i64, image: &str, healthy: bool) -> Revision {
    Revision {
        revision: number,
        source: format!("web-{number}"),
        images: BTreeMap::from([("nginx".to_string(), image.to_string())]),
        changed: vec!["containers[nginx].image".into()],
        healthy,
    }
}

pub(super) fn patch_containers(proposal: &Proposal) -> &Value {
    proposal.actions[0]
        .patch
        .pointer("/spec/template/spec/containers")
        .expect("containers in patch")
}

#[test]
fn image_pull_failure_restores_the_last_healthy_image() {
    let live = deployment(json!([{"name": "nginx", "image": "nginx:does-not-exist"}]));
    let mut ev = evidence("Deployment");
    ev.history = vec![
        revision(3, "nginx:also-broken", false),
        revision(2, "nginx:1.25.5", true),
        revision(1, "nginx:1.24.0", true),
    ];
    let proposal = propose_from_rules(
        &live,
        &ev,
        &[finding("nginx", "ImagePullBackOff")],
        &[],
        &RuleConfig::default(),
    );
    assert_eq!(proposal.actions.len(), 1);
    let action = &proposal.actions[0];
    assert_eq!(action.target, ev.workload);
    assert_eq!(action.namespace, "shop");
    assert_eq!(
        action.patch,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25.5"}]}}}})
    );
    assert_eq!(proposal.source, "rules");
    assert_eq!(proposal.class, "ImageRestore");
    assert_eq!(proposal.hash, proposal.content_hash(), "sealed");
    assert!(
        proposal.summary.contains("restore image nginx:1.25.5"),
        "{}",
        proposal.summary
    );
    assert!(
        proposal.root_cause.contains("revision 2"),
        "{}",
        proposal.root_cause
    );
    assert!(
        proposal
            .rollback_plan
            .iter()
            .any(|step| step.contains("re-apply image nginx:does-not-exist to container nginx"))
    );
    assert!(
        proposal
            .risks
            .iter()
            .any(|r| r.contains("goes back to nginx:1.25.5"))
    );
    assert!(proposal.confidence > 0.8);
}

#[test]
fn image_pull_failure_without_a_healthy_alternative_needs_a_human() {
    let live = deployment(json!([{"name": "nginx", "image": "nginx:does-not-exist"}]));
    let mut ev = evidence("Deployment");
    ev.history = vec![
        revision(2, "nginx:1.25.5", false),
        // Healthy, but the same image: restoring it changes nothing.
        revision(1, "nginx:does-not-exist", true),
    ];
    let proposal = propose_from_rules(
        &live,
        &ev,
        &[finding("nginx", "ErrImagePull")],
        &[],
        &RuleConfig::default(),
    );
    assert!(proposal.actions.is_empty());
    assert_eq!(proposal.class, "Diagnosis");
    assert!(
        proposal.summary.contains("needs a human"),
        "{}",
        proposal.summary
    );
    assert!(proposal.summary.contains("imagePullSecrets"));
    assert!(!proposal.rollback_plan.is_empty());
    assert!(proposal.confidence < 0.5);
}

#[test]
fn init_container_image_is_restored_under_init_containers() {
    let mut live = deployment(json!([{"name": "app", "image": "app:1"}]));
    live["spec"]["template"]["spec"]["initContainers"] =
        json!([{"name": "setup", "image": "busybox:0.0.0-missing"}]);
    let mut ev = evidence("Deployment");
    ev.history = vec![Revision {
        revision: 1,
        source: "web-1".into(),
        images: BTreeMap::from([
            ("setup".into(), "busybox:1.36.1".into()),
            ("app".into(), "app:1".into()),
        ]),
        changed: vec!["initContainers[setup].image".into()],
        healthy: true,
    }];
    let mut init_finding = finding("setup", "ImagePullBackOff");
    init_finding.init = true;
    let proposal = propose_from_rules(&live, &ev, &[init_finding], &[], &RuleConfig::default());
    assert_eq!(
        proposal.actions[0]
            .patch
            .pointer("/spec/template/spec/initContainers"),
        Some(&json!([{"name": "setup", "image": "busybox:1.36.1"}]))
    );
    assert!(
        proposal.actions[0]
            .patch
            .pointer("/spec/template/spec/containers")
            .is_none()
    );
}

#[test]
fn oom_doubles_the_memory_limit() {
    let live = deployment(json!([{"name": "redis", "image": "redis:7.2.5",
        "resources": {"requests": {"memory": "8Mi"}, "limits": {"memory": "16Mi", "cpu": "1"}}}]));
    let mut oom = finding("redis", OOM_KILLED);
    oom.exit_code = Some(137);
    let proposal = propose_from_rules(
        &live,
        &evidence("Deployment"),
        &[finding("redis", "CrashLoopBackOff"), oom],
        &[],
        &RuleConfig::default(),
    );
    assert_eq!(
        patch_containers(&proposal),
        &json!([{"name": "redis", "resources": {"limits": {"memory": "32Mi"}}}]),
        "only the memory limit; the request (8Mi) already fits"
    );
    assert!(
        proposal.summary.contains("from 16Mi to 32Mi"),
        "{}",
        proposal.summary
    );
    assert!(proposal.rollback_plan[0].contains("back to 16Mi"));
    assert!(
        proposal.root_cause.contains("exit code 137"),
        "{}",
        proposal.root_cause
    );
}

#[test]
fn oom_stops_at_the_cap_and_lowers_an_oversized_request() {
    let live = deployment(json!([{"name": "app", "image": "app:1",
        "resources": {"requests": {"memory": "1536Mi"}, "limits": {"memory": "1536Mi"}}}]));
    let proposal = propose_from_rules(
        &live,
        &evidence("Deployment"),
        &[finding("app", OOM_KILLED)],
        &[],
        &RuleConfig::default(),
    );
    assert_eq!(
        patch_containers(&proposal),
        &json!([{"name": "app", "resources": {"limits": {"memory": "2Gi"}}}])
    );
    assert_eq!(proposal.class, "MemoryRaise");

    // A request above the new limit (only possible with an odd cap) is lowered to it.
    let live = deployment(json!([{"name": "app", "image": "app:1",
        "resources": {"requests": {"memory": "900Mi"}, "limits": {"memory": "800Mi"}}}]));
    let proposal = propose_from_rules(
        &live,
        &evidence("Deployment"),
        &[finding("app", OOM_KILLED)],
        &[],
        &RuleConfig {
            memory_cap: 850 * 1024 * 1024,
        },
    );
    assert_eq!(
        patch_containers(&proposal),
        &json!([{"name": "app", "resources": {"limits": {"memory": "850Mi"}, "requests": {"memory": "850Mi"}}}])
    );
}

#[test]
fn oom_at_the_cap_or_without_a_limit_needs_a_human() {
    for resources in [json!({"limits": {"memory": "2Gi"}}), json!({})] {
        let live = deployment(json!([{"name": "app", "image": "app:1", "resources": resources}]));
        let proposal = propose_from_rules(
            &live,
            &evidence("Deployment"),
            &[finding("app", OOM_KILLED)],
            &[],
            &RuleConfig::default(),
        );
        assert!(proposal.actions.is_empty(), "{resources}");
        assert!(proposal.summary.contains("needs a human"));
    }
}

#[test]
fn cronjob_patches_go_under_the_job_template() {
    let live = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "nginx", "image": "nginx:broken",
                            "resources": {"limits": {"memory": "64Mi"}}}]}}}}}});
    let mut ev = evidence("CronJob");
    ev.history = vec![revision(1, "nginx:1.25.5", true)];
    let config = RuleConfig::default();
    let pull = propose_from_rules(
        &live,
        &ev,
        &[finding("nginx", "ImagePullBackOff")],
        &[],
        &config,
    );
    assert_eq!(
        pull.actions[0].patch,
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
                   {"name": "nginx", "image": "nginx:1.25.5"}]}}}}}})
    );
    let oom = propose_from_rules(&live, &ev, &[finding("nginx", OOM_KILLED)], &[], &config);
    assert_eq!(
        oom.actions[0]
            .patch
            .pointer("/spec/jobTemplate/spec/template/spec/containers/0/resources/limits/memory"),
        Some(&json!("128Mi"))
    );
}

pub(super) fn revision_template(number: i64, container: Value, healthy: bool) -> RevisionTemplate {
    RevisionTemplate {
        revision: number,
        source: format!("db-{number}"),
        source_kind: "ReplicaSet".into(),
        source_api_version: "apps/v1".into(),
        source_uid: format!("db-{number}-uid"),
        digest: format!("hmac-sha256:db-{number}"),
        template: json!({"metadata": {"labels": {"app": "db"}},
                         "spec": {"containers": [container]}}),
        healthy,
        changed: vec!["containers[db].env".into()],
    }
}

#[test]
fn oom_after_a_limit_cut_goes_back_to_the_healthy_limit_when_doubling_is_not_enough() {
    let live = deployment(json!([{"name": "redis", "image": "redis:7.2.5",
        "resources": {"limits": {"memory": "16Mi"}}}]));
    let mut oom = finding("redis", OOM_KILLED);
    oom.exit_code = Some(137);
    let healthy = revision_template(
        1,
        json!({"name": "redis", "image": "redis:7.2.5",
               "resources": {"limits": {"memory": "128Mi"}}}),
        true,
    );
    let unhealthy = revision_template(
        2,
        json!({"name": "redis", "image": "redis:7.2.5",
               "resources": {"limits": {"memory": "1Gi"}}}),
        false,
    );
    let proposal = propose_from_rules(
        &live,
        &evidence("Deployment"),
        &[oom.clone()],
        &[unhealthy, healthy.clone()],
        &RuleConfig::default(),
    );
    assert_eq!(
        patch_containers(&proposal),
        &json!([{"name": "redis", "resources": {"limits": {"memory": "128Mi"}}}]),
        "the newest healthy revision's limit, not 32Mi and not the unhealthy 1Gi"
    );
    // Doubling wins when it is more than the healthy limit was.
    let small = revision_template(
        1,
        json!({"name": "redis", "resources": {"limits": {"memory": "20Mi"}}}),
        true,
    );
    let proposal = propose_from_rules(
        &live,
        &evidence("Deployment"),
        &[oom],
        &[small],
        &RuleConfig::default(),
    );
    assert_eq!(
        patch_containers(&proposal),
        &json!([{"name": "redis", "resources": {"limits": {"memory": "32Mi"}}}]),
    );
}

#[test]
fn crash_after_a_template_change_reverts_the_changed_fields() {
    let live = deployment(json!([{"name": "db", "image": "postgres:16.4",
        "args": ["--bad-flag"],
        "env": [{"name": "POSTGRES_USER", "value": "app"}]}]));
    let healthy_env = json!([
        {"name": "POSTGRES_USER", "value": "app"},
        {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "API_TOKEN", "value": "sk-live-PLANTED123456789"}
    ]);
    let history = vec![
        revision_template(3, json!({"name": "db", "image": "postgres:16.4"}), false),
        revision_template(
            2,
            json!({"name": "db", "image": "postgres:16.4", "env": healthy_env}),
            true,
        ),
    ];
    let ev = evidence("Deployment").with_previous_log(
        "db-1",
        "db",
        vec!["Error: Database is uninitialized and superuser password is not specified.".into()],
    );
    let mut crash = finding("db", "CrashLoopBackOff");
    crash.exit_code = Some(1);
    let proposal = propose_from_rules(&live, &ev, &[crash], &history, &RuleConfig::default());
    assert_eq!(
        patch_containers(&proposal),
        &json!([{"name": "db", "env": [
            {"name": "POSTGRES_USER", "value": "app"},
            {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
        ], "args": []}]),
        "env and args revert to revision 2; the unchanged image is left alone; the token \
         is not copied"
    );
    assert_eq!(
        proposal.actions[0].env_from_revision,
        vec![EnvFromRevision {
            container: "db".into(),
            init: false,
            name: "API_TOKEN".into(),
            revision: history[1].reference().expect("a digest"),
        }],
        "the token comes back by reference to revision 2"
    );
    assert!(
        proposal
            .summary
            .contains("revert env, args of container db to revision 2"),
        "{}",
        proposal.summary
    );
    assert!(
        proposal
            .summary
            .contains("restore env API_TOKEN of container db from revision 2"),
        "{}",
        proposal.summary
    );
    let whole = serde_json::to_string(&proposal).unwrap();
    assert!(!whole.contains("PLANTED"), "{whole}");
    assert!(
        proposal
            .root_cause
            .contains("superuser password is not specified"),
        "{}",
        proposal.root_cause
    );
    assert!(proposal.root_cause.contains("exit code 1"));
    // Values live only in the patch, never in the text a model or reviewer reads.
    let text = serde_json::to_string(&(
        &proposal.summary,
        &proposal.root_cause,
        &proposal.risks,
        &proposal.rollback_plan,
    ))
    .unwrap();
    assert!(!text.contains("PLANTED"), "{text}");
    assert!(!text.contains("secretKeyRef"), "{text}");
}

#[test]
fn env_entries_added_by_the_bad_revision_are_named_as_a_risk() {
    let live = deployment(json!([{"name": "db", "image": "postgres:16.4",
        "env": [{"name": "DATABASE_URL", "value": "postgres://u:p@wrong/db"}]}]));
    let history = vec![revision_template(
        1,
        json!({"name": "db", "image": "postgres:16.4", "env": [{"name": "POSTGRES_PASSWORD", "value": "x"}]}),
        true,
    )];
    let proposal = propose_from_rules(
        &live,
        &evidence("Deployment"),
        &[finding("db", "CrashLoopBackOff")],
        &history,
        &RuleConfig::default(),
    );
    assert_eq!(proposal.actions.len(), 1);
    assert!(
        proposal
            .risks
            .iter()
            .any(|r| r.contains("(DATABASE_URL) stay")),
        "{:?}",
        proposal.risks
    );
    assert!(
        !serde_json::to_string(&proposal.risks)
            .unwrap()
            .contains("wrong")
    );
    assert!(proposal.confidence <= 0.5);
}

#[test]
fn crash_without_a_template_change_or_healthy_revision_needs_a_human() {
    let container = json!({"name": "db", "image": "postgres:16.4"});
    let live = deployment(json!([container.clone()]));
    let same = vec![revision_template(1, container, true)];
    let unhealthy = vec![revision_template(
        1,
        json!({"name": "db", "image": "postgres:16.3"}),
        false,
    )];
    for history in [same, unhealthy, Vec::new()] {
        let proposal = propose_from_rules(
            &live,
            &evidence("Deployment"),
            &[finding("db", "CrashLoopBackOff")],
            &history,
            &RuleConfig::default(),
        );
        assert!(proposal.actions.is_empty(), "{history:?}");
        assert!(
            proposal.summary.contains("needs a human"),
            "{}",
            proposal.summary
        );
    }
}

#[test]
fn config_errors_revert_env_only() {
    let live = deployment(json!([{"name": "db", "image": "postgres:16.5",
        "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}}]}]));
    let history = vec![revision_template(
        1,
        json!({"name": "db", "image": "postgres:16.4", "env": [{"name": "P", "value": "x"}]}),
        true,
    )];
    let proposal = propose_from_rules(
        &live,
        &evidence("Deployment"),
        &[finding("db", "CreateContainerConfigError")],
        &history,
        &RuleConfig::default(),
    );
    let container = &patch_containers(&proposal)[0];
    assert!(container.get("env").is_some());
    assert!(
        container.get("image").is_none(),
        "image is not an env fix: {container}"
    );
}

#[test]
fn managed_workloads_warn_that_a_sync_reverts_the_patch() {
    let live = deployment(json!([{"name": "nginx", "image": "nginx:bad"}]));
    let mut ev = evidence("Deployment");
    ev.history = vec![revision(1, "nginx:1.25.5", true)];
    ev.management = BTreeMap::from([
        ("app.kubernetes.io/managed-by".into(), "Helm".into()),
        (
            "argocd.argoproj.io/tracking-id".into(),
            "shop:apps/Deployment:shop/web".into(),
        ),
    ]);
    let proposal = propose_from_rules(
        &live,
        &ev,
        &[finding("nginx", "ImagePullBackOff")],
        &[],
        &RuleConfig::default(),
    );
    let risks = proposal.risks.join("\n");
    assert!(
        risks.contains("helm upgrade reverts this live patch"),
        "{risks}"
    );
    assert!(risks.contains("sync from Git"), "{risks}");
}

#[test]
fn statefulset_fixes_warn_about_stuck_pods() {
    let mut live = deployment(json!([{"name": "nginx", "image": "nginx:bad"}]));
    live["kind"] = json!("StatefulSet");
    let mut ev = evidence("StatefulSet");
    ev.history = vec![revision(1, "nginx:1.25.5", true)];
    let proposal = propose_from_rules(
        &live,
        &ev,
        &[finding("nginx", "ImagePullBackOff")],
        &[],
        &RuleConfig::default(),
    );
    assert_eq!(proposal.actions.len(), 1);
    assert!(
        proposal
            .risks
            .iter()
            .any(|r| r.contains("does not replace pods stuck")),
        "{:?}",
        proposal.risks
    );
}

#[test]
fn kinds_without_a_patchable_template_get_advice_only() {
    for kind in ["Job", "Pod", "ReplicaSet"] {
        let live = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:bad"}]}},
                     "containers": [{"name": "nginx", "image": "nginx:bad"}]}});
        let mut ev = evidence(kind);
        ev.history = vec![revision(1, "nginx:1.25.5", true)];
        let proposal = propose_from_rules(
            &live,
            &ev,
            &[finding("nginx", "ImagePullBackOff")],
            &[],
            &RuleConfig::default(),
        );
        assert!(proposal.actions.is_empty(), "{kind}");
        assert!(
            proposal.summary.contains("needs a human"),
            "{}",
            proposal.summary
        );
        assert!(
            proposal.summary.contains("restore image nginx:1.25.5"),
            "{}",
            proposal.summary
        );
    }
}

#[test]
fn other_failures_are_diagnosed_without_actions() {
    let live = deployment(json!([{"name": "app", "image": "app:1"}]));
    let mut ev = evidence("Deployment");
    ev.containers = vec![ContainerTemplate {
        name: "app".into(),
        probes: vec!["readiness: httpGet :8080/ready every 10s, timeout 1s, 3 failures".into()],
        ..ContainerTemplate::default()
    }];
    let mut unschedulable = finding("", UNSCHEDULABLE);
    unschedulable.message = "0/4 nodes are available: 4 Insufficient memory.".into();
    let proposal = propose_from_rules(
        &live,
        &ev,
        &[unschedulable, finding("app", "NotReady")],
        &[],
        &RuleConfig::default(),
    );
    assert!(proposal.actions.is_empty());
    assert!(
        proposal.summary.contains("Insufficient memory"),
        "{}",
        proposal.summary
    );
    assert!(
        proposal.summary.contains("httpGet :8080/ready"),
        "{}",
        proposal.summary
    );
    assert!(
        proposal.root_cause.contains("Unschedulable"),
        "{}",
        proposal.root_cause
    );
    assert!(!proposal.risks.is_empty() && !proposal.rollback_plan.is_empty());
    assert_eq!(proposal.hash, proposal.content_hash());
}

#[test]
fn one_fix_and_one_unfixable_container_share_a_proposal() {
    let live = deployment(json!([
        {"name": "nginx", "image": "nginx:bad"},
        {"name": "side", "image": "side:1"}
    ]));
    let mut ev = evidence("Deployment");
    ev.history = vec![revision(1, "nginx:1.25.5", true)];
    let proposal = propose_from_rules(
        &live,
        &ev,
        &[
            finding("nginx", "ImagePullBackOff"),
            finding("side", "NotReady"),
        ],
        &[],
        &RuleConfig::default(),
    );
    assert_eq!(
        patch_containers(&proposal).as_array().map(Vec::len),
        Some(1)
    );
    assert!(
        proposal
            .summary
            .contains("container side (NotReady) needs a human"),
        "{}",
        proposal.summary
    );
    assert!(proposal.confidence <= 0.5);
}
