//! Guardrails: every proposal, whatever its source (rules or a model), is
//! checked here before anyone sees it. Nothing a proposal says is trusted:
//!
//! - actions may only target the Remediation's own workload (same
//!   namespace, kind, name and uid) and never the operator itself;
//! - patches may only touch the field paths allowed for the findings'
//!   classes (image, imagePullSecrets, resources, env, command/args, probes;
//!   for a policy fix, only the fields of the policies it names: image,
//!   security contexts, hostPID/hostIPC), and only of containers that
//!   already exist;
//! - a policy fix must make the workload pass every policy it names;
//! - the patched object must not fail a baseline policy (in Enforce) that
//!   the live object passes, so a fix can never add privileged, host access
//!   or `:latest`;
//! - a bare Pod may only take new images (the rest of its spec is
//!   immutable);
//! - size limits apply, and a patch that changes nothing is refused.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::crd::{Finding, GuardrailVerdict, Proposal, WorkloadRef};
use super::patch::{merge_apply, touched_paths};
use super::policy_case::{POLICY_REASON, still_failing};
use super::propose::policy_fixes::fixed_policies;
use crate::k8s::pod_spec::{get_dotted, pod_spec_path};
use crate::policy::{EvalInput, PolicySet, RuleStatus};

/// Limits on what a proposal may carry.
#[derive(Clone, Debug)]
pub struct GuardrailLimits {
    pub max_actions: usize,
    pub max_patch_bytes: usize,
    /// The operator's own namespace: nothing in it is ever patched.
    pub operator_namespace: String,
}

impl Default for GuardrailLimits {
    fn default() -> Self {
        GuardrailLimits {
            max_actions: 4,
            max_patch_bytes: 16 * 1024,
            operator_namespace: "aiops-system".into(),
        }
    }
}

/// What kind of change a finding allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeClass {
    Image,
    ImagePullSecrets,
    Resources,
    Env,
    CommandArgs,
    Probes,
    /// A container's `securityContext`.
    SecurityContext,
    /// The pod's `securityContext`.
    PodSecurityContext,
    /// The pod's `hostPID` and `hostIPC`.
    HostNamespaces,
}

/// The change classes a finding's reason allows: the same allowlist the
/// model's prompt states.
pub fn allowed_changes(reason: &str) -> &'static [ChangeClass] {
    use ChangeClass::*;
    match reason {
        "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => &[Image, ImagePullSecrets],
        "OOMKilled" => &[Resources],
        "CrashLoopBackOff" | "RunContainerError" | "CreateContainerError" => {
            &[Image, Env, CommandArgs, Resources, Probes]
        }
        "CreateContainerConfigError" => &[Env],
        "NotReady" => &[Probes, Resources],
        "Unschedulable" => &[Resources],
        _ => &[],
    }
}

/// The change classes a fix of a baseline policy needs: the fields its fix
/// rule resets, and nothing else.
pub fn policy_changes(policy: &str) -> &'static [ChangeClass] {
    use ChangeClass::*;
    match policy.rsplit('/').next().unwrap_or(policy) {
        "disallow-latest-tag" => &[Image],
        "disallow-privileged-containers" | "disallow-capabilities" | "disallow-proc-mount" => {
            &[SecurityContext]
        }
        "restrict-seccomp" | "disallow-selinux" | "restrict-apparmor-profiles" => {
            &[SecurityContext, PodSecurityContext]
        }
        "restrict-sysctls" => &[PodSecurityContext],
        "disallow-host-namespaces" => &[HostNamespaces],
        _ => &[],
    }
}

/// What one finding allows a proposal to change. A policy violation allows
/// its policy's fields only when the proposal's class says it fixes that
/// policy.
fn finding_changes(finding: &Finding, proposal: &Proposal) -> &'static [ChangeClass] {
    if finding.reason != POLICY_REASON {
        return allowed_changes(&finding.reason);
    }
    let policy = finding
        .message
        .split_once('/')
        .map(|(policy, _)| policy)
        .unwrap_or_default();
    if fixed_policies(&proposal.class).contains(&policy) {
        policy_changes(policy)
    } else {
        &[]
    }
}

/// The change class of a pod-level field (`securityContext.sysctls`, `hostPID`).
fn pod_field_class(rest: &str) -> Option<ChangeClass> {
    let field = rest.split(['.', '[']).next()?;
    match field {
        "securityContext" => Some(ChangeClass::PodSecurityContext),
        "hostPID" | "hostIPC" => Some(ChangeClass::HostNamespaces),
        _ => None,
    }
}

