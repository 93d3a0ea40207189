//! The pod watcher: turns pod findings into at most one open Remediation
//! per workload.
//!
//! Healthy pods cost nothing beyond the watch: only a pod with findings is
//! traced to its workload (through the owner stores). Findings are
//! aggregated per workload, held back for each reason's grace period, and
//! written only when they change, so repeated pod events cause no writes.
//! When every pod of a workload is healthy again before any fix, its open
//! Remediation moves to `Resolved`.
//!
//! A workload without a Remediation is evaluated the moment one of its pods
//! changes (a case opens without waiting for the next tick); findings of an
//! open case are written on the 1 s tick, so a burst of failing replicas
//! costs one write per tick rather than one per pod event.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher::Event;

use super::Shared;
use super::crd::{Finding, Phase, Remediation, RemediationSpec, WorkloadRef};
use super::detect::{GracePeriods, PodFinding, detect_anomaly, primary_reason};
use super::evidence::{EvidenceError, fetch_workload};
use super::owner::{OwnerStores, owner_workload};
use super::status::{DetectorStatus, apply_detector_status, apply_operator_status};
use super::stores::{PodEvents, StoredPod, is_ready};

/// Findings of one workload, across its pods.
#[derive(Debug)]
struct Case {
    namespace: String,
    workload: WorkloadRef,
    /// Pod name → its findings now.
    pods: BTreeMap<String, Vec<PodFinding>>,
    /// When each reason was first seen on this workload (for grace periods
    /// and the detection-latency metric).
    first_seen: BTreeMap<String, Instant>,
    /// The findings last written to the Remediation.
    written: Option<Vec<Finding>>,
    /// When opening its Remediation last failed; pod events do not retry
    /// sooner than the tick would.
    open_failed_at: Option<Instant>,
    /// Since when no pod has had a finding (while a Remediation is open).
    quiet_since: Option<Instant>,
}

/// Detector state: cases keyed by workload uid, and which case each failing pod feeds.
#[derive(Default)]
struct Cases {
    by_workload: HashMap<String, Case>,
    pod_to_workload: HashMap<String, String>,
    /// Remediations this process created, until the watch cache shows them.
    created: HashMap<String, String>,
    /// Until when each workload's next case waits, by workload uid: kept
    /// after the closed Remediation that set it is deleted, since a
    /// retention shorter than the hold-off would otherwise end it early.
    hold_offs: HashMap<String, SystemTime>,
}

/// How long the detector waits for the owner stores' first lists before
/// it starts on pods anyway (reading owners from the API until they are in).
const OWNER_STORES_WAIT: Duration = Duration::from_secs(10);

/// Runs until the pod watch ends (it retries with backoff on errors).
/// `pods` is the pod store's watch, which this loop drives.
pub async fn run_detector(
    shared: Arc<Shared>,
    remediations: Store<Remediation>,
    pods: PodEvents,
    owners: OwnerStores,
) {
    let mut cases = Cases::default();
    // Failing pods seen at start-up would each cost an owner GET while the
    // owner stores are still listing; they are small and list quickly.
    let owners_listed = async {
        let replica_sets = owners.replica_sets.wait_until_ready();
        let jobs = owners.jobs.wait_until_ready();
        let _ = futures::join!(replica_sets, jobs);
    };
    if tokio::time::timeout(OWNER_STORES_WAIT, owners_listed)
        .await
        .is_err()
    {
        tracing::warn!(
            replica_sets = is_ready(&owners.replica_sets),
            jobs = is_ready(&owners.jobs),
            "owner stores not listed yet; reading owners from the API meanwhile"
        );
    }
    let mut stream = pods;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Opening a case outside the tick needs the Remediation cache to be
    // complete, or a restarted operator could open a second one.
    let remediations_ready = remediations.clone();
    let mut store_ready =
        std::pin::pin!(async move { remediations_ready.wait_until_ready().await.is_ok() });
    let mut ready = false;
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(Event::Apply(pod))) => {
                    let workload = observe_pod(&shared, &owners, &mut cases, &pod.pod()).await;
                    if let (true, Some(workload_uid)) = (ready, workload) {
                        open_if_due(&shared, &remediations, &mut cases, &workload_uid).await;
                    }
                }
                Some(Ok(Event::InitApply(pod))) => {
                    observe_pod(&shared, &owners, &mut cases, &pod.pod()).await;
                }
                Some(Ok(Event::Delete(pod))) => forget_pod(&mut cases, &pod),
                Some(Ok(Event::Init | Event::InitDone)) => {}
                Some(Err(error)) => tracing::warn!(%error, "pod watch error; retrying"),
                None => return,
            },
            _ = tick.tick() => evaluate_all(&shared, &remediations, &mut cases).await,
            done = &mut store_ready, if !ready => ready = done,
        }
    }
}

