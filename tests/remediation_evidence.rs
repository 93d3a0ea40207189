//! Live tests of owner resolution, evidence gathering and rule proposals
//! against the sandbox cluster (`make cluster-up`); they fail loudly
//! without it. Each scenario is a broken workload the sandbox's simulated
//! kubelet breaks the way a real one would (`tests/sandbox/images.yaml`).
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aiops_operator::k8s::quantity::parse_memory;
use aiops_operator::remediation::crd::{Evidence, Finding, Proposal, WorkloadRef};
use aiops_operator::remediation::detect::detect_anomaly;
use aiops_operator::remediation::evidence::{
    MAX_EVIDENCE_BYTES, ReadyRevisions, fetch_workload, gather_evidence,
    gather_evidence_and_revisions, revision_templates,
};
use aiops_operator::remediation::owner::{OwnedWorkload, OwnerStores, owner_workload};
use aiops_operator::remediation::propose::rules::{RuleConfig, propose_from_rules};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{
    Sandbox, create, create_deployment, pod_last_terminated_reasons, pods,
    wait_deployment_rolled_out, wait_pod_waiting, wait_statefulset_rolled_out, wait_until,
    waits_in,
};

const ROLLOUT: Duration = Duration::from_secs(90);
const FIELD_MANAGER: &str = "aiops-operator-test";

/// The failing pods among `all` and their findings aggregated per
/// container, as the detector reports them.
fn failing_with_findings(all: &[Pod]) -> (Vec<Pod>, Vec<Finding>) {
    let now = Timestamp::now();
    let mut failing = Vec::new();
    let mut findings: BTreeMap<(bool, String, String), Finding> = BTreeMap::new();
    for pod in all {
        let found = detect_anomaly(pod, now, Duration::from_secs(120));
        if found.is_empty() {
            continue;
        }
        failing.push(pod.clone());
        for f in found {
            let entry = findings
                .entry((f.init, f.container.clone(), f.reason.clone()))
                .or_insert_with(|| Finding {
                    container: f.container.clone(),
                    init: f.init,
                    reason: f.reason.clone(),
                    message: f.message.clone(),
                    pods: 0,
                    exit_code: f.exit_code,
                    image: f.image.clone(),
                });
            entry.pods += 1;
        }
    }
    (failing, findings.into_values().collect())
}

/// The patch of a proposal's only action, failing the test when it has
/// none or several.
fn the_one_patch(proposal: &Proposal) -> &Value {
    assert_eq!(proposal.actions.len(), 1, "{proposal:?}");
    &proposal.actions[0].patch
}

/// The operator's owner stores, filled by their watches (which run until
/// the test ends) and complete: owners come from them, not from GETs.
/// No revision seen Ready by an operator: these tests read the cluster only.
fn none_seen() -> ReadyRevisions {
    ReadyRevisions::default()
}

async fn owner_stores(client: &Client) -> OwnerStores {
    let (stores, watches) = aiops_operator::remediation::stores::watch(client);
    tokio::spawn(watches.owners);
    let owners = stores.owners;
    tokio::time::timeout(ROLLOUT, async {
        let replica_sets = owners.replica_sets.wait_until_ready();
        let jobs = owners.jobs.wait_until_ready();
        let (replica_sets, jobs) = futures::join!(replica_sets, jobs);
        replica_sets.and(jobs).expect("owner watches run");
    })
    .await
    .expect("the owner stores list within the rollout timeout");
    owners
}

/// Applies a proposal's patch the way the operator does: a server-side dry
/// run first, then the real apply.
async fn apply_patch(client: &Client, namespace: &str, patch: &Value) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let name = patch["metadata"]["name"]
        .as_str()
        .expect("patch names the workload");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params.clone().dry_run(), &Patch::Apply(patch))
        .await
        .unwrap_or_else(|err| panic!("dry run of {patch}: {err}"));
    api.patch(name, &params, &Patch::Apply(patch))
        .await
        .unwrap_or_else(|err| panic!("apply of {patch}: {err}"));
}

