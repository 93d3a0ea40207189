//! Namespace labels through the real webhook: a `namespaceSelector` and
//! CEL's `namespaceObject` see the labels of the request's namespace, which
//! the AdmissionReview does not carry, from the webhook's watched cache;
//! relabelling a namespace changes the next decisions.
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::live_webhook::{Certs, Expect, LiveWebhook, Options, project_policies_copy};
use crate::objects::create_object;
use crate::support::{Sandbox, wait_until};

/// Unlabelled pods are denied in `tier: strict` namespaces (a selector),
/// and every pod in a `tier: frozen` one (`namespaceObject`).
const TIER_POLICIES: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: namespace-tiers
  annotations:
    pod-policies.kyverno.io/autogen-controllers: none
spec:
  validationFailureAction: Enforce
  rules:
  - name: strict-needs-team
    match:
      any:
      - resources:
          kinds: [Pod]
          namespaceSelector:
            matchLabels:
              tier: strict
    validate:
      message: "team label required in strict namespaces"
      pattern:
        metadata:
          labels:
            team: "?*"
  - name: frozen
    match:
      any:
      - resources:
          kinds: [Pod]
    validate:
      cel:
        expressions:
        - expression: "namespaceObject.metadata.?labels.?tier.orValue('') != 'frozen'"
          message: "namespace is frozen"
"#;

fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "app.example/app:1.0"}]},
    })
}

/// Waits until a dry run of `manifest` gets the decision `denied_with`
/// (`None`: admitted; `Some(text)`: denied with a message holding `text`).
async fn wait_decision(
    webhook: &LiveWebhook,
    namespace: &str,
    manifest: &Value,
    denied_with: Option<&str>,
    what: &str,
) {
    wait_until(Duration::from_secs(30), what, || async {
        let outcome = create_object(&webhook.client, namespace, manifest, true).await;
        match (outcome, denied_with) {
            (Ok(()), None) => Some(()),
            (Err(refusal), Some(text))
                if refusal.is_denial_by("namespace-tiers") && refusal.message.contains(text) =>
            {
                Some(())
            }
            _ => None,
        }
    })
    .await;
}

async fn label_tier(sandbox: &Sandbox, namespace: &str, tier: Option<&str>) {
    Api::<Namespace>::all(sandbox.client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"tier": tier}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("labelling namespace {namespace}: {e}"));
}

#[tokio::test]
async fn namespace_selector_and_namespace_object_read_the_namespace_labels() {
    let sandbox = Sandbox::connect().await;
    // The baseline policies too: the webhook's start probe is a privileged pod.
    let policies = project_policies_copy();
    std::fs::write(policies.path().join("tiers.yaml"), TIER_POLICIES)
        .expect("writing the tier policies");
    let options = Options {
        policies_dir: Some(policies.path().to_path_buf()),
        // Judged by the webhook itself, not by an admission policy.
        extra_args: vec!["--admission-backend".into(), "webhook".into()],
        ..Options::default()
    };
    let webhook =
        LiveWebhook::start_with(&sandbox, &[("mode", "Enforce")], Certs::Cli, options).await;
    let ns = sandbox.namespace("awh-tiers").await;
    webhook.serve(&ns.name, Expect::Deny).await;

    let plain = pod("plain", json!({}));
    let teamed = pod("teamed", json!({"team": "web"}));
    wait_decision(
        &webhook,
        &ns.name,
        &plain,
        None,
        "an unlabelled namespace admits",
    )
    .await;

    label_tier(&sandbox, &ns.name, Some("strict")).await;
    wait_decision(
        &webhook,
        &ns.name,
        &plain,
        Some("team label required in strict namespaces"),
        "the strict label seen by the namespaceSelector",
    )
    .await;
    wait_decision(&webhook, &ns.name, &teamed, None, "a teamed pod admitted").await;

    label_tier(&sandbox, &ns.name, Some("frozen")).await;
    wait_decision(
        &webhook,
        &ns.name,
        &teamed,
        Some("namespace is frozen"),
        "the frozen label seen by namespaceObject",
    )
    .await;

    label_tier(&sandbox, &ns.name, None).await;
    wait_decision(
        &webhook,
        &ns.name,
        &plain,
        None,
        "labels removed, admitted again",
    )
    .await;
}