/// Records the pod's findings in its workload's case; returns that
/// workload's uid when the pod has findings.
async fn observe_pod(
    shared: &Shared,
    owners: &OwnerStores,
    cases: &mut Cases,
    pod: &Pod,
) -> Option<String> {
    let namespace = pod.namespace().unwrap_or_default();
    if !shared.watches_namespace(&namespace) {
        return None;
    }
    let uid = pod.uid().unwrap_or_default();
    let findings = detect_anomaly(
        pod,
        k8s_openapi::jiff::Timestamp::now(),
        shared.config.not_ready_after,
    );
    let known = cases.pod_to_workload.get(&uid).cloned();
    if findings.is_empty() {
        if let Some(workload_uid) = known {
            cases.pod_to_workload.remove(&uid);
            if let Some(case) = cases.by_workload.get_mut(&workload_uid) {
                case.pods.remove(&pod.name_any());
            }
        }
        return None;
    }
    let workload_uid = match known {
        Some(w) => w,
        None => match owner_workload(&shared.client, owners, pod).await {
            Ok(owned) => {
                let key = owned.workload.uid.clone();
                cases
                    .by_workload
                    .entry(key.clone())
                    .or_insert_with(|| Case {
                        namespace: owned.namespace.clone(),
                        workload: owned.workload.clone(),
                        pods: BTreeMap::new(),
                        first_seen: BTreeMap::new(),
                        written: None,
                        open_failed_at: None,
                        quiet_since: None,
                    });
                key
            }
            Err(error) => {
                tracing::warn!(%error, pod = %pod.name_any(), %namespace, "cannot find the pod's workload");
                return None;
            }
        },
    };
    cases.pod_to_workload.insert(uid, workload_uid.clone());
    if let Some(case) = cases.by_workload.get_mut(&workload_uid) {
        let now = Instant::now();
        for finding in &findings {
            case.first_seen.entry(finding.reason.clone()).or_insert(now);
        }
        case.pods.insert(pod.name_any(), findings);
    }
    Some(workload_uid)
}

fn forget_pod(cases: &mut Cases, pod: &StoredPod) {
    if let Some(workload_uid) = cases.pod_to_workload.remove(&pod.uid().unwrap_or_default())
        && let Some(case) = cases.by_workload.get_mut(&workload_uid)
    {
        case.pods.remove(&pod.name_any());
    }
}

/// Groups a workload's pod findings into one finding per (container, reason).
fn aggregate(case: &Case, grace: &GracePeriods, now: Instant) -> Vec<Finding> {
    let mut grouped: BTreeMap<(bool, String, String), Finding> = BTreeMap::new();
    for findings in case.pods.values() {
        for f in findings {
            let seen = case.first_seen.get(&f.reason).copied().unwrap_or(now);
            if now.duration_since(seen) < grace.for_finding(f) {
                continue;
            }
            let entry = grouped
                .entry((f.init, f.container.clone(), f.reason.clone()))
                .or_insert_with(|| Finding {
                    container: f.container.clone(),
                    init: f.init,
                    reason: f.reason.clone(),
                    message: f.message.clone(),
                    pods: 0,
                    exit_code: f.exit_code,
                    image: f.image.clone(),
                });
            entry.pods += 1;
        }
    }
    grouped.into_values().collect()
}

fn open_remediation<'a>(
    store: &'a [Arc<Remediation>],
    workload_uid: &str,
) -> Option<&'a Arc<Remediation>> {
    store.iter().find(|r| {
        r.spec.target.uid == workload_uid
            // A policy case is the scan's: a pod failure is a case of its own.
            && !super::policy_case::is_policy_case(r.status.as_ref())
            && !r
                .status
                .as_ref()
                .map(|s| s.phase)
                .unwrap_or_default()
                .is_closed()
    })
}

