//! Evidence: what a reviewer (or a model) needs to understand why a workload
//! is broken, gathered from the cluster, redacted and bounded.
//!
//! The prototype sent no logs, no pod template and no owner, matched Events
//! by name and had no size bound or redaction (origin flaw #9). Here:
//!
//! - the owner's pod template per container: image, resources, env var
//!   *names* (never values, nothing from Secrets), command/args (redacted),
//!   probes as short strings, ports;
//! - container statuses of the failing pods, with their last state;
//! - the Events of the failing pods, their ReplicaSet/Job and the workload,
//!   matched by `involvedObject.uid`, deduplicated, newest first;
//! - the previous log tail of each crashing container;
//! - the rollout history (ReplicaSets or ControllerRevisions) with what
//!   changed against the current template and whether each revision ran;
//! - Helm / Argo CD / Flux management markers.
//!
//! Every string that can carry tenant text goes through [`redact`], and the
//! serialized evidence is cut to [`MAX_EVIDENCE_BYTES`] by [`bound_evidence`].
//!
//! [`revision_templates`] returns the full earlier templates (with env
//! values) for the rule that reverts a bad template change; those never
//! enter the evidence.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStatus, Event, Pod, PodSpec, PodTemplateSpec, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, LogParams};
use kube::{Api, Client};
use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use super::crd::{
    ContainerTemplate, EventSummary, Evidence, LogTail, ObservedContainer, Revision, WorkloadRef,
};
use super::guardrails::pod_spec_path;
use crate::k8s::redact::{redact, redact_args, truncate};

/// The bound on serialized (compact JSON) evidence.
pub const MAX_EVIDENCE_BYTES: usize = 16 * 1024;
/// Failing pods whose container statuses are recorded.
const MAX_STATUS_PODS: usize = 10;
/// Events kept after deduplication.
const MAX_EVENTS: usize = 15;
/// Lines of previous log per crashing container.
const LOG_TAIL_LINES: i64 = 50;
/// Bytes read from the log endpoint, whatever the line count: one huge line
/// must not become a huge read.
const LOG_LIMIT_BYTES: i64 = 64 * 1024;
/// Containers whose logs are fetched (one pod each).
const MAX_LOG_TAILS: usize = 4;
/// Earlier revisions listed in the history.
const MAX_HISTORY: usize = 10;
/// Concurrent Event list requests.
const EVENT_QUERIES_IN_FLIGHT: usize = 4;
const MAX_LINE_BYTES: usize = 300;
const MAX_MESSAGE_BYTES: usize = 400;
const MAX_STATE_MESSAGE_BYTES: usize = 160;
const MAX_ARG_BYTES: usize = 200;
const MAX_ARGS: usize = 24;
const MAX_ENV_NAMES: usize = 64;
const MAX_MARKER_BYTES: usize = 200;

/// Annotation holding a Deployment's (and its ReplicaSets') revision number.
const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";
/// Labels the controllers add to templates and pods, which are not part of
/// what a user changed.
const CONTROLLER_LABELS: &[&str] = &["pod-template-hash", "controller-revision-hash"];

/// Failure to gather evidence. `workload` reads "Deployment shop/web".
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("workload apiVersion {api_version:?} is not group/version or version")]
    BadApiVersion { api_version: String },
    #[error("reading {workload}: {source}")]
    Read {
        workload: String,
        // Boxed: kube::Error is large and every Result here carries it.
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{workload} no longer exists")]
    WorkloadGone { workload: String },
    #[error("{workload} has uid {found}, not {expected}: a namesake replaced the workload")]
    UidMismatch {
        workload: String,
        found: String,
        expected: String,
    },
    #[error("decoding {workload} as JSON: {source}")]
    Decode {
        workload: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{workload} has no readable pod template at {path:?}: {source}")]
    Template {
        workload: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("listing {what} for {workload}: {source}")]
    List {
        what: &'static str,
        workload: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// "Deployment shop/web", for error messages.
fn describe(namespace: &str, workload: &WorkloadRef) -> String {
    format!("{} {namespace}/{}", workload.kind, workload.name)
}

/// One earlier pod template of a workload, *with* env values.
///
/// Only for rules that write the workload's own earlier values back to it;
/// never serialized into evidence or shown to a model. `Debug` leaves the
/// template out so a stray debug log cannot leak it.
#[derive(Clone, PartialEq)]
pub struct RevisionTemplate {
    pub revision: i64,
    /// The ReplicaSet or ControllerRevision holding it.
    pub source: String,
    /// The `PodTemplateSpec`, normalised (controller labels removed).
    pub template: Value,
    /// See [`earlier_revisions`] for the heuristic.
    pub healthy: bool,
    /// Fields that differ from the current template ("containers[app].env").
    pub changed: Vec<String>,
}

impl std::fmt::Debug for RevisionTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevisionTemplate")
            .field("revision", &self.revision)
            .field("source", &self.source)
            .field("healthy", &self.healthy)
            .field("changed", &self.changed)
            .finish_non_exhaustive()
    }
}

impl RevisionTemplate {
    /// The evidence view: images and changed field names, no values.
    pub fn summary(&self) -> Revision {
        Revision {
            revision: self.revision,
            images: template_images(&self.template),
            changed: self.changed.clone(),
            healthy: self.healthy,
        }
    }
}

/// Which tools manage a workload, from its markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ManagedBy {
    Helm,
    ArgoCd,
    Flux,
}

impl std::fmt::Display for ManagedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ManagedBy::Helm => "Helm",
            ManagedBy::ArgoCd => "Argo CD",
            ManagedBy::Flux => "Flux",
        })
    }
}

/// Gathers bounded, redacted evidence about `workload` and its failing pods.
pub async fn gather_evidence(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    failing_pods: &[Pod],
) -> Result<Evidence, EvidenceError> {
    gather_evidence_and_revisions(client, namespace, workload, failing_pods)
        .await
        .map(|(evidence, _)| evidence)
}

/// [`gather_evidence`] and [`revision_templates`] in one pass: the workload
/// and its ReplicaSets or ControllerRevisions are read once for both.
#[tracing::instrument(skip_all, fields(namespace = %namespace, workload = %format!("{}/{}", workload.kind, workload.name)))]
pub async fn gather_evidence_and_revisions(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    failing_pods: &[Pod],
) -> Result<(Evidence, Vec<RevisionTemplate>), EvidenceError> {
    let live = fetch_workload(client, namespace, workload).await?;
    let template = current_template(namespace, workload, &live)?;
    let revisions = earlier_revisions(client, namespace, workload, &live, &template).await?;

    let mut pods: Vec<&Pod> = failing_pods.iter().collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pods.truncate(MAX_STATUS_PODS);

    let related = related_uids(workload, &pods);
    let events = fetch_events(client, namespace, workload, &related).await?;
    let pod_names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let logs = crash_log_tails(client, namespace, &pods).await;

    let mut evidence = Evidence {
        workload: workload.clone(),
        namespace: namespace.to_string(),
        containers: template
            .spec
            .as_ref()
            .map(summarize_containers)
            .unwrap_or_default(),
        statuses: observed_containers(&pods),
        events: summarize_events(events, &related, &pod_names),
        logs,
        history: revisions
            .iter()
            .take(MAX_HISTORY)
            .map(RevisionTemplate::summary)
            .collect(),
        management: management_markers(live.get("metadata").unwrap_or(&Value::Null)),
        truncated: false,
    };
    bound_evidence(&mut evidence, MAX_EVIDENCE_BYTES);
    tracing::debug!(
        events = evidence.events.len(),
        logs = evidence.logs.len(),
        history = evidence.history.len(),
        truncated = evidence.truncated,
        "gathered evidence"
    );
    Ok((evidence, revisions))
}

