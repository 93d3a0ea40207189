//! Live tests of the sandbox itself: the real scheduler and controllers, and
//! the kwok "node physics" generated from `tests/sandbox/images.yaml`.
//! Needs the sandbox (`make cluster-up`); fails loudly without it.
mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use serde_json::json;
use support::{
    Sandbox, container_statuses, create, create_deployment, deployment, last_terminated_reason,
    pod_ready, pods, wait_deployment_rolled_out, wait_pod_waiting, wait_until, waiting_reason,
    waits_in,
};

const ROLLOUT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn three_nginx_replicas_are_scheduled_and_become_ready() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("ready").await;
    let client = &sandbox.client;
    create_deployment(
        client,
        &ns.name,
        "web",
        3,
        json!({"name": "nginx", "image": "nginx:1.25.5"}),
    )
    .await;

    wait_deployment_rolled_out(client, &ns.name, "web").await;

    let ready = pods(client, &ns.name, "app=web").await;
    assert_eq!(ready.len(), 3, "exactly 3 pods: {ready:?}");
    for pod in &ready {
        assert!(
            pod_ready(pod),
            "pod not Running and Ready: {:?}",
            pod.status
        );
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert!(
            node.as_deref()
                .is_some_and(|n| n.starts_with("sandbox-node-")),
            "pod bound by the scheduler to a kwok node, got {node:?}"
        );
        let owner = pod.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owner.first().map(|o| o.kind.as_str()), Some("ReplicaSet"));
        // As a kubelet does, the started container reports the digest it
        // runs: the catalog's digest of nginx:1.25.5, on the canonical name.
        let image_ids: Vec<String> = container_statuses(pod)
            .iter()
            .map(|s| s.image_id.clone())
            .collect();
        assert_eq!(
            image_ids,
            vec![
                "docker.io/library/nginx@sha256:5a81cdb4777406a26c0757f5bd9a2922636a55cd7062f5dff7dc1d8147a033b3"
                    .to_string()
            ]
        );
    }
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(
        replicasets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn unknown_tag_gives_image_pull_backoff_with_warning_event() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("pull").await;
    let client = &sandbox.client;
    create_deployment(
        client,
        &ns.name,
        "web",
        1,
        json!({"name": "nginx", "image": "nginx:does-not-exist"}),
    )
    .await;

    let pod = wait_pod_waiting(client, &ns.name, "app=web", &["ImagePullBackOff"])
        .await
        .into_iter()
        .find(|p| waits_in(p, &["ImagePullBackOff"]))
        .expect("the pod waiting in ImagePullBackOff");
    assert!(!pod_ready(&pod));
    let uid = pod.metadata.uid.clone().unwrap();

    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let warning = wait_until(Duration::from_secs(30), "pull failure Event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.involved_object.uid.as_deref() == Some(uid.as_str())
                && e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("Failed")
                && e.message
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("Failed to pull image")
        })
    })
    .await;
    let message = warning.message.unwrap_or_default();
    assert!(
        message.contains("\"nginx:does-not-exist\"") && message.ends_with("not found"),
        "kubelet-like message naming the image: {message}"
    );
    assert_eq!(
        warning.involved_object.field_path.as_deref(),
        Some("spec.containers{nginx}")
    );
}

#[tokio::test]
async fn a_bare_pod_whose_image_is_changed_in_place_restarts_with_the_new_image() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("inplace").await;
    let client = &sandbox.client;
    create::<Pod>(
        client,
        &ns.name,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "tools", "labels": {"app": "tools"}},
               "spec": {"containers": [{"name": "sh", "image": "busybox:1.36.11"}]}}),
    )
    .await;
    wait_pod_waiting(client, &ns.name, "app=tools", &["ImagePullBackOff"]).await;

    // Only a running Pod's images may change; the kubelet restarts the
    // container with the new one.
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    api.patch(
        "tools",
        &PatchParams::default(),
        &Patch::Strategic(
            json!({"spec": {"containers": [{"name": "sh", "image": "busybox:1.36.1"}]}}),
        ),
    )
    .await
    .expect("an in-place image change is allowed");
    let pod = wait_until(ROLLOUT, "the pod Ready on the new image", || async {
        let pod = api.get("tools").await.ok()?;
        pod_ready(&pod).then_some(pod)
    })
    .await;
    let statuses = container_statuses(&pod);
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].image, "busybox:1.36.1");
    assert!(waiting_reason(&statuses[0]).is_none(), "{statuses:?}");
}