/// Whether a case must be opened now, on a pod event: nothing open for its
/// workload yet, findings past their grace period, and no failed attempt
/// in the last second (the tick retries those).
fn opens_now(case: &Case, known_remediation: bool, grace: &GracePeriods, now: Instant) -> bool {
    let backing_off = case
        .open_failed_at
        .is_some_and(|failed| now.duration_since(failed) < Duration::from_secs(1));
    !known_remediation && !backing_off && !aggregate(case, grace, now).is_empty()
}

/// How long after a Remediation of a workload ended RolledBack, Failed or
/// Rejected no new one is opened for it (unless a human deletes the old one).
pub const REOPEN_COOLDOWN: Duration = Duration::from_secs(600);

/// How long after a fix was Verified no new case is opened for the same
/// workload. The rollout is complete when the new pods are ready, but the
/// old revision's crash-looping pods are still being deleted for a moment
/// and keep reporting their old failure; a failure that outlasts this is
/// real and opens a case then (the tick re-evaluates).
pub const VERIFIED_SETTLE: Duration = Duration::from_secs(30);

/// Whether a new case for the workload must wait: its last Remediation
/// ended without a fix within [`REOPEN_COOLDOWN`], or was Verified within
/// [`VERIFIED_SETTLE`].
pub(crate) fn held_off(
    remediations: &[Arc<Remediation>],
    workload_uid: &str,
    now: SystemTime,
) -> bool {
    remediations
        .iter()
        .filter(|r| r.spec.target.uid == workload_uid)
        .filter_map(|r| hold_off_end(r))
        .any(|end| now < end)
}

/// When the hold-off a closed Remediation sets on its workload ends.
fn hold_off_end(remediation: &Remediation) -> Option<SystemTime> {
    let status = remediation.status.as_ref()?;
    let window = match status.phase {
        Phase::RolledBack | Phase::Failed | Phase::Rejected => REOPEN_COOLDOWN,
        Phase::Verified => VERIFIED_SETTLE,
        _ => return None,
    };
    let closed_at = status
        .last_update_time
        .as_ref()
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.0.as_second().max(0) as u64))?;
    Some(closed_at + window)
}

/// Records the hold-offs the closed Remediations set and forgets the
/// ended ones.
fn remember_hold_offs(
    hold_offs: &mut HashMap<String, SystemTime>,
    remediations: &[Arc<Remediation>],
    now: SystemTime,
) {
    for r in remediations {
        if let Some(end) = hold_off_end(r) {
            let kept = hold_offs.entry(r.spec.target.uid.clone()).or_insert(end);
            *kept = (*kept).max(end);
        }
    }
    hold_offs.retain(|_, end| now < *end);
}

/// The open Remediation of a workload: in the cache, or created by this
/// process and not in the cache yet.
fn known_remediation(
    remediations: &[Arc<Remediation>],
    created: &HashMap<String, String>,
    workload_uid: &str,
) -> Option<String> {
    open_remediation(remediations, workload_uid)
        .map(|r| r.name_any())
        .or_else(|| created.get(workload_uid).cloned())
}

/// Evaluates one workload's case right after a pod event, when that opens it.
async fn open_if_due(
    shared: &Shared,
    store: &Store<Remediation>,
    cases: &mut Cases,
    workload_uid: &str,
) {
    let now = Instant::now();
    let remediations = store.state();
    let Cases {
        by_workload,
        created,
        hold_offs,
        ..
    } = cases;
    let Some(case) = by_workload.get_mut(workload_uid) else {
        return;
    };
    remember_hold_offs(hold_offs, &remediations, SystemTime::now());
    let known = known_remediation(&remediations, created, workload_uid).is_some();
    if opens_now(case, known, &shared.config.grace, now) {
        let held = hold_offs.get(workload_uid).copied();
        evaluate_case(
            shared,
            &remediations,
            created,
            held,
            workload_uid,
            case,
            now,
        )
        .await;
    }
}