/// The earlier pod templates of `workload`, newest first, with env values,
/// for rules that revert a template change. Empty for kinds without a
/// rollout history (Job, CronJob, ReplicaSet, ReplicationController, Pod).
#[tracing::instrument(skip_all, fields(namespace = %namespace, workload = %format!("{}/{}", workload.kind, workload.name)))]
pub async fn revision_templates(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
) -> Result<Vec<RevisionTemplate>, EvidenceError> {
    let live = fetch_workload(client, namespace, workload).await?;
    let template = current_template(namespace, workload, &live)?;
    earlier_revisions(client, namespace, workload, &live, &template).await
}

/// The live workload as JSON, checked to be the object `workload` pins by uid.
pub async fn fetch_workload(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
) -> Result<Value, EvidenceError> {
    let (group, version) = match workload.api_version.split_once('/') {
        Some((group, version)) if !group.is_empty() && !version.is_empty() => (group, version),
        None if !workload.api_version.is_empty() => ("", workload.api_version.as_str()),
        _ => {
            return Err(EvidenceError::BadApiVersion {
                api_version: workload.api_version.clone(),
            });
        }
    };
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &workload.kind));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let object = api
        .get_opt(&workload.name)
        .await
        .map_err(|source| EvidenceError::Read {
            workload: describe(namespace, workload),
            source: Box::new(source),
        })?
        .ok_or_else(|| EvidenceError::WorkloadGone {
            workload: describe(namespace, workload),
        })?;
    let found = object.metadata.uid.clone().unwrap_or_default();
    if found != workload.uid {
        return Err(EvidenceError::UidMismatch {
            workload: describe(namespace, workload),
            found,
            expected: workload.uid.clone(),
        });
    }
    let mut value = serde_json::to_value(&object).map_err(|source| EvidenceError::Decode {
        workload: describe(namespace, workload),
        source,
    })?;
    // DynamicObject serializes its type meta only when it was sent; set it
    // so callers can build apply patches from the object.
    value["apiVersion"] = Value::String(workload.api_version.clone());
    value["kind"] = Value::String(workload.kind.clone());
    Ok(value)
}

/// Where the pod template sits in a workload of `kind`, as a JSON pointer
/// ("" for a bare Pod, which is its own template).
pub fn pod_template_pointer(kind: &str) -> String {
    let template = pod_spec_path(kind)
        .strip_suffix(".spec")
        .unwrap_or_default();
    if template.is_empty() {
        String::new()
    } else {
        format!("/{}", template.replace('.', "/"))
    }
}

fn current_template(
    namespace: &str,
    workload: &WorkloadRef,
    live: &Value,
) -> Result<PodTemplateSpec, EvidenceError> {
    let pointer = pod_template_pointer(&workload.kind);
    let raw = live.pointer(&pointer).cloned().unwrap_or(Value::Null);
    let raw = if pointer.is_empty() {
        // A Pod: keep only what a template has.
        serde_json::json!({"metadata": raw.get("metadata"), "spec": raw.get("spec")})
    } else {
        raw
    };
    serde_json::from_value(raw).map_err(|source| EvidenceError::Template {
        workload: describe(namespace, workload),
        path: pointer,
        source,
    })
}

/// A template as JSON in one canonical form, without the labels controllers
/// add, so templates from different sources compare equal when they are.
fn normalized_template(template: &PodTemplateSpec) -> Value {
    let mut template = template.clone();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        for label in CONTROLLER_LABELS {
            labels.remove(*label);
        }
    }
    serde_json::to_value(&template).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------- history

/// Earlier revisions of the workload's template, newest first.
///
/// Deployments keep one ReplicaSet per template (revision in the
/// `deployment.kubernetes.io/revision` annotation); StatefulSets and
/// DaemonSets keep ControllerRevisions. The revision whose template equals
/// the current one is the current revision and is left out.
///
/// `healthy` heuristic: a revision is healthy when it has Ready pods at the
/// time of gathering: its ReplicaSet reports `readyReplicas > 0` or
/// `availableReplicas > 0`, or (ControllerRevisions) a Ready pod of the
/// workload carries its `controller-revision-hash`. During a failed rollout
/// the controllers keep the previous revision's pods running, so the
/// revision that worked is seen serving. A revision already scaled to zero
/// cannot be observed and counts as not healthy: proposing nothing is
/// better than rolling back to a revision no one saw working.
async fn earlier_revisions(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    live: &Value,
    current: &PodTemplateSpec,
) -> Result<Vec<RevisionTemplate>, EvidenceError> {
    let current = normalized_template(current);
    let list_error = |what: &'static str| {
        move |source| EvidenceError::List {
            what,
            workload: describe(namespace, workload),
            source: Box::new(source),
        }
    };
    let selector = match_labels_selector(live);
    let params = ListParams::default().labels(&selector);
    let mut revisions: Vec<RevisionTemplate> = match workload.kind.as_str() {
        "Deployment" => {
            let api: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
            let sets = api.list(&params).await.map_err(list_error("ReplicaSets"))?;
            sets.items
                .iter()
                .filter(|rs| controlled_by(&rs.metadata, &workload.uid))
                .filter_map(|rs| replicaset_revision(rs, &current))
                .collect()
        }
        "StatefulSet" | "DaemonSet" => {
            let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
            let list = api
                .list(&params)
                .await
                .map_err(list_error("ControllerRevisions"))?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let pods = pods.list(&params).await.map_err(list_error("Pods"))?;
            let serving = ready_revision_hashes(&pods.items);
            list.items
                .iter()
                .filter(|cr| controlled_by(&cr.metadata, &workload.uid))
                .filter_map(|cr| controller_revision(cr, &current, &serving))
                .collect()
        }
        _ => Vec::new(),
    };
    revisions.retain(|r| !r.changed.is_empty());
    revisions.sort_by_key(|r| std::cmp::Reverse(r.revision));
    Ok(revisions)
}

