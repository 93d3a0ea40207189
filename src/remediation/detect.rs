//! Detection: what is wrong with a pod, per container, and whether it has
//! been wrong long enough to open a case.
//!
//! Pure functions over `Pod` objects, so the rules are unit-tested without a
//! cluster. The controller aggregates their output per owning workload.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::k8s::pod::ready_condition;

/// Container waiting reasons that mean the container cannot run.
pub const FAILING_WAITING_REASONS: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Finding reasons beyond the waiting reasons.
pub const OOM_KILLED: &str = "OOMKilled";
pub const UNSCHEDULABLE: &str = "Unschedulable";
pub const NOT_READY: &str = "NotReady";

/// One problem of one container (or of the pod, for scheduling) in one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFinding {
    /// Empty for pod-level findings (Unschedulable).
    pub container: String,
    pub init: bool,
    pub reason: String,
    pub message: String,
    pub exit_code: Option<i32>,
    pub image: Option<String>,
}

/// How long each reason must persist before it counts; keeps normal
/// rollouts (a pod briefly pulling, a slow first readiness) from opening cases.
#[derive(Clone, Debug, PartialEq)]
pub struct GracePeriods {
    pub per_reason: BTreeMap<String, Duration>,
    pub default: Duration,
}

impl Default for GracePeriods {
    fn default() -> Self {
        let per_reason = [
            // ErrImagePull turns into ImagePullBackOff on its own when it persists.
            ("ErrImagePull", 10),
            ("ImagePullBackOff", 0),
            ("InvalidImageName", 0),
            ("CrashLoopBackOff", 0),
            (OOM_KILLED, 0),
            ("CreateContainerConfigError", 15),
            ("CreateContainerError", 15),
            ("RunContainerError", 15),
            (UNSCHEDULABLE, 30),
            (NOT_READY, 120),
        ]
        .into_iter()
        .map(|(reason, secs)| (reason.to_string(), Duration::from_secs(secs)))
        .collect();
        GracePeriods {
            per_reason,
            default: Duration::from_secs(0),
        }
    }
}

impl GracePeriods {
    pub fn for_reason(&self, reason: &str) -> Duration {
        self.per_reason.get(reason).copied().unwrap_or(self.default)
    }

    /// The grace of one finding. A pull error in which the registry says
    /// the image does not exist will not heal by retrying, so it waits no
    /// longer than `ImagePullBackOff` (which it becomes on the kubelet's
    /// next sync anyway); other pull errors (timeouts, rate limits, a
    /// registry restart) keep `ErrImagePull`'s grace.
    pub fn for_finding(&self, finding: &PodFinding) -> Duration {
        if finding.reason == "ErrImagePull" && image_does_not_exist(&finding.message) {
            return self.for_reason("ImagePullBackOff");
        }
        self.for_reason(&finding.reason)
    }
}

/// Whether a pull error message says the image is missing, as containerd,
/// CRI-O and registries word it.
fn image_does_not_exist(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        ": not found",
        "manifest unknown",
        "repository does not exist",
        "name unknown",
        "does not exist or no pull access",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// Whether a container of `pod` has restarted after a failed run: a
/// crash-looping container is `Running` for a moment between crashes, and
/// its previous logs are still the evidence a case needs.
pub fn restarted_after_failure(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten()
        .any(|c| {
            c.restart_count > 0
                && c.last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code != 0)
        })
}

/// Everything wrong with one pod right now. `now` decides the NotReady
/// threshold (`not_ready_after`), measured from the pod's start time.
/// A pod being deleted reports nothing: it is on its way out (an old
/// revision's pod after a rollout, say), and no fix would change it.
pub fn detect_anomaly(pod: &Pod, now: Timestamp, not_ready_after: Duration) -> Vec<PodFinding> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let images = template_images(pod);
    let mut findings = Vec::new();
    for (statuses, init) in [
        (status.init_container_statuses.as_deref(), true),
        (status.container_statuses.as_deref(), false),
    ] {
        for container in statuses.unwrap_or_default() {
            if let Some(finding) = container_finding(container, init, &images) {
                findings.push(finding);
            }
        }
    }

    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some(UNSCHEDULABLE)
        {
            findings.push(PodFinding {
                container: String::new(),
                init: false,
                reason: UNSCHEDULABLE.into(),
                message: condition.message.clone().unwrap_or_default(),
                exit_code: None,
                image: None,
            });
        }
    }

    if findings.is_empty() && running_but_not_ready_for(pod, now) >= Some(not_ready_after) {
        for container in status.container_statuses.iter().flatten() {
            if !container.ready {
                findings.push(PodFinding {
                    container: container.name.clone(),
                    init: false,
                    reason: NOT_READY.into(),
                    message: "running but never became Ready".into(),
                    exit_code: None,
                    image: images.get(&container.name).cloned(),
                });
            }
        }
    }
    findings
}