#[tokio::test]
async fn memory_limit_below_need_is_oomkilled_into_crash_loop() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("oom").await;
    let client = &sandbox.client;
    create_deployment(
        client,
        &ns.name,
        "cache",
        1,
        json!({"name": "redis", "image": "redis:7.2.5",
                   "resources": {"limits": {"memory": "16Mi"}}}),
    )
    .await;

    let first = wait_until(ROLLOUT, "OOMKilled then CrashLoopBackOff", || async {
        pods(client, &ns.name, "app=cache")
            .await
            .into_iter()
            .find_map(|p| {
                container_statuses(&p).into_iter().find(|s| {
                    waiting_reason(s) == Some("CrashLoopBackOff")
                        && last_terminated_reason(s) == Some("OOMKilled")
                })
            })
    })
    .await;
    let terminated = first
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(terminated.exit_code, 137);
    assert!(first.restart_count >= 1);

    // The loop keeps going: the restart count grows.
    let before = first.restart_count;
    wait_until(Duration::from_secs(60), "restartCount to grow", || async {
        pods(client, &ns.name, "app=cache")
            .await
            .into_iter()
            .find_map(|p| {
                container_statuses(&p).into_iter().find(|s| {
                    s.restart_count > before && last_terminated_reason(s) == Some("OOMKilled")
                })
            })
    })
    .await;
}

#[tokio::test]
async fn missing_required_env_crashes_with_previous_logs() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("env").await;
    let client = &sandbox.client;
    create_deployment(
        client,
        &ns.name,
        "db",
        1,
        json!({"name": "postgres", "image": "postgres:16.4"}),
    )
    .await;
    // The control: the same image with its variable set runs and is Ready.
    create_deployment(
        client,
        &ns.name,
        "db-ok",
        1,
        json!({"name": "postgres", "image": "postgres:16.4",
                   "env": [{"name": "POSTGRES_PASSWORD", "value": "x"}]}),
    )
    .await;

    let (pod, status) = wait_until(ROLLOUT, "exit 1 then CrashLoopBackOff", || async {
        pods(client, &ns.name, "app=db")
            .await
            .into_iter()
            .find_map(|p| {
                let s = container_statuses(&p).into_iter().find(|s| {
                    waiting_reason(s) == Some("CrashLoopBackOff")
                        && s.last_state
                            .as_ref()
                            .and_then(|l| l.terminated.as_ref())
                            .is_some_and(|t| t.exit_code == 1)
                })?;
                Some((p, s))
            })
    })
    .await;
    assert_eq!(last_terminated_reason(&status), Some("Error"));

    let api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let params = LogParams {
        previous: true,
        container: Some("postgres".into()),
        ..LogParams::default()
    };
    let name = pod.metadata.name.clone().unwrap();
    let logs = wait_until(
        Duration::from_secs(30),
        "previous container logs",
        || async { api.logs(&name, &params).await.ok() },
    )
    .await;
    assert!(
        logs.contains("Error: Database is uninitialized and superuser password is not specified."),
        "previous logs carry the crash line: {logs:?}"
    );

    wait_deployment_rolled_out(client, &ns.name, "db-ok").await;
}