/// `k=v,k2=v2` from `spec.selector.matchLabels`; empty (everything, then
/// filtered by owner) when the selector only has expressions.
fn match_labels_selector(live: &Value) -> String {
    live.pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn controlled_by(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> bool {
    metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

fn replicaset_revision(rs: &ReplicaSet, current: &Value) -> Option<RevisionTemplate> {
    let revision = rs
        .metadata
        .annotations
        .as_ref()?
        .get(DEPLOYMENT_REVISION)?
        .parse()
        .ok()?;
    let template = normalized_template(rs.spec.as_ref()?.template.as_ref()?);
    let status = rs.status.as_ref();
    let healthy = status.is_some_and(|s| {
        s.ready_replicas.unwrap_or(0) > 0 || s.available_replicas.unwrap_or(0) > 0
    });
    Some(RevisionTemplate {
        revision,
        source: rs.metadata.name.clone().unwrap_or_default(),
        changed: template_changes(&template, current),
        template,
        healthy,
    })
}

fn controller_revision(
    cr: &ControllerRevision,
    current: &Value,
    serving: &BTreeSet<String>,
) -> Option<RevisionTemplate> {
    let name = cr.metadata.name.clone()?;
    // Both controllers store `{"spec": {"template": {..., "$patch": "replace"}}}`.
    let mut raw = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(object) = raw.as_object_mut() {
        object.remove("$patch");
    }
    let template: PodTemplateSpec = serde_json::from_value(raw).ok()?;
    let template = normalized_template(&template);
    // StatefulSet pods carry the full revision name, DaemonSet pods only the hash.
    let healthy = serving
        .iter()
        .any(|hash| *hash == name || name.ends_with(&format!("-{hash}")));
    Some(RevisionTemplate {
        revision: cr.revision,
        source: name,
        changed: template_changes(&template, current),
        template,
        healthy,
    })
}

/// `controller-revision-hash` labels of the Ready pods.
fn ready_revision_hashes(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|pod| pod_is_ready(pod))
        .filter_map(|pod| {
            pod.metadata
                .labels
                .as_ref()?
                .get("controller-revision-hash")
                .cloned()
        })
        .collect()
}

fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// The fields in which `old` differs from `current` (both normalised
/// `PodTemplateSpec`s): `containers[app].image`, `initContainers[setup]`
/// (added or removed), pod-level fields (`volumes`) and `metadata.labels`.
/// Names only: values never leave this function.
pub fn template_changes(old: &Value, current: &Value) -> Vec<String> {
    let mut changed = Vec::new();
    for list in ["initContainers", "containers"] {
        let old_containers = containers_by_name(old.pointer(&format!("/spec/{list}")));
        let new_containers = containers_by_name(current.pointer(&format!("/spec/{list}")));
        let names: BTreeSet<&str> = old_containers
            .keys()
            .chain(new_containers.keys())
            .copied()
            .collect();
        for name in names {
            match (old_containers.get(name), new_containers.get(name)) {
                (Some(before), Some(after)) => {
                    for field in differing_keys(before, after) {
                        changed.push(format!("{list}[{name}].{field}"));
                    }
                }
                _ => changed.push(format!("{list}[{name}]")),
            }
        }
    }
    let (old_spec, new_spec) = (
        old.get("spec").unwrap_or(&Value::Null),
        current.get("spec").unwrap_or(&Value::Null),
    );
    for field in differing_keys(old_spec, new_spec) {
        if field != "containers" && field != "initContainers" {
            changed.push(field);
        }
    }
    for field in ["labels", "annotations"] {
        let path = format!("/metadata/{field}");
        if old.pointer(&path) != current.pointer(&path) {
            changed.push(format!("metadata.{field}"));
        }
    }
    changed
}

fn containers_by_name(list: Option<&Value>) -> BTreeMap<&str, &Value> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("name")?.as_str()?, c)))
        .collect()
}

/// Top-level keys of two objects whose values differ (missing = null).
fn differing_keys(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|key| key.to_string())
        .collect()
}

/// Container name → image in a `PodTemplateSpec` (init containers too).
pub fn template_images(template: &Value) -> BTreeMap<String, String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| containers_by_name(template.pointer(&format!("/spec/{list}"))))
        .filter_map(|(name, c)| Some((name.to_string(), c.get("image")?.as_str()?.to_string())))
        .collect()
}

// ---------------------------------------------------------------- template

/// The pod template per container: what is configured, never env values.
pub fn summarize_containers(spec: &PodSpec) -> Vec<ContainerTemplate> {
    spec.init_containers
        .iter()
        .flatten()
        .map(|c| (c, true))
        .chain(spec.containers.iter().map(|c| (c, false)))
        .map(|(container, init)| summarize_container(container, init))
        .collect()
}

fn summarize_container(container: &Container, init: bool) -> ContainerTemplate {
    let resources = container.resources.as_ref();
    let quantities = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        map.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut env_names: Vec<String> = container
        .env
        .iter()
        .flatten()
        .map(|var| var.name.clone())
        .collect();
    // Sources are named, their contents never read.
    for source in container.env_from.iter().flatten() {
        let prefix = source
            .prefix
            .as_deref()
            .map(|p| format!(" (prefix {p})"))
            .unwrap_or_default();
        if let Some(name) = source.config_map_ref.as_ref().map(|r| &r.name) {
            env_names.push(format!("envFrom:configMap/{name}{prefix}"));
        }
        if let Some(name) = source.secret_ref.as_ref().map(|r| &r.name) {
            env_names.push(format!("envFrom:secret/{name}{prefix}"));
        }
    }
    env_names.truncate(MAX_ENV_NAMES);
    let probes = [
        ("liveness", &container.liveness_probe),
        ("readiness", &container.readiness_probe),
        ("startup", &container.startup_probe),
    ]
    .into_iter()
    .filter_map(|(kind, probe)| Some(summarize_probe(kind, probe.as_ref()?)))
    .collect();
    ContainerTemplate {
        name: container.name.clone(),
        init,
        image: container.image.clone().unwrap_or_default(),
        requests: quantities(resources.and_then(|r| r.requests.as_ref())),
        limits: quantities(resources.and_then(|r| r.limits.as_ref())),
        env_names,
        command: bounded_args(container.command.as_deref()),
        args: bounded_args(container.args.as_deref()),
        probes,
        ports: container
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect(),
    }
}

fn bounded_args(args: Option<&[String]>) -> Vec<String> {
    let args = args.unwrap_or_default();
    let mut out: Vec<String> = redact_args(&args[..args.len().min(MAX_ARGS)])
        .into_iter()
        .map(|a| truncate(&a, MAX_ARG_BYTES))
        .collect();
    if args.len() > MAX_ARGS {
        out.push(format!("… {} more", args.len() - MAX_ARGS));
    }
    out
}