fn class_of(container_field: &str) -> Option<ChangeClass> {
    use ChangeClass::*;
    match container_field {
        "image" => Some(Image),
        "resources" => Some(Resources),
        "env" => Some(Env),
        "command" | "args" => Some(CommandArgs),
        "livenessProbe" | "readinessProbe" | "startupProbe" => Some(Probes),
        "securityContext" => Some(SecurityContext),
        _ => None,
    }
}

/// Checks a proposal against the Remediation it belongs to. `live` is the
/// workload as it is now; `policies` the baseline set.
pub fn guard_proposal(
    namespace: &str,
    target: &WorkloadRef,
    findings: &[Finding],
    proposal: &Proposal,
    live: &Value,
    policies: &AdmissionView,
    limits: &GuardrailLimits,
) -> GuardrailVerdict {
    let mut violations = Vec::new();
    if proposal.actions.len() > limits.max_actions {
        violations.push(format!(
            "{} actions proposed; at most {} are allowed",
            proposal.actions.len(),
            limits.max_actions
        ));
    }
    if namespace == limits.operator_namespace {
        violations.push("the operator's own namespace is never patched".into());
    }
    let allowed: BTreeSet<ChangeClass> = findings
        .iter()
        .flat_map(|f| finding_changes(f, proposal).iter().copied())
        .collect();

    let mut patched = live.clone();
    for (index, action) in proposal.actions.iter().enumerate() {
        let at = format!("action {index}");
        check_target(&at, namespace, target, action, &mut violations);
        let size = action.patch.to_string().len();
        if size > limits.max_patch_bytes {
            violations.push(format!(
                "{at}: patch is {size} bytes; the limit is {}",
                limits.max_patch_bytes
            ));
            continue;
        }
        check_paths(
            &at,
            &target.kind,
            &action.patch,
            live,
            &allowed,
            &mut violations,
        );
        patched = merge_apply(&patched, &action.patch);
    }

    if violations.is_empty() && !proposal.actions.is_empty() {
        if &patched == live {
            violations.push("the patch changes nothing (no-op)".into());
        }
        violations.extend(introduced_policy_violations(live, &patched, policies));
        let fixed = fixed_policies(&proposal.class);
        if !fixed.is_empty() {
            violations.extend(still_failing(&patched, &fixed, policies));
        }
    }
    GuardrailVerdict {
        allowed: violations.is_empty(),
        violations,
    }
}

fn check_target(
    at: &str,
    namespace: &str,
    target: &WorkloadRef,
    action: &super::crd::Action,
    violations: &mut Vec<String>,
) {
    if action.target != *target {
        violations.push(format!(
            "{at}: targets {}/{} (uid {}), not the remediation's workload {}/{}",
            action.target.kind, action.target.name, action.target.uid, target.kind, target.name
        ));
    }
    if action.namespace != namespace {
        violations.push(format!(
            "{at}: targets namespace {:?}, not {namespace:?}",
            action.namespace
        ));
    }
    let patch = &action.patch;
    let same =
        |field: &str, expected: &str| patch.get(field).and_then(Value::as_str) == Some(expected);
    if !same("apiVersion", &target.api_version) || !same("kind", &target.kind) {
        violations.push(format!(
            "{at}: patch apiVersion/kind must be {}/{}",
            target.api_version, target.kind
        ));
    }
    let meta = patch.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    if name != Some(target.name.as_str()) || ns.is_some_and(|n| n != namespace) {
        violations.push(format!(
            "{at}: patch metadata must name {namespace}/{}",
            target.name
        ));
    }
}