#[tokio::test]
async fn rollout_from_bad_tag_back_to_good_completes() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("rollout").await;
    let client = &sandbox.client;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    create_deployment(
        client,
        &ns.name,
        "web",
        3,
        json!({"name": "nginx", "image": "nginx:1.25.5"}),
    )
    .await;
    wait_deployment_rolled_out(client, &ns.name, "web").await;

    let set_image = |image: &'static str| {
        let deployments = deployments.clone();
        async move {
            let patch = json!({"spec": {"template": {"spec": {"containers": [
                {"name": "nginx", "image": image}]}}}});
            deployments
                .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .expect("patch image");
        }
    };
    set_image("nginx:1.25.5-typo").await;
    wait_pod_waiting(client, &ns.name, "app=web", &["ImagePullBackOff"]).await;

    set_image("nginx:1.27.3").await;
    wait_deployment_rolled_out(client, &ns.name, "web").await;
    // Old pods are gone (deleted through the physics' delete stage), not just unready.
    let remaining = wait_until(ROLLOUT, "old pods to be deleted", || async {
        let all = pods(client, &ns.name, "app=web").await;
        (all.len() == 3).then_some(all)
    })
    .await;
    for pod in &remaining {
        assert!(pod_ready(pod));
        let images: Vec<_> = container_statuses(pod)
            .into_iter()
            .map(|s| s.image)
            .collect();
        assert_eq!(images, vec!["nginx:1.27.3".to_string()]);
    }
}

#[tokio::test]
async fn failing_init_container_blocks_the_pod() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("init").await;
    let client = &sandbox.client;
    let mut manifest = deployment("web", 1, json!({"name": "nginx", "image": "nginx:1.25.5"}));
    manifest["spec"]["template"]["spec"]["initContainers"] =
        json!([{"name": "setup", "image": "busybox:0.0.0-missing"}]);
    create::<Deployment>(client, &ns.name, manifest).await;

    let pod = wait_until(ROLLOUT, "Init:ImagePullBackOff", || async {
        pods(client, &ns.name, "app=web")
            .await
            .into_iter()
            .find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.init_container_statuses.clone())
                    .unwrap_or_default()
                    .iter()
                    .any(|s| waiting_reason(s) == Some("ImagePullBackOff"))
            })
    })
    .await;
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let main = container_statuses(&pod);
    assert_eq!(waiting_reason(&main[0]), Some("PodInitializing"));
}

#[tokio::test]
async fn statefulset_daemonset_and_job_behave_as_in_a_real_cluster() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("workloads").await;
    let client = &sandbox.client;
    let template = |app: &str, image: &str| {
        json!({"metadata": {"labels": {"app": app}},
               "spec": {"containers": [{"name": "main", "image": image}]}})
    };
    create::<StatefulSet>(
        client,
        &ns.name,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "store"},
               "spec": {"replicas": 2, "serviceName": "store",
                        "selector": {"matchLabels": {"app": "store"}},
                        "template": template("store", "redis:7.2.5")}}),
    )
    .await;
    create::<DaemonSet>(
        client,
        &ns.name,
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
               "spec": {"selector": {"matchLabels": {"app": "agent"}},
                        "template": template("agent", "busybox:1.36.1")}}),
    )
    .await;
    let mut job_template = template("batch", "busybox:1.36.1");
    job_template["spec"]["restartPolicy"] = json!("Never");
    create::<Job>(
        client,
        &ns.name,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "batch"},
               "spec": {"template": job_template}}),
    )
    .await;

    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    wait_until(ROLLOUT, "statefulset ready", || async {
        let s = statefulsets.get("store").await.ok()?.status?;
        (s.ready_replicas == Some(2)).then_some(())
    })
    .await;
    // StatefulSet pods get ordinal names from the real controller.
    let mut names: Vec<_> = pods(client, &ns.name, "app=store")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    assert_eq!(names, vec!["store-0", "store-1"]);

    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    let nodes = sandbox_node_count(&sandbox).await;
    wait_until(ROLLOUT, "daemonset on every node", || async {
        let s = daemonsets.get("agent").await.ok()?.status?;
        (s.desired_number_scheduled == nodes && s.number_ready == nodes).then_some(())
    })
    .await;

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    wait_until(ROLLOUT, "job to succeed", || async {
        let s = jobs.get("batch").await.ok()?.status?;
        (s.succeeded == Some(1)).then_some(())
    })
    .await;
}

async fn sandbox_node_count(sandbox: &Sandbox) -> i32 {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(sandbox.client.clone());
    let count = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    assert!(
        count >= 2,
        "the sandbox runs several kwok nodes, got {count}"
    );
    i32::try_from(count).unwrap()
}