/// "readiness: httpGet :8080/healthz every 10s, timeout 1s, 3 failures".
fn summarize_probe(kind: &str, probe: &Probe) -> String {
    let port = |p: &IntOrString| match p {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    let action = if let Some(http) = &probe.http_get {
        format!(
            "httpGet {}:{}{}",
            http.scheme
                .as_deref()
                .map(|s| s.to_lowercase() + "://")
                .unwrap_or_default(),
            port(&http.port),
            http.path.as_deref().unwrap_or("/")
        )
    } else if let Some(tcp) = &probe.tcp_socket {
        format!("tcpSocket :{}", port(&tcp.port))
    } else if let Some(grpc) = &probe.grpc {
        format!("grpc :{}", grpc.port)
    } else if let Some(exec) = &probe.exec {
        let command = redact_args(exec.command.as_deref().unwrap_or_default()).join(" ");
        format!("exec {}", truncate(&command, MAX_ARG_BYTES))
    } else {
        "no action".to_string()
    };
    let mut timing = vec![format!("every {}s", probe.period_seconds.unwrap_or(10))];
    if let Some(delay) = probe.initial_delay_seconds.filter(|d| *d > 0) {
        timing.push(format!("after {delay}s"));
    }
    timing.push(format!("timeout {}s", probe.timeout_seconds.unwrap_or(1)));
    timing.push(format!("{} failures", probe.failure_threshold.unwrap_or(3)));
    format!("{kind}: {action} {}", timing.join(", "))
}

// ---------------------------------------------------------------- statuses

/// One entry per failing pod and container that is not simply running and
/// ready (init containers that completed are fine too).
fn observed_containers(pods: &[&Pod]) -> Vec<ObservedContainer> {
    let mut out = Vec::new();
    for pod in pods {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let statuses = status
            .init_container_statuses
            .iter()
            .flatten()
            .map(|s| (s, true))
            .chain(
                status
                    .container_statuses
                    .iter()
                    .flatten()
                    .map(|s| (s, false)),
            );
        for (container, init) in statuses {
            if container_is_fine(container, init) {
                continue;
            }
            out.push(ObservedContainer {
                pod: pod_name.clone(),
                container: container.name.clone(),
                state: describe_state(container.state.as_ref()),
                last_state: container
                    .last_state
                    .as_ref()
                    .filter(|s| {
                        s.waiting.is_some() || s.running.is_some() || s.terminated.is_some()
                    })
                    .map(|s| describe_state(Some(s)))
                    .unwrap_or_default(),
                restart_count: container.restart_count,
                ready: container.ready,
                image: container.image.clone(),
            });
        }
    }
    out
}

fn container_is_fine(container: &ContainerStatus, init: bool) -> bool {
    let state = container.state.as_ref();
    let running_ready = container.ready
        && container.restart_count == 0
        && state.is_some_and(|s| s.running.is_some());
    let completed_init = init
        && state
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0);
    running_ready || completed_init
}

/// "waiting: CrashLoopBackOff: back-off 40s…", "terminated: OOMKilled (exit 137)", "running".
fn describe_state(state: Option<&ContainerState>) -> String {
    let Some(state) = state else {
        return "unknown".into();
    };
    let with_message = |head: String, message: Option<&String>| match message {
        Some(m) if !m.is_empty() => {
            format!("{head}: {}", truncate(&redact(m), MAX_STATE_MESSAGE_BYTES))
        }
        _ => head,
    };
    if let Some(waiting) = &state.waiting {
        let head = format!(
            "waiting: {}",
            waiting.reason.as_deref().unwrap_or("unknown")
        );
        return with_message(head, waiting.message.as_ref());
    }
    if let Some(terminated) = &state.terminated {
        let mut head = format!(
            "terminated: {} (exit {}",
            terminated.reason.as_deref().unwrap_or("unknown"),
            terminated.exit_code
        );
        if let Some(signal) = terminated.signal {
            head.push_str(&format!(", signal {signal}"));
        }
        head.push(')');
        if let Some(finished) = &terminated.finished_at {
            head.push_str(&format!(" at {}", finished.0));
        }
        return with_message(head, terminated.message.as_ref());
    }
    if state.running.is_some() {
        return "running".into();
    }
    "unknown".into()
}

// ---------------------------------------------------------------- events

/// The objects whose Events belong to the evidence: the workload, the
/// sampled failing pods and their controllers (ReplicaSet or Job).
fn related_uids(workload: &WorkloadRef, pods: &[&Pod]) -> BTreeSet<String> {
    let mut uids = BTreeSet::from([workload.uid.clone()]);
    for pod in pods {
        uids.extend(pod.metadata.uid.clone());
        uids.extend(
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
        );
    }
    uids.retain(|uid| !uid.is_empty());
    uids
}

/// Events whose `involvedObject.uid` is one of `uids`, by field selector
/// (one small query per object rather than every Event of the namespace).
async fn fetch_events(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    uids: &BTreeSet<String>,
) -> Result<Vec<Event>, EvidenceError> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let lists: Vec<Vec<Event>> = futures::stream::iter(uids.iter().cloned())
        .map(|uid| {
            let api = api.clone();
            async move {
                let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
                api.list(&params).await.map(|list| list.items)
            }
        })
        .buffer_unordered(EVENT_QUERIES_IN_FLIGHT)
        .try_collect()
        .await
        .map_err(|source| EvidenceError::List {
            what: "Events",
            workload: describe(namespace, workload),
            source: Box::new(source),
        })?;
    Ok(lists.into_iter().flatten().collect())
}

/// Pod names made by a ReplicaSet (`web-7d9f8c6b5-x2x7k`) or a Job
/// (`nightly-28911-abcde`): the random suffix differs per replica.
static GENERATED_POD_NAME: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"\b(?P<base>[a-z0-9][a-z0-9.-]*?-[a-z0-9]{5,10})-[a-z0-9]{5}\b").ok()
});
/// Object uids, which kubelet messages quote per pod.
static UID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b").ok()
});

/// The dedup key of an event message: the same message about different
/// replicas of one template is one finding.
fn normalize_message(message: &str, pod_names: &[String]) -> String {
    let mut normalized = message.to_string();
    for name in pod_names.iter().filter(|n| !n.is_empty()) {
        normalized = normalized.replace(name.as_str(), "<pod>");
    }
    if let Some(pattern) = GENERATED_POD_NAME.as_ref() {
        normalized = pattern.replace_all(&normalized, "$base-<pod>").into_owned();
    }
    if let Some(pattern) = UID.as_ref() {
        normalized = pattern.replace_all(&normalized, "<uid>").into_owned();
    }
    normalized
}

fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or(event.last_timestamp.as_ref().map(|t| t.0))
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.first_timestamp.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Keeps Events of `uids` only (a namesake's Events never count),
/// deduplicates by (reason, normalised message), newest first, at most
/// [`MAX_EVENTS`]. Messages are redacted.
fn summarize_events(
    events: Vec<Event>,
    uids: &BTreeSet<String>,
    pod_names: &[String],
) -> Vec<EventSummary> {
    let mut by_key: BTreeMap<(String, String), (Option<Timestamp>, EventSummary)> = BTreeMap::new();
    for event in events {
        let Some(uid) = event.involved_object.uid.as_deref() else {
            continue;
        };
        if !uids.contains(uid) {
            continue;
        }
        let reason = event.reason.clone().unwrap_or_default();
        let message = event.message.clone().unwrap_or_default();
        let key = (reason.clone(), normalize_message(&message, pod_names));
        let seen = event_time(&event);
        let count = event
            .series
            .as_ref()
            .map(|s| s.count.unwrap_or(1))
            .or(event.count)
            .unwrap_or(1)
            .max(1);
        let summary = EventSummary {
            type_: event.type_.clone().unwrap_or_default(),
            reason,
            message: truncate(&redact(&message), MAX_MESSAGE_BYTES),
            object: format!(
                "{}/{}",
                event.involved_object.kind.as_deref().unwrap_or("?"),
                event.involved_object.name.as_deref().unwrap_or("?")
            ),
            count,
            last_seen: seen.map(Time),
        };
        match by_key.get_mut(&key) {
            Some((newest, merged)) => {
                merged.count = merged.count.saturating_add(count);
                if seen > *newest {
                    let total = merged.count;
                    *merged = EventSummary {
                        count: total,
                        ..summary
                    };
                    *newest = seen;
                }
            }
            None => {
                by_key.insert(key, (seen, summary));
            }
        }
    }
    let mut summaries: Vec<(Option<Timestamp>, EventSummary)> = by_key.into_values().collect();
    summaries.sort_by_key(|(seen, _)| std::cmp::Reverse(*seen));
    summaries
        .into_iter()
        .take(MAX_EVENTS)
        .map(|(_, summary)| summary)
        .collect()
}

// ---------------------------------------------------------------- logs

/// How to read a crashed container's log: the previous instance's after a
/// restart, the current one when it terminated without restarting (a Job).
fn crash_log_source(container: &ContainerStatus) -> Option<bool> {
    let state = container.state.as_ref();
    let waiting = state
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.as_deref());
    let restarted = container
        .last_state
        .as_ref()
        .is_some_and(|s| s.terminated.is_some());
    if restarted || (waiting == Some("CrashLoopBackOff") && container.restart_count > 0) {
        return Some(true);
    }
    let failed_now = state
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.exit_code != 0 || t.reason.as_deref() == Some("OOMKilled"));
    failed_now.then_some(false)
}

/// The log tail of each crashed container, from the first sampled pod where
/// it crashed. Errors (no previous log yet, logs rotated away) skip the
/// container: missing logs are not worth failing the evidence for.
async fn crash_log_tails(client: &Client, namespace: &str, pods: &[&Pod]) -> Vec<LogTail> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut done = BTreeSet::new();
    let mut tails = Vec::new();
    for pod in pods {
        let Some(pod_name) = pod.metadata.name.as_deref() else {
            continue;
        };
        // Collected, not a lazy iterator: an iterator of closures held across
        // the `.await` below makes the future's Send bound fail to resolve.
        let statuses: Vec<&ContainerStatus> = pod
            .status
            .iter()
            .flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            })
            .collect();
        for container in statuses {
            if tails.len() >= MAX_LOG_TAILS || done.contains(&container.name) {
                continue;
            }
            let Some(previous) = crash_log_source(container) else {
                continue;
            };
            let params = LogParams {
                container: Some(container.name.clone()),
                previous,
                tail_lines: Some(LOG_TAIL_LINES),
                limit_bytes: Some(LOG_LIMIT_BYTES),
                ..LogParams::default()
            };
            match api.logs(pod_name, &params).await {
                Ok(text) => {
                    let lines = log_lines(&text);
                    if lines.is_empty() {
                        continue;
                    }
                    done.insert(container.name.clone());
                    tails.push(LogTail {
                        pod: pod_name.to_string(),
                        container: container.name.clone(),
                        previous,
                        lines,
                    });
                }
                Err(err) => {
                    tracing::debug!(pod = pod_name, container = %container.name, error = %err, "no crash log");
                }
            }
        }
    }
    tails
}

/// The last [`LOG_TAIL_LINES`] non-empty lines, redacted and cut to size.
fn log_lines(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let skip = lines
        .len()
        .saturating_sub(usize::try_from(LOG_TAIL_LINES).unwrap_or(usize::MAX));
    lines[skip..]
        .iter()
        .map(|line| truncate(&redact(line), MAX_LINE_BYTES))
        .collect()
}

// ---------------------------------------------------------------- management

/// Labels and annotations that show who else manages the workload: a live
/// patch to a GitOps- or Helm-managed object is reverted by the next sync.
pub fn management_markers(metadata: &Value) -> BTreeMap<String, String> {
    let mut markers = BTreeMap::new();
    let entries = ["labels", "annotations"]
        .iter()
        .filter_map(|field| metadata.get(*field)?.as_object())
        .flatten();
    let mut instance = None;
    let mut argo = false;
    for (key, value) in entries {
        let value = value.as_str().unwrap_or_default();
        let is_marker = key == "app.kubernetes.io/managed-by"
            || key == "helm.sh/chart"
            || key.starts_with("meta.helm.sh/")
            || key.starts_with("argocd.argoproj.io/")
            || key.starts_with("kustomize.toolkit.fluxcd.io/")
            || key.starts_with("helm.toolkit.fluxcd.io/");
        argo |= key.starts_with("argocd.argoproj.io/");
        if key == "app.kubernetes.io/instance" {
            instance = Some(value.to_string());
        }
        if is_marker {
            markers.insert(key.clone(), truncate(&redact(value), MAX_MARKER_BYTES));
        }
    }
    // Argo CD tracks by this label too, but Helm charts set it as well: it
    // only says "Argo CD" next to an Argo CD marker.
    if let Some(instance) = instance.filter(|_| argo) {
        markers.insert(
            "app.kubernetes.io/instance".into(),
            truncate(&redact(&instance), MAX_MARKER_BYTES),
        );
    }
    markers
}

/// The tools that manage a workload, from [`management_markers`].
pub fn management_tools(markers: &BTreeMap<String, String>) -> Vec<ManagedBy> {
    let mut tools = BTreeSet::new();
    for (key, value) in markers {
        if (key == "app.kubernetes.io/managed-by" && value.eq_ignore_ascii_case("helm"))
            || key.starts_with("meta.helm.sh/")
            || key == "helm.sh/chart"
        {
            tools.insert(ManagedBy::Helm);
        }
        if key.starts_with("argocd.argoproj.io/") {
            tools.insert(ManagedBy::ArgoCd);
        }
        if key.starts_with("kustomize.toolkit.fluxcd.io/")
            || key.starts_with("helm.toolkit.fluxcd.io/")
        {
            tools.insert(ManagedBy::Flux);
        }
    }
    tools.into_iter().collect()
}

// ---------------------------------------------------------------- size bound

fn json_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0)
}

/// Removes items from `items` (from the back, or the front for log lines)
/// while `size` exceeds `max` and more than `keep` remain, keeping `size`
/// exact: compact JSON arrays spend the item plus one comma per extra item.
fn drop_items<T: Serialize>(
    items: &mut Vec<T>,
    keep: usize,
    from_front: bool,
    size: &mut usize,
    max: usize,
) -> bool {
    let mut dropped = false;
    while *size > max && items.len() > keep {
        let comma = usize::from(items.len() > 1);
        let item = if from_front {
            items.remove(0)
        } else {
            match items.pop() {
                Some(item) => item,
                None => break,
            }
        };
        *size = size.saturating_sub(json_len(&item) + comma);
        dropped = true;
    }
    dropped
}