fn deployment_ref(d: &Deployment) -> WorkloadRef {
    WorkloadRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: d.name_any(),
        uid: d.uid().expect("created deployment has a uid"),
    }
}

/// A core/v1 Event about `pod`, with a chosen involvedObject uid.
async fn plant_event(
    client: &Client,
    namespace: &str,
    pod: &Pod,
    uid: &str,
    reason: &str,
    message: &str,
) {
    let now = Timestamp::now().to_string();
    create::<Event>(
        client,
        namespace,
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("planted-{}", reason.to_lowercase())},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace,
                               "name": pod.name_any(), "uid": uid},
            "type": "Warning", "reason": reason, "message": message,
            "source": {"component": "remediation-test"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1
        }),
    )
    .await;
}

#[tokio::test]
async fn crashing_postgres_evidence_has_the_crash_log_and_no_secret_values() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("evidence").await;
    let client = &sandbox.client;
    create::<Secret>(
        client,
        &ns.name,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
               "stringData": {"password": "PLANTED-SECRET-VALUE-987"}}),
    )
    .await;
    let created = create_deployment(
        client,
        &ns.name,
        "db",
        3,
        json!({"name": "postgres", "image": "postgres:16.4",
        "args": ["--password=PLANTED-ARG-PASS-31"],
        "env": [
            {"name": "API_TOKEN", "value": "sk-live-PLANTED123456789"},
            {"name": "DB_PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
        ]}),
    )
    .await;
    let target = deployment_ref(&created);

    let crashing = wait_until(ROLLOUT, "3 pods in CrashLoopBackOff", || async {
        let all = pods(client, &ns.name, "app=db").await;
        let looping = all
            .iter()
            .filter(|p| waits_in(p, &["CrashLoopBackOff"]))
            .count();
        (all.len() == 3 && looping == 3).then_some(all)
    })
    .await;

    // Three replicas, one ReplicaSet, read from the owner store.
    let stores = owner_stores(client).await;
    let mut owners = BTreeSet::new();
    for pod in &crashing {
        let owned: OwnedWorkload = owner_workload(client, &stores, pod)
            .await
            .expect("owner resolves");
        assert_eq!(owned.namespace, ns.name);
        assert_eq!(owned.workload, target);
        assert_eq!(
            owned.via.as_ref().map(|v| v.kind.as_str()),
            Some("ReplicaSet")
        );
        owners.insert(owned.workload.uid);
    }
    assert_eq!(owners.len(), 1);

    // Events are matched by uid: one about a namesake pod (same name, other
    // uid) must not appear; one about the real pod must, redacted.
    let first = &crashing[0];
    plant_event(
        client,
        &ns.name,
        first,
        "00000000-0000-4000-8000-000000000000",
        "PlantedNamesake",
        "an earlier pod with this name",
    )
    .await;
    plant_event(
        client,
        &ns.name,
        first,
        &first.uid().expect("pod uid"),
        "PlantedSecret",
        "connecting with password=PLANTED-EVENT-PW-42",
    )
    .await;

    let (failing, _) = failing_with_findings(&crashing);
    assert_eq!(failing.len(), 3);
    let evidence: Evidence = wait_until(
        Duration::from_secs(60),
        "evidence with crash log and events",
        || async {
            let evidence = gather_evidence(client, &ns.name, &target, &failing, &none_seen())
                .await
                .expect("evidence gathers");
            let has_log = !evidence.logs.is_empty();
            let has_backoff = evidence.events.iter().any(|e| e.reason == "BackOff");
            let has_planted = evidence.events.iter().any(|e| e.reason == "PlantedSecret");
            (has_log && has_backoff && has_planted).then_some(evidence)
        },
    )
    .await;

    let serialized = serde_json::to_string(&evidence).expect("evidence serializes");
    assert!(
        serialized.len() <= MAX_EVIDENCE_BYTES,
        "{} bytes",
        serialized.len()
    );
    assert!(
        !serialized.contains("PLANTED"),
        "a planted secret value reached the evidence: {serialized}"
    );

    let tail = &evidence.logs[0];
    assert_eq!(tail.container, "postgres");
    assert!(tail.previous);
    assert!(
        tail.lines.iter().any(|l| l
            .contains("Error: Database is uninitialized and superuser password is not specified.")),
        "crash line in the previous log: {:?}",
        tail.lines
    );

    assert_eq!(evidence.containers.len(), 1);
    let container = &evidence.containers[0];
    assert_eq!(container.env_names, vec!["API_TOKEN", "DB_PASS"]);
    assert_eq!(container.args, vec!["--password=[REDACTED]"]);
    assert_eq!(container.image, "postgres:16.4");

    assert_eq!(evidence.statuses.len(), 3, "{:?}", evidence.statuses);
    for status in &evidence.statuses {
        assert!(
            status.state.starts_with("waiting: CrashLoopBackOff"),
            "{status:?}"
        );
        assert!(status.last_state.contains("(exit 1)"), "{status:?}");
    }

    let pod_objects: BTreeSet<String> = failing
        .iter()
        .map(|p| format!("Pod/{}", p.name_any()))
        .collect();
    assert!(
        !evidence
            .events
            .iter()
            .any(|e| e.reason == "PlantedNamesake")
    );
    let planted = evidence
        .events
        .iter()
        .find(|e| e.reason == "PlantedSecret")
        .expect("uid-matched event");
    assert_eq!(planted.message, "connecting with password=[REDACTED]");
    for event in &evidence.events {
        let ours = pod_objects.contains(&event.object)
            || event.object == "Deployment/db"
            || event.object.starts_with("ReplicaSet/db-");
        assert!(ours, "event about an unrelated object: {event:?}");
    }
    assert!(
        evidence.history.is_empty(),
        "one revision only: {:?}",
        evidence.history
    );
    assert!(!evidence.truncated);
}

