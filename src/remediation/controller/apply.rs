//! Applying, Applied: snapshot, server-side apply, rollout verification,
//! and the rollback when the rollout gets worse.

use super::*;
use crate::remediation::propose::policy_fixes::fixed_policies;

pub(super) async fn apply(
    remediation: &Remediation,
    shared: &Shared,
) -> Result<Action, ReconcileError> {
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
    if shared.settings.current().paused {
        // Held before the snapshot: nothing of this fix is written while
        // paused, and lifting the pause applies it as approved.
        let message = "apply held: applies are paused (remediate.paused)";
        if status.message != message {
            shared.metrics.auto_approval("apply_paused", "paused");
            status.message = message.to_string();
            status.last_update_time = Some(Time(Timestamp::now()));
            let api = Api::<Remediation>::namespaced(shared.client.clone(), &namespace);
            apply_operator_status(&api, &remediation.name_any(), &status).await?;
            shared.publish(remediation, "ApplyPaused", message).await;
        }
        return Ok(Action::requeue(Duration::from_secs(5)));
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

pub(super) async fn verify(
    remediation: &Remediation,
    shared: &Shared,
) -> Result<Action, ReconcileError> {
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
            let unfixed = super::policy::unfixed_policies(
                shared,
                &namespace,
                &live,
                status.proposal.as_ref(),
            )
            .await?;
            if !unfixed.is_empty() {
                let reason = format!(
                    "rolled out, but the workload still violates: {}",
                    unfixed.join("; ")
                );
                return roll_back(remediation, shared, status, &reason).await;
            }
            status.verified_at = Some(Time(now));
            let fixes_policies = status
                .proposal
                .as_ref()
                .is_some_and(|p| !fixed_policies(&p.class).is_empty());
            let verified_message = if fixes_policies {
                "the fixed revision is rolled out and healthy and passes the policies it fixes"
            } else {
                "the fixed revision is rolled out and healthy"
            };
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
                verified_message,
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