/// Cuts `evidence` to at most `max_bytes` of compact JSON, setting
/// `truncated` when anything is dropped. Drop order, least useful first:
///
/// 1. events beyond the newest 5 (oldest first);
/// 2. log lines beyond the last 10 of each tail (oldest lines first);
/// 3. statuses of further pods for a container already shown;
/// 4. history beyond the newest 3 revisions;
/// 5. the remaining events;
/// 6. log lines beyond the last 3, then whole log tails (last first);
/// 7. the remaining statuses;
/// 8. the remaining history;
/// 9. per container: probes, then args and command, then env names;
/// 10. containers (last first), then management markers.
pub fn bound_evidence(evidence: &mut Evidence, max_bytes: usize) {
    let mut size = json_len(evidence);
    if size <= max_bytes {
        return;
    }
    if !evidence.truncated {
        // `"truncated":true` is one byte shorter than `"truncated":false`.
        evidence.truncated = true;
        size -= 1;
    }
    let max = max_bytes;

    drop_items(&mut evidence.events, 5, false, &mut size, max);
    for tail in &mut evidence.logs {
        drop_items(&mut tail.lines, 10, true, &mut size, max);
    }
    drop_repeated_statuses(evidence, &mut size, max);
    drop_items(&mut evidence.history, 3, false, &mut size, max);
    drop_items(&mut evidence.events, 0, false, &mut size, max);
    for tail in &mut evidence.logs {
        drop_items(&mut tail.lines, 3, true, &mut size, max);
    }
    drop_items(&mut evidence.logs, 0, false, &mut size, max);
    drop_items(&mut evidence.statuses, 0, false, &mut size, max);
    drop_items(&mut evidence.history, 0, false, &mut size, max);
    strip_container_details(evidence, &mut size, max);
    drop_items(&mut evidence.containers, 0, false, &mut size, max);
    if size > max {
        evidence.management.clear();
    }
}

/// Step 3: one status per container is enough to see the failure mode.
fn drop_repeated_statuses(evidence: &mut Evidence, size: &mut usize, max: usize) {
    let mut index = evidence.statuses.len();
    while *size > max && index > 0 {
        index -= 1;
        let container = &evidence.statuses[index].container;
        let shown_earlier = evidence.statuses[..index]
            .iter()
            .any(|s| &s.container == container);
        if shown_earlier {
            let removed = evidence.statuses.remove(index);
            let comma = usize::from(!evidence.statuses.is_empty());
            *size = size.saturating_sub(json_len(&removed) + comma);
        }
    }
}