#[tokio::test]
async fn bad_image_rollout_is_fixed_by_restoring_the_healthy_revision() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("restore").await;
    let client = &sandbox.client;
    let created = create_deployment(
        client,
        &ns.name,
        "web",
        3,
        json!({"name": "nginx", "image": "nginx:1.25.5"}),
    )
    .await;
    wait_deployment_rolled_out(client, &ns.name, "web").await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let bad = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "nginx", "image": "nginx:does-not-exist"}]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&bad))
        .await
        .expect("roll out the bad image");
    let broken = wait_pod_waiting(client, &ns.name, "app=web", &["ImagePullBackOff"]).await;

    let (failing, findings) = failing_with_findings(&broken);
    assert!(
        findings.iter().any(|f| f.reason == "ImagePullBackOff"),
        "{findings:?}"
    );
    let owned = owner_workload(client, &owner_stores(client).await, &failing[0])
        .await
        .expect("owner resolves");
    assert_eq!(owned.workload, deployment_ref(&created));

    let evidence = gather_evidence(client, &ns.name, &owned.workload, &failing, &none_seen())
        .await
        .expect("evidence gathers");
    let first = evidence.history.first().expect("an earlier revision");
    assert_eq!(first.revision, 1);
    assert!(first.healthy, "revision 1 still serves: {first:?}");
    assert_eq!(
        first.images.get("nginx").map(String::as_str),
        Some("nginx:1.25.5")
    );
    assert_eq!(first.changed, vec!["containers[nginx].image"]);

    let live = fetch_workload(client, &ns.name, &owned.workload)
        .await
        .expect("live workload");
    let templates = revision_templates(client, &ns.name, &owned.workload, &none_seen())
        .await
        .expect("revision templates");
    assert_eq!(templates.len(), 1);
    let proposal = propose_from_rules(
        &live,
        &evidence,
        &findings,
        &templates,
        &RuleConfig::default(),
    );
    let patch = the_one_patch(&proposal);
    assert_eq!(
        patch.pointer("/spec/template/spec/containers"),
        Some(&json!([{"name": "nginx", "image": "nginx:1.25.5"}]))
    );
    assert!(
        proposal
            .rollback_plan
            .iter()
            .any(|s| s.contains("nginx:does-not-exist")),
        "{:?}",
        proposal.rollback_plan
    );

    // The patch is one the API server accepts, and it heals the workload.
    apply_patch(client, &ns.name, patch).await;
    wait_deployment_rolled_out(client, &ns.name, "web").await;
    let healed = deployments.get("web").await.expect("deployment");
    let image = healed
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(image.as_deref(), Some("nginx:1.25.5"));
}

