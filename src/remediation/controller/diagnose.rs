//! Diagnosing: evidence, a proposal from the rules or a model, the
//! guardrails and the server-side dry run; on success the Remediation is
//! Proposed and waits for a human.

use super::*;
use crate::remediation::policy_case::is_policy_case;

pub(super) async fn diagnose(
    remediation: &Remediation,
    shared: &Shared,
) -> Result<Action, ReconcileError> {
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
    let (evidence, mut revisions) = gather_evidence_and_revisions(
        &shared.client,
        &namespace,
        target,
        &failing,
        &shared.stores.ready_revisions(),
    )
    .await?;
    // A secret-like value is restored by reference, pinned by this digest.
    digest_revisions(&mut revisions, &shared.key);
    let policy_case = is_policy_case(Some(&status));
    let rules = if policy_case {
        let opened_for = remediation
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| Duration::try_from(Timestamp::now().duration_since(t.0)).ok())
            .unwrap_or_default();
        let may_wait = opened_for < policy::DIGEST_WAIT;
        match policy::policy_proposal(shared, &namespace, target, &live, may_wait).await? {
            policy::PolicyProposal::Ready(proposal) => proposal,
            policy::PolicyProposal::AwaitingDigests(containers) => {
                tracing::debug!(
                    ?containers,
                    "waiting for starting pods to report their image digests"
                );
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            policy::PolicyProposal::Passes => {
                let message = "the workload passes the policies now; nothing was applied";
                transition(
                    shared,
                    remediation,
                    status,
                    Phase::Resolved,
                    "Recovered",
                    message,
                )
                .await?;
                return Ok(Action::await_change());
            }
        }
    } else {
        propose_from_rules(
            &live,
            &evidence,
            &status.findings,
            &revisions,
            &shared.config.rules,
        )
    };
    // A policy fix is the fix rule's or none: a model is not asked.
    let asked = if policy_case {
        Some((rules.clone(), None))
    } else {
        ask_model(
            shared,
            remediation,
            &evidence,
            &status.findings,
            rules.clone(),
        )
        .await?
    };
    let (primary, model) = match asked {
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
        // The checks see the fix whole: values restored by reference are
        // read from their revisions into this view, which is not stored.
        let (view, secrets, refused) =
            match checked_view(&shared.client, &shared.key, &namespace, target, &proposal).await? {
                CheckedView::Ready(view, secrets) => (*view, secrets, None),
                CheckedView::Refused(why) => (proposal.clone(), Secrets::default(), Some(why)),
            };
        let mut verdict = match refused {
            Some(why) => crate::remediation::crd::GuardrailVerdict {
                allowed: false,
                violations: vec![why],
            },
            None => guard_proposal(
                &namespace,
                target,
                &status.findings,
                &view,
                &live,
                &AdmissionView {
                    policies: &shared.policies.current(),
                    namespace_labels: namespace_labels.as_ref(),
                },
                &shared.config.guardrails,
            ),
        };
        secrets.scrub_verdict(&mut verdict);
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
        match dry_run(shared, remediation, &namespace, &view, &live)
            .await
            .map(|mut dry| {
                secrets.scrub_diff(&target.kind, &proposal.actions, &mut dry.diff);
                dry
            })
            .map_err(|message| secrets.scrub(&message))
        {
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
    evidence: &crate::remediation::crd::Evidence,
    findings: &[crate::remediation::crd::Finding],
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
        crate::remediation::model_calls::ModelCall::Running => Ok(None),
        crate::remediation::model_calls::ModelCall::Done(Ok(answer)) => {
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
        crate::remediation::model_calls::ModelCall::Done(Err(error)) => {
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
