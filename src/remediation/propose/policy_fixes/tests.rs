//! Each fix rule on fixtures, judged by the project's own policies: a fix
//! must make the workload pass the policy it names and fail nothing new;
//! a case with no safe fix proposes no action and names the fields.
use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::policy::{EvalInput, PolicySet, RuleStatus};

const DIGEST: &str = "sha256:3febce43007c4596e183fba74824f94d1224b8e584079e254557f251017fd946";
const OTHER: &str = "sha256:5a81cdb4777406a26c0757f5bd9a2922636a55cd7062f5dff7dc1d8147a033b3";

fn policies() -> PolicySet {
    PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
        .expect("the project's policies load")
}

fn deployment(pod_spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
           "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}}})
}

fn target(kind: &str) -> WorkloadRef {
    WorkloadRef {
        api_version: if kind == "Pod" { "v1" } else { "apps/v1" }.into(),
        kind: kind.into(),
        name: "web".into(),
        uid: "u-1".into(),
    }
}

fn failures(set: &PolicySet, object: &Value) -> Vec<PolicyFailure> {
    set.validate(&EvalInput::for_resource(object))
        .into_iter()
        .filter(|o| o.status == RuleStatus::Fail)
        .map(|o| PolicyFailure {
            policy: o.policy,
            rule: o.rule,
            message: o.message,
        })
        .collect()
}

fn failing_policies(set: &PolicySet, object: &Value) -> BTreeSet<String> {
    failures(set, object)
        .into_iter()
        .map(|f| f.policy)
        .collect()
}

fn reported(container: &str, ids: &[&str]) -> ReportedImages {
    ReportedImages::from([(
        container.to_string(),
        ids.iter().map(|id| id.to_string()).collect(),
    )])
}

/// Proposes for `live` and returns the proposal and the patched object.
fn propose(live: &Value, kind: &str, images: &ReportedImages) -> (Proposal, Value) {
    let set = policies();
    let found = failures(&set, live);
    assert!(!found.is_empty(), "the fixture must violate a policy");
    let proposal = propose_policy_fixes(live, &target(kind), "shop", &found, images);
    let patched = proposal
        .actions
        .iter()
        .fold(live.clone(), |object, a| merge_apply(&object, &a.patch));
    (proposal, patched)
}

/// The fix makes `policy` pass and leaves nothing else failing that did not fail before.
fn assert_fixed(live: &Value, patched: &Value, policy: &str) {
    let set = policies();
    let before = failing_policies(&set, live);
    let after = failing_policies(&set, patched);
    assert!(
        before.contains(policy),
        "{policy} failed before: {before:?}"
    );
    assert!(!after.contains(policy), "{policy} still fails: {after:?}");
    assert!(
        after.is_subset(&before),
        "new failures: {after:?} vs {before:?}"
    );
}

#[test]
fn a_latest_image_is_pinned_to_the_digest_its_pods_run() {
    let live = deployment(json!({"containers": [{"name": "app", "image": "nginx:latest"}]}));
    let (proposal, patched) = propose(
        &live,
        "Deployment",
        &reported("app", &[&format!("docker.io/library/nginx@{DIGEST}")]),
    );
    assert_eq!(proposal.class, "PolicyFix:disallow-latest-tag");
    assert_eq!(
        patched.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!(format!("nginx@{DIGEST}")))
    );
    assert_fixed(&live, &patched, "disallow-latest-tag");
    assert!(
        proposal.summary.contains("the digest its pods run"),
        "{}",
        proposal.summary
    );
}

#[test]
fn an_untagged_image_on_a_registry_port_keeps_its_repository() {
    let live = deployment(
        json!({"containers": [{"name": "app", "image": "registry.example:5000/team/app"}]}),
    );
    let (_, patched) = propose(
        &live,
        "Deployment",
        &reported(
            "app",
            &[&format!("registry.example:5000/team/app@{DIGEST}")],
        ),
    );
    assert_eq!(
        patched.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!(format!("registry.example:5000/team/app@{DIGEST}")))
    );
    assert_fixed(&live, &patched, "disallow-latest-tag");
}

