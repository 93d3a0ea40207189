//! The admission modes through the sandbox API server: Enforce on image
//! tags, Audit's warning, Event and PolicyReport, a ConfigMap switch from
//! Audit to Enforce in the running process, and exempt namespaces.
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::json;

use crate::live_webhook::{Certs, Expect, LiveWebhook};
use crate::objects::{create_object, pod_with_image, privileged_pod};
use crate::support::{self, Sandbox, VALIDATING_WEBHOOK_NAME, repo_root, wait_until};
use crate::{CONFIG_MAP, PRIVILEGED_POLICY};

#[tokio::test]
async fn enforce_denies_latest_and_untagged_images_and_admits_pinned_ones() {
    let sandbox = Sandbox::connect().await;
    let webhook = LiveWebhook::start(&sandbox, &[("mode", "Enforce")], Certs::Cli).await;
    let ns = sandbox.namespace("awh-tag").await;
    webhook.serve(&ns.name, Expect::Deny).await;
    let client = &sandbox.client;

    for (name, image) in [
        ("latest", "nginx:latest"),
        ("untagged", "nginx"),
        ("registry-latest", "registry.example/team/app:latest"),
        (
            "registry-port-latest",
            "registry.example:5000/team/app:latest",
        ),
        // A registry's port is not a tag.
        ("registry-port-untagged", "registry.example:5000/team/app"),
    ] {
        let error = create_object(client, &ns.name, &pod_with_image(name, image), false)
            .await
            .expect_err(&format!("pod with image {image} must be denied"));
        assert!(
            error.is_denial_by("disallow-latest-tag"),
            "{image}: {error}"
        );
        let deployment = support::deployment(name, 1, json!({"name": "app", "image": image}));
        let error = create_object(client, &ns.name, &deployment, false)
            .await
            .expect_err(&format!("Deployment with image {image} must be denied"));
        assert!(
            error.is_denial_by("disallow-latest-tag"),
            "{image}: {error}"
        );
    }

    create_object(
        client,
        &ns.name,
        &pod_with_image("pinned", "nginx:1.25.5"),
        false,
    )
    .await
    .expect("a pinned image is admitted");
    let deployment =
        support::deployment("pinned", 1, json!({"name": "app", "image": "nginx:1.25.5"}));
    create_object(client, &ns.name, &deployment, false)
        .await
        .expect("a Deployment with a pinned image is admitted");
    // Its ReplicaSet and Pod, created by the controllers, pass the webhook too.
    wait_until(
        Duration::from_secs(60),
        "the pinned Deployment's pod",
        || async {
            let pods = support::pods(client, &ns.name, "app=pinned").await;
            (!pods.is_empty()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn audit_admits_with_a_warning_an_event_and_a_policy_report() {
    let sandbox = Sandbox::connect().await;
    // The cluster may lack the report CRD; ours is written for that case.
    let crd = repo_root().join("manifests/policyreport-crd.yaml");
    let (ok, text) = sandbox.kubectl(&["apply", "-f", crd.to_str().unwrap_or_default()]);
    assert!(ok, "installing the PolicyReport CRD: {text}");
    let (ok, text) = sandbox.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/policyreports.wgpolicyk8s.io",
    ]);
    assert!(ok, "PolicyReport CRD not established: {text}");

    let webhook = LiveWebhook::start(&sandbox, &[("mode", "Audit")], Certs::Cli).await;
    let ns = sandbox.namespace("awh-audit").await;
    webhook.serve(&ns.name, Expect::Warning("Audit")).await;

    let manifest = webhook.write_manifest("audited.yaml", &privileged_pod("audited"));
    let (ok, text) = webhook.kubectl(&[
        "apply",
        "-n",
        &ns.name,
        "-f",
        manifest.to_str().unwrap_or_default(),
    ]);
    assert!(ok, "an audited pod is admitted: {text}");
    assert!(
        text.contains(&format!("Warning: [Audit] {PRIVILEGED_POLICY}/")),
        "kubectl shows the admission warning: {text}"
    );
    let pods: Api<Pod> = Api::namespaced(sandbox.client.clone(), &ns.name);
    assert!(
        pods.get_opt("audited").await.expect("get pod").is_some(),
        "the pod exists"
    );

    let events: Api<Event> = Api::namespaced(sandbox.client.clone(), &ns.name);
    let event = wait_until(
        Duration::from_secs(30),
        "a Warning Event on the pod",
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.involved_object.kind.as_deref() == Some("Pod")
                        && e.involved_object.name.as_deref() == Some("audited")
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.contains(PRIVILEGED_POLICY))
                })
        },
    )
    .await;
    eprintln!(
        "event: reason={:?} message={:?}",
        event.reason, event.message
    );

    let reports_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    );
    let reports: Api<DynamicObject> =
        Api::namespaced_with(sandbox.client.clone(), &ns.name, &reports_resource);
    let result = wait_until(
        Duration::from_secs(30),
        "a PolicyReport result for the pod",
        || async {
            let list = reports.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find_map(|report| {
                report.data["results"]
                    .as_array()?
                    .iter()
                    .find(|r| {
                        r["policy"] == PRIVILEGED_POLICY
                            && r["result"] == "fail"
                            && r["resources"]
                                .as_array()
                                .is_some_and(|res| res.iter().any(|o| o["name"] == "audited"))
                    })
                    .cloned()
            })
        },
    )
    .await;
    assert!(
        result["rule"].as_str().is_some_and(|r| !r.is_empty()),
        "the result names the rule: {result}"
    );
}

