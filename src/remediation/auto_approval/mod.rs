//! Auto-approval: fixes a platform team has said need no person, approved
//! by the operator within blast-radius budgets, and the global pause.
//!
//! - [`settings`]: the `remediate.*` keys of the operator's ConfigMap.
//! - [`decide`]: which rule covers a proposal and whether a budget holds it.
//! - [`watch`]: the settings kept live on every replica.
//!
//! An auto-approval is an approval like any other: the record in
//! `spec.approval` names `system:aiops-operator:auto-approval/<rule>`, is
//! signed with the operator's key, binds the proposal's hash, and passes the
//! approval webhook, which accepts it from the operator's identity only when
//! it names a rule configured right now. From there the same path runs:
//! apply, verification, rollback. Nothing is auto-approved unless a rule
//! says so; rules are off by default.
pub mod decide;
pub mod settings;
pub mod watch;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::Shared;
use super::crd::{ApprovalRecord, Remediation};
use super::evidence::{fetch_workload, namespace_labels};
use super::status::apply_operator_status;
use crate::admission::state::Live;
use decide::{AutoDecision, CaseFacts, covering_rule};
use settings::{RemediateSettings, auto_approver};

/// The repair settings in force, swapped when the ConfigMap changes; the
/// controller looks at every case again on a change, so lifting a pause or
/// adding a rule acts at once rather than at the next recheck.
#[derive(Clone, Debug)]
pub struct SettingsHandle {
    live: Live<RemediateSettings>,
    changed: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl SettingsHandle {
    pub fn new(initial: RemediateSettings) -> Self {
        SettingsHandle {
            live: Live::new(initial),
            changed: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    pub fn current(&self) -> std::sync::Arc<RemediateSettings> {
        self.live.current()
    }

    /// Puts `settings` in force and tells whoever follows [`Self::changes`].
    pub fn replace(&self, settings: RemediateSettings) {
        self.live.replace(settings);
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// One item per change from now on.
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.changed.subscribe(), |mut changes| async move {
            changes.changed().await.ok()?;
            Some(((), changes))
        })
    }
}

/// How often a Proposed case is looked at again: a rule added later, or a
/// budget freed by another case, must reach cases already waiting.
pub const RECHECK: Duration = Duration::from_secs(10);

/// The status message of a case that waits for a budget, so its reason is
/// visible in `kubectl get rem -o yaml` and `kubectl aiops show`.
const HELD_PREFIX: &str = "auto-approval held";

static DECIDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why a decision could not be carried out; retried by the controller.
#[derive(Debug, thiserror::Error)]
pub enum AutoApprovalError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("reading the workload: {0}")]
    Workload(#[from] super::evidence::EvidenceError),
}

/// Looks at a Proposed, unapproved case: approves it when a rule covers it
/// and the budgets allow, records why it waits otherwise.
pub async fn consider(
    remediation: &Remediation,
    namespace: &str,
    shared: &Shared,
) -> Result<Action, AutoApprovalError> {
    let settings = shared.settings.current();
    if settings.rules.is_empty() {
        return Ok(Action::requeue(RECHECK * 6));
    }
    let labels = namespace_labels(&shared.client, namespace).await?;
    let mut case = CaseFacts {
        remediation,
        namespace_labels: labels.as_ref(),
        ready_fraction: None,
        now: Timestamp::now(),
    };
    if covering_rule(&settings, &case).is_none() {
        return Ok(Action::requeue(RECHECK * 6));
    }
    // One decision at a time in this process (only the leader decides):
    // two cases reconciled together must not both count the budget before
    // either approval is written.
    let _deciding = DECIDING.lock().await;
    if settings.budget.min_healthy_fraction > 0.0 {
        let workload = fetch_workload(&shared.client, namespace, &remediation.spec.target).await?;
        case.ready_fraction = ready_fraction(&workload);
    }
    let others = Api::<Remediation>::all(shared.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    match decide::decide(&settings, &case, &others) {
        AutoDecision::ForAPerson => Ok(Action::requeue(RECHECK * 6)),
        AutoDecision::Hold {
            rule,
            reason,
            detail,
        } => {
            let message = format!("{HELD_PREFIX} (rule {rule}): {detail}");
            let mut status = remediation.status.clone().unwrap_or_default();
            if status.message != message {
                shared.metrics.auto_approval("held", reason.as_str());
                tracing::info!(%rule, reason = reason.as_str(), %detail, "auto-approval held");
                status.message = message.clone();
                status.last_update_time = Some(Time(Timestamp::now()));
                let api = Api::<Remediation>::namespaced(shared.client.clone(), namespace);
                apply_operator_status(&api, &remediation.name_any(), &status).await?;
                shared
                    .publish(remediation, reason.event_reason(), &message)
                    .await;
            }
            Ok(Action::requeue(RECHECK))
        }
        AutoDecision::Approve { rule } => {
            approve(remediation, namespace, shared, &rule).await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
    }
}

/// Writes the signed auto-approval. The patch carries the resourceVersion
/// read, so a person's edit in between makes it fail (and it is decided
/// again) rather than approve what they changed.
async fn approve(
    remediation: &Remediation,
    namespace: &str,
    shared: &Shared,
    rule: &str,
) -> Result<(), AutoApprovalError> {
    let Some(proposal) = remediation
        .status
        .as_ref()
        .and_then(|s| s.proposal.as_ref())
    else {
        return Ok(());
    };
    let approver = auto_approver(rule);
    let uid = remediation.metadata.uid.clone().unwrap_or_default();
    let record = ApprovalRecord {
        approved_by: approver.clone(),
        proposal_hash: proposal.hash.clone(),
        approved_at: Time(Timestamp::now()),
        signature: shared.key.sign(&uid, &proposal.hash, &approver),
    };
    let patch = json!({
        "metadata": {"resourceVersion": remediation.resource_version()},
        "spec": {"approved": true, "approval": record},
    });
    Api::<Remediation>::namespaced(shared.client.clone(), namespace)
        .patch(
            &remediation.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    shared.metrics.auto_approval("approved", "rule");
    tracing::info!(%rule, proposal = %proposal.hash, "auto-approved");
    shared
        .publish(
            remediation,
            "AutoApproved",
            &format!(
                "approved by auto-approval rule {rule} ({}): {}",
                proposal.class, proposal.summary
            ),
        )
        .await;
    Ok(())
}

/// Ready over desired replicas, for the kinds that have replicas.
pub fn ready_fraction(workload: &Value) -> Option<f64> {
    let number = |pointer: &str| workload.pointer(pointer).and_then(Value::as_i64);
    let (desired, ready) = match workload.get("kind").and_then(Value::as_str)? {
        "Deployment" | "StatefulSet" => (
            number("/spec/replicas").unwrap_or(1),
            number("/status/readyReplicas").unwrap_or(0),
        ),
        "DaemonSet" => (
            number("/status/desiredNumberScheduled").unwrap_or(0),
            number("/status/numberReady").unwrap_or(0),
        ),
        _ => return None,
    };
    if desired <= 0 {
        return Some(1.0);
    }
    Some(ready as f64 / desired as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replaced_setting_is_announced_to_the_controller() {
        use futures::StreamExt;
        let handle = SettingsHandle::new(RemediateSettings::default());
        let mut changes = Box::pin(handle.changes());
        handle.replace(RemediateSettings {
            paused: true,
            ..RemediateSettings::default()
        });
        let announced = tokio::time::timeout(Duration::from_secs(1), changes.next()).await;
        assert_eq!(announced, Ok(Some(())));
        assert!(handle.current().paused);
    }

    #[test]
    fn the_ready_fraction_reads_each_kind_its_way() {
        let deployment =
            json!({"kind": "Deployment", "spec": {"replicas": 4}, "status": {"readyReplicas": 3}});
        assert_eq!(ready_fraction(&deployment), Some(0.75));
        let fresh = json!({"kind": "StatefulSet", "spec": {"replicas": 2}, "status": {}});
        assert_eq!(ready_fraction(&fresh), Some(0.0));
        let daemons =
            json!({"kind": "DaemonSet", "status": {"desiredNumberScheduled": 4, "numberReady": 4}});
        assert_eq!(ready_fraction(&daemons), Some(1.0));
        let scaled_down = json!({"kind": "Deployment", "spec": {"replicas": 0}});
        assert_eq!(ready_fraction(&scaled_down), Some(1.0));
        assert_eq!(ready_fraction(&json!({"kind": "CronJob"})), None);
    }
}