#[test]
fn pods_that_disagree_on_the_digest_get_no_pin() {
    let live = deployment(json!({"containers": [{"name": "app", "image": "nginx"}]}));
    let ids = [
        format!("docker.io/library/nginx@{DIGEST}"),
        format!("docker.io/library/nginx@{OTHER}"),
    ];
    let (proposal, _) = propose(&live, "Deployment", &reported("app", &[&ids[0], &ids[1]]));
    assert!(proposal.actions.is_empty());
    assert!(
        proposal.summary.contains("different digests"),
        "{}",
        proposal.summary
    );
    let (none, _) = propose(&live, "Deployment", &ReportedImages::new());
    assert!(none.actions.is_empty());
    assert!(
        none.summary.contains("no running pod reports"),
        "{}",
        none.summary
    );
}

#[test]
fn a_bare_pod_takes_the_pin_in_place_but_no_security_change() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
                     "spec": {"containers": [{"name": "app", "image": "nginx:latest",
                                              "securityContext": {"privileged": true}}]}});
    let (proposal, patched) = propose(
        &pod,
        "Pod",
        &reported("app", &[&format!("docker.io/library/nginx@{DIGEST}")]),
    );
    assert_eq!(proposal.class, "PolicyFix:disallow-latest-tag");
    assert_eq!(
        patched["spec"]["containers"][0]["securityContext"]["privileged"],
        json!(true)
    );
    assert!(
        proposal.summary.contains("cannot change except images"),
        "{}",
        proposal.summary
    );
    assert_fixed(&pod, &patched, "disallow-latest-tag");
}

#[test]
fn a_privileged_container_is_made_unprivileged_and_nothing_else_changes() {
    let live = deployment(json!({"containers": [
        {"name": "agent", "image": "busybox:1.36.1", "securityContext": {"privileged": true}},
        {"name": "side", "image": "nginx:1.25.5"}]}));
    let (proposal, patched) = propose(&live, "Deployment", &ReportedImages::new());
    assert_eq!(proposal.class, "PolicyFix:disallow-privileged-containers");
    assert_eq!(proposal.actions.len(), 1);
    assert_eq!(
        proposal.actions[0].patch["spec"]["template"]["spec"],
        json!({"containers": [{"name": "agent", "securityContext": {"privileged": false}}]})
    );
    assert_fixed(&live, &patched, "disallow-privileged-containers");
}

#[test]
fn capabilities_outside_the_baseline_are_removed_and_baseline_ones_kept() {
    let live = deployment(
        json!({"containers": [{"name": "app", "image": "nginx:1.25.5",
        "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", "SYS_ADMIN", "CAP_CHOWN"],
                                              "drop": ["ALL"]}}}]}),
    );
    let (proposal, patched) = propose(&live, "Deployment", &ReportedImages::new());
    assert_eq!(
        patched.pointer("/spec/template/spec/containers/0/securityContext/capabilities"),
        Some(&json!({"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}))
    );
    assert!(
        proposal.summary.contains("SYS_ADMIN, CAP_CHOWN"),
        "{}",
        proposal.summary
    );
    assert_fixed(&live, &patched, "disallow-capabilities");
}

#[test]
fn proc_mount_seccomp_and_apparmor_fields_are_reset_at_every_level() {
    let live = deployment(json!({
        "securityContext": {"seccompProfile": {"type": "Unconfined"},
                            "appArmorProfile": {"type": "Unconfined"}},
        "initContainers": [{"name": "init", "image": "busybox:1.36.1",
                            "securityContext": {"seccompProfile": {"type": "Unconfined"}}}],
        "containers": [{"name": "app", "image": "nginx:1.25.5",
                        "securityContext": {"procMount": "Unmasked",
                                            "appArmorProfile": {"type": "Unconfined"}}}]}));
    let (proposal, patched) = propose(&live, "Deployment", &ReportedImages::new());
    for policy in [
        "disallow-proc-mount",
        "restrict-seccomp",
        "restrict-apparmor-profiles",
    ] {
        assert_fixed(&live, &patched, policy);
        assert!(proposal.class.contains(policy), "{}", proposal.class);
    }
    let spec = &patched["spec"]["template"]["spec"];
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        spec["initContainers"][0]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        spec["containers"][0]["securityContext"]["procMount"],
        "Default"
    );
}

#[test]
fn unsafe_sysctls_are_removed_and_safe_ones_kept() {
    let live = deployment(json!({
        "securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"},
                                        {"name": "kernel.msgmax", "value": "65536"}]},
        "containers": [{"name": "app", "image": "nginx:1.25.5"}]}));
    let (_, patched) = propose(&live, "Deployment", &ReportedImages::new());
    assert_eq!(
        patched.pointer("/spec/template/spec/securityContext/sysctls"),
        Some(&json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}]))
    );
    assert_fixed(&live, &patched, "restrict-sysctls");
}

