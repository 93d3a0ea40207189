//! Evidence: what a reviewer (or a model) needs to understand why a workload
//! is broken, gathered from the cluster, redacted and bounded.
//!
//! One file per part of the evidence:
//!
//! - `template`: the owner's pod template per container: image,
//!   resources, env var *names* (never values, nothing from Secrets),
//!   command/args (redacted), probes as short strings, ports;
//! - `statuses`: container statuses of the failing pods, with their last state;
//! - `events`: the Events of the failing pods, their ReplicaSet/Job and the
//!   workload, matched by `involvedObject.uid`, deduplicated, newest first;
//! - `logs`: the previous log tail of each crashing container;
//! - `history`: the rollout history (ReplicaSets, ControllerRevisions or a
//!   CronJob's Jobs) with what changed against the current template and
//!   whether each revision ran healthily;
//! - `management`: Helm / Argo CD / Flux management markers;
//! - `bound`: the size bound.
//!
//! Every string that can carry tenant text goes through [`redact`], and the
//! serialized evidence is cut to [`MAX_EVIDENCE_BYTES`] by [`bound_evidence`].
//!
//! [`revision_templates`] returns the full earlier templates (with env
//! values) for the rule that reverts a bad template change; those never
//! enter the evidence, and a secret-like value among them is restored by
//! reference ([`fetch_revision_template`]), never copied.
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
use kube::api::{ListParams, LogParams};
use kube::{Api, Client};
use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use super::crd::{
    ContainerTemplate, EventSummary, Evidence, LogTail, ObservedContainer, Revision, WorkloadRef,
};
use crate::k8s::pod::pod_is_ready;
use crate::k8s::pod_spec::pod_template_pointer;
use crate::k8s::redact::{redact, redact_args, truncate};
use crate::k8s::workload::{BadApiVersion, pod_selector, workload_api};
use crate::remediation::approval::ApprovalKey;

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
/// what a user changed (the Job ones the API server adds to a Job's
/// template, which its CronJob's job template does not have).
const CONTROLLER_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "controller-uid",
    "job-name",
];

/// Failure to gather evidence. `workload` reads "Deployment shop/web".
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(transparent)]
    BadApiVersion(#[from] BadApiVersion),
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
    /// The revision number; a CronJob's Job: its creation time in seconds.
    pub revision: i64,
    /// The name of the ReplicaSet, ControllerRevision or Job holding it.
    pub source: String,
    /// `ReplicaSet`, `ControllerRevision` or `Job`.
    pub source_kind: String,
    /// `apps/v1` or `batch/v1`.
    pub source_api_version: String,
    pub source_uid: String,
    /// The template's digest under the operator's key ([`digest_revisions`]);
    /// empty until then, and a revision without one cannot be referenced.
    pub digest: String,
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
            .field("source_kind", &self.source_kind)
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
            source: self.source.clone(),
            images: template_images(&self.template),
            changed: self.changed.clone(),
            healthy: self.healthy,
        }
    }

    /// A reference to this revision for a value restored from it; `None`
    /// without a digest.
    pub fn reference(&self) -> Option<crate::remediation::crd::RevisionRef> {
        (!self.digest.is_empty()).then(|| crate::remediation::crd::RevisionRef {
            revision: self.revision,
            api_version: self.source_api_version.clone(),
            kind: self.source_kind.clone(),
            name: self.source.clone(),
            uid: self.source_uid.clone(),
            digest: self.digest.clone(),
        })
    }
}

/// Sets each revision's digest under the operator's key, so a value can be
/// restored from it by reference.
pub fn digest_revisions(revisions: &mut [RevisionTemplate], key: &ApprovalKey) {
    for revision in revisions {
        revision.digest = key.revision_digest(&revision.template);
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
/// `seen` are the revisions the operator saw Ready (see `history`).
pub async fn gather_evidence(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    failing_pods: &[Pod],
    seen: &ReadyRevisions,
) -> Result<Evidence, EvidenceError> {
    gather_evidence_and_revisions(client, namespace, workload, failing_pods, seen)
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
    seen: &ReadyRevisions,
) -> Result<(Evidence, Vec<RevisionTemplate>), EvidenceError> {
    let live = fetch_workload(client, namespace, workload).await?;
    let template = current_template(namespace, workload, &live)?;
    let revisions = earlier_revisions(client, namespace, workload, &live, &template, seen).await?;

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
/// rollout history (Job, ReplicaSet, ReplicationController, Pod).
#[tracing::instrument(skip_all, fields(namespace = %namespace, workload = %format!("{}/{}", workload.kind, workload.name)))]
pub async fn revision_templates(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    seen: &ReadyRevisions,
) -> Result<Vec<RevisionTemplate>, EvidenceError> {
    let live = fetch_workload(client, namespace, workload).await?;
    let template = current_template(namespace, workload, &live)?;
    earlier_revisions(client, namespace, workload, &live, &template, seen).await
}

/// The newest revision object holding exactly `live`'s current template
/// (the ReplicaSet, ControllerRevision or Job made from it), if the
/// cluster keeps one: what a prior value is restored from by reference.
pub async fn current_revision(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    live: &Value,
) -> Result<Option<RevisionTemplate>, EvidenceError> {
    let template = current_template(namespace, workload, live)?;
    let all = all_revisions(
        client,
        namespace,
        workload,
        live,
        &template,
        &ReadyRevisions::default(),
    )
    .await?;
    let current = normalized_template(&template);
    Ok(all.into_iter().find(|r| r.template == current))
}

/// The labels of `namespace`, for the policies' `namespaceSelector` and
/// `namespaceObject` when a fix is judged (the webhook reads them from its
/// cache; the repair loop, which runs rarely, reads them directly).
pub async fn namespace_labels(
    client: &Client,
    namespace: &str,
) -> Result<Option<std::collections::BTreeMap<String, String>>, kube::Error> {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    Ok(namespaces
        .get_opt(namespace)
        .await?
        .and_then(|found| found.metadata.labels))
}

/// The live workload as JSON, checked to be the object `workload` pins by uid.
pub async fn fetch_workload(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
) -> Result<Value, EvidenceError> {
    let api = workload_api(client, namespace, &workload.api_version, &workload.kind)?;
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

fn current_template(
    namespace: &str,
    workload: &WorkloadRef,
    live: &Value,
) -> Result<PodTemplateSpec, EvidenceError> {
    let pointer = pod_template_pointer(&workload.kind);
    let raw = live.pointer(pointer).cloned().unwrap_or(Value::Null);
    let raw = if pointer.is_empty() {
        // A Pod: keep only what a template has.
        serde_json::json!({"metadata": raw.get("metadata"), "spec": raw.get("spec")})
    } else {
        raw
    };
    serde_json::from_value(raw).map_err(|source| EvidenceError::Template {
        workload: describe(namespace, workload),
        path: pointer.to_string(),
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

mod bound;
mod events;
mod history;
mod logs;
mod management;
mod statuses;
mod template;
#[cfg(test)]
mod tests;

pub use bound::bound_evidence;
use events::*;
use history::*;
pub use history::{
    MIN_READY, ReadyRevisions, RevisionLookupError, fetch_revision_template, template_changes,
    template_images,
};
use logs::*;
pub use management::{management_markers, management_tools};
use statuses::*;
pub use template::summarize_containers;