#[tokio::test]
async fn config_map_switch_from_audit_to_enforce_applies_within_two_seconds() {
    let sandbox = Sandbox::connect().await;
    let mut webhook = LiveWebhook::start(&sandbox, &[("mode", "Audit")], Certs::Cli).await;
    let ns = sandbox.namespace("awh-switch").await;
    webhook.serve(&ns.name, Expect::Warning("Audit")).await;
    let pid = webhook.pid();

    let bad = privileged_pod("switch");
    create_object(&sandbox.client, &ns.name, &bad, true)
        .await
        .expect("admitted while in Audit");

    let config_maps: Api<ConfigMap> =
        Api::namespaced(sandbox.client.clone(), &webhook.operator_namespace.name);
    let patch = json!({"data": {"mode": "Enforce"}});
    config_maps
        .patch(CONFIG_MAP, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patching the ConfigMap");
    let switched = Instant::now();
    // Tight polling (not `wait_until`'s 250 ms) so the measurement is honest.
    let took = loop {
        match create_object(&sandbox.client, &ns.name, &bad, true).await {
            Err(error) if error.is_denial_by(PRIVILEGED_POLICY) => break switched.elapsed(),
            Err(error) => panic!("unexpected error while switching: {error}"),
            Ok(()) if switched.elapsed() > Duration::from_secs(20) => {
                panic!("still admitted 20 s after switching to Enforce")
            }
            Ok(()) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    eprintln!("Audit -> Enforce took effect after {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "the switch took {took:?}, more than 2 s"
    );
    assert_eq!(webhook.pid(), pid, "same process");
    assert!(
        matches!(webhook.child.try_wait(), Ok(None)),
        "the webhook process kept running (no restart)"
    );
}

#[tokio::test]
async fn exempt_namespaces_are_never_blocked() {
    let sandbox = Sandbox::connect().await;
    let exempt = sandbox.namespace("awh-exempt").await;
    let exempt_list = format!("- {}\n", exempt.name);
    let webhook = LiveWebhook::start(
        &sandbox,
        &[("mode", "Enforce"), ("exemptNamespaces", &exempt_list)],
        Certs::Cli,
    )
    .await;
    let enforced = sandbox.namespace("awh-enforced").await;
    webhook.serve(&enforced.name, Expect::Deny).await;
    // The exempt namespace is labelled too, so the API server does call the
    // webhook for it: the exemption is the webhook's, not the selector's.
    webhook.label_namespace(&exempt.name).await;

    let exempt_before = exempt_count(&webhook.metrics().await);
    let client = &sandbox.client;
    for (name, manifest) in [
        ("privileged", privileged_pod("privileged")),
        ("latest", pod_with_image("latest", "nginx:latest")),
    ] {
        // The namespace label reaches the API server's cache asynchronously;
        // wait until the webhook has actually been asked.
        wait_until(
            Duration::from_secs(30),
            "the webhook exempting a request",
            || async {
                create_object(client, &exempt.name, &manifest, true)
                    .await
                    .unwrap_or_else(|e| panic!("{name} refused in the exempt namespace: {e}"));
                (exempt_count(&webhook.metrics().await) > exempt_before).then_some(())
            },
        )
        .await;
        create_object(client, &exempt.name, &manifest, false)
            .await
            .unwrap_or_else(|e| panic!("{name} refused in the exempt namespace: {e}"));
        let error = create_object(client, &enforced.name, &manifest, false)
            .await
            .expect_err("the same pod is denied in a namespace that is not exempt");
        assert!(error.message.contains(VALIDATING_WEBHOOK_NAME), "{error}");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &exempt.name);
    assert_eq!(
        pods.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );
}

/// `aiops_admission_requests_total{endpoint="validate",result="exempt"}`.
fn exempt_count(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("aiops_admission_requests_total{")
                && l.contains("endpoint=\"validate\"")
                && l.contains("result=\"exempt\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