#[test]
fn host_pid_is_turned_off_but_host_network_only_diagnosed() {
    let live = deployment(json!({"hostPID": true, "hostNetwork": true,
        "containers": [{"name": "app", "image": "nginx:1.25.5"}]}));
    let (proposal, _) = propose(&live, "Deployment", &ReportedImages::new());
    // hostPID could be fixed, but the policy would still fail on
    // hostNetwork: a partial fix of one policy is not proposed as a fix.
    assert!(proposal.actions.is_empty());
    assert!(
        proposal
            .summary
            .contains("spec.template.spec.hostNetwork is true"),
        "{}",
        proposal.summary
    );

    let only_pid = deployment(json!({"hostPID": true, "hostIPC": true,
        "containers": [{"name": "app", "image": "nginx:1.25.5"}]}));
    let (proposal, patched) = propose(&only_pid, "Deployment", &ReportedImages::new());
    assert_eq!(proposal.class, "PolicyFix:disallow-host-namespaces");
    assert_eq!(patched["spec"]["template"]["spec"]["hostPID"], json!(false));
    assert_eq!(patched["spec"]["template"]["spec"]["hostIPC"], json!(false));
    assert_fixed(&only_pid, &patched, "disallow-host-namespaces");
}

#[test]
fn host_paths_host_ports_and_host_processes_have_no_safe_fix() {
    let live = deployment(json!({
        "volumes": [{"name": "logs", "hostPath": {"path": "/var/log"}}],
        "securityContext": {"windowsOptions": {"hostProcess": true}},
        "containers": [{"name": "app", "image": "nginx:1.25.5",
                        "ports": [{"containerPort": 80, "hostPort": 80}]}]}));
    let (proposal, _) = propose(&live, "Deployment", &ReportedImages::new());
    assert!(proposal.actions.is_empty());
    assert_eq!(proposal.class, "Diagnosis");
    for field in [
        "spec.template.spec.volumes[logs].hostPath (node path /var/log)",
        "spec.template.spec.containers[app].ports[80].hostPort = 80",
        "spec.template.spec.securityContext.windowsOptions.hostProcess",
    ] {
        assert!(
            proposal.summary.contains(field),
            "{field} in {}",
            proposal.summary
        );
    }
}

#[test]
fn selinux_type_is_reset_but_a_user_needs_a_human() {
    let typed = deployment(
        json!({"containers": [{"name": "app", "image": "nginx:1.25.5",
        "securityContext": {"seLinuxOptions": {"type": "spc_t", "level": "s0:c1"}}}]}),
    );
    let (proposal, patched) = propose(&typed, "Deployment", &ReportedImages::new());
    assert_eq!(proposal.class, "PolicyFix:disallow-selinux");
    assert_eq!(
        patched.pointer("/spec/template/spec/containers/0/securityContext/seLinuxOptions"),
        Some(&json!({"type": "container_t", "level": "s0:c1"}))
    );
    assert_fixed(&typed, &patched, "disallow-selinux");

    let user = deployment(
        json!({"containers": [{"name": "app", "image": "nginx:1.25.5",
        "securityContext": {"seLinuxOptions": {"user": "system_u"}}}]}),
    );
    let (proposal, _) = propose(&user, "Deployment", &ReportedImages::new());
    assert!(proposal.actions.is_empty());
    assert!(
        proposal
            .summary
            .contains("containers[app].securityContext.seLinuxOptions.user is set"),
        "{}",
        proposal.summary
    );
}