#[tokio::test]
async fn oom_killed_redis_gets_its_memory_limit_doubled() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("oomfix").await;
    let client = &sandbox.client;
    let created = create_deployment(
        client,
        &ns.name,
        "cache",
        1,
        json!({"name": "redis", "image": "redis:7.2.5",
                   "resources": {"limits": {"memory": "16Mi"}}}),
    )
    .await;
    let oom = wait_until(ROLLOUT, "OOMKilled", || async {
        let all = pods(client, &ns.name, "app=cache").await;
        all.iter()
            .any(|p| {
                pod_last_terminated_reasons(p)
                    .iter()
                    .any(|r| r == "OOMKilled")
            })
            .then_some(all)
    })
    .await;
    let (failing, findings) = failing_with_findings(&oom);
    assert!(
        findings.iter().any(|f| f.reason == "OOMKilled"),
        "{findings:?}"
    );
    let target = deployment_ref(&created);
    let evidence = gather_evidence(client, &ns.name, &target, &failing, &none_seen())
        .await
        .expect("evidence gathers");
    assert_eq!(
        evidence.containers[0]
            .limits
            .get("memory")
            .map(String::as_str),
        Some("16Mi")
    );
    let live = fetch_workload(client, &ns.name, &target)
        .await
        .expect("live workload");
    let proposal = propose_from_rules(&live, &evidence, &findings, &[], &RuleConfig::default());
    let container = the_one_patch(&proposal)
        .pointer("/spec/template/spec/containers/0")
        .expect("container in patch");
    assert_eq!(container["name"], "redis");
    assert_eq!(
        container.pointer("/resources/limits/memory"),
        Some(&json!("32Mi"))
    );

    // The request (defaulted to the old limit) stays within the new limit.
    let request = container
        .pointer("/resources/requests/memory")
        .or_else(|| live.pointer("/spec/template/spec/containers/0/resources/requests/memory"))
        .and_then(Value::as_str)
        .and_then(parse_memory)
        .unwrap_or(0);
    assert!(
        request <= parse_memory("32Mi").unwrap_or(0),
        "request {request}"
    );

    apply_patch(client, &ns.name, &proposal.actions[0].patch).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let limit = deployments
        .get("cache")
        .await
        .ok()
        .and_then(|d| {
            d.spec?
                .template
                .spec?
                .containers
                .first()?
                .resources
                .clone()?
                .limits
        })
        .and_then(|limits| limits.get("memory").map(|q| q.0.clone()));
    assert_eq!(limit.as_deref(), Some("32Mi"));
}

