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
    // Values restored by reference are read now, into the patches sent to
    // the API server only; a reference that no longer holds fails closed.
    let (patches, secrets) = match resolve_actions(
        &shared.client,
        &shared.key,
        &namespace,
        target,
        &proposal.actions,
    )
    .await
    {
        Ok(resolved) => resolved,
        Err(error) => {
            return not_applied(shared, remediation, status, "ReferenceInvalid", error).await;
        }
    };
    if status.snapshot.is_none() {
        // The snapshot is taken from the object before any apply and stored
        // first, so a restart re-applies (idempotently) but never re-snapshots.
        // It is made from the stored patches, which carry no referenced
        // value; the prior state of those variables is kept by `snapshot_env`.
        let live = fetch_workload(&shared.client, &namespace, target).await?;
        let mut restore = json!({});
        for action in &proposal.actions {
            restore = merge_apply(&restore, &restore_patch(&live, &action.patch));
        }
        let env_from_revision = match snapshot_env(
            &shared.client,
            &shared.key,
            &namespace,
            target,
            &live,
            &proposal.actions,
            &mut restore,
        )
        .await
        {
            Ok(kept) => kept,
            Err(error) => {
                return not_applied(shared, remediation, status, "SnapshotImpossible", error).await;
            }
        };
        status.snapshot = Some(Snapshot {
            generation: live
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            restore_patch: restore,
            env_from_revision,
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
    for action in &patches {
        match api
            .patch(&target.name, &params, &Patch::Apply(&action.patch))
            .await
        {
            Ok(object) => generation = object.metadata.generation,
            Err(error) => {
                shared.metrics.count_apply("failed");
                status.attempts += 1;
                let message = secrets.scrub(&format!(
                    "apply attempt {} failed: {error}",
                    status.attempts
                ));
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

/// A value restored by reference cannot be read (or its prior value kept)
/// before anything is applied: the case ends `Failed` with `reason` and
/// nothing changes; a transient API failure is retried instead.
async fn not_applied(
    shared: &Shared,
    remediation: &Remediation,
    status: RemediationStatus,
    reason: &str,
    error: ReferenceError,
) -> Result<Action, ReconcileError> {
    if error.is_transient() {
        return Err(error.into());
    }
    let message = format!("nothing was applied: {error}");
    transition(shared, remediation, status, Phase::Failed, reason, &message).await?;
    Ok(Action::await_change())
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
    let target = &remediation.spec.target;
    // A CronJob is verified by its runs since the apply (`rollout`).
    let runs = if target.kind == "CronJob" {
        let pod_spec = live.pointer("/spec/jobTemplate/spec/template/spec");
        Some(
            cronjob_runs(
                &shared.client,
                &namespace,
                &target.uid,
                applied_at,
                pod_spec,
            )
            .await?,
        )
    } else {
        None
    };
    let pods = match &runs {
        Some(runs) => runs.iter().flat_map(|run| run.pods.clone()).collect(),
        None => {
            shared
                .stores
                .workload_pods(&shared.client, &namespace, &live)
                .await?
        }
    };
    let failing_new: Vec<String> = pods
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
    let (progress, verifying_since) = match &runs {
        Some(runs) => {
            let suspended = live.pointer("/spec/suspend") == Some(&json!(true));
            let first_run = runs.iter().filter_map(|run| run.created).min();
            (
                cronjob_progress(runs, &failing_new, suspended),
                first_run.unwrap_or(applied_at),
            )
        }
        None => (
            rollout_progress(&live, generation, &failing_new),
            applied_at,
        ),
    };
    match progress {
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
            let verified_message = if runs.is_some() {
                "a Job run from the fixed job template succeeded or runs Ready"
            } else if fixes_policies {
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
        RolloutProgress::Waiting(why) => {
            tracing::debug!(%why, "nothing to verify yet");
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        RolloutProgress::Progressing(progress) => {
            let waited =
                Duration::try_from(now.duration_since(verifying_since)).unwrap_or_default();
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
    // Prior values kept by reference are read back into the restore only.
    let restored = resolve_restore(
        &shared.client,
        &shared.key,
        &namespace,
        &remediation.spec.target,
        &snapshot.restore_patch,
        &snapshot.env_from_revision,
    )
    .await;
    let (restore, secrets) = match restored {
        Ok(restored) => restored,
        Err(error) if error.is_transient() => return Err(error.into()),
        Err(error) => {
            shared.metrics.count_apply("rollback-failed");
            let message = format!("rollback failed ({error}) after: {why}");
            transition(
                shared,
                remediation,
                status,
                Phase::Failed,
                "RollbackFailed",
                &message,
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    match api
        .patch(
            &remediation.spec.target.name,
            &params,
            &Patch::Apply(&restore),
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
            let message = secrets.scrub(&format!("rollback failed ({error}) after: {why}"));
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