fn check_paths(
    at: &str,
    kind: &str,
    patch: &Value,
    live: &Value,
    allowed: &BTreeSet<ChangeClass>,
    violations: &mut Vec<String>,
) {
    let pod_spec = pod_spec_path(kind);
    let live_spec = get_dotted(live, pod_spec);
    for path in touched_paths(patch) {
        let Some(rest) = path
            .strip_prefix(pod_spec)
            .and_then(|r| r.strip_prefix('.'))
        else {
            violations.push(format!("{at}: {path} is outside the pod template"));
            continue;
        };
        if rest.starts_with("imagePullSecrets") {
            if kind == "Pod" {
                violations.push(format!("{at}: {path} cannot change on a running Pod"));
            } else if !allowed.contains(&ChangeClass::ImagePullSecrets) {
                violations.push(format!("{at}: {path} is not allowed for these findings"));
            }
            continue;
        }
        if let Some(class) = pod_field_class(rest) {
            if kind == "Pod" {
                violations.push(format!("{at}: {path} cannot change on a running Pod"));
            } else if !allowed.contains(&class) {
                violations.push(format!("{at}: {path} is not allowed for these findings"));
            }
            continue;
        }
        let Some((list, container, field)) = split_container_path(rest) else {
            violations.push(format!(
                "{at}: {path} is not a container field a fix may change"
            ));
            continue;
        };
        let exists = live_spec
            .and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .is_some_and(|items| {
                items
                    .iter()
                    .any(|c| c.get("name").and_then(Value::as_str) == Some(container))
            });
        if !exists {
            violations.push(format!(
                "{at}: container {container:?} does not exist in {list}"
            ));
            continue;
        }
        match class_of(field) {
            // A running Pod takes a new image in place (the kubelet restarts
            // the container); every other field of its spec is immutable.
            Some(class) if kind == "Pod" && class != ChangeClass::Image => violations.push(
                format!("{at}: {path} ({field}) cannot change on a running Pod; only images can"),
            ),
            Some(class) if allowed.contains(&class) => {}
            Some(_) => violations.push(format!(
                "{at}: {path} ({field}) is not allowed for these findings"
            )),
            None => violations.push(format!(
                "{at}: {path} ({field}) may never be changed by a fix"
            )),
        }
    }
}

/// "containers[app].resources.limits.memory" → ("containers", "app", "resources").
fn split_container_path(rest: &str) -> Option<(&str, &str, &str)> {
    let (list, after) = rest.split_once('[')?;
    if !matches!(list, "containers" | "initContainers") {
        return None;
    }
    let (container, after) = after.split_once(']')?;
    let field = after.strip_prefix('.')?;
    let field = field.split(['.', '[']).next()?;
    Some((list, container, field))
}

/// What admission would judge a workload with: the policies and the labels
/// of its namespace (for `namespaceSelector` and `namespaceObject`), so a
/// fix is checked against the same rules the webhook applies there.
pub struct AdmissionView<'a> {
    pub policies: &'a PolicySet,
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
}

impl<'a> AdmissionView<'a> {
    /// Policies alone: a namespace without labels.
    pub fn policies(policies: &'a PolicySet) -> Self {
        AdmissionView {
            policies,
            namespace_labels: None,
        }
    }
}

