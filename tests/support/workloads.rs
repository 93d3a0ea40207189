//! Workloads in the sandbox: manifests, creating and deleting objects,
//! their pods and container states, and waiting for rollouts.
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::sandbox::{try_wait_until, wait_until};

/// How long a rollout in the sandbox may take; the kwok nodes start
/// containers in seconds, so this is only reached when something is wrong.
pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);

/// A Deployment manifest with one container, labelled `app=<name>`.
pub fn deployment(name: &str, replicas: i32, container: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    })
}

/// Creates any namespaced object from JSON in the test namespace.
pub async fn create<K>(client: &Client, namespace: &str, manifest: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(manifest).expect("valid manifest");
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|err| panic!("creating object in {namespace}: {err}"))
}

/// Creates the Deployment [`deployment`] describes in `namespace`.
pub async fn create_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
    container: serde_json::Value,
) -> Deployment {
    create(client, namespace, deployment(name, replicas, container)).await
}

/// Deletes a namespaced object, ignoring "not found".
pub async fn delete<K>(client: &Client, namespace: &str, name: &str)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let _ = Api::<K>::namespaced(client.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await;
}

/// Lists the pods in `namespace` matching a label selector.
pub async fn pods(client: &Client, namespace: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
}

/// Whether a pod is Running with its Ready condition True.
pub fn pod_ready(pod: &Pod) -> bool {
    let running = pod
        .status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running"));
    running && aiops_operator::k8s::pod::pod_is_ready(pod)
}

/// The statuses of a pod's (regular, not init) containers.
pub fn container_statuses(pod: &Pod) -> Vec<ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
}

/// Why a container is waiting (`ImagePullBackOff`, `CrashLoopBackOff`, ...), if it is.
pub fn waiting_reason(status: &ContainerStatus) -> Option<&str> {
    status.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

/// Why a container's previous run ended (`OOMKilled`, `Error`, ...), if it did.
pub fn last_terminated_reason(status: &ContainerStatus) -> Option<&str> {
    status
        .last_state
        .as_ref()?
        .terminated
        .as_ref()?
        .reason
        .as_deref()
}

/// The waiting reasons of all of a pod's containers.
pub fn pod_waiting_reasons(pod: &Pod) -> Vec<String> {
    container_statuses(pod)
        .iter()
        .filter_map(|s| waiting_reason(s).map(str::to_string))
        .collect()
}

/// The reasons the previous runs of a pod's containers ended.
pub fn pod_last_terminated_reasons(pod: &Pod) -> Vec<String> {
    container_statuses(pod)
        .iter()
        .filter_map(|s| last_terminated_reason(s).map(str::to_string))
        .collect()
}

/// Waits until a pod selected by `selector` has a container waiting for
/// one of `reasons`, and returns all the selected pods as they were then
/// (a waiting reason can change on the next look: `ErrImagePull` and
/// `ImagePullBackOff` take turns).
pub async fn wait_pod_waiting(
    client: &Client,
    namespace: &str,
    selector: &str,
    reasons: &[&str],
) -> Vec<Pod> {
    wait_until(
        ROLLOUT_TIMEOUT,
        &format!("a pod of {selector} in {namespace} waiting in {reasons:?}"),
        || async {
            let all = pods(client, namespace, selector).await;
            all.iter().any(|p| waits_in(p, reasons)).then_some(all)
        },
    )
    .await
}

/// Whether one of a pod's containers is waiting for one of `reasons`.
pub fn waits_in(pod: &Pod, reasons: &[&str]) -> bool {
    pod_waiting_reasons(pod)
        .iter()
        .any(|r| reasons.contains(&r.as_str()))
}

/// Whether a Deployment's current spec is fully rolled out: observed, every
/// replica updated, ready and available, and no old pod left over.
pub fn deployment_rolled_out(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    s.observed_generation.is_some()
        && s.observed_generation == d.metadata.generation
        && s.replicas == Some(want)
        && s.updated_replicas == Some(want)
        && s.ready_replicas == Some(want)
        && s.available_replicas == Some(want)
}

/// Whether a StatefulSet's current spec is fully rolled out: observed,
/// every replica updated and ready, and the current revision the update one.
pub fn statefulset_rolled_out(s: &StatefulSet) -> bool {
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = s.status.as_ref() else {
        return false;
    };
    status.observed_generation.is_some()
        && status.observed_generation == s.metadata.generation
        && status.updated_replicas == Some(want)
        && status.ready_replicas == Some(want)
        && status.current_revision.is_some()
        && status.current_revision == status.update_revision
}

/// Waits until the Deployment `name` is fully rolled out (see
/// [`deployment_rolled_out`]) and returns it; fails the test otherwise.
pub async fn wait_deployment_rolled_out(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Deployment {
    try_wait_deployment_rolled_out(client, namespace, name)
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

/// [`wait_deployment_rolled_out`], with an error after [`ROLLOUT_TIMEOUT`].
pub async fn try_wait_deployment_rolled_out(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    try_wait_until(
        ROLLOUT_TIMEOUT,
        &format!("deployment {namespace}/{name} rolled out"),
        || async { api.get(name).await.ok().filter(deployment_rolled_out) },
    )
    .await
}

/// Waits until the StatefulSet `name` is fully rolled out (see
/// [`statefulset_rolled_out`]) and returns it; fails the test otherwise.
pub async fn wait_statefulset_rolled_out(
    client: &Client,
    namespace: &str,
    name: &str,
) -> StatefulSet {
    try_wait_statefulset_rolled_out(client, namespace, name)
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

/// [`wait_statefulset_rolled_out`], with an error after [`ROLLOUT_TIMEOUT`].
pub async fn try_wait_statefulset_rolled_out(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<StatefulSet> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    try_wait_until(
        ROLLOUT_TIMEOUT,
        &format!("statefulset {namespace}/{name} rolled out"),
        || async { api.get(name).await.ok().filter(statefulset_rolled_out) },
    )
    .await
}
