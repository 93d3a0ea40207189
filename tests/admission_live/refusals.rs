//! A ConfigMap or a policy file that does not parse is refused live: the
//! webhook keeps enforcing the last good modes and policies, says so on
//! `/readyz` and in a metric, and writes a Warning Event.
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::live_webhook::{Certs, Expect, LiveWebhook, Options, project_policies_copy};
use crate::objects::{is_denial_by, privileged_pod};
use crate::support::{Sandbox, wait_until};
use crate::{CONFIG_MAP, PRIVILEGED_POLICY};

const POD_NAME: &str = "aiops-live-refusals";

/// The `/readyz` status and body.
async fn readyz(webhook: &LiveWebhook) -> (u16, String) {
    let response = webhook
        .https_client(false)
        .get(webhook.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Waits for a `ConfigRefused` Warning Event about `kind`/`name`.
async fn wait_refused_event(webhook: &LiveWebhook, kind: &str, name: &str) -> String {
    let events: Api<Event> =
        Api::namespaced(webhook.client.clone(), &webhook.operator_namespace.name);
    wait_until(
        Duration::from_secs(30),
        &format!("a ConfigRefused Event on {kind} {name}"),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find_map(|event| {
                let regarding = event.regarding.as_ref()?;
                (event.reason.as_deref() == Some("ConfigRefused")
                    && event.type_.as_deref() == Some("Warning")
                    && regarding.kind.as_deref() == Some(kind)
                    && regarding.name.as_deref() == Some(name))
                .then(|| event.note.unwrap_or_default())
            })
        },
    )
    .await
}

/// A server-side dry run of a privileged pod is still denied.
fn assert_still_denied(webhook: &LiveWebhook, namespace: &str, when: &str) {
    let manifest = webhook.write_manifest("still-denied.yaml", &privileged_pod("still"));
    let (ok, text) = webhook.kubectl(&[
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        manifest.to_str().unwrap_or_default(),
    ]);
    assert!(
        !ok && is_denial_by(&text, PRIVILEGED_POLICY),
        "{when}: the privileged pod must still be denied, got: {text}"
    );
}

#[tokio::test]
async fn a_bad_config_map_or_policy_file_leaves_the_last_good_set_in_force() {
    let sandbox = Sandbox::connect().await;
    let policies = project_policies_copy();
    let options = Options {
        policies_dir: Some(policies.path().to_path_buf()),
        pod_name: Some(POD_NAME.into()),
        ..Options::default()
    };
    let webhook =
        LiveWebhook::start_with(&sandbox, &[("mode", "Enforce")], Certs::Cli, options).await;
    let ns = sandbox.namespace("awh-refuse").await;
    webhook.serve(&ns.name, Expect::Deny).await;
    assert_eq!(readyz(&webhook).await, (200, "ok".to_string()));

    // A typo in the mode: refused as a whole, Enforce stays.
    let config_maps: Api<ConfigMap> =
        Api::namespaced(sandbox.client.clone(), &webhook.operator_namespace.name);
    let typo = json!({"data": {"mode": "Enforcd"}});
    config_maps
        .patch(CONFIG_MAP, &PatchParams::default(), &Patch::Merge(&typo))
        .await
        .expect("patching the ConfigMap");
    let note = wait_refused_event(&webhook, "ConfigMap", CONFIG_MAP).await;
    assert!(note.contains("Enforcd"), "the Event says why: {note}");
    let (status, body) = readyz(&webhook).await;
    assert_eq!(status, 200, "still ready: {body}");
    assert!(body.contains("configmap: newest version refused"), "{body}");
    assert_still_denied(&webhook, &ns.name, "after the ConfigMap typo");
    let metrics = webhook.metrics().await;
    assert!(
        metrics.contains("aiops_admission_config_refused{source=\"configmap\"} 1"),
        "{metrics}"
    );

    // A policy file that does not parse: the whole last good set stays.
    std::fs::write(
        policies.path().join("disallow-privileged-containers.yaml"),
        "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nspec: [not, a, policy",
    )
    .expect("breaking a policy file");
    let note = wait_refused_event(&webhook, "Pod", POD_NAME).await;
    assert!(
        note.contains("disallow-privileged-containers.yaml"),
        "the Event names the file: {note}"
    );
    let (status, body) = readyz(&webhook).await;
    assert_eq!(status, 200, "still ready: {body}");
    assert!(body.contains("policies: newest version refused"), "{body}");
    assert_still_denied(&webhook, &ns.name, "after the broken policy file");

    // Fixing the ConfigMap applies it and clears its refusal; the policy
    // refusal stays until the file is fixed.
    let fixed = json!({"data": {"mode": "Audit"}});
    config_maps
        .patch(CONFIG_MAP, &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .expect("fixing the ConfigMap");
    webhook.serve(&ns.name, Expect::Warning("Audit")).await;
    let (_, body) = readyz(&webhook).await;
    assert!(!body.contains("configmap"), "{body}");
    assert!(body.contains("policies: newest version refused"), "{body}");
}