#[test]
fn fixable_and_unfixable_policies_together_fix_what_is_safe_and_say_the_rest() {
    let live = deployment(json!({"hostNetwork": true, "containers": [
        {"name": "app", "image": "nginx:latest", "securityContext": {"privileged": true}}]}));
    let (proposal, patched) = propose(
        &live,
        "Deployment",
        &reported("app", &[&format!("docker.io/library/nginx@{DIGEST}")]),
    );
    assert_eq!(
        proposal.class,
        "PolicyFix:disallow-latest-tag,PolicyFix:disallow-privileged-containers"
    );
    assert!(
        proposal
            .summary
            .contains("needs a human: disallow-host-namespaces"),
        "{}",
        proposal.summary
    );
    assert!(proposal.confidence <= 0.5);
    assert_fixed(&live, &patched, "disallow-latest-tag");
    assert_fixed(&live, &patched, "disallow-privileged-containers");
    assert_eq!(
        fixed_policies(&proposal.class),
        vec!["disallow-latest-tag", "disallow-privileged-containers"]
    );
}

#[test]
fn a_cronjob_is_patched_in_its_job_template() {
    let live = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "app", "image": "busybox:1.36.1",
                            "securityContext": {"privileged": true}}]}}}}}});
    let mut cron = target("CronJob");
    cron.api_version = "batch/v1".into();
    let set = policies();
    let proposal = propose_policy_fixes(
        &live,
        &cron,
        "shop",
        &failures(&set, &live),
        &ReportedImages::new(),
    );
    let patched = merge_apply(&live, &proposal.actions[0].patch);
    assert_eq!(
        patched.pointer(
            "/spec/jobTemplate/spec/template/spec/containers/0/securityContext/privileged"
        ),
        Some(&json!(false))
    );
    assert_fixed(&live, &patched, "disallow-privileged-containers");
}

#[test]
fn a_policy_without_a_fix_rule_is_a_diagnosis() {
    let found = vec![PolicyFailure {
        policy: "require-team-label".into(),
        rule: "team".into(),
        message: "label team is required".into(),
    }];
    let live = deployment(json!({"containers": [{"name": "app", "image": "nginx:1.25.5"}]}));
    let proposal = propose_policy_fixes(
        &live,
        &target("Deployment"),
        "shop",
        &found,
        &ReportedImages::new(),
    );
    assert!(proposal.actions.is_empty());
    assert!(
        proposal
            .summary
            .contains("require-team-label: no fix rule exists"),
        "{}",
        proposal.summary
    );
    assert!(proposal.root_cause.contains("label team is required"));
}

#[test]
fn image_names_are_read_like_the_policy_reads_them() {
    assert!(image_pin::floats("nginx"));
    assert!(image_pin::floats("nginx:latest"));
    assert!(image_pin::floats("registry.example:5000/app"));
    assert!(!image_pin::floats("registry.example:5000/app:1.2"));
    assert!(!image_pin::floats(&format!("nginx@{DIGEST}")));
    assert_eq!(
        image_pin::repository("registry.example:5000/app:latest"),
        "registry.example:5000/app"
    );
    assert_eq!(
        image_pin::digest_of(&format!("docker.io/library/nginx@{DIGEST}")),
        Some(DIGEST)
    );
    assert_eq!(
        image_pin::digest_of("docker.io/library/nginx@sha256:short"),
        None
    );
}

#[test]
fn only_floating_images_without_a_reported_digest_are_awaited() {
    let spec = json!({
        "initContainers": [{"name": "setup", "image": "busybox"}],
        "containers": [
            {"name": "app", "image": "nginx:latest"},
            {"name": "side", "image": "envoy:1.30"},
        ]
    });
    let none = ReportedImages::new();
    assert_eq!(image_pin::awaiting_digests(&spec, &none), ["setup", "app"]);
    let mut some = reported("app", &[&format!("docker.io/library/nginx@{DIGEST}")]);
    assert_eq!(image_pin::awaiting_digests(&spec, &some), ["setup"]);
    // An imageID that is no digest does not end the wait.
    some.insert(
        "setup".into(),
        BTreeSet::from(["busybox:latest".to_string()]),
    );
    assert_eq!(image_pin::awaiting_digests(&spec, &some), ["setup"]);
    some.insert(
        "setup".into(),
        BTreeSet::from([format!("docker.io/library/busybox@{OTHER}")]),
    );
    assert!(image_pin::awaiting_digests(&spec, &some).is_empty());
}