fn container_finding(
    container: &ContainerStatus,
    init: bool,
    images: &BTreeMap<String, String>,
) -> Option<PodFinding> {
    let image = images
        .get(&container.name)
        .cloned()
        .or_else(|| Some(container.image.clone()).filter(|i| !i.is_empty()));
    let last_terminated = container
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let waiting = container.state.as_ref().and_then(|s| s.waiting.as_ref());
    let terminated_now = container.state.as_ref().and_then(|s| s.terminated.as_ref());

    // OOMKilled explains a crash loop better than the loop itself does.
    let oom = last_terminated
        .filter(|t| t.reason.as_deref() == Some(OOM_KILLED))
        .or(terminated_now.filter(|t| t.reason.as_deref() == Some(OOM_KILLED)));
    if let Some(terminated) = oom {
        return Some(PodFinding {
            container: container.name.clone(),
            init,
            reason: OOM_KILLED.into(),
            message: terminated.message.clone().unwrap_or_default(),
            exit_code: Some(terminated.exit_code),
            image,
        });
    }
    let waiting_reason = waiting.and_then(|w| w.reason.as_deref())?;
    if !FAILING_WAITING_REASONS.contains(&waiting_reason) {
        return None;
    }
    Some(PodFinding {
        container: container.name.clone(),
        init,
        reason: waiting_reason.to_string(),
        message: waiting.and_then(|w| w.message.clone()).unwrap_or_default(),
        exit_code: last_terminated.map(|t| t.exit_code),
        image,
    })
}

/// Container name → image from the pod spec (the status may show a resolved digest).
fn template_images(pod: &Pod) -> BTreeMap<String, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return BTreeMap::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
        .collect()
}

/// How long a Running pod whose containers all run has been not Ready.
fn running_but_not_ready_for(pod: &Pod, now: Timestamp) -> Option<Duration> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ready = ready_condition(status)?;
    if ready.status == "True" {
        return None;
    }
    let all_running = status
        .container_statuses
        .iter()
        .flatten()
        .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    if !all_running {
        return None;
    }
    let since = status.start_time.as_ref()?.0;
    let elapsed = now.duration_since(since);
    Duration::try_from(elapsed).ok()
}

