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

use super::Shared;
use super::approval::bound_approval;
use super::conditions::set_phase_conditions;
use super::crd::{
    DryRun, Phase, Proposal, REGENERATE_ANNOTATION, Remediation, RemediationStatus, Snapshot,
};
use super::detect::{detect_anomaly, restarted_after_failure};
use super::evidence::{fetch_workload, gather_evidence, namespace_labels, revision_templates};
use super::guardrails::{AdmissionView, guard_proposal, introduced_policy_violations};
use super::patch::{diff, merge_apply, restore_patch};
use super::propose::rules::propose_from_rules;
use super::rollout::{RolloutProgress, rollout_progress};
use super::status::apply_operator_status;
use crate::k8s::workload::{BadApiVersion, workload_api};
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
}

/// Runs the controller (and the pod detector beside it) until `shutdown`
/// resolves. The pod and owner stores live exactly as long: a replica that
/// stops leading stops watching.
pub async fn run(
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Remediation> = Api::all(shared.client.clone());
    let controller = Controller::new(api, watcher::Config::default().any_semantic());
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
    owner_watches.abort();
    shared.stores.end();
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

async fn diagnose(remediation: &Remediation, shared: &Shared) -> Result<Action, ReconcileError> {
    let namespace = namespace_of(remediation)?;
    let mut status = remediation.status.clone().unwrap_or_default();
    if status.findings.is_empty() {
        // The detector writes findings right after creating the object.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let target = &remediation.spec.target;
    let live = match fetch_workload(&shared.client, &namespace, target).await {
        Ok(live) => live,
        Err(error) => {
            transition(
                shared,
                remediation,
                status,
                Phase::Failed,
                "TargetGone",
                &error.to_string(),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    let failing = failing_pods(shared, &namespace, &live).await?;
    let evidence = gather_evidence(&shared.client, &namespace, target, &failing).await?;
    let revisions = revision_templates(&shared.client, &namespace, target).await?;
    let rules = propose_from_rules(
        &live,
        &evidence,
        &status.findings,
        &revisions,
        &shared.config.rules,
    );
    let (primary, model) = match ask_model(
        shared,
        remediation,
        &evidence,
        &status.findings,
        rules.clone(),
    )
    .await?
    {
        Some(asked) => asked,
        None => return Ok(Action::requeue(Duration::from_secs(2))),
    };
    status.evidence = Some(evidence);
    let namespace_labels = namespace_labels(&shared.client, &namespace).await?;
    // A model's proposal that cannot be shown must leave the reviewer no
    // worse off than no model at all: the rules' proposal (or diagnosis)
    // stands in, with a note saying why the model's answer was set aside.
    let mut candidates = vec![primary];
    if model.is_some() {
        candidates.push(rules);
    }
    let mut set_aside: Option<String> = None;
    let last = candidates.len() - 1;
    for (index, mut proposal) in candidates.into_iter().enumerate() {
        let fallback_left = index < last;
        if let Some(note) = &set_aside {
            proposal.risks.push(note.clone());
            proposal = proposal.seal();
        }
        let verdict = guard_proposal(
            &namespace,
            target,
            &status.findings,
            &proposal,
            &live,
            &AdmissionView {
                policies: &shared.policies.current(),
                namespace_labels: namespace_labels.as_ref(),
            },
            &shared.config.guardrails,
        );
        status.guardrail = Some(verdict.clone());
        status.proposal_signature = shared.key.sign_proposal(
            remediation.metadata.uid.as_deref().unwrap_or_default(),
            &proposal.hash,
        );
        status.proposal = Some(proposal.clone());
        status.dry_run = None;
        if !verdict.allowed {
            let message = format!("proposal refused: {}", verdict.violations.join("; "));
            if fallback_left {
                set_aside = Some(model_set_aside(&proposal, &message));
                continue;
            }
            record_model_outcome(shared, model.as_ref(), index == 0);
            transition(
                shared,
                remediation,
                status,
                Phase::Failed,
                "GuardrailRejected",
                &message,
            )
            .await?;
            return Ok(Action::await_change());
        }
        if proposal.actions.is_empty() {
            record_model_outcome(shared, model.as_ref(), index == 0);
            let message = with_note(format!("needs a human: {}", proposal.summary), &set_aside);
            transition(
                shared,
                remediation,
                status,
                Phase::Proposed,
                "NeedsHuman",
                &message,
            )
            .await?;
            return Ok(Action::await_change());
        }
        match dry_run(shared, remediation, &namespace, &proposal, &live).await {
            Ok(dry) => {
                record_model_outcome(shared, model.as_ref(), index == 0);
                status.dry_run = Some(dry);
                let message = with_note(
                    format!(
                        "{} (from {}); approve with kubectl to apply",
                        proposal.summary, proposal.source
                    ),
                    &set_aside,
                );
                transition(
                    shared,
                    remediation,
                    status,
                    Phase::Proposed,
                    "Proposed",
                    &message,
                )
                .await?;
                return Ok(Action::await_change());
            }
            Err(message) if fallback_left => {
                set_aside = Some(model_set_aside(&proposal, &message));
            }
            Err(message) => {
                record_model_outcome(shared, model.as_ref(), index == 0);
                status.dry_run = Some(DryRun {
                    result: "Failed".into(),
                    message: message.clone(),
                    diff: Vec::new(),
                    proposal_hash: proposal.hash.clone(),
                });
                transition(
                    shared,
                    remediation,
                    status,
                    Phase::Failed,
                    "DryRunFailed",
                    &message,
                )
                .await?;
                return Ok(Action::await_change());
            }
        }
    }
    Ok(Action::await_change())
}

/// The note a fallback proposal carries when the model's was set aside.
fn model_set_aside(model: &Proposal, why: &str) -> String {
    tracing::warn!(%why, source = %model.source, "model proposal set aside; the rules' stands");
    format!(
        "the model's proposal ({}) was set aside: {why}",
        model.summary.chars().take(300).collect::<String>()
    )
}

fn with_note(message: String, note: &Option<String>) -> String {
    match note {
        Some(note) => format!("{message}; {note}"),
        None => message,
    }
}

/// Counts a model answer once its fate is known: shown, or set aside.
fn record_model_outcome(shared: &Shared, model: Option<&ModelAnswer>, shown: bool) {
    if let Some(answer) = model {
        shared.metrics.observe_model_answer(answer, shown);
    }
}

/// The proposal to show first: the rules' own, or the model's when the
/// rules have no fix (or `llm.always`), returned with the model's answer so
/// the caller can fall back to the rules. `None` while the model call runs.
async fn ask_model(
    shared: &Shared,
    remediation: &Remediation,
    evidence: &super::crd::Evidence,
    findings: &[super::crd::Finding],
    rules: Proposal,
) -> Result<Option<(Proposal, Option<ModelAnswer>)>, ReconcileError> {
    let Some(proposer) = shared.llm.clone() else {
        return Ok(Some((rules, None)));
    };
    if !proposer.should_ask(&rules) {
        return Ok(Some((rules, None)));
    }
    let key = remediation.metadata.uid.clone().unwrap_or_default();
    let cluster_images = shared.stores.running_images(&shared.client).await?;
    match shared.model_calls.poll_or_start(
        &key,
        proposer,
        evidence.clone(),
        findings.to_vec(),
        cluster_images,
    ) {
        super::model_calls::ModelCall::Running => Ok(None),
        super::model_calls::ModelCall::Done(Ok(answer)) => {
            tracing::info!(
                source = %answer.proposal.source,
                prompt_tokens = answer.usage.prompt_tokens,
                completion_tokens = answer.usage.completion_tokens,
                estimated_prompt_tokens = answer.prompt.estimated_tokens,
                cached = answer.cached,
                seconds = answer.elapsed_seconds,
                "model proposal"
            );
            Ok(Some((answer.proposal.clone(), Some(*answer))))
        }
        super::model_calls::ModelCall::Done(Err(error)) => {
            // The model failed or answered garbage: keep the rules' diagnosis
            // (or fix) and say why the model's was discarded.
            tracing::warn!(%error, "model proposal discarded");
            shared
                .metrics
                .observe_model_failure(error.outcome, error.seconds);
            let mut fallback = rules;
            fallback
                .risks
                .push(format!("the model's proposal was discarded: {error}"));
            Ok(Some((fallback.seal(), None)))
        }
    }
}

/// Server-side dry run of every action, then the policy check on what the
/// API server says the object would become, and the field-level diff.
async fn dry_run(
    shared: &Shared,
    remediation: &Remediation,
    namespace: &str,
    proposal: &Proposal,
    live: &Value,
) -> Result<DryRun, String> {
    let api = target_api(shared, namespace, remediation).map_err(|e| e.to_string())?;
    let params = PatchParams::apply(&field_manager(remediation))
        .force()
        .dry_run();
    let mut result = live.clone();
    for action in &proposal.actions {
        let name = remediation.spec.target.name.as_str();
        let object = api
            .patch(name, &params, &Patch::Apply(&action.patch))
            .await
            .map_err(|e| format!("the API server rejected the dry run: {e}"))?;
        result = serde_json::to_value(&object).map_err(|e| e.to_string())?;
    }
    let namespace_labels = namespace_labels(&shared.client, namespace)
        .await
        .map_err(|e| format!("reading namespace {namespace}: {e}"))?;
    let introduced = introduced_policy_violations(
        live,
        &result,
        &AdmissionView {
            policies: &shared.policies.current(),
            namespace_labels: namespace_labels.as_ref(),
        },
    );
    if !introduced.is_empty() {
        return Err(format!(
            "the dry-run result violates policy: {}",
            introduced.join("; ")
        ));
    }
    Ok(DryRun {
        result: "Succeeded".into(),
        message: String::new(),
        diff: diff(live, &result, "spec"),
        proposal_hash: proposal.hash.clone(),
    })
}

async fn review(remediation: &Remediation, shared: &Shared) -> Result<Action, ReconcileError> {
    let namespace = namespace_of(remediation)?;
    let status = remediation.status.clone().unwrap_or_default();
    let api: Api<Remediation> = Api::namespaced(shared.client.clone(), &namespace);
    if remediation.spec.rejected {
        transition(
            shared,
            remediation,
            status,
            Phase::Rejected,
            "Rejected",
            "rejected by a human; nothing was applied",
        )
        .await?;
        return Ok(Action::await_change());
    }
    let token = remediation
        .annotations()
        .get(REGENERATE_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    if !token.is_empty() && token != status.regenerate_token {
        // A new proposal invalidates any approval of the old one.
        if remediation.spec.approved || remediation.spec.approval.is_some() {
            api.patch(
                &remediation.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"approved": false, "approval": null}})),
            )
            .await?;
        }
        let fresh = RemediationStatus {
            findings: status.findings.clone(),
            reason: status.reason.clone(),
            target_display: status.target_display.clone(),
            regenerate_token: token,
            ..RemediationStatus::default()
        };
        transition(
            shared,
            remediation,
            fresh,
            Phase::Diagnosing,
            "Regenerate",
            "a new proposal was requested",
        )
        .await?;
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    if !remediation.spec.approved {
        return Ok(Action::await_change());
    }
    match bound_approval(remediation, &shared.config.operator_identity, &shared.key) {
        Ok(record) => {
            let mut next = status;
            next.approved_by = Some(record.approved_by.clone());
            let message = format!("approved by {}", record.approved_by);
            transition(
                shared,
                remediation,
                next,
                Phase::Applying,
                "Approved",
                &message,
            )
            .await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Err(refusal) => {
            let message = format!("approval not acted on: {refusal}");
            if status.message != message {
                transition(
                    shared,
                    remediation,
                    status,
                    Phase::Proposed,
                    "ApprovalRefused",
                    &message,
                )
                .await?;
            }
            Ok(Action::await_change())
        }
    }
}

async fn apply(remediation: &Remediation, shared: &Shared) -> Result<Action, ReconcileError> {
    let namespace = namespace_of(remediation)?;
    let mut status = remediation.status.clone().unwrap_or_default();
    let Some(proposal) = status.proposal.clone() else {
        transition(
            shared,
            remediation,
            status,
            Phase::Failed,
            "NoProposal",
            "nothing to apply",
        )
        .await?;
        return Ok(Action::await_change());
    };
    // Re-check the binding: the proposal may have changed since the approval.
    if let Err(refusal) = bound_approval(remediation, &shared.config.operator_identity, &shared.key)
    {
        let message = format!("approval no longer valid: {refusal}");
        transition(
            shared,
            remediation,
            status,
            Phase::Proposed,
            "ApprovalRefused",
            &message,
        )
        .await?;
        return Ok(Action::await_change());
    }
    let target = &remediation.spec.target;
    let api = target_api(shared, &namespace, remediation)?;
    if status.snapshot.is_none() {
        // The snapshot is taken from the object before any apply and stored
        // first, so a restart re-applies (idempotently) but never re-snapshots.
        let live = fetch_workload(&shared.client, &namespace, target).await?;
        let mut restore = json!({});
        for action in &proposal.actions {
            restore = merge_apply(&restore, &restore_patch(&live, &action.patch));
        }
        status.snapshot = Some(Snapshot {
            generation: live
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            restore_patch: restore,
        });
        transition(
            shared,
            remediation,
            status.clone(),
            Phase::Applying,
            "Snapshot",
            "prior values saved; applying",
        )
        .await?;
    }
    fault_pause("AIOPS_FAULT_PAUSE_BEFORE_APPLY_MS").await;
    let params = PatchParams::apply(&field_manager(remediation)).force();
    let mut generation = None;
    for action in &proposal.actions {
        match api
            .patch(&target.name, &params, &Patch::Apply(&action.patch))
            .await
        {
            Ok(object) => generation = object.metadata.generation,
            Err(error) => {
                shared.metrics.count_apply("failed");
                status.attempts += 1;
                let message = format!("apply attempt {} failed: {error}", status.attempts);
                let backoff = Duration::from_secs(2u64.saturating_pow(status.attempts).min(60));
                let retry = Retry {
                    limit: shared.config.max_attempts,
                    phase: Phase::Applying,
                    reason: "ApplyRetry",
                    failed_reason: "ApplyFailed",
                    after: backoff,
                };
                return retry_or_fail(shared, remediation, status, retry, &message).await;
            }
        }
    }
    shared.metrics.count_apply("applied");
    status.attempts += 1;
    status.applied_at = Some(Time(Timestamp::now()));
    status.applied_generation = generation;
    let message = format!(
        "applied with field manager {}; verifying the rollout",
        field_manager(remediation)
    );
    transition(
        shared,
        remediation,
        status,
        Phase::Applied,
        "Applied",
        &message,
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

async fn verify(remediation: &Remediation, shared: &Shared) -> Result<Action, ReconcileError> {
    fault_pause("AIOPS_FAULT_PAUSE_BEFORE_VERIFY_MS").await;
    let namespace = namespace_of(remediation)?;
    let mut status = remediation.status.clone().unwrap_or_default();
    let live = fetch_workload(&shared.client, &namespace, &remediation.spec.target).await?;
    let applied_at = status
        .applied_at
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let now = Timestamp::now();
    let grace = &shared.config.grace;
    let failing_new: Vec<String> = shared
        .stores
        .workload_pods(&shared.client, &namespace, &live)
        .await?
        .iter()
        .filter(|p| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| t.0 >= applied_at)
        })
        .filter_map(|p| {
            let age = p
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
                .unwrap_or_default();
            let bad: Vec<String> = detect_anomaly(p, now, shared.config.not_ready_after)
                .into_iter()
                .filter(|f| age >= grace.for_reason(&f.reason))
                .map(|f| f.reason)
                .collect();
            (!bad.is_empty()).then(|| format!("{}: {}", p.name_any(), bad.join(",")))
        })
        .collect();
    let generation = status.applied_generation.unwrap_or(0);
    match rollout_progress(&live, generation, &failing_new) {
        RolloutProgress::Complete => {
            status.verified_at = Some(Time(now));
            if let Some(created) = remediation.metadata.creation_timestamp.as_ref()
                && let Ok(elapsed) = Duration::try_from(now.duration_since(created.0))
            {
                shared.metrics.observe_duration(elapsed);
            }
            transition(
                shared,
                remediation,
                status,
                Phase::Verified,
                "RolloutComplete",
                "the fixed revision is rolled out and healthy",
            )
            .await?;
            Ok(Action::requeue(shared.config.retention))
        }
        RolloutProgress::Progressing(progress) => {
            let waited = Duration::try_from(now.duration_since(applied_at)).unwrap_or_default();
            if waited > shared.config.verify_timeout {
                let reason = format!(
                    "the rollout did not complete within {:?} ({progress})",
                    shared.config.verify_timeout
                );
                return roll_back(remediation, shared, status, &reason).await;
            }
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        RolloutProgress::Failed(reason) => roll_back(remediation, shared, status, &reason).await,
    }
}

async fn roll_back(
    remediation: &Remediation,
    shared: &Shared,
    mut status: RemediationStatus,
    why: &str,
) -> Result<Action, ReconcileError> {
    let namespace = namespace_of(remediation)?;
    let Some(snapshot) = status.snapshot.clone() else {
        transition(
            shared,
            remediation,
            status,
            Phase::Failed,
            "NoSnapshot",
            &format!("{why}; no snapshot to roll back to"),
        )
        .await?;
        return Ok(Action::await_change());
    };
    let api = target_api(shared, &namespace, remediation)?;
    let params = PatchParams::apply(&field_manager(remediation)).force();
    match api
        .patch(
            &remediation.spec.target.name,
            &params,
            &Patch::Apply(&snapshot.restore_patch),
        )
        .await
    {
        Ok(_) => {
            fault_pause("AIOPS_FAULT_PAUSE_AFTER_ROLLBACK_MS").await;
            shared.metrics.count_apply("rolled-back");
            let message = format!("rolled back to the prior values: {why}");
            shared
                .publish_on_workload(remediation, "RolledBack", &message)
                .await;
            transition(
                shared,
                remediation,
                status,
                Phase::RolledBack,
                "RolledBack",
                &message,
            )
            .await?;
            Ok(Action::requeue(shared.config.retention))
        }
        Err(error) => {
            shared.metrics.count_apply("rollback-failed");
            status.attempts += 1;
            let message = format!("rollback failed ({error}) after: {why}");
            let retry = Retry {
                limit: shared.config.max_attempts + 2,
                phase: Phase::Applied,
                reason: "RollbackRetry",
                failed_reason: "RollbackFailed",
                after: Duration::from_secs(5),
            };
            retry_or_fail(shared, remediation, status, retry, &message).await
        }
    }
}

/// How a failed step is retried: in which phase, how often, how soon.
struct Retry {
    limit: u32,
    phase: Phase,
    reason: &'static str,
    failed_reason: &'static str,
    after: Duration,
}

/// A failed attempt (already counted in `status.attempts`): retry in the
/// same phase until the limit, then end `Failed`. Nothing loops forever.
async fn retry_or_fail(
    shared: &Shared,
    remediation: &Remediation,
    status: RemediationStatus,
    retry: Retry,
    message: &str,
) -> Result<Action, ReconcileError> {
    if status.attempts >= retry.limit {
        transition(
            shared,
            remediation,
            status,
            Phase::Failed,
            retry.failed_reason,
            message,
        )
        .await?;
        return Ok(Action::await_change());
    }
    transition(
        shared,
        remediation,
        status,
        retry.phase,
        retry.reason,
        message,
    )
    .await?;
    Ok(Action::requeue(retry.after))
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