/// Policy failures the patch introduces (failing after, passing before).
pub fn introduced_policy_violations(
    live: &Value,
    patched: &Value,
    view: &AdmissionView,
) -> Vec<String> {
    let failing = |object: &Value| -> BTreeSet<(String, String, String)> {
        let mut input = EvalInput::for_resource(object);
        input.namespace_labels = view.namespace_labels;
        view.policies
            .validate(&input)
            .into_iter()
            .filter(|o| o.status == RuleStatus::Fail)
            .map(|o| (o.policy, o.rule, o.message))
            .collect()
    };
    let before: BTreeSet<(String, String)> =
        failing(live).into_iter().map(|(p, r, _)| (p, r)).collect();
    failing(patched)
        .into_iter()
        .filter(|(p, r, _)| !before.contains(&(p.clone(), r.clone())))
        .map(|(policy, rule, message)| format!("policy {policy}/{rule}: {message}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::crd::Action;
    use crate::remediation::fixtures::{UID, workload};
    use serde_json::json;

    fn target() -> WorkloadRef {
        workload("Deployment")
    }

    fn live() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "uid": UID},
               "spec": {"selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "app", "image": "nginx:bad"}]}}}})
    }

    fn container_patch(container: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"template": {"spec": {"containers": [container]}}}})
    }

    fn proposal(patch: Value) -> Proposal {
        Proposal {
            summary: "s".into(),
            root_cause: "r".into(),
            actions: vec![Action {
                target: target(),
                namespace: "shop".into(),
                patch,
                env_from_revision: Vec::new(),
            }],
            source: "rules".into(),
            ..Proposal::default()
        }
        .seal()
    }

    fn pull_finding() -> Vec<Finding> {
        vec![Finding {
            container: "app".into(),
            reason: "ImagePullBackOff".into(),
            pods: 3,
            ..Finding::default()
        }]
    }

    fn policies() -> PolicySet {
        PolicySet::from_yaml(
            r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: test-baseline
spec:
  validationFailureAction: Enforce
  rules:
  - name: no-privileged
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: privileged containers are not allowed
      pattern:
        spec:
          =(containers):
          - =(securityContext):
              =(privileged): "false"
  - name: no-latest
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: use a pinned tag, not latest
      pattern:
        spec:
          containers:
          - image: "!*:latest"
"#,
            "test",
        )
        .expect("test policies load")
    }

    fn guard(p: &Proposal, findings: &[Finding]) -> GuardrailVerdict {
        guard_proposal(
            "shop",
            &target(),
            findings,
            p,
            &live(),
            &AdmissionView::policies(&policies()),
            &GuardrailLimits::default(),
        )
    }

    #[test]
    fn a_bare_pod_takes_a_new_image_in_place_and_nothing_else() {
        let pod = workload("Pod");
        let live = json!({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "web", "namespace": "shop", "uid": UID},
                          "spec": {"containers": [{"name": "app", "image": "nginx:bad"}]}});
        let for_pod = |container: Value| {
            let mut p = proposal(json!({"apiVersion": "v1", "kind": "Pod",
                                        "metadata": {"name": "web", "namespace": "shop"},
                                        "spec": {"containers": [container]}}));
            p.actions[0].target = pod.clone();
            p.seal()
        };
        let crash = vec![Finding {
            container: "app".into(),
            reason: "CrashLoopBackOff".into(),
            pods: 1,
            ..Finding::default()
        }];
        let verdict = |p: &Proposal| {
            guard_proposal(
                "shop",
                &pod,
                &crash,
                p,
                &live,
                &AdmissionView::policies(&policies()),
                &GuardrailLimits::default(),
            )
        };
        let image = verdict(&for_pod(json!({"name": "app", "image": "nginx:1.25.5"})));
        assert!(image.allowed, "{:?}", image.violations);
        let env = verdict(&for_pod(
            json!({"name": "app", "env": [{"name": "A", "value": "1"}]}),
        ));
        assert!(!env.allowed);
        assert!(
            env.violations[0].contains("cannot change on a running Pod"),
            "{:?}",
            env.violations
        );
    }

    #[test]
    fn an_image_restore_passes() {
        let p = proposal(container_patch(
            json!({"name": "app", "image": "nginx:1.25.5"}),
        ));
        let verdict = guard(&p, &pull_finding());
        assert!(verdict.allowed, "{:?}", verdict.violations);
    }

    #[test]
    fn another_workload_or_namespace_is_refused() {
        let mut p = proposal(container_patch(
            json!({"name": "app", "image": "nginx:1.25.5"}),
        ));
        p.actions[0].target.name = "payments".into();
        p.actions[0].namespace = "kube-system".into();
        let verdict = guard(&p, &pull_finding());
        assert!(!verdict.allowed);
        assert!(
            verdict
                .violations
                .iter()
                .any(|v| v.contains("not the remediation's workload"))
        );
        assert!(verdict.violations.iter().any(|v| v.contains("kube-system")));
    }

    #[test]
    fn a_patch_naming_another_object_is_refused() {
        let mut patch = container_patch(json!({"name": "app", "image": "nginx:1.25.5"}));
        patch["metadata"]["name"] = json!("aiops-operator");
        let verdict = guard(&proposal(patch), &pull_finding());
        assert!(!verdict.allowed);
    }

    #[test]
    fn fields_outside_the_finding_class_are_refused() {
        let p = proposal(container_patch(
            json!({"name": "app", "resources": {"limits": {"memory": "1Gi"}}}),
        ));
        let verdict = guard(&p, &pull_finding());
        assert!(!verdict.allowed);
        assert!(
            verdict.violations[0].contains("not allowed for these findings"),
            "{:?}",
            verdict.violations
        );
    }

    #[test]
    fn security_context_metadata_and_kind_changes_are_never_allowed() {
        let privileged = proposal(container_patch(
            json!({"name": "app", "image": "nginx:1.25.5", "securityContext": {"privileged": true}}),
        ));
        let verdict = guard(&privileged, &pull_finding());
        assert!(!verdict.allowed);
        // Only a policy fix that names a security policy may touch it.
        assert!(
            verdict
                .violations
                .iter()
                .any(|v| v.contains("securityContext")
                    && v.contains("not allowed for these findings")),
            "{:?}",
            verdict.violations
        );

        let mut labels = container_patch(json!({"name": "app", "image": "nginx:1.25.5"}));
        labels["metadata"]["labels"] = json!({"owner": "me"});
        assert!(!guard(&proposal(labels), &pull_finding()).allowed);

        let mut host = container_patch(json!({"name": "app", "image": "nginx:1.25.5"}));
        host["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        assert!(!guard(&proposal(host), &pull_finding()).allowed);

        let mut kind = container_patch(json!({"name": "app", "image": "nginx:1.25.5"}));
        kind["kind"] = json!("DaemonSet");
        assert!(!guard(&proposal(kind), &pull_finding()).allowed);
    }

    #[test]
    fn a_new_container_is_refused() {
        let p = proposal(container_patch(
            json!({"name": "miner", "image": "busybox:1.36.1"}),
        ));
        let verdict = guard(&p, &pull_finding());
        assert!(
            verdict
                .violations
                .iter()
                .any(|v| v.contains("does not exist"))
        );
    }

    #[test]
    fn a_latest_image_is_refused_by_policy() {
        let p = proposal(container_patch(
            json!({"name": "app", "image": "nginx:latest"}),
        ));
        let verdict = guard(&p, &pull_finding());
        assert!(!verdict.allowed);
        assert!(
            verdict.violations.iter().any(|v| v.contains("no-latest")),
            "{:?}",
            verdict.violations
        );
    }

    #[test]
    fn a_no_op_is_refused() {
        let p = proposal(container_patch(
            json!({"name": "app", "image": "nginx:bad"}),
        ));
        let verdict = guard(&p, &pull_finding());
        assert_eq!(
            verdict.violations,
            vec!["the patch changes nothing (no-op)".to_string()]
        );
    }

    #[test]
    fn oversized_patches_and_too_many_actions_are_refused() {
        let huge = "x".repeat(20_000);
        let p = proposal(container_patch(json!({"name": "app", "image": huge})));
        let verdict = guard(&p, &pull_finding());
        assert!(
            verdict
                .violations
                .iter()
                .any(|v| v.contains("bytes; the limit"))
        );

        let mut many = proposal(container_patch(
            json!({"name": "app", "image": "nginx:1.25.5"}),
        ));
        many.actions = vec![many.actions[0].clone(); 5];
        assert!(
            guard(&many, &pull_finding())
                .violations
                .iter()
                .any(|v| v.contains("at most"))
        );
    }

    #[test]
    fn the_operator_namespace_is_never_patched() {
        let p = proposal(container_patch(
            json!({"name": "app", "image": "nginx:1.25.5"}),
        ));
        let limits = GuardrailLimits {
            operator_namespace: "shop".into(),
            ..GuardrailLimits::default()
        };
        let verdict = guard_proposal(
            "shop",
            &target(),
            &pull_finding(),
            &p,
            &live(),
            &AdmissionView::policies(&policies()),
            &limits,
        );
        assert!(!verdict.allowed);
    }

    #[test]
    fn a_diagnosis_without_actions_passes_with_nothing_to_check() {
        let p = Proposal {
            summary: "needs a human".into(),
            ..Proposal::default()
        }
        .seal();
        assert!(guard(&p, &pull_finding()).allowed);
    }

    #[test]
    fn oom_allows_resources_only() {
        let oom = vec![Finding {
            container: "app".into(),
            reason: "OOMKilled".into(),
            pods: 1,
            ..Finding::default()
        }];
        let ok = proposal(container_patch(
            json!({"name": "app", "resources": {"limits": {"memory": "128Mi"}}}),
        ));
        assert!(guard(&ok, &oom).allowed);
        let image = proposal(container_patch(
            json!({"name": "app", "image": "nginx:1.25.5"}),
        ));
        assert!(!guard(&image, &oom).allowed);
    }

    #[test]
    fn namespace_scoped_policies_see_the_namespace_labels() {
        // Images from outside the platform registry are refused in
        // `tier: strict` namespaces only.
        let strict = PolicySet::from_yaml(
            r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: strict-registry}
spec:
  validationFailureAction: Enforce
  rules:
  - name: platform-images
    match: {any: [{resources: {kinds: [Pod], namespaceSelector: {matchLabels: {tier: strict}}}}]}
    validate:
      message: images come from registry.example
      pattern: {spec: {containers: [{image: "registry.example/*"}]}}
"#,
            "test",
        )
        .expect("test policy loads");
        let mut live = live();
        live["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("registry.example/app:bad");
        let p = proposal(container_patch(
            json!({"name": "app", "image": "docker.io/library/nginx:1.25.5"}),
        ))
        .seal();
        let labels: BTreeMap<String, String> = [("tier".to_string(), "strict".to_string())].into();
        let verdict = |namespace_labels| {
            guard_proposal(
                "shop",
                &target(),
                &pull_finding(),
                &p,
                &live,
                &AdmissionView {
                    policies: &strict,
                    namespace_labels,
                },
                &GuardrailLimits::default(),
            )
        };
        assert!(verdict(None).allowed, "{:?}", verdict(None).violations);
        let refused = verdict(Some(&labels));
        assert!(!refused.allowed);
        assert!(
            refused
                .violations
                .iter()
                .any(|v| v.contains("strict-registry")),
            "{:?}",
            refused.violations
        );
    }
}