async fn evaluate_all(shared: &Shared, store: &Store<Remediation>, cases: &mut Cases) {
    let now = Instant::now();
    let remediations = store.state();
    cases
        .created
        .retain(|_, name| !remediations.iter().any(|r| &r.name_any() == name));
    remember_hold_offs(&mut cases.hold_offs, &remediations, SystemTime::now());
    let mut finished = Vec::new();
    for (workload_uid, case) in cases.by_workload.iter_mut() {
        let held = cases.hold_offs.get(workload_uid).copied();
        if evaluate_case(
            shared,
            &remediations,
            &mut cases.created,
            held,
            workload_uid,
            case,
            now,
        )
        .await
        {
            finished.push(workload_uid.clone());
        }
    }
    for uid in finished {
        cases.by_workload.remove(&uid);
    }
}

/// Opens, updates or resolves one workload's Remediation; true when the
/// case is finished and can be forgotten.
async fn evaluate_case(
    shared: &Shared,
    remediations: &[Arc<Remediation>],
    created: &mut HashMap<String, String>,
    held_until: Option<SystemTime>,
    workload_uid: &str,
    case: &mut Case,
    now: Instant,
) -> bool {
    let findings = aggregate(case, &shared.config.grace, now);
    let open = open_remediation(remediations, workload_uid);
    let name = known_remediation(remediations, created, workload_uid);
    match (name, findings.is_empty()) {
        (None, true) => case.pods.is_empty(),
        (None, false) => {
            let wall = SystemTime::now();
            if held_off(remediations, workload_uid, wall)
                || held_until.is_some_and(|end| wall < end)
            {
                // The last attempt for this workload was rolled back, failed
                // or rejected: opening a new case at once would propose the
                // same fix again, round and round. Or it was just verified,
                // and what is left are the old revision's pods on their way
                // out. Wait.
                return false;
            }
            match open_case(shared, case, &findings).await {
                Ok(name) => {
                    let started = case.first_seen.values().min().copied().unwrap_or(now);
                    shared
                        .metrics
                        .observe_detection(Instant::now().duration_since(started));
                    created.insert(workload_uid.to_string(), name);
                    case.written = Some(findings);
                    case.open_failed_at = None;
                }
                Err(error) => {
                    case.open_failed_at = Some(Instant::now());
                    tracing::warn!(%error, workload = %case.workload.name, "cannot open a remediation")
                }
            }
            false
        }
        (Some(name), false) => {
            case.quiet_since = None;
            if case.written.as_ref() != Some(&findings) {
                match write_findings(shared, case, &name, &findings).await {
                    Ok(()) => case.written = Some(findings),
                    Err(error) => {
                        tracing::warn!(%error, remediation = %name, "cannot update findings")
                    }
                }
            }
            false
        }
        (Some(name), true) => {
            // Healthy again. Before any fix, that closes the case; after a
            // fix, the controller's verification owns the outcome.
            let phase = open
                .and_then(|r| r.status.as_ref())
                .map(|s| s.phase)
                .unwrap_or_default();
            if !case.pods.is_empty() {
                // Findings inside their grace period: not healthy yet.
                case.quiet_since = None;
                return false;
            }
            if !matches!(phase, Phase::Diagnosing | Phase::Proposed) {
                return true;
            }
            // A crash-looping container is Running for a moment between
            // crashes: only a quiet period long enough to outlast that
            // closes the case.
            if !quiet_long_enough(case, shared.config.resolve_after, now) {
                return false;
            }
            let recovered = "the workload recovered on its own before any fix";
            if let Err(error) =
                resolve(shared, &case.namespace, &case.workload, &name, recovered).await
            {
                tracing::warn!(%error, remediation = %name, "cannot mark resolved");
                return false;
            }
            true
        }
    }
}

/// Starts or continues the case's quiet period; true once it has lasted
/// `resolve_after`.
fn quiet_long_enough(case: &mut Case, resolve_after: Duration, now: Instant) -> bool {
    let since = *case.quiet_since.get_or_insert(now);
    now.duration_since(since) >= resolve_after
}

