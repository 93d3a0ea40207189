//! An approval written around the approval webhook (its configuration
//! deleted, then `approved: true` patched by an administrator) is never
//! acted on, live: the Remediation stays `Proposed` with an
//! `ApprovalRefused` Event and the workload keeps its broken image.
//!
//! Its own test binary, because it deletes the cluster-wide approval
//! webhook configuration for a while (test binaries run one at a time; the
//! configuration is put back when the test ends, panics included).
mod support;

use std::process::Command;
use std::time::Duration;

use aiops_operator::remediation::crd::Phase;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use support::{Sandbox, wait_until};

const STEP: Duration = Duration::from_secs(120);
const CONFIGURATION: &str = "aiops-operator-approval";

/// Puts the approval webhook configuration back as it was, on drop.
struct Restore {
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    saved: std::path::PathBuf,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let status = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f"])
            .arg(&self.saved)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "could not restore {CONFIGURATION} from {}",
                self.saved.display()
            );
        }
    }
}

#[tokio::test]
async fn an_approval_written_around_the_webhook_is_never_acted_on() {
    let sandbox = Sandbox::connect().await;
    support::stop_all_operators();
    let _operator = support::start_operator("op-unbound", &[]);
    let client = &sandbox.client;
    let (ns, proposed) =
        support::broken_after_a_good_rollout(&sandbox, "unbound", 2, "nginx:0.0.0-gone", STEP)
            .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let name = proposed.name_any();

    // Save the configuration, then delete it: nothing stands between an
    // administrator's patch and the object any more.
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = dir.path().join("approval-webhook.yaml");
    let (ok, text) = sandbox.kubectl(&[
        "get",
        "mutatingwebhookconfiguration",
        CONFIGURATION,
        "-o",
        "json",
    ]);
    assert!(
        ok,
        "the operator's install registered {CONFIGURATION}: {text}"
    );
    let mut configuration: serde_json::Value =
        serde_json::from_str(&text).expect("the configuration as JSON");
    // What the API server set is not for a create.
    if let Some(metadata) = configuration["metadata"].as_object_mut() {
        for key in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            metadata.remove(key);
        }
    }
    std::fs::write(&saved, configuration.to_string()).expect("saving the configuration");
    let _restore = Restore {
        kubectl: sandbox.kubectl_path(),
        kubeconfig: sandbox.kubeconfig.clone(),
        saved,
    };
    let (ok, out) = sandbox.kubectl(&["delete", "mutatingwebhookconfiguration", CONFIGURATION]);
    assert!(ok, "{out}");
    // The API server forgets the webhook asynchronously: retry the patch
    // until it is accepted without the webhook's binding.
    wait_until(
        STEP,
        "an approval patch accepted without the webhook",
        || async {
            let (ok, _) = sandbox.kubectl(&support::approval_patch(&ns.name, &name));
            let remediations = support::remediations(client, &ns.name).await;
            let unbound = remediations
                .iter()
                .any(|r| r.name_any() == name && r.spec.approved && r.spec.approval.is_none());
            (ok && unbound).then_some(())
        },
    )
    .await;

    // The controller refuses it, says so, and leaves the workload alone.
    wait_until(STEP, "an ApprovalRefused Event", || async {
        let events = Api::<Event>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default())
            .await
            .ok()?;
        events
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ApprovalRefused")
                    && e.involved_object.name.as_deref() == Some(name.as_str())
            })
            .then_some(())
    })
    .await;
    // Long enough for an apply to have started if anything were to start one.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let now = support::remediations(client, &ns.name)
        .await
        .into_iter()
        .find(|r| r.name_any() == name)
        .expect("the Remediation");
    assert_eq!(support::phase(&now), Phase::Proposed, "{:?}", now.status);
    let message = now.status.map(|s| s.message).unwrap_or_default();
    assert!(message.contains("approval not acted on"), "{message}");
    let image = deployments
        .get("app")
        .await
        .expect("the deployment")
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.image)
        .unwrap_or_default();
    assert_eq!(image, "nginx:0.0.0-gone", "nothing was applied");
}