#[tokio::test]
async fn a_job_created_by_a_cronjob_resolves_to_the_cronjob() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("cron").await;
    let client = &sandbox.client;
    let pod_template = json!({"metadata": {"labels": {"app": "nightly"}},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "report", "image": "busybox:0.0.0-missing"}]}});
    let cron = create::<CronJob>(
        client,
        &ns.name,
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
               "spec": {"schedule": "0 3 * * *", "suspend": true,
                        "jobTemplate": {"spec": {"template": pod_template}}}}),
    )
    .await;
    let cron_uid = cron.uid().expect("cronjob uid");
    create::<Job>(
        client,
        &ns.name,
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "nightly-manual",
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                "name": "nightly", "uid": cron_uid, "controller": true,
                                "blockOwnerDeletion": true}]},
               "spec": {"backoffLimit": 0, "template": pod_template}}),
    )
    .await;
    let job_pods = wait_pod_waiting(
        client,
        &ns.name,
        "app=nightly",
        &["ImagePullBackOff", "ErrImagePull"],
    )
    .await;

    let stores = owner_stores(client).await;
    for _ in 0..2 {
        let owned = owner_workload(client, &stores, &job_pods[0])
            .await
            .expect("owner resolves");
        assert_eq!(owned.workload.kind, "CronJob");
        assert_eq!(owned.workload.name, "nightly");
        assert_eq!(owned.workload.uid, cron_uid);
        assert_eq!(
            owned.via.map(|v| v.name),
            Some("nightly-manual".to_string())
        );
    }

    // The CronJob's evidence comes from its job template.
    let (failing, findings) = failing_with_findings(&job_pods);
    let target = WorkloadRef {
        api_version: "batch/v1".into(),
        kind: "CronJob".into(),
        name: "nightly".into(),
        uid: cron_uid,
    };
    let evidence = gather_evidence(client, &ns.name, &target, &failing, &none_seen())
        .await
        .expect("evidence gathers");
    assert_eq!(evidence.containers[0].name, "report");
    assert_eq!(evidence.containers[0].image, "busybox:0.0.0-missing");
    assert!(evidence.history.is_empty());
    let live = fetch_workload(client, &ns.name, &target)
        .await
        .expect("live cronjob");
    let proposal = propose_from_rules(&live, &evidence, &findings, &[], &RuleConfig::default());
    assert!(
        proposal.actions.is_empty(),
        "no healthy image to go back to"
    );
    assert!(
        proposal.summary.contains("needs a human"),
        "{}",
        proposal.summary
    );
}

#[tokio::test]
async fn crash_after_an_env_change_is_fixed_by_reverting_the_env() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("revert").await;
    let client = &sandbox.client;
    create::<Secret>(
        client,
        &ns.name,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
               "stringData": {"password": "PLANTED-SECRET-VALUE-654"}}),
    )
    .await;
    let created = create_deployment(
        client,
        &ns.name,
        "db",
        1,
        json!({"name": "postgres", "image": "postgres:16.4",
        "env": [
            {"name": "POSTGRES_USER", "value": "PLANTED-USER-VALUE"},
            {"name": "POSTGRES_PASSWORD",
             "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
        ]}),
    )
    .await;
    wait_deployment_rolled_out(client, &ns.name, "db").await;

    // The bad change: the password variable is dropped from the template.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let drop_password = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "postgres", "env": [{"name": "POSTGRES_PASSWORD", "$patch": "delete"}]}]}}}});
    deployments
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Strategic(&drop_password),
        )
        .await
        .expect("roll out the bad env");
    let crashing = wait_pod_waiting(client, &ns.name, "app=db", &["CrashLoopBackOff"]).await;
    let (failing, findings) = failing_with_findings(&crashing);
    assert!(
        findings.iter().any(|f| f.reason == "CrashLoopBackOff"),
        "{findings:?}"
    );

    let target = deployment_ref(&created);
    let (evidence, templates) =
        gather_evidence_and_revisions(client, &ns.name, &target, &failing, &none_seen())
            .await
            .expect("evidence gathers");
    let serialized = serde_json::to_string(&evidence).expect("evidence serializes");
    assert!(!serialized.contains("PLANTED"), "{serialized}");
    let first = evidence.history.first().expect("an earlier revision");
    assert!(first.healthy, "{first:?}");
    assert_eq!(first.changed, vec!["containers[postgres].env"]);

    let live = fetch_workload(client, &ns.name, &target)
        .await
        .expect("live workload");
    assert_eq!(templates.len(), evidence.history.len());
    assert_eq!(templates[0].summary(), *first);
    let proposal = propose_from_rules(
        &live,
        &evidence,
        &findings,
        &templates,
        &RuleConfig::default(),
    );
    let container = the_one_patch(&proposal)
        .pointer("/spec/template/spec/containers/0")
        .expect("container in patch");
    assert_eq!(container["name"], "postgres");
    assert!(
        container.get("image").is_none(),
        "only the changed field: {container}"
    );
    let restored = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "POSTGRES_PASSWORD")
        .expect("the password variable comes back");
    assert_eq!(
        restored.pointer("/valueFrom/secretKeyRef/name"),
        Some(&json!("db"))
    );
    // Values are only in the patch, never in the text people and models read.
    let text = serde_json::to_string(&(
        &proposal.summary,
        &proposal.root_cause,
        &proposal.risks,
        &proposal.rollback_plan,
    ))
    .expect("text serializes");
    assert!(!text.contains("PLANTED"), "{text}");
    assert!(
        proposal
            .summary
            .contains("revert env of container postgres to revision 1"),
        "{}",
        proposal.summary
    );

    apply_patch(client, &ns.name, &proposal.actions[0].patch).await;
    wait_deployment_rolled_out(client, &ns.name, "db").await;
}

