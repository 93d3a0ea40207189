//! The Remediation controller: one `reconcile` per Remediation, driven by
//! its phase, and one `error_policy` that turns every error into a log
//! line and a bounded requeue.
//!
//! Diagnosing → (evidence, proposal, guardrails, dry run) → Proposed
//! Proposed   → (bound human approval) → Applying | Rejected | Diagnosing (regenerate)
//! Applying   → (snapshot, then server-side apply) → Applied
//! Applied    → (rollout verification) → Verified | RolledBack
//! closed     → deleted after the retention period
//!
//! The snapshot of the fields a fix changes is written before the apply,
//! and the apply is idempotent, so a restart mid-apply neither applies
//! twice nor leaves the Remediation stuck.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};

mod apply;
mod diagnose;
mod policy;
mod review;

use apply::{apply, verify};
use diagnose::diagnose;
use review::review;

use super::Shared;
use super::approval::bound_approval;
use super::conditions::set_phase_conditions;
use super::detect::{detect_anomaly, restarted_after_failure};
use super::evidence::{
    digest_revisions, fetch_workload, gather_evidence_and_revisions, namespace_labels,
};
use super::guardrails::{AdmissionView, guard_proposal, introduced_policy_violations};
use super::patch::{diff, merge_apply, restore_patch};
use super::propose::rules::propose_from_rules;
use super::revision_refs::{
    CheckedView, ReferenceError, Secrets, checked_view, resolve_actions, resolve_restore,
    snapshot_env,
};
use super::rollout::{RolloutProgress, cronjob_progress, cronjob_runs, rollout_progress};
use super::status::apply_operator_status;
use crate::k8s::workload::{BadApiVersion, workload_api};
use crate::remediation::crd::{
    DryRun, Phase, Proposal, REGENERATE_ANNOTATION, Remediation, RemediationStatus, Snapshot,
};
use crate::remediation::propose::model::ModelProposal as ModelAnswer;

/// Why a reconcile failed; every variant is retried by `error_policy`.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("gathering evidence: {0}")]
    Evidence(#[from] super::evidence::EvidenceError),
    #[error("remediation {0} has no namespace")]
    NoNamespace(String),
    #[error("the remediation's target: {0}")]
    Target(#[from] BadApiVersion),
    #[error("{0}")]
    Reference(#[from] ReferenceError),
    #[error("auto-approval: {0}")]
    AutoApproval(#[from] crate::remediation::auto_approval::AutoApprovalError),
}

/// Runs the controller (and the pod detector and the policy scan beside it) until `shutdown`
/// resolves. The pod and owner stores live exactly as long: a replica that
/// stops leading stops watching.
pub async fn run(
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Remediation> = Api::all(shared.client.clone());
    // A change of the repair settings (a pause lifted, a rule added) may
    // concern any waiting case.
    let controller = Controller::new(api, watcher::Config::default().any_semantic())
        .reconcile_all_on(shared.settings.changes());
    let (stores, watches) = super::stores::watch(&shared.client);
    shared.stores.begin(stores.clone());
    let owner_watches = tokio::spawn(watches.owners);
    // The detector drives the pod store's watch and reads the controller's
    // own cache of Remediations.
    let detector = tokio::spawn(super::detector::run_detector(
        Arc::clone(&shared),
        controller.store(),
        watches.pods,
        stores.owners,
    ));
    let case_gauges = tokio::spawn(observe_cases(Arc::clone(&shared), controller.store()));
    let scan = tokio::spawn(super::scan::run_scan(Arc::clone(&shared)));
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(8))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::clone(&shared))
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile ended with an error");
            }
        })
        .await;
    detector.abort();
    case_gauges.abort();
    shared.metrics.forget_cases();
    scan.abort();
    owner_watches.abort();
    shared.stores.end();
}

/// Keeps the gauges of the cases that exist now (count per phase, oldest
/// wait for a review) current from the controller's cache: a read of
/// memory every few seconds, no API call.
async fn observe_cases(shared: Arc<Shared>, cases: kube::runtime::reflector::Store<Remediation>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let cases = cases.state();
        shared
            .metrics
            .observe_cases(cases.iter().map(|case| case.as_ref()), Timestamp::now());
    }
}