/// A name that is unique per incident and says which workload it is about.
fn remediation_name(workload: &WorkloadRef) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let suffix = format!("{:x}", stamp % 0xff_ffff);
    let mut base = format!("{}-{}", workload.kind.to_lowercase(), workload.name);
    base.truncate(62 - suffix.len());
    format!("{}-{suffix}", base.trim_end_matches('-'))
}

async fn open_case(
    shared: &Shared,
    case: &Case,
    findings: &[Finding],
) -> Result<String, kube::Error> {
    let seen = detector_status(&case.workload, findings);
    let note = format!(
        "{}: {} pod(s) of {} failing",
        seen.reason,
        case.pods.len(),
        case.workload.name
    );
    open_remediation_for(
        shared,
        Opening {
            namespace: &case.namespace,
            workload: &case.workload,
            seen,
            message: format!("{} pod(s) failing", case.pods.len()),
            note,
            class: None,
        },
    )
    .await
}

/// What a new Remediation records when it opens.
pub(crate) struct Opening<'a> {
    pub namespace: &'a str,
    pub workload: &'a WorkloadRef,
    /// Findings, reason and target display.
    pub seen: DetectorStatus,
    /// The status message of the Diagnosing phase.
    pub message: String,
    /// The note of the `Detected` Event.
    pub note: String,
    /// The `aiops-operator.dev/class` label, for cases that are not pod failures.
    pub class: Option<&'a str>,
}

