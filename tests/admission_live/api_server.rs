//! `--admission-backend vap` against the sandbox's real API server: an
//! enforced `ValidatingPolicy` becomes ValidatingAdmissionPolicy + binding
//! pairs that the API server evaluates itself (its denial names the
//! admission policy, not the webhook, and the webhook counts no violation
//! of it); switching the policy to Audit in the ConfigMap deletes them and
//! the webhook admits with its Audit warning again; switching it to Warn
//! moves it back under a `Warn` binding.
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::CONFIG_MAP;
use crate::live_webhook::{Certs, Expect, LiveWebhook, Options};
use crate::objects::create_object;
use crate::support::{Sandbox, repo_root, wait_until};

const POLICY: &str = "vap-live-no-host-network";
const MESSAGE: &str = "host networking is not allowed here";

/// The test's policy: Deny, scoped by an object label unique to this run,
/// so the cluster-wide admission policies it becomes touch nothing else in
/// the shared sandbox. (An object label, not a namespace label: the webhook
/// does not read namespace labels, see README.)
fn policy_yaml(scope: &str) -> String {
    format!(
        r#"apiVersion: policies.kyverno.io/v1alpha1
kind: ValidatingPolicy
metadata:
  name: {POLICY}
spec:
  validationActions: [Deny]
  matchConstraints:
    objectSelector:
      matchLabels:
        aiops-operator.dev/vap-live: "{scope}"
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [pods]
  validations:
  - expression: "!object.spec.?hostNetwork.orValue(false)"
    message: {MESSAGE}
"#
    )
}

fn host_network_pod(name: &str, scope: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"aiops-operator.dev/vap-live": scope}},
        "spec": {"hostNetwork": true, "containers": [{"name": "app", "image": "nginx:1.25.5"}]},
    })
}

