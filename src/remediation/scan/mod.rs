//! The background scan: judges the running workloads (Deployments,
//! StatefulSets, DaemonSets, CronJobs and bare Pods) with the webhook's
//! policies and engine, as admission would judge a CREATE of each, and
//!
//! - keeps the PolicyReports of existing objects current: written when an
//!   object's violations change, deleted when it passes or is gone;
//! - with `remediate.policyViolations: propose`, opens one Remediation per
//!   violating workload (the controller proposes the fix) and resolves an
//!   unapplied one whose workload passes now or is gone.
//!
//! It runs on the leader only, beside the controller: on start, whenever
//! the policies or the operator's ConfigMap change, and every
//! `--scan-interval`. Objects are listed a page at a time and at most
//! [`ScanLimits::max_objects`] per kind per scan; reports are rewritten
//! only when their results change, so a scan of an unchanged cluster
//! writes nothing.
//!
//! - [`inventory`]: the paginated, bounded listing.
//! - [`reports`]: the PolicyReports the scan owns.
//! - [`cases`]: opening and resolving policy Remediations.
pub mod cases;
pub mod inventory;
pub mod reports;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Shared;
use super::guardrails::AdmissionView;
use super::policy_case::{failures, judge};
use crate::admission::verdict::{Verdict, Violation};
use inventory::{ListedObject, ScannedKind};

/// How much one scan may read.
#[derive(Clone, Copy, Debug)]
pub struct ScanLimits {
    /// Objects per list request.
    pub page_size: u32,
    /// Objects judged per kind and scan; the rest wait for the next scan.
    pub max_objects: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            page_size: 250,
            max_objects: 5000,
        }
    }
}

/// What one scan did, for the log line and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanSummary {
    pub judged: usize,
    pub violating: usize,
    pub reports_written: usize,
    pub reports_deleted: usize,
    pub opened: usize,
    pub resolved: usize,
    /// True when a kind had more objects than the limit.
    pub truncated: bool,
}

/// One judged object.
pub struct Judged {
    pub object: ListedObject,
    /// Fail and error results, with the mode admission would give them.
    pub violations: Vec<Violation>,
    pub failures: Vec<super::propose::policy_fixes::PolicyFailure>,
}

/// Runs scans until the task is aborted (the controller's shutdown).
pub async fn run_scan(shared: Arc<Shared>) {
    let interval = shared.config.scan_interval;
    let limits = ScanLimits::default();
    tracing::info!(interval_seconds = interval.as_secs(), "policy scan running");
    let mut seen_policies = shared.policies.current();
    let mut seen_modes = shared.modes.current();
    let mut seen_settings = shared.settings.current();
    let mut last = None::<Instant>;
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        let policies = shared.policies.current();
        let modes = shared.modes.current();
        let settings = shared.settings.current();
        // The handles are swapped as a whole on every accepted change.
        let changed = !Arc::ptr_eq(&policies, &seen_policies)
            || !Arc::ptr_eq(&modes, &seen_modes)
            || !Arc::ptr_eq(&settings, &seen_settings);
        let due = last.is_none_or(|at| at.elapsed() >= interval);
        if !changed && !due {
            continue;
        }
        seen_policies = policies;
        seen_modes = modes;
        seen_settings = settings;
        let started = Instant::now();
        let summary = scan_once(&shared, limits).await;
        last = Some(Instant::now());
        shared
            .metrics
            .observe_scan(started.elapsed(), summary.judged, summary.violating);
        let acted =
            summary.reports_written + summary.reports_deleted + summary.opened + summary.resolved;
        // A scan that changed nothing is only worth a debug line.
        if acted > 0 || summary.truncated {
            tracing::info!(
                judged = summary.judged,
                violating = summary.violating,
                reports_written = summary.reports_written,
                reports_deleted = summary.reports_deleted,
                opened = summary.opened,
                resolved = summary.resolved,
                truncated = summary.truncated,
                seconds = started.elapsed().as_secs_f64(),
                trigger = if changed { "change" } else { "interval" },
                "policy scan done"
            );
        } else {
            tracing::debug!(
                judged = summary.judged,
                violating = summary.violating,
                "policy scan done; nothing changed"
            );
        }
    }
}

/// One full scan. Errors of single objects or lists are logged and leave
/// the rest of the scan to run.
#[tracing::instrument(skip_all)]
pub async fn scan_once(shared: &Shared, limits: ScanLimits) -> ScanSummary {
    let policies = shared.policies.current();
    let modes = shared.modes.current();
    let mut summary = ScanSummary::default();
    let mut labels_of: HashMap<String, Option<BTreeMap<String, String>>> = HashMap::new();
    let mut judged: Vec<Judged> = Vec::new();
    let mut existing = inventory::Existing::default();
    for kind in ScannedKind::ALL {
        let listed = match inventory::list(&shared.client, kind, limits).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, kind = kind.kind, "cannot list; skipped this scan");
                existing.incomplete = true;
                continue;
            }
        };
        summary.truncated |= listed.truncated;
        existing.incomplete |= listed.truncated;
        for object in listed.objects {
            existing.insert(&object);
            if !object.judged_by_scan() || !shared.watches_namespace(&object.namespace) {
                continue;
            }
            let labels = match labels_of.get(&object.namespace) {
                Some(labels) => labels.clone(),
                None => {
                    let read =
                        super::evidence::namespace_labels(&shared.client, &object.namespace)
                            .await
                            .unwrap_or_else(|error| {
                                tracing::warn!(%error, namespace = %object.namespace, "cannot read namespace labels; judging without them");
                                None
                            });
                    labels_of.insert(object.namespace.clone(), read.clone());
                    read
                }
            };
            let view = AdmissionView {
                policies: &policies,
                namespace_labels: labels.as_ref(),
            };
            judged.push(judge_object(object, &view, &modes));
        }
    }
    summary.judged = judged.len();
    summary.violating = judged.iter().filter(|j| !j.violations.is_empty()).count();
    let (written, deleted) = reports::reconcile(&shared.client, &judged, &existing, limits).await;
    summary.reports_written = written;
    summary.reports_deleted = deleted;
    if shared.settings.current().proposes_policy_fixes(modes.mode) {
        // Read from the API, not a cache: what is open decides what opens.
        let remediations = match cases::all_remediations(shared, limits).await {
            Ok(all) => all,
            Err(error) => {
                tracing::warn!(%error, "cannot list Remediations; no policy case opens this scan");
                return summary;
            }
        };
        let (opened, resolved) = cases::reconcile(shared, &remediations, &judged, &existing).await;
        summary.opened = opened;
        summary.resolved = resolved;
    }
    summary
}

fn judge_object(
    object: ListedObject,
    view: &AdmissionView,
    modes: &crate::admission::modes::ModeConfig,
) -> Judged {
    let outcomes = judge(&object.value, view);
    // The same violations (fail and error, with their modes) admission records.
    let violations = Verdict::assess(&outcomes, modes).violations;
    Judged {
        failures: failures(&outcomes),
        violations,
        object,
    }
}

/// `object` with `apiVersion` and `kind` set: list items come without them,
/// and the engine's matching (and autogen) reads the kind.
pub fn with_type(mut value: Value, api_version: &str, kind: &str) -> Value {
    if let Value::Object(map) = &mut value {
        map.insert("apiVersion".into(), Value::String(api_version.into()));
        map.insert("kind".into(), Value::String(kind.into()));
    }
    value
}
