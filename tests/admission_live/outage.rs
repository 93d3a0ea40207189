//! The webhook process is gone: with `failurePolicy: Fail` the API server
//! refuses pods in the selected namespaces, while the namespaces the
//! shipped selector leaves out (kube-system, kube-node-lease, the
//! operator's own) stay writable; with `Ignore` it admits them unchecked.
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::LIVE_LABEL;
use crate::live_webhook::{Certs, Expect, LiveWebhook};
use crate::objects::privileged_pod;
use crate::support::{Sandbox, wait_until};

/// A server-side dry run of a privileged pod in `namespace`: admitted, and
/// the output.
fn dry_run(webhook: &LiveWebhook, namespace: &str) -> (bool, String) {
    let manifest = webhook.write_manifest("outage.yaml", &privileged_pod("outage"));
    webhook.kubectl(&[
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        manifest.to_str().unwrap_or_default(),
    ])
}

async fn set_label(webhook: &LiveWebhook, namespace: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"labels": {LIVE_LABEL: value}}});
    Api::<Namespace>::all(webhook.client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("labelling {namespace}: {e}"));
}

#[tokio::test]
async fn with_the_webhook_down_fail_refuses_only_the_selected_namespaces_and_ignore_admits() {
    let sandbox = Sandbox::connect().await;
    let mut webhook = LiveWebhook::start(&sandbox, &[("mode", "Enforce")], Certs::Cli).await;
    let ns = sandbox.namespace("awh-outage").await;
    webhook.serve(&ns.name, Expect::Deny).await;

    // The shipped selector's exclusions on top of this test's label: even
    // labelled, these namespaces are never sent to the webhook.
    let excluded = [
        "kube-system",
        "kube-node-lease",
        &webhook.operator_namespace.name.clone(),
    ];
    let configurations = Api::<ValidatingWebhookConfiguration>::all(sandbox.client.clone());
    let name = webhook.configuration_name().to_string();
    let mut configuration = configurations.get(&name).await.expect("the configuration");
    for hook in configuration.webhooks.iter_mut().flatten() {
        assert_eq!(
            hook.failure_policy.as_deref(),
            Some("Fail"),
            "the shipped policy"
        );
        hook.namespace_selector = Some(
            serde_json::from_value(json!({
                "matchLabels": {LIVE_LABEL: webhook.id},
                "matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                      "operator": "NotIn", "values": excluded}],
            }))
            .expect("selector"),
        );
    }
    configurations
        .replace(&name, &Default::default(), &configuration)
        .await
        .expect("adding the shipped exclusions");
    for namespace in excluded {
        set_label(&webhook, namespace, Some(&webhook.id)).await;
    }

    webhook.child.kill().expect("stopping the webhook");
    let _ = webhook.child.wait();
    let refused = wait_until(
        std::time::Duration::from_secs(60),
        "the API server refusing pods while the webhook is down",
        || async {
            let (ok, out) = dry_run(&webhook, &ns.name);
            (!ok && out.contains("failed calling webhook")).then_some(out)
        },
    )
    .await;
    assert!(
        !refused.contains("disallow-privileged-containers"),
        "refused for the outage, not by a policy: {refused}"
    );
    for namespace in excluded {
        let (ok, out) = dry_run(&webhook, namespace);
        assert!(
            ok,
            "{namespace} stays writable with the webhook down: {out}"
        );
    }

    // Ignore: the same outage admits, unchecked.
    let patch = json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]);
    configurations
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(patch).expect("patch")),
        )
        .await
        .expect("switching to Ignore");
    wait_until(
        std::time::Duration::from_secs(60),
        "the API server admitting with Ignore while the webhook is down",
        || async { dry_run(&webhook, &ns.name).0.then_some(()) },
    )
    .await;

    for namespace in excluded {
        set_label(&webhook, namespace, None).await;
    }
}