/// Creates a Remediation for a workload in `Diagnosing`, with its findings,
/// the phase metric and a `Detected` Event; returns its name.
#[tracing::instrument(skip_all, fields(namespace = %opening.namespace, workload = %opening.workload.name))]
pub(crate) async fn open_remediation_for(
    shared: &Shared,
    opening: Opening<'_>,
) -> Result<String, kube::Error> {
    let api: Api<Remediation> = Api::namespaced(shared.client.clone(), opening.namespace);
    let mut remediation = Remediation::new(
        &remediation_name(opening.workload),
        RemediationSpec {
            target: opening.workload.clone(),
            approved: false,
            rejected: false,
            approval: None,
        },
    );
    let mut labels = BTreeMap::from([
        (
            "aiops-operator.dev/workload-uid".to_string(),
            opening.workload.uid.clone(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "aiops-operator".to_string(),
        ),
    ]);
    if let Some(class) = opening.class {
        labels.insert(
            super::policy_case::CLASS_LABEL.to_string(),
            class.to_string(),
        );
    }
    remediation.metadata.labels = Some(labels);
    let created = api.create(&PostParams::default(), &remediation).await?;
    let name = created.name_any();
    let seen = opening.seen;
    let reason = seen.reason.clone();
    let mut status = super::crd::RemediationStatus {
        phase: Phase::Diagnosing,
        last_update_time: Some(seen.last_update_time.clone()),
        message: opening.message,
        ..Default::default()
    };
    let message = status.message.clone();
    super::conditions::set_phase_conditions(
        &mut status,
        created.metadata.generation,
        "Detected",
        &message,
        &Time(k8s_openapi::jiff::Timestamp::now()),
    );
    // The phase first: the controller starts diagnosing once findings are
    // in, and must find the Diagnosing record already there, not have its
    // own next transition overwritten by it.
    apply_operator_status(&api, &name, &status).await?;
    apply_detector_status(&api, &name, &seen).await?;
    shared.metrics.count_phase(Phase::Diagnosing, &reason);
    shared.publish(&created, "Detected", &opening.note).await;
    tracing::info!(remediation = %name, %reason, "opened a remediation");
    Ok(name)
}

/// The detector's part of the status for `findings` of `workload`, now.
fn detector_status(workload: &WorkloadRef, findings: &[Finding]) -> DetectorStatus {
    let reason = primary_reason(findings.iter().map(|f| f.reason.as_str())).unwrap_or_default();
    DetectorStatus {
        findings: findings.to_vec(),
        reason: reason.to_string(),
        target_display: format!("{}/{}", workload.kind, workload.name),
        last_update_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

async fn write_findings(
    shared: &Shared,
    case: &Case,
    name: &str,
    findings: &[Finding],
) -> Result<(), kube::Error> {
    let api: Api<Remediation> = Api::namespaced(shared.client.clone(), &case.namespace);
    apply_detector_status(&api, name, &detector_status(&case.workload, findings)).await?;
    Ok(())
}

/// Closes a case whose workload has no failing pod left before any fix:
/// it recovered, or it was deleted (or replaced under the same name), and
/// the message says which.
pub(crate) async fn resolve(
    shared: &Shared,
    namespace: &str,
    workload: &WorkloadRef,
    name: &str,
    recovered: &str,
) -> Result<(), kube::Error> {
    let deleted = matches!(
        fetch_workload(&shared.client, namespace, workload).await,
        Err(EvidenceError::WorkloadGone { .. } | EvidenceError::UidMismatch { .. })
    );
    let (reason, message) = if deleted {
        (
            "WorkloadDeleted",
            "the workload was deleted before any fix; nothing was applied",
        )
    } else {
        ("Recovered", recovered)
    };
    let api: Api<Remediation> = Api::namespaced(shared.client.clone(), namespace);
    let current = api.get_status(name).await?;
    let mut status = current.status.clone().unwrap_or_default();
    status.phase = Phase::Resolved;
    status.message = message.into();
    status.last_update_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    super::conditions::set_phase_conditions(
        &mut status,
        current.metadata.generation,
        reason,
        message,
        &Time(k8s_openapi::jiff::Timestamp::now()),
    );
    apply_operator_status(&api, name, &status).await?;
    shared.metrics.count_phase(Phase::Resolved, &status.reason);
    shared.publish(&current, "Resolved", &status.message).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(container: &str, reason: &str) -> PodFinding {
        PodFinding {
            container: container.into(),
            init: false,
            reason: reason.into(),
            message: String::new(),
            exit_code: None,
            image: Some("nginx:x".into()),
        }
    }

    #[test]
    fn twenty_replicas_aggregate_into_one_finding() {
        let now = Instant::now();
        let mut case = Case {
            namespace: "ns".into(),
            workload: WorkloadRef::default(),
            pods: BTreeMap::new(),
            first_seen: BTreeMap::from([("ImagePullBackOff".into(), now)]),
            written: None,
            open_failed_at: None,
            quiet_since: None,
        };
        for i in 0..20 {
            case.pods
                .insert(format!("web-{i}"), vec![finding("app", "ImagePullBackOff")]);
        }
        let found = aggregate(&case, &GracePeriods::default(), now);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pods, 20);
    }

    #[test]
    fn findings_inside_their_grace_period_are_held_back() {
        let now = Instant::now();
        let case = Case {
            namespace: "ns".into(),
            workload: WorkloadRef::default(),
            pods: BTreeMap::from([("web-0".to_string(), vec![finding("app", "ErrImagePull")])]),
            first_seen: BTreeMap::from([("ErrImagePull".into(), now)]),
            written: None,
            open_failed_at: None,
            quiet_since: None,
        };
        assert!(aggregate(&case, &GracePeriods::default(), now).is_empty());
        let later = now + Duration::from_secs(11);
        assert_eq!(aggregate(&case, &GracePeriods::default(), later).len(), 1);
    }

    #[test]
    fn a_crash_loop_that_runs_for_a_moment_is_not_resolved() {
        let now = Instant::now();
        let mut case = Case {
            namespace: "ns".into(),
            workload: WorkloadRef::default(),
            pods: BTreeMap::new(),
            first_seen: BTreeMap::new(),
            written: None,
            open_failed_at: None,
            quiet_since: None,
        };
        let window = Duration::from_secs(60);
        // The container restarted and runs: no finding, the quiet period starts.
        assert!(!quiet_long_enough(&mut case, window, now));
        assert!(!quiet_long_enough(
            &mut case,
            window,
            now + Duration::from_secs(5)
        ));
        // Still quiet after the whole window: healthy for real.
        assert!(quiet_long_enough(
            &mut case,
            window,
            now + Duration::from_secs(60)
        ));
        // A crash in between restarts the count (evaluate_case clears it).
        case.quiet_since = None;
        assert!(!quiet_long_enough(
            &mut case,
            window,
            now + Duration::from_secs(61)
        ));
    }

    #[test]
    fn a_pod_event_opens_a_due_case_at_once_but_only_once() {
        let now = Instant::now();
        let grace = GracePeriods::default();
        let mut case = Case {
            namespace: "ns".into(),
            workload: WorkloadRef::default(),
            pods: BTreeMap::from([("web-0".to_string(), vec![finding("app", "ErrImagePull")])]),
            first_seen: BTreeMap::from([("ErrImagePull".into(), now)]),
            written: None,
            open_failed_at: None,
            quiet_since: None,
        };
        // ErrImagePull is still inside its grace period: wait.
        assert!(!opens_now(&case, false, &grace, now));
        // The pod moved on to ImagePullBackOff (no grace): open now.
        case.pods
            .insert("web-0".into(), vec![finding("app", "ImagePullBackOff")]);
        case.first_seen.insert("ImagePullBackOff".into(), now);
        assert!(opens_now(&case, false, &grace, now));
        // Already open (cached or just created by us): never a second one.
        assert!(!opens_now(&case, true, &grace, now));
        // A failed create is retried by the tick, not by every pod event.
        case.open_failed_at = Some(now);
        assert!(!opens_now(&case, false, &grace, now));
        assert!(opens_now(
            &case,
            false,
            &grace,
            now + Duration::from_millis(1500)
        ));
    }

    #[test]
    fn names_say_which_workload_and_fit_kubernetes_limits() {
        let workload = WorkloadRef {
            kind: "Deployment".into(),
            name: "a".repeat(80),
            ..WorkloadRef::default()
        };
        let name = remediation_name(&workload);
        assert!(name.starts_with("deployment-aaa"));
        assert!(name.len() <= 63, "{name}");
        let short = remediation_name(&WorkloadRef {
            kind: "StatefulSet".into(),
            name: "db".into(),
            ..WorkloadRef::default()
        });
        assert!(short.starts_with("statefulset-db-"), "{short}");
    }
}

#[cfg(test)]
mod cooldown_tests {
    use super::*;
    use crate::remediation::crd::{RemediationSpec, RemediationStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn closed(phase: Phase, secs_ago: i64) -> Arc<Remediation> {
        let mut r = Remediation::new(
            "r",
            RemediationSpec {
                target: WorkloadRef {
                    uid: "w".into(),
                    ..WorkloadRef::default()
                },
                approved: false,
                rejected: false,
                approval: None,
            },
        );
        let at = k8s_openapi::jiff::Timestamp::now().as_second() - secs_ago;
        r.status = Some(RemediationStatus {
            phase,
            last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::from_second(at).unwrap())),
            ..RemediationStatus::default()
        });
        Arc::new(r)
    }

    #[test]
    fn a_recent_rollback_holds_off_a_new_case_for_the_cool_down() {
        let now = SystemTime::now();
        assert!(held_off(&[closed(Phase::RolledBack, 5)], "w", now));
        assert!(held_off(&[closed(Phase::Rejected, 5)], "w", now));
        assert!(!held_off(&[closed(Phase::RolledBack, 5)], "other", now));
        assert!(!held_off(&[closed(Phase::RolledBack, 3600)], "w", now));
    }

    #[test]
    fn a_fix_that_worked_holds_off_only_while_the_old_pods_go() {
        let now = SystemTime::now();
        assert!(held_off(&[closed(Phase::Verified, 5)], "w", now));
        assert!(!held_off(&[closed(Phase::Verified, 60)], "w", now));
        assert!(!held_off(&[closed(Phase::Verified, 5)], "other", now));
        // Open cases hold nothing off (they are the case).
        assert!(!held_off(&[closed(Phase::Proposed, 5)], "w", now));
    }

    #[test]
    fn a_hold_off_outlives_the_deleted_remediation_that_set_it() {
        let mut hold_offs = HashMap::new();
        let now = SystemTime::now();
        remember_hold_offs(&mut hold_offs, &[closed(Phase::Rejected, 120)], now);
        // Retention deleted the Rejected case: the store is empty now.
        remember_hold_offs(&mut hold_offs, &[], now);
        let end = hold_offs.get("w").copied().expect("still held");
        assert!(now < end, "held for the rest of the cool-down");
        // Once the cool-down has passed, the workload is forgotten.
        remember_hold_offs(&mut hold_offs, &[], end + Duration::from_secs(1));
        assert!(hold_offs.is_empty());
    }
}