/// Step 9, from the last container backwards.
fn strip_container_details(evidence: &mut Evidence, size: &mut usize, max: usize) {
    type Strip = fn(&mut ContainerTemplate);
    let steps: [Strip; 3] = [
        |c| c.probes.clear(),
        |c| {
            c.args.clear();
            c.command.clear();
        },
        |c| c.env_names.clear(),
    ];
    for strip in steps {
        for container in evidence.containers.iter_mut().rev() {
            if *size <= max {
                return;
            }
            let before = json_len(container);
            strip(container);
            *size = size.saturating_sub(before - json_len(container));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).expect("pod fixture")
    }

    fn event(value: Value) -> Event {
        serde_json::from_value(value).expect("event fixture")
    }

    fn template(value: Value) -> PodTemplateSpec {
        serde_json::from_value(value).expect("template fixture")
    }

    #[test]
    fn container_summary_has_env_names_but_no_values() {
        let spec: PodSpec = serde_json::from_value(json!({
            "initContainers": [{"name": "migrate", "image": "app:1.0", "command": ["migrate", "--password", "pw-123"]}],
            "containers": [{
                "name": "app", "image": "app:1.0",
                "command": ["/bin/app"],
                "args": ["--db=postgres://app:Sup3rS3cret@db:5432/x", "--port", "8080"],
                "env": [
                    {"name": "API_TOKEN", "value": "sk-live-PLANTED123456789"},
                    {"name": "DB_PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
                ],
                "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "creds"}, "prefix": "X_"}],
                "resources": {"requests": {"memory": "64Mi", "cpu": "100m"}, "limits": {"memory": "128Mi"}},
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
                "livenessProbe": {"exec": {"command": ["check", "--token", "abcdef123"]}, "initialDelaySeconds": 10}
            }]
        }))
        .unwrap();
        let summary = summarize_containers(&spec);
        assert_eq!(summary.len(), 2);
        assert!(summary[0].init);
        assert_eq!(
            summary[0].command,
            vec!["migrate", "--password", "[REDACTED]"]
        );
        let app = &summary[1];
        assert_eq!(
            app.env_names,
            vec![
                "API_TOKEN",
                "DB_PASS",
                "envFrom:configMap/settings",
                "envFrom:secret/creds (prefix X_)"
            ]
        );
        assert_eq!(app.requests.get("memory").map(String::as_str), Some("64Mi"));
        assert_eq!(app.limits.get("memory").map(String::as_str), Some("128Mi"));
        assert_eq!(app.ports, vec![8080]);
        assert_eq!(app.args[0], "--db=postgres://app:[REDACTED]@db:5432/x");
        assert!(
            app.probes.contains(
                &"readiness: httpGet :8080/healthz every 5s, timeout 1s, 3 failures".to_string()
            ),
            "{:?}",
            app.probes
        );
        assert!(
            app.probes
                .iter()
                .any(|p| p
                    .starts_with("liveness: exec check --token [REDACTED] every 10s, after 10s")),
            "{:?}",
            app.probes
        );
        let text = serde_json::to_string(&summary).unwrap();
        for secret in ["PLANTED123456789", "Sup3rS3cret", "pw-123", "abcdef123"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[test]
    fn statuses_describe_failing_containers_with_last_state() {
        let p = pod(json!({
            "metadata": {"name": "cache-1"},
            "status": {
                "initContainerStatuses": [{"name": "init", "image": "busybox:1.36.1", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                "containerStatuses": [
                    {"name": "redis", "image": "redis:7.2.5", "imageID": "", "ready": false, "restartCount": 4,
                     "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container"}},
                     "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-01-01T00:00:00Z"}}},
                    {"name": "sidecar", "image": "busybox:1.36.1", "imageID": "", "ready": true, "restartCount": 0,
                     "state": {"running": {}}}
                ]}
        }));
        let observed = observed_containers(&[&p]);
        assert_eq!(observed.len(), 1, "{observed:?}");
        let redis = &observed[0];
        assert_eq!(redis.pod, "cache-1");
        assert_eq!(
            redis.state,
            "waiting: CrashLoopBackOff: back-off 1m20s restarting failed container"
        );
        assert_eq!(
            redis.last_state,
            "terminated: OOMKilled (exit 137) at 2026-01-01T00:00:00Z"
        );
        assert_eq!(redis.restart_count, 4);
    }

    #[test]
    fn events_match_by_uid_not_by_name_and_are_deduplicated() {
        let uids = BTreeSet::from([
            "pod-a".to_string(),
            "pod-b".to_string(),
            "deploy".to_string(),
        ]);
        let events = vec![
            event(
                json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "web-7d9f8c6b5-aaaaa", "uid": "pod-a"},
                "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container app in pod web-7d9f8c6b5-aaaaa",
                "count": 3, "lastTimestamp": "2026-01-01T00:01:00Z"}),
            ),
            event(
                json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Pod", "name": "web-7d9f8c6b5-bbbbb", "uid": "pod-b"},
                "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container app in pod web-7d9f8c6b5-bbbbb",
                "count": 2, "lastTimestamp": "2026-01-01T00:02:00Z"}),
            ),
            // Same name as a failing pod, but an earlier pod's uid: not ours.
            event(
                json!({"metadata": {"name": "e3"}, "involvedObject": {"kind": "Pod", "name": "web-7d9f8c6b5-aaaaa", "uid": "old-pod"},
                "type": "Warning", "reason": "FailedMount", "message": "namesake", "lastTimestamp": "2026-01-01T00:03:00Z"}),
            ),
            event(
                json!({"metadata": {"name": "e4"}, "involvedObject": {"kind": "Deployment", "name": "web", "uid": "deploy"},
                "type": "Normal", "reason": "ScalingReplicaSet", "message": "Scaled up replica set web-7d9f8c6b5 to 2 with token=abc123",
                "eventTime": "2026-01-01T00:00:30.000000Z"}),
            ),
        ];
        let names = vec![
            "web-7d9f8c6b5-aaaaa".to_string(),
            "web-7d9f8c6b5-bbbbb".to_string(),
        ];
        let summaries = summarize_events(events, &uids, &names);
        assert_eq!(summaries.len(), 2, "{summaries:?}");
        assert!(summaries.iter().all(|s| s.message != "namesake"));
        let backoff = &summaries[0];
        assert_eq!(backoff.reason, "BackOff");
        assert_eq!(backoff.count, 5, "merged counts");
        assert_eq!(
            backoff.object, "Pod/web-7d9f8c6b5-bbbbb",
            "newest occurrence kept"
        );
        assert_eq!(summaries[1].object, "Deployment/web");
        assert_eq!(
            summaries[1].message,
            "Scaled up replica set web-7d9f8c6b5 to 2 with token=[REDACTED]"
        );
    }

    #[test]
    fn generated_pod_names_normalise_but_replica_set_names_do_not() {
        assert_eq!(
            normalize_message("Created pod: web-7d9f8c6b5-x2x7k", &[]),
            "Created pod: web-7d9f8c6b5-<pod>"
        );
        assert_eq!(
            normalize_message("Scaled up replica set web-7d9f8c6b5 to 3", &[]),
            "Scaled up replica set web-7d9f8c6b5 to 3"
        );
        assert_eq!(
            normalize_message(
                "store-0 failed in store-0_shop(0d6f3c8e-1c7e-4a7e-9d51-3f7a2b1c9e10)",
                &["store-0".to_string()]
            ),
            "<pod> failed in <pod>_shop(<uid>)"
        );
    }

    #[test]
    fn events_are_capped_newest_first() {
        let uids = BTreeSet::from(["p".to_string()]);
        let events = (0..40)
            .map(|i| {
                event(json!({"metadata": {"name": format!("e{i}")}, "involvedObject": {"kind": "Pod", "name": "p", "uid": "p"},
                    "type": "Warning", "reason": format!("R{i}"), "message": "m",
                    "lastTimestamp": format!("2026-01-01T00:{i:02}:00Z")}))
            })
            .collect();
        let summaries = summarize_events(events, &uids, &[]);
        assert_eq!(summaries.len(), MAX_EVENTS);
        assert_eq!(summaries[0].reason, "R39");
        assert_eq!(summaries[MAX_EVENTS - 1].reason, "R25");
    }

    #[test]
    fn crash_log_source_prefers_the_previous_instance() {
        let status = |value: Value| -> ContainerStatus { serde_json::from_value(value).unwrap() };
        let base =
            json!({"name": "c", "image": "i:1", "imageID": "", "ready": false, "restartCount": 1});
        let mut looping = base.clone();
        looping["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
        looping["lastState"] = json!({"terminated": {"exitCode": 1}});
        assert_eq!(crash_log_source(&status(looping)), Some(true));
        let mut job_failed = base.clone();
        job_failed["restartCount"] = json!(0);
        job_failed["state"] = json!({"terminated": {"exitCode": 2}});
        assert_eq!(crash_log_source(&status(job_failed)), Some(false));
        let mut pulling = base;
        pulling["restartCount"] = json!(0);
        pulling["state"] = json!({"waiting": {"reason": "ImagePullBackOff"}});
        assert_eq!(crash_log_source(&status(pulling)), None);
    }

    #[test]
    fn log_lines_keep_the_tail_redacted() {
        let text: String = (0..80)
            .map(|i| format!("line {i}\n"))
            .chain([
                "\n".to_string(),
                "connecting password=hunter2\n".to_string(),
            ])
            .collect();
        let lines = log_lines(&text);
        assert_eq!(lines.len(), 50);
        assert_eq!(lines[0], "line 31");
        assert_eq!(lines[49], "connecting password=[REDACTED]");
    }

    #[test]
    fn template_changes_name_fields_not_values() {
        let old = normalized_template(&template(json!({
            "metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
            "spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "old-secret"}]},
                                    {"name": "gone", "image": "x:1"}]}
        })));
        let current = normalized_template(&template(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "app:2", "env": [{"name": "A", "value": "new-secret"}],
                                     "args": ["--fast"]}],
                     "serviceAccountName": "web"}
        })));
        let changed = template_changes(&old, &current);
        assert_eq!(
            changed,
            vec![
                "containers[app].args",
                "containers[app].env",
                "containers[app].image",
                "containers[gone]",
                "serviceAccountName",
            ]
        );
        assert!(template_changes(&current, &current).is_empty());
    }

    #[test]
    fn controller_revision_templates_and_health() {
        let cr: ControllerRevision = serde_json::from_value(json!({
            "metadata": {"name": "store-5d8f7c9b6"},
            "revision": 2,
            "data": {"spec": {"template": {"$patch": "replace",
                "metadata": {"labels": {"app": "store"}},
                "spec": {"containers": [{"name": "redis", "image": "redis:7.2.5"}]}}}}
        }))
        .unwrap();
        let current = normalized_template(&template(json!({
            "metadata": {"labels": {"app": "store"}},
            "spec": {"containers": [{"name": "redis", "image": "redis:7.4.0"}]}
        })));
        // DaemonSet pods carry only the hash; StatefulSet pods the full name.
        for serving in ["5d8f7c9b6", "store-5d8f7c9b6"] {
            let revision =
                controller_revision(&cr, &current, &BTreeSet::from([serving.to_string()])).unwrap();
            assert!(revision.healthy);
            assert_eq!(revision.changed, vec!["containers[redis].image"]);
            assert_eq!(
                revision.summary().images.get("redis").map(String::as_str),
                Some("redis:7.2.5")
            );
        }
        let unseen = controller_revision(&cr, &current, &BTreeSet::new()).unwrap();
        assert!(!unseen.healthy);
    }

    #[test]
    fn replicaset_health_comes_from_ready_replicas() {
        let rs = |ready: i32| -> ReplicaSet {
            serde_json::from_value(json!({
                "metadata": {"name": "web-1", "annotations": {DEPLOYMENT_REVISION: "1"}},
                "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25.5"}]}}},
                "status": {"replicas": ready, "readyReplicas": ready}
            }))
            .unwrap()
        };
        let current = normalized_template(&template(json!({
            "spec": {"containers": [{"name": "nginx", "image": "nginx:does-not-exist"}]}
        })));
        let serving = replicaset_revision(&rs(3), &current).unwrap();
        assert_eq!(serving.revision, 1);
        assert!(serving.healthy);
        assert!(!replicaset_revision(&rs(0), &current).unwrap().healthy);
        let debug = format!("{serving:?}");
        assert!(
            !debug.contains("nginx:1.25.5"),
            "Debug leaves the template out: {debug}"
        );
    }

    #[test]
    fn management_markers_and_tools() {
        let markers = management_markers(&json!({
            "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "shop", "app": "web",
                       "kustomize.toolkit.fluxcd.io/name": "apps"},
            "annotations": {"meta.helm.sh/release-name": "shop", "deployment.kubernetes.io/revision": "3",
                            "kubectl.kubernetes.io/last-applied-configuration": "{\"env\":\"secret\"}"}
        }));
        assert_eq!(
            markers.keys().map(String::as_str).collect::<Vec<_>>(),
            vec![
                "app.kubernetes.io/managed-by",
                "kustomize.toolkit.fluxcd.io/name",
                "meta.helm.sh/release-name"
            ],
            "instance only counts next to Argo CD; last-applied never included"
        );
        assert_eq!(
            management_tools(&markers),
            vec![ManagedBy::Helm, ManagedBy::Flux]
        );

        let argo = management_markers(&json!({
            "labels": {"app.kubernetes.io/instance": "shop"},
            "annotations": {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:shop/web"}
        }));
        assert_eq!(
            argo.get("app.kubernetes.io/instance").map(String::as_str),
            Some("shop")
        );
        assert_eq!(management_tools(&argo), vec![ManagedBy::ArgoCd]);
        assert!(management_markers(&json!({"labels": {"app": "web"}})).is_empty());
    }

    #[test]
    fn template_pointer_per_kind() {
        assert_eq!(pod_template_pointer("Deployment"), "/spec/template");
        assert_eq!(
            pod_template_pointer("CronJob"),
            "/spec/jobTemplate/spec/template"
        );
        assert_eq!(pod_template_pointer("Pod"), "");
    }

    fn huge_evidence() -> Evidence {
        let long = |tag: &str, i: usize| format!("{tag} {i} {}", "x".repeat(380));
        Evidence {
            workload: WorkloadRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: "uid".into(),
            },
            namespace: "shop".into(),
            containers: (0..40)
                .map(|i| ContainerTemplate {
                    name: format!("c{i}"),
                    image: format!("app:{i}"),
                    env_names: (0..60).map(|e| format!("VARIABLE_{e}")).collect(),
                    args: (0..24).map(|a| long("arg", a)).collect(),
                    probes: vec![long("probe", i)],
                    ..ContainerTemplate::default()
                })
                .collect(),
            statuses: (0..200)
                .map(|i| ObservedContainer {
                    pod: format!("web-{i}"),
                    container: format!("c{}", i % 3),
                    state: long("waiting", i),
                    image: "app:1".into(),
                    ..ObservedContainer::default()
                })
                .collect(),
            events: (0..500)
                .map(|i| EventSummary {
                    type_: "Warning".into(),
                    reason: format!("R{i}"),
                    message: long("event", i),
                    object: "Pod/web".into(),
                    count: 1,
                    last_seen: None,
                })
                .collect(),
            logs: (0..20)
                .map(|i| LogTail {
                    pod: format!("web-{i}"),
                    container: "c0".into(),
                    previous: true,
                    lines: (0..200).map(|l| long("log", l)).collect(),
                })
                .collect(),
            history: (0..100)
                .map(|i| Revision {
                    revision: 100 - i,
                    images: BTreeMap::from([("c0".into(), format!("app:{i}"))]),
                    changed: vec!["containers[c0].image".into()],
                    healthy: i % 2 == 0,
                })
                .collect(),
            management: BTreeMap::from([("app.kubernetes.io/managed-by".into(), "Helm".into())]),
            truncated: false,
        }
    }

    #[test]
    fn huge_evidence_is_bounded_and_marked_truncated() {
        let mut evidence = huge_evidence();
        bound_evidence(&mut evidence, MAX_EVIDENCE_BYTES);
        let size = serde_json::to_vec(&evidence).unwrap().len();
        assert!(size <= MAX_EVIDENCE_BYTES, "{size} bytes");
        assert!(evidence.truncated);
        assert_eq!(evidence.workload.name, "web", "identity is never dropped");
    }

    #[test]
    fn the_bound_drops_old_events_and_log_lines_first() {
        let mut evidence = huge_evidence();
        evidence.containers.truncate(1);
        evidence.containers[0].args.clear();
        evidence.statuses.truncate(3);
        evidence.history.truncate(3);
        evidence.logs.truncate(1);
        evidence.logs[0].lines.truncate(12);
        evidence.events.truncate(30);
        bound_evidence(&mut evidence, MAX_EVIDENCE_BYTES);
        let size = serde_json::to_vec(&evidence).unwrap().len();
        assert!(size <= MAX_EVIDENCE_BYTES, "{size} bytes");
        assert!(evidence.truncated);
        // Dropping old events was enough: newest kept, the rest untouched.
        assert!(
            (5..30).contains(&evidence.events.len()),
            "{}",
            evidence.events.len()
        );
        assert_eq!(evidence.events[0].reason, "R0", "the newest event is kept");
        assert_eq!(evidence.logs[0].lines.len(), 12);
        assert_eq!(evidence.statuses.len(), 3);
        assert_eq!(evidence.history.len(), 3);
        assert_eq!(evidence.logs.len(), 1);
        assert_eq!(evidence.containers[0].env_names.len(), 60);
        let last = evidence.logs[0].lines.last().unwrap();
        assert!(
            last.starts_with("log 11 "),
            "the newest log line is kept: {last}"
        );
    }

    #[test]
    fn small_evidence_is_untouched() {
        let mut evidence = huge_evidence();
        evidence.containers.truncate(1);
        evidence.containers[0].args.truncate(2);
        evidence.statuses.truncate(2);
        evidence.events.truncate(3);
        evidence.logs.truncate(1);
        evidence.logs[0].lines.truncate(5);
        evidence.history.truncate(2);
        let before = evidence.clone();
        bound_evidence(&mut evidence, MAX_EVIDENCE_BYTES);
        assert_eq!(evidence, before);
        assert!(!evidence.truncated);
    }

    #[test]
    fn the_bound_holds_for_tiny_limits_too() {
        for max in [400, 1000, 4000] {
            let mut evidence = huge_evidence();
            bound_evidence(&mut evidence, max);
            let size = serde_json::to_vec(&evidence).unwrap().len();
            assert!(size <= max, "{size} > {max}");
        }
    }
}
