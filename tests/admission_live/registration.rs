//! The webhook's registration follows what it still judges
//! (`--admission-backend auto`): once the only Deployment rule is enforced
//! by the API server, Deployments (and every other resource no webhook
//! rule matches) leave the webhook configuration's `rules`, so creating
//! one costs no webhook call; when the ConfigMap makes the rule Audit,
//! Deployments come back to the webhook before its admission policy goes.
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::Api;
use serde_json::{Value, json};

use crate::api_server::{RemoveOwned, set_policy_mode, unique_scope, wait_owned_policies_removed};
use crate::live_webhook::{Certs, Expect, LiveWebhook, Options};
use crate::objects::create_object;
use crate::support::{self, Sandbox, wait_until};

const POLICY: &str = "registration-replicas";

/// The webhook's start probe needs a pod rule of its own (Audit, no
/// controller twins); the Deployment rule is a ValidatingPolicy scoped by
/// an object label unique to the run.
fn policies(scope: &str) -> (String, String) {
    let pods = r#"apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: disallow-privileged-containers
  annotations:
    pod-policies.kyverno.io/autogen-controllers: none
spec:
  validationFailureAction: Audit
  rules:
  - name: privileged-containers
    match:
      any:
      - resources:
          kinds: [Pod]
    validate:
      message: "Privileged mode is disallowed."
      pattern:
        spec:
          containers:
          - =(securityContext):
              =(privileged): "false"
"#;
    let deployments = format!(
        r#"apiVersion: policies.kyverno.io/v1alpha1
kind: ValidatingPolicy
metadata:
  name: {POLICY}
spec:
  validationActions: [Deny]
  matchConstraints:
    objectSelector:
      matchLabels:
        aiops-operator.dev/registration-live: "{scope}"
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments]
  validations:
  - expression: "object.spec.replicas <= 5"
    message: at most 5 replicas
"#
    );
    (pods.to_string(), deployments)
}

/// The resources the webhook configuration registers, sorted.
async fn registered(client: &kube::Client, name: &str) -> Vec<String> {
    let Ok(configuration) = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(name)
        .await
    else {
        return Vec::new();
    };
    let mut resources: Vec<String> = configuration
        .webhooks
        .iter()
        .flatten()
        .flat_map(|webhook| webhook.rules.iter().flatten())
        .flat_map(|rule| rule.resources.clone().unwrap_or_default())
        .collect();
    resources.sort();
    resources
}

/// Every `/validate` review the webhook answered.
fn validate_reviews(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("aiops_admission_requests_total{") && l.contains("endpoint=\"validate\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn big_deployment(scope: &str) -> Value {
    let mut deployment =
        support::deployment("big", 9, json!({"name": "app", "image": "nginx:1.25.5"}));
    deployment["metadata"]["labels"] = json!({"aiops-operator.dev/registration-live": scope});
    deployment
}

#[tokio::test]
async fn registration_leaves_out_what_the_api_server_enforces_and_takes_it_back() {
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    let scope = unique_scope();
    let dir = tempfile::tempdir().expect("a policy directory");
    let (pods, deployments) = policies(&scope);
    std::fs::write(dir.path().join("pods.yaml"), pods).expect("the pod policy");
    std::fs::write(dir.path().join("deployments.yaml"), deployments).expect("the CEL policy");
    let webhook = LiveWebhook::start_with(
        &sandbox,
        &[],
        Certs::Cli,
        Options {
            policies_dir: Some(dir.path().to_path_buf()),
            // auto: the Deployment rule moves because no rule left in the
            // webhook matches Deployments; the pod rule (Audit) stays.
            extra_args: vec!["--admission-backend".into(), "auto".into()],
            ..Options::default()
        },
    )
    .await;
    let instance = webhook.operator_namespace.name.clone();
    let _cleanup = RemoveOwned {
        sandbox: &sandbox,
        instance: instance.clone(),
    };
    let ns = sandbox.namespace("awh-registration").await;
    webhook.serve(&ns.name, Expect::Warning("Audit")).await;
    let configuration = webhook.configuration_name().to_string();

    // Only the pod rule is left to the webhook: only pods stay registered.
    wait_until(
        Duration::from_secs(60),
        "the registration narrowed to pods",
        || async { (registered(client, &configuration).await == ["pods"]).then_some(()) },
    )
    .await;
    let denial = wait_until(
        Duration::from_secs(30),
        "the API server's denial",
        || async {
            match create_object(client, &ns.name, &big_deployment(&scope), true).await {
                Err(refusal) if refusal.message.contains("ValidatingAdmissionPolicy") => {
                    Some(refusal.message)
                }
                _ => None,
            }
        },
    )
    .await;
    assert!(denial.contains("at most 5 replicas"), "{denial}");
    // No webhook call for Deployments at all.
    let before = validate_reviews(&webhook.metrics().await);
    assert!(
        before > 0.0,
        "the start probes were reviews: is the metric read right?"
    );
    for _ in 0..3 {
        create_object(client, &ns.name, &big_deployment(&scope), true)
            .await
            .expect_err("denied by the API server");
    }
    let mut small = big_deployment(&scope);
    small["spec"]["replicas"] = json!(1);
    create_object(client, &ns.name, &small, true)
        .await
        .unwrap_or_else(|refusal| panic!("a small Deployment is admitted: {refusal}"));
    assert_eq!(
        validate_reviews(&webhook.metrics().await),
        before,
        "the webhook was called for a Deployment it no longer judges"
    );

    // Audit: Deployments are registered again, then the admission policy goes.
    set_policy_mode(client, &instance, POLICY, "Audit").await;
    wait_owned_policies_removed(client, &instance).await;
    assert_eq!(
        registered(client, &configuration).await,
        ["deployments", "pods"]
    );
    let warning = wait_until(
        Duration::from_secs(30),
        "the webhook's Audit warning",
        || async {
            let (ok, text) = webhook.kubectl(&[
                "create",
                "--dry-run=server",
                "-n",
                &ns.name,
                "-f",
                webhook
                    .write_manifest("big.yaml", &big_deployment(&scope))
                    .to_str()
                    .unwrap_or_default(),
            ]);
            (ok && text.contains(&format!("[Audit] {POLICY}"))).then_some(text)
        },
    )
    .await;
    assert!(warning.contains("at most 5 replicas"), "{warning}");
    assert!(validate_reviews(&webhook.metrics().await) > before);
}
