//! Proposed: a human rejects, asks for a new proposal, or approves; only an
//! approval bound to this exact proposal moves it on to Applying.

use super::*;

pub(super) async fn review(
    remediation: &Remediation,
    shared: &Shared,
) -> Result<Action, ReconcileError> {
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
        return Ok(
            crate::remediation::auto_approval::consider(remediation, &namespace, shared).await?,
        );
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