/// The webhook's violation count for the test's policy.
fn violations(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("aiops_admission_violations_total{") && l.contains(POLICY))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn owned_policies(client: &kube::Client, instance: &str) -> Vec<String> {
    let selector = ListParams::default().labels(&format!("aiops-operator.dev/instance={instance}"));
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .list_metadata(&selector)
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `policy`'s mode in the webhook's ConfigMap.
pub async fn set_policy_mode(client: &kube::Client, instance: &str, policy: &str, mode: &str) {
    let patch = json!({"data": {"policyModes": format!("{policy}: {mode}\n")}});
    Api::<ConfigMap>::namespaced(client.clone(), instance)
        .patch(CONFIG_MAP, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("switching {policy} to {mode}: {e}"));
}

/// Waits until the instance owns no admission policy any more.
pub async fn wait_owned_policies_removed(client: &kube::Client, instance: &str) {
    wait_until(
        Duration::from_secs(30),
        "the admission policies removed",
        || async {
            owned_policies(client, instance)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

/// A label value unique to this run, scoping its cluster-wide policies.
pub fn unique_scope() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

/// Deletes what the webhook created even when the test fails half way:
/// the objects are cluster-scoped and outlive the test's namespaces.
/// Synchronous (kubectl): a Drop cannot await, and the test's client
/// belongs to the test's runtime.
pub struct RemoveOwned<'a> {
    pub sandbox: &'a Sandbox,
    pub instance: String,
}

impl Drop for RemoveOwned<'_> {
    fn drop(&mut self) {
        let selector = format!("aiops-operator.dev/instance={}", self.instance);
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            self.sandbox
                .kubectl(&["delete", kind, "-l", &selector, "--ignore-not-found"]);
        }
    }
}

#[tokio::test]
async fn enforced_cel_policy_runs_in_the_api_server_and_returns_to_the_webhook_in_audit() {
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    let scope = unique_scope();
    let policies = tempfile::tempdir().expect("a policy directory");
    std::fs::write(
        policies.path().join("host-network.yaml"),
        policy_yaml(&scope),
    )
    .expect("the CEL policy");
    // The webhook's own readiness probe is a privileged pod (Audit).
    std::fs::copy(
        repo_root().join("policies/disallow-privileged-containers.yaml"),
        policies.path().join("disallow-privileged-containers.yaml"),
    )
    .expect("the privileged-containers policy");
    let webhook = LiveWebhook::start_with(
        &sandbox,
        &[],
        Certs::Cli,
        Options {
            policies_dir: Some(policies.path().to_path_buf()),
            extra_args: vec!["--admission-backend".into(), "vap".into()],
            ..Options::default()
        },
    )
    .await;
    let instance = webhook.operator_namespace.name.clone();
    let _cleanup = RemoveOwned {
        sandbox: &sandbox,
        instance: instance.clone(),
    };
    let ns = sandbox.namespace("awh-vap").await;
    webhook.serve(&ns.name, Expect::Warning("Audit")).await;

    // The pod rule and its two pod-controller twins.
    wait_until(
        Duration::from_secs(30),
        "three admission policies",
        || async { (owned_policies(client, &instance).await.len() == 3).then_some(()) },
    )
    .await;

    // Denied by the API server itself (loading a new policy is
    // asynchronous, so poll until it is in force).
    let denial = wait_until(
        Duration::from_secs(30),
        "the API server's denial",
        || async {
            match create_object(client, &ns.name, &host_network_pod("hostnet", &scope), true).await
            {
                Err(refusal) if refusal.message.contains("ValidatingAdmissionPolicy") => {
                    Some(refusal.message)
                }
                _ => None,
            }
        },
    )
    .await;
    assert!(denial.contains(MESSAGE), "{denial}");
    assert!(
        !denial.contains("admission webhook"),
        "the webhook must not be the one denying: {denial}"
    );
    // While the API server was still loading its policies the webhook
    // judged the probes itself; from now on it must count no violation.
    let violations_before = violations(&webhook.metrics().await);
    create_object(
        client,
        &ns.name,
        &host_network_pod("hostnet-2", &scope),
        true,
    )
    .await
    .expect_err("denied by the API server");
    let deployment = crate::support::deployment(
        "hostnet",
        1,
        json!({"name": "app", "image": "nginx:1.25.5"}),
    );
    let mut deployment = deployment;
    deployment["metadata"]["labels"] = json!({"aiops-operator.dev/vap-live": scope});
    deployment["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
    let refusal = create_object(client, &ns.name, &deployment, true)
        .await
        .expect_err("the Deployment twin denies too");
    assert!(
        refusal.message.contains("ValidatingAdmissionPolicy") && refusal.message.contains(MESSAGE),
        "{refusal}"
    );

    assert_eq!(
        violations(&webhook.metrics().await),
        violations_before,
        "the webhook evaluated a rule the API server enforces"
    );

    // Audit: the admission policies go, and the webhook admits with its
    // warning and counts the violation.
    set_policy_mode(client, &instance, POLICY, "Audit").await;
    wait_owned_policies_removed(client, &instance).await;
    wait_until(
        Duration::from_secs(30),
        "the pod admitted in Audit",
        || async {
            create_object(client, &ns.name, &host_network_pod("hostnet", &scope), true)
                .await
                .ok()
        },
    )
    .await;
    assert!(
        violations(&webhook.metrics().await) > violations_before,
        "in Audit the webhook evaluates the rule again"
    );

    // Warn: back in the API server, under a Warn binding: admitted with
    // the API server's warning.
    set_policy_mode(client, &instance, POLICY, "Warn").await;
    let manifest = webhook.write_manifest("hostnet.yaml", &host_network_pod("hostnet", &scope));
    let warning = wait_until(Duration::from_secs(30), "the API server's Warn", || async {
        let (ok, text) = webhook.kubectl(&[
            "create",
            "--dry-run=server",
            "-n",
            &ns.name,
            "-f",
            manifest.to_str().unwrap_or_default(),
        ]);
        // Both warn while the webhook gives the API server time to load
        // the policy; then only the API server does.
        (ok && text.contains("ValidatingAdmissionPolicy") && !text.contains("[Warn]"))
            .then_some(text)
    })
    .await;
    assert!(warning.contains(MESSAGE), "{warning}");
}