/// The reason to report first when several containers fail differently:
/// the most specific and actionable one.
pub fn primary_reason<'a>(reasons: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    const ORDER: &[&str] = &[
        OOM_KILLED,
        "InvalidImageName",
        "ImagePullBackOff",
        "ErrImagePull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
        UNSCHEDULABLE,
        NOT_READY,
    ];
    reasons
        .into_iter()
        .min_by_key(|r| ORDER.iter().position(|o| o == r).unwrap_or(ORDER.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("pod fixture")
    }

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().unwrap()
    }

    #[test]
    fn image_pull_backoff_is_a_finding_with_the_spec_image() {
        let p = pod(json!({
            "spec": {"containers": [{"name": "web", "image": "nginx:nope"}]},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "web", "image": "nginx:nope", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}
        }));
        let found = detect_anomaly(&p, now(), Duration::from_secs(120));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reason, "ImagePullBackOff");
        assert_eq!(found[0].image.as_deref(), Some("nginx:nope"));
        assert!(!found[0].init);
    }

    #[test]
    fn a_pod_being_deleted_reports_nothing() {
        let p = pod(json!({
            "metadata": {"deletionTimestamp": "2026-01-01T00:09:00Z"},
            "spec": {"containers": [{"name": "web", "image": "nginx:nope"}]},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "web", "image": "nginx:nope", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}
        }));
        assert_eq!(
            detect_anomaly(&p, now(), Duration::from_secs(120)),
            Vec::new()
        );
    }

    #[test]
    fn oom_killed_last_state_wins_over_crash_loop() {
        let p = pod(json!({
            "spec": {"containers": [{"name": "cache", "image": "redis:7.2.5"}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "cache", "image": "redis:7.2.5", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        }));
        let found = detect_anomaly(&p, now(), Duration::from_secs(120));
        assert_eq!(found[0].reason, OOM_KILLED);
        assert_eq!(found[0].exit_code, Some(137));
    }

    #[test]
    fn init_container_failures_are_marked_init() {
        let p = pod(json!({
            "spec": {"initContainers": [{"name": "setup", "image": "busybox:x"}],
                     "containers": [{"name": "web", "image": "nginx:1.25.5"}]},
            "status": {"phase": "Pending",
                "initContainerStatuses": [{"name": "setup", "image": "busybox:x", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}}],
                "containerStatuses": [{"name": "web", "image": "nginx:1.25.5", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}
        }));
        let found = detect_anomaly(&p, now(), Duration::from_secs(120));
        assert_eq!(
            found.len(),
            1,
            "PodInitializing is not a failure: {found:?}"
        );
        assert!(found[0].init);
        assert_eq!(found[0].reason, "ErrImagePull");
    }

    #[test]
    fn crash_loop_keeps_the_last_exit_code() {
        let p = pod(json!({
            "spec": {"containers": [{"name": "db", "image": "postgres:16.4"}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "db", "image": "postgres:16.4", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
        }));
        let found = detect_anomaly(&p, now(), Duration::from_secs(120));
        assert_eq!(found[0].reason, "CrashLoopBackOff");
        assert_eq!(found[0].exit_code, Some(1));
    }

    #[test]
    fn a_crash_looping_container_between_crashes_has_restarted_after_failure() {
        let between = pod(json!({
            "spec": {"containers": [{"name": "db", "image": "postgres:16.4"}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "db", "image": "postgres:16.4", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
        }));
        assert!(detect_anomaly(&between, now(), Duration::from_secs(120)).is_empty());
        assert!(restarted_after_failure(&between));
        let clean_exit = pod(json!({
            "spec": {"containers": [{"name": "db", "image": "postgres:16.4"}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "db", "image": "postgres:16.4", "imageID": "", "ready": true, "restartCount": 1,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
        }));
        assert!(!restarted_after_failure(&clean_exit));
    }

    #[test]
    fn every_listed_waiting_reason_is_detected_and_others_are_not() {
        for reason in FAILING_WAITING_REASONS
            .iter()
            .chain(&["ContainerCreating", "PodInitializing"])
        {
            let p = pod(json!({
                "spec": {"containers": [{"name": "c", "image": "i:1"}]},
                "status": {"containerStatuses": [{"name": "c", "image": "i:1", "imageID": "",
                    "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}}]}
            }));
            let detected = !detect_anomaly(&p, now(), Duration::from_secs(120)).is_empty();
            assert_eq!(
                detected,
                FAILING_WAITING_REASONS.contains(reason),
                "{reason}"
            );
        }
    }

    #[test]
    fn unschedulable_is_a_pod_level_finding() {
        let p = pod(json!({
            "spec": {"containers": [{"name": "c", "image": "i:1"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/4 nodes are available: insufficient memory"}]}
        }));
        let found = detect_anomaly(&p, now(), Duration::from_secs(120));
        assert_eq!(found[0].reason, UNSCHEDULABLE);
        assert!(found[0].container.is_empty());
        assert!(found[0].message.contains("insufficient memory"));
    }

    #[test]
    fn not_ready_only_after_the_threshold() {
        let running = |start: &str| {
            pod(json!({
                "spec": {"containers": [{"name": "c", "image": "i:1"}]},
                "status": {"phase": "Running", "startTime": start,
                    "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [{"name": "c", "image": "i:1", "imageID": "", "ready": false,
                        "restartCount": 0, "state": {"running": {"startedAt": start}}}]}
            }))
        };
        let threshold = Duration::from_secs(120);
        assert!(detect_anomaly(&running("2026-01-01T00:09:00Z"), now(), threshold).is_empty());
        let late = detect_anomaly(&running("2026-01-01T00:05:00Z"), now(), threshold);
        assert_eq!(late[0].reason, NOT_READY);
    }

    #[test]
    fn healthy_pod_has_no_findings() {
        let p = pod(json!({
            "spec": {"containers": [{"name": "c", "image": "i:1"}]},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "i:1", "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"running": {}}}]}
        }));
        assert!(detect_anomaly(&p, now(), Duration::from_secs(120)).is_empty());
    }

    #[test]
    fn primary_reason_prefers_the_specific_cause() {
        assert_eq!(
            primary_reason(["CrashLoopBackOff", OOM_KILLED, NOT_READY]),
            Some(OOM_KILLED)
        );
        assert_eq!(
            primary_reason(["CrashLoopBackOff", "ImagePullBackOff"]),
            Some("ImagePullBackOff")
        );
        assert_eq!(primary_reason([]), None);
    }

    #[test]
    fn a_missing_image_skips_the_pull_error_grace_but_a_flaky_registry_does_not() {
        let grace = GracePeriods::default();
        let pull = |message: &str| PodFinding {
            container: "app".into(),
            init: false,
            reason: "ErrImagePull".into(),
            message: message.into(),
            exit_code: None,
            image: Some("nginx:1.25.99".into()),
        };
        for missing in [
            "failed to pull and unpack image \"docker.io/library/nginx:1.25.99\": failed to resolve reference \"docker.io/library/nginx:1.25.99\": docker.io/library/nginx:1.25.99: not found",
            "rpc error: code = Unknown desc = Error response from daemon: manifest unknown",
            "pull access denied for ngnix, repository does not exist or may require 'docker login'",
        ] {
            assert_eq!(
                grace.for_finding(&pull(missing)),
                Duration::ZERO,
                "{missing}"
            );
        }
        for transient in [
            "failed to do request: Head \"https://registry-1.docker.io/v2/\": dial tcp: i/o timeout",
            "toomanyrequests: You have reached your pull rate limit",
            "",
        ] {
            assert_eq!(
                grace.for_finding(&pull(transient)),
                Duration::from_secs(10),
                "{transient}"
            );
        }
    }

    #[test]
    fn grace_periods_have_defaults_per_reason() {
        let grace = GracePeriods::default();
        assert_eq!(grace.for_reason("ImagePullBackOff"), Duration::ZERO);
        assert_eq!(grace.for_reason(NOT_READY), Duration::from_secs(120));
        assert_eq!(grace.for_reason("SomethingNew"), Duration::ZERO);
    }
}