fn error_policy(
    remediation: Arc<Remediation>,
    error: &ReconcileError,
    _shared: Arc<Shared>,
) -> Action {
    tracing::warn!(remediation = %remediation.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[tracing::instrument(skip_all, fields(remediation = %remediation.name_any(), namespace = remediation.namespace().unwrap_or_default()))]
async fn reconcile(
    remediation: Arc<Remediation>,
    shared: Arc<Shared>,
) -> Result<Action, ReconcileError> {
    let phase = remediation
        .status
        .as_ref()
        .map(|s| s.phase)
        .unwrap_or_default();
    if phase != Phase::Diagnosing {
        // A call still running for an earlier diagnosis has no one to
        // claim it any more.
        shared
            .model_calls
            .forget(remediation.metadata.uid.as_deref().unwrap_or_default());
    }
    shared.metrics.model_calls_held(shared.model_calls.held());
    match phase {
        Phase::Diagnosing => diagnose(&remediation, &shared).await,
        Phase::Proposed => review(&remediation, &shared).await,
        Phase::Applying => apply(&remediation, &shared).await,
        Phase::Applied => verify(&remediation, &shared).await,
        _ => retain(&remediation, &shared).await,
    }
}

fn namespace_of(remediation: &Remediation) -> Result<String, ReconcileError> {
    remediation
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(remediation.name_any()))
}

/// The field manager of one Remediation's fixes: one fix never removes the
/// fields another fix set, and a rollback releases exactly its own fields.
pub fn field_manager(remediation: &Remediation) -> String {
    format!("aiops-operator/{}", remediation.name_any())
}

/// Moves to `phase`, writing the given status with consistent conditions,
/// an Event on the Remediation and on the workload, and the phase metric.
async fn transition(
    shared: &Shared,
    remediation: &Remediation,
    mut status: RemediationStatus,
    phase: Phase,
    reason: &str,
    message: &str,
) -> Result<(), ReconcileError> {
    let namespace = namespace_of(remediation)?;
    let now = Time(Timestamp::now());
    status.phase = phase;
    status.message = message.to_string();
    status.last_update_time = Some(now.clone());
    status.observed_generation = remediation.metadata.generation;
    set_phase_conditions(
        &mut status,
        remediation.metadata.generation,
        reason,
        message,
        &now,
    );
    // Findings, reason and target display are the detector's: the operator's
    // part of the status leaves them out, whatever this (cached) copy says.
    let api = Api::<Remediation>::namespaced(shared.client.clone(), &namespace);
    apply_operator_status(&api, &remediation.name_any(), &status).await?;
    let old_phase = remediation
        .status
        .as_ref()
        .map(|s| s.phase)
        .unwrap_or_default();
    let reviewable = status
        .proposal
        .as_ref()
        .is_some_and(|p| !p.actions.is_empty());
    if let Some(event) = crate::remediation::notify::event_of(old_phase, phase, reviewable) {
        let settings = shared.settings.current();
        shared.notifier.notify(
            &settings.notify.receivers,
            settings.notify.console_url.as_deref(),
            event,
            remediation,
            &status,
        );
    }
    shared.metrics.count_phase(phase, &status.reason);
    shared.publish(remediation, reason, message).await;
    tracing::info!(phase = ?phase, %reason, %message, "transition");
    Ok(())
}

/// The workload's pods that show findings now, or crashed and restarted
/// (between two crashes a crash-looping pod shows none).
async fn failing_pods(
    shared: &Shared,
    namespace: &str,
    live: &Value,
) -> Result<Vec<Pod>, kube::Error> {
    let pods = shared
        .stores
        .workload_pods(&shared.client, namespace, live)
        .await?;
    let now = Timestamp::now();
    Ok(pods
        .into_iter()
        .filter(|p| {
            restarted_after_failure(p)
                || !detect_anomaly(p, now, shared.config.not_ready_after).is_empty()
        })
        .collect())
}

/// The dynamic API of the Remediation's target kind.
fn target_api(
    shared: &Shared,
    namespace: &str,
    remediation: &Remediation,
) -> Result<Api<DynamicObject>, BadApiVersion> {
    let target = &remediation.spec.target;
    workload_api(&shared.client, namespace, &target.api_version, &target.kind)
}

/// Closed Remediations are kept for the retention period, then deleted.
async fn retain(remediation: &Remediation, shared: &Shared) -> Result<Action, ReconcileError> {
    let namespace = namespace_of(remediation)?;
    let closed_at = remediation
        .status
        .as_ref()
        .and_then(|s| s.last_update_time.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let age = Duration::try_from(Timestamp::now().duration_since(closed_at)).unwrap_or_default();
    if age >= shared.config.retention {
        Api::<Remediation>::namespaced(shared.client.clone(), &namespace)
            .delete(&remediation.name_any(), &DeleteParams::default())
            .await?;
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(shared.config.retention - age))
}

/// Fault injection for the crash-safety tests: with
/// `AIOPS_FAULT_PAUSE_BEFORE_APPLY_MS` set, the controller waits between
/// saving the snapshot and applying; with `AIOPS_FAULT_PAUSE_BEFORE_VERIFY_MS`,
/// before each check of an applied fix's rollout; with
/// `AIOPS_FAULT_PAUSE_AFTER_ROLLBACK_MS`, between restoring the prior values
/// and recording `RolledBack`. A test can then kill it exactly there. Unset
/// (always, outside those tests), this does nothing.
async fn fault_pause(variable: &str) {
    if let Some(ms) = std::env::var(variable)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tracing::warn!(ms, variable, "fault injection: pausing");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
