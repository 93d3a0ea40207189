//! Policy cases from a scan: one Remediation per violating workload, opened
//! as the pod detector opens one (same naming, labels and hold-offs), and
//! closed as Resolved when nothing was applied yet and the workload passes
//! now or is gone. A workload with any open Remediation (a pod failure
//! included: that comes first) gets no second one, nor one whose policy
//! fix a person rejected while that case is kept.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::Judged;
use super::inventory::Existing;
use crate::remediation::Shared;
use crate::remediation::crd::{Phase, Remediation, WorkloadRef};
use crate::remediation::detector::{Opening, held_off, open_remediation_for, resolve};
use crate::remediation::policy_case::{POLICY_CLASS, findings, is_policy_case, reason};
use crate::remediation::status::DetectorStatus;

fn phase_of(remediation: &Remediation) -> Phase {
    remediation
        .status
        .as_ref()
        .map(|s| s.phase)
        .unwrap_or_default()
}

/// Opens and resolves policy cases; returns (opened, resolved).
pub async fn reconcile(
    shared: &Shared,
    remediations: &[Arc<Remediation>],
    judged: &[Judged],
    existing: &Existing,
) -> (usize, usize) {
    let open: HashSet<&str> = remediations
        .iter()
        .filter(|r| !phase_of(r).is_closed())
        .map(|r| r.spec.target.uid.as_str())
        .collect();
    // A person who rejected a policy fix has decided: while that case is
    // kept (the retention period), the scan does not propose it again.
    let rejected: HashSet<&str> = remediations
        .iter()
        .filter(|r| phase_of(r) == Phase::Rejected && is_policy_case(r.status.as_ref()))
        .map(|r| r.spec.target.uid.as_str())
        .collect();
    let now = SystemTime::now();
    let mut opened = 0;
    for item in judged.iter().filter(|j| !j.failures.is_empty()) {
        let object = &item.object;
        if open.contains(object.uid.as_str())
            || rejected.contains(object.uid.as_str())
            || held_off(remediations, &object.uid, now)
        {
            continue;
        }
        match opened_meanwhile(shared, &object.namespace, &object.uid).await {
            Ok(false) => {}
            Ok(true) => continue,
            Err(error) => {
                tracing::warn!(%error, workload = %object.name, "cannot check for an open remediation");
                continue;
            }
        }
        let workload = WorkloadRef {
            api_version: object.api_version.into(),
            kind: object.kind.into(),
            name: object.name.clone(),
            uid: object.uid.clone(),
        };
        let policies = reason(&item.failures);
        let seen = DetectorStatus {
            findings: findings(&item.failures),
            reason: policies.clone(),
            target_display: format!("{}/{}", workload.kind, workload.name),
            last_update_time: Time(k8s_openapi::jiff::Timestamp::now()),
        };
        let opening = Opening {
            namespace: &object.namespace,
            workload: &workload,
            seen,
            message: format!("violates {policies}"),
            note: format!(
                "{}/{} violates {policies} (background scan)",
                workload.kind, workload.name
            ),
            class: Some(POLICY_CLASS),
        };
        match open_remediation_for(shared, opening).await {
            Ok(_) => opened += 1,
            Err(error) => {
                tracing::warn!(%error, workload = %object.name, "cannot open a policy remediation")
            }
        }
    }

    let passing: HashSet<&str> = judged
        .iter()
        .filter(|j| j.failures.is_empty())
        .map(|j| j.object.uid.as_str())
        .collect();
    let mut resolved = 0;
    for remediation in remediations {
        if !is_policy_case(remediation.status.as_ref())
            || !matches!(phase_of(remediation), Phase::Diagnosing | Phase::Proposed)
        {
            continue;
        }
        let target = &remediation.spec.target;
        let namespace = remediation.namespace().unwrap_or_default();
        let gone =
            !existing.incomplete && !existing.contains(&target.kind, &namespace, &target.name);
        if !gone && !passing.contains(target.uid.as_str()) {
            continue;
        }
        let recovered = "the workload passes the policies now; nothing was applied";
        match resolve(
            shared,
            &namespace,
            target,
            &remediation.name_any(),
            recovered,
        )
        .await
        {
            Ok(()) => resolved += 1,
            Err(error) => {
                tracing::warn!(%error, remediation = %remediation.name_any(), "cannot resolve a policy remediation")
            }
        }
    }
    (opened, resolved)
}

/// Every Remediation, a page at a time (at most the scan's object limit).
pub async fn all_remediations(
    shared: &Shared,
    limits: super::ScanLimits,
) -> Result<Vec<Arc<Remediation>>, kube::Error> {
    let api: Api<Remediation> = Api::all(shared.client.clone());
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(limits.page_size.max(1));
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = api.list(&params).await?;
        all.extend(page.items.into_iter().map(Arc::new));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() || all.len() >= limits.max_objects {
            return Ok(all);
        }
    }
}

/// Whether an open Remediation for the workload exists that the list does
/// not show yet (one opened moments ago): asked of the API server, so two
/// scans close together never open two.
async fn opened_meanwhile(
    shared: &Shared,
    namespace: &str,
    uid: &str,
) -> Result<bool, kube::Error> {
    let api: Api<Remediation> = Api::namespaced(shared.client.clone(), namespace);
    let found = api
        .list(&ListParams::default().labels(&format!("aiops-operator.dev/workload-uid={uid}")))
        .await?;
    Ok(found.items.iter().any(|r| !phase_of(r).is_closed()))
}