#[tokio::test]
async fn statefulset_history_comes_from_controller_revisions() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("stsrev").await;
    let client = &sandbox.client;
    let created = create::<StatefulSet>(
        client,
        &ns.name,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "store"},
               "spec": {"replicas": 2, "serviceName": "store",
                        "selector": {"matchLabels": {"app": "store"}},
                        "template": {"metadata": {"labels": {"app": "store"}},
                                     "spec": {"containers": [{"name": "redis", "image": "redis:7.2.5"}]}}}}),
    )
    .await;
    wait_statefulset_rolled_out(client, &ns.name, "store").await;

    let bad = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "redis", "image": "redis:does-not-exist"}]}}}});
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    statefulsets
        .patch("store", &PatchParams::default(), &Patch::Strategic(&bad))
        .await
        .expect("roll out the bad image");
    // Pods update from the highest ordinal down; store-0 keeps serving.
    let broken = wait_until(ROLLOUT, "store-1 in ImagePullBackOff", || async {
        let all = pods(client, &ns.name, "app=store").await;
        all.iter()
            .any(|p| p.name_any() == "store-1" && waits_in(p, &["ImagePullBackOff"]))
            .then_some(all)
    })
    .await;
    let (failing, findings) = failing_with_findings(&broken);
    assert_eq!(failing.len(), 1);
    let owned = owner_workload(client, &owner_stores(client).await, &failing[0])
        .await
        .expect("owner resolves");
    assert_eq!(owned.workload.kind, "StatefulSet");
    assert_eq!(owned.workload.uid, created.uid().expect("uid"));
    assert_eq!(owned.via, None, "a StatefulSet owns its pods directly");

    let (evidence, templates) =
        gather_evidence_and_revisions(client, &ns.name, &owned.workload, &failing, &none_seen())
            .await
            .expect("evidence gathers");
    let first = evidence.history.first().expect("an earlier revision");
    assert_eq!(first.revision, 1);
    assert!(first.healthy, "store-0 still runs revision 1: {first:?}");
    assert_eq!(
        first.images.get("redis").map(String::as_str),
        Some("redis:7.2.5")
    );
    assert_eq!(first.changed, vec!["containers[redis].image"]);
    assert_eq!(templates.len(), 1);

    let live = fetch_workload(client, &ns.name, &owned.workload)
        .await
        .expect("live workload");
    let proposal = propose_from_rules(
        &live,
        &evidence,
        &findings,
        &templates,
        &RuleConfig::default(),
    );
    let patch = the_one_patch(&proposal);
    assert_eq!(
        patch.pointer("/spec/template/spec/containers"),
        Some(&json!([{"name": "redis", "image": "redis:7.2.5"}]))
    );
    assert!(
        proposal
            .risks
            .iter()
            .any(|r| r.contains("does not replace pods stuck")),
        "{:?}",
        proposal.risks
    );

    // As the risk says: the fix lands, and the stuck pod must be deleted to
    // be re-created from it.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    statefulsets
        .patch("store", &params, &Patch::Apply(patch))
        .await
        .expect("apply the fix");
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods_api
        .delete("store-1", &Default::default())
        .await
        .expect("delete the stuck pod");
    wait_statefulset_rolled_out(client, &ns.name, "store").await;
}
