//! Rollout verification: after a fix is applied, is the workload's new
//! revision fully rolled out and healthy, still progressing, or failing?
//!
//! Pure functions over the workload object (as JSON) and the findings of
//! pods created since the apply, so each kind's rule is unit-tested.
//!
//! A CronJob rolls nothing out: a fix to its job template is verified by
//! its next run ([`cronjob_progress`]): the first Job created after the
//! apply succeeds, or one of its pods runs Ready. Until the schedule
//! creates that Job there is nothing to judge, and the verification
//! timeout counts from the Job's creation, not from the apply: a nightly
//! CronJob fixed in the morning is verified the next night.
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Deserialize;
use serde_json::Value;

use crate::k8s::pod::{pod_is_ready, status_is_ready};

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutProgress {
    Complete,
    Progressing(String),
    Failed(String),
    /// Nothing has started from the fix yet (a CronJob before its next
    /// run): no verdict, and no timeout either.
    Waiting(String),
}

/// One run of a CronJob since a fix: a Job it created after the apply.
#[derive(Clone, Debug, Default)]
pub struct JobRun {
    pub name: String,
    pub created: Option<Timestamp>,
    pub succeeded: bool,
    /// The reason of a `Failed` condition.
    pub failed: Option<String>,
    /// The Job's pods.
    pub pods: Vec<Pod>,
}

impl JobRun {
    fn from_job(job: &Job, pods: Vec<Pod>) -> JobRun {
        let status = job.status.as_ref();
        let condition = |kind: &str| {
            status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| c.type_ == kind && c.status == "True")
                .map(|c| c.reason.clone().unwrap_or_else(|| kind.to_string()))
        };
        JobRun {
            name: job.metadata.name.clone().unwrap_or_default(),
            created: job.metadata.creation_timestamp.as_ref().map(|t| t.0),
            succeeded: status.is_some_and(|s| s.succeeded.unwrap_or(0) > 0)
                || condition("Complete").is_some(),
            failed: condition("Failed"),
            pods,
        }
    }
}

/// The CronJob's runs since `since`: the Jobs it controls (by uid)
/// created then or later *from `pod_spec`*, the job template's pod spec
/// now, oldest first, each with its pods. A Job the CronJob controller
/// created just after the apply from its cached, older template is not a
/// run of the fix and must neither verify nor fail it.
pub async fn cronjob_runs(
    client: &Client,
    namespace: &str,
    cronjob_uid: &str,
    since: Timestamp,
    pod_spec: Option<&Value>,
) -> Result<Vec<JobRun>, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut runs = Vec::new();
    for job in jobs.list(&ListParams::default()).await?.items {
        let ours = job
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == cronjob_uid && o.controller == Some(true));
        let new = job
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| t.0 >= since);
        let from_template = pod_spec.is_none_or(|spec| runs_pod_spec(&job, spec));
        let Some(uid) = job
            .metadata
            .uid
            .as_deref()
            .filter(|_| ours && new && from_template)
        else {
            continue;
        };
        let selector = format!("batch.kubernetes.io/controller-uid={uid}");
        let job_pods = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        runs.push(JobRun::from_job(&job, job_pods));
    }
    runs.sort_by_key(|run| run.created);
    Ok(runs)
}

/// Whether `job` runs exactly `pod_spec` (the Job controller adds labels
/// to the template's metadata only, and both specs are defaulted alike).
fn runs_pod_spec(job: &Job, pod_spec: &Value) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .is_some_and(|job_spec| &job_spec == pod_spec)
}

/// Judges a fixed CronJob by its runs since the apply (see the module
/// documentation); `failing_new_pods` describes their pods that show
/// findings past their grace period, `suspended` is `spec.suspend`.
pub fn cronjob_progress(
    runs: &[JobRun],
    failing_new_pods: &[String],
    suspended: bool,
) -> RolloutProgress {
    if let Some(first) = failing_new_pods.first() {
        return RolloutProgress::Failed(format!(
            "{} pod(s) of the Jobs run since the fix failing, e.g. {first}",
            failing_new_pods.len()
        ));
    }
    if let Some(run) = runs.iter().find(|run| run.failed.is_some()) {
        return RolloutProgress::Failed(format!(
            "Job {} run since the fix failed ({})",
            run.name,
            run.failed.as_deref().unwrap_or_default()
        ));
    }
    if runs
        .iter()
        .any(|run| run.succeeded || run.pods.iter().any(pod_is_ready))
    {
        return RolloutProgress::Complete;
    }
    match runs.first() {
        Some(run) => RolloutProgress::Progressing(format!(
            "Job {} started from the fixed template and has not run yet",
            run.name
        )),
        None if suspended => RolloutProgress::Waiting(
            "the CronJob is suspended: the fix is verified by its first Job after it resumes"
                .into(),
        ),
        None => RolloutProgress::Waiting(
            "waiting for the CronJob's next scheduled Job, which runs the fixed template".into(),
        ),
    }
}

fn int(value: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(value, |v, k| v.get(k))?.as_i64()
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, k| v.get(k))?.as_str()
}

/// Judges the rollout of `workload` (kind from the object) for the
/// generation the fix produced. `failing_new_pods` describes pods created
/// after the apply that show findings past their grace period.
pub fn rollout_progress(
    workload: &Value,
    applied_generation: i64,
    failing_new_pods: &[String],
) -> RolloutProgress {
    if let Some(first) = failing_new_pods.first() {
        return RolloutProgress::Failed(format!(
            "{} new pod(s) failing, e.g. {first}",
            failing_new_pods.len()
        ));
    }
    let kind = text(workload, &["kind"]).unwrap_or_default();
    let observed = int(workload, &["status", "observedGeneration"]).unwrap_or(0);
    if !matches!(kind, "Pod" | "Job" | "CronJob") && observed < applied_generation {
        return RolloutProgress::Progressing(format!(
            "the controller has not observed generation {applied_generation} yet"
        ));
    }
    let want = int(workload, &["spec", "replicas"]).unwrap_or(1);
    let status = |field: &str| int(workload, &["status", field]).unwrap_or(0);
    match kind {
        "Deployment" => {
            let stalled = workload
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    c.get("type") == Some(&"Progressing".into())
                        && c.get("reason") == Some(&"ProgressDeadlineExceeded".into())
                });
            if stalled {
                return RolloutProgress::Failed(
                    "the Deployment exceeded its progress deadline".into(),
                );
            }
            let (updated, ready, available, total) = (
                status("updatedReplicas"),
                status("readyReplicas"),
                status("availableReplicas"),
                status("replicas"),
            );
            if updated == want && ready == want && available == want && total == want {
                RolloutProgress::Complete
            } else {
                RolloutProgress::Progressing(format!(
                    "{updated}/{want} updated, {ready} ready, {available} available, {total} total"
                ))
            }
        }
        "StatefulSet" => {
            let (updated, ready) = (status("updatedReplicas"), status("readyReplicas"));
            let revisions_match = text(workload, &["status", "updateRevision"])
                == text(workload, &["status", "currentRevision"]);
            if updated == want && ready == want && revisions_match {
                RolloutProgress::Complete
            } else {
                RolloutProgress::Progressing(format!("{updated}/{want} updated, {ready} ready"))
            }
        }
        "DaemonSet" => {
            let desired = status("desiredNumberScheduled");
            let (updated, ready, available) = (
                status("updatedNumberScheduled"),
                status("numberReady"),
                status("numberAvailable"),
            );
            if updated == desired && ready == desired && available == desired {
                RolloutProgress::Complete
            } else {
                RolloutProgress::Progressing(format!(
                    "{updated}/{desired} updated, {ready} ready, {available} available"
                ))
            }
        }
        // A Job's next pods use the new template; nothing rolls. A CronJob
        // is judged by its next run (`cronjob_progress`).
        "Job" | "CronJob" => RolloutProgress::Complete,
        "Pod" => {
            let ready = workload
                .get("status")
                .and_then(|status| PodStatus::deserialize(status).ok())
                .is_some_and(|status| status_is_ready(&status));
            if ready {
                RolloutProgress::Complete
            } else {
                RolloutProgress::Progressing("the pod is not Ready yet".into())
            }
        }
        other => RolloutProgress::Failed(format!("cannot verify a rollout of kind {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(observed: i64, updated: i64, ready: i64, available: i64, total: i64) -> Value {
        json!({"kind": "Deployment", "spec": {"replicas": 3},
               "status": {"observedGeneration": observed, "updatedReplicas": updated,
                          "readyReplicas": ready, "availableReplicas": available, "replicas": total}})
    }

    #[test]
    fn only_a_job_of_the_current_template_is_a_run_of_the_fix() {
        let fixed = json!({"containers": [{"name": "report", "image": "busybox:1.36.1"}],
                           "restartPolicy": "OnFailure"});
        let job = |image: &str| -> Job {
            serde_json::from_value(json!({"spec": {"template": {
                "metadata": {"labels": {"job-name": "report-1"}},
                "spec": {"containers": [{"name": "report", "image": image}],
                         "restartPolicy": "OnFailure"}}}}))
            .expect("a job")
        };
        assert!(runs_pod_spec(&job("busybox:1.36.1"), &fixed));
        assert!(!runs_pod_spec(&job("busybox:1.36.1-typo"), &fixed));
        assert!(!runs_pod_spec(&Job::default(), &fixed));
    }

    #[test]
    fn a_deployment_is_complete_when_all_replicas_are_new_and_old_ones_gone() {
        assert_eq!(
            rollout_progress(&deployment(2, 3, 3, 3, 3), 2, &[]),
            RolloutProgress::Complete
        );
        // Old pods still around (total 4): not yet.
        assert!(matches!(
            rollout_progress(&deployment(2, 3, 3, 3, 4), 2, &[]),
            RolloutProgress::Progressing(_)
        ));
        // The controller has not seen the new generation yet.
        assert!(matches!(
            rollout_progress(&deployment(1, 3, 3, 3, 3), 2, &[]),
            RolloutProgress::Progressing(_)
        ));
    }

    #[test]
    fn failing_new_pods_fail_the_rollout() {
        let verdict = rollout_progress(
            &deployment(2, 1, 2, 2, 3),
            2,
            &["web-x: ImagePullBackOff".into()],
        );
        assert!(matches!(verdict, RolloutProgress::Failed(m) if m.contains("web-x")));
    }

    #[test]
    fn a_progress_deadline_fails_the_rollout() {
        let mut d = deployment(2, 1, 2, 2, 3);
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        assert!(matches!(
            rollout_progress(&d, 2, &[]),
            RolloutProgress::Failed(_)
        ));
    }

    #[test]
    fn statefulsets_need_matching_revisions() {
        let mut s = json!({"kind": "StatefulSet", "spec": {"replicas": 2},
            "status": {"observedGeneration": 3, "updatedReplicas": 2, "readyReplicas": 2,
                       "updateRevision": "r2", "currentRevision": "r1"}});
        assert!(matches!(
            rollout_progress(&s, 3, &[]),
            RolloutProgress::Progressing(_)
        ));
        s["status"]["currentRevision"] = json!("r2");
        assert_eq!(rollout_progress(&s, 3, &[]), RolloutProgress::Complete);
    }

    #[test]
    fn daemonsets_count_scheduled_pods() {
        let d = json!({"kind": "DaemonSet", "status": {"observedGeneration": 2, "desiredNumberScheduled": 4,
            "updatedNumberScheduled": 4, "numberReady": 4, "numberAvailable": 4}});
        assert_eq!(rollout_progress(&d, 2, &[]), RolloutProgress::Complete);
        let partial = json!({"kind": "DaemonSet", "status": {"observedGeneration": 2, "desiredNumberScheduled": 4,
            "updatedNumberScheduled": 2, "numberReady": 4, "numberAvailable": 4}});
        assert!(matches!(
            rollout_progress(&partial, 2, &[]),
            RolloutProgress::Progressing(_)
        ));
    }

    #[test]
    fn a_bare_pod_is_rolled_out_once_it_is_ready() {
        let pod = |ready: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                   "status": {"phase": "Running", "conditions": [
                       {"type": "ContainersReady", "status": ready},
                       {"type": "Ready", "status": ready}]}})
        };
        assert_eq!(
            rollout_progress(&pod("True"), 0, &[]),
            RolloutProgress::Complete
        );
        assert!(matches!(
            rollout_progress(&pod("False"), 0, &[]),
            RolloutProgress::Progressing(_)
        ));
        assert!(matches!(
            rollout_progress(&json!({"kind": "Pod"}), 0, &[]),
            RolloutProgress::Progressing(_)
        ));
    }

    fn run(name: &str, succeeded: bool, failed: Option<&str>, pod: Option<&str>) -> JobRun {
        JobRun {
            name: name.into(),
            created: Some("2026-01-01T00:01:00Z".parse().unwrap()),
            succeeded,
            failed: failed.map(str::to_string),
            pods: pod
                .map(|ready| {
                    serde_json::from_value(json!({"metadata": {"name": format!("{name}-x")},
                        "status": {"phase": "Running",
                                   "conditions": [{"type": "Ready", "status": ready}]}}))
                    .unwrap()
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn a_cronjob_is_verified_by_its_next_run() {
        // Nothing ran since the fix: no verdict and no timeout.
        assert!(matches!(
            cronjob_progress(&[], &[], false),
            RolloutProgress::Waiting(m) if m.contains("next scheduled Job")
        ));
        assert!(matches!(
            cronjob_progress(&[], &[], true),
            RolloutProgress::Waiting(m) if m.contains("suspended")
        ));
        // Started, not run yet.
        assert!(matches!(
            cronjob_progress(&[run("nightly-2", false, None, Some("False"))], &[], false),
            RolloutProgress::Progressing(m) if m.contains("nightly-2")
        ));
        // Succeeded, or running Ready.
        assert_eq!(
            cronjob_progress(&[run("nightly-2", true, None, None)], &[], false),
            RolloutProgress::Complete
        );
        assert_eq!(
            cronjob_progress(&[run("nightly-2", false, None, Some("True"))], &[], false),
            RolloutProgress::Complete
        );
        // Its pods fail, or the Job failed.
        assert!(matches!(
            cronjob_progress(
                &[run("nightly-2", false, None, Some("False"))],
                &["nightly-2-x: ImagePullBackOff".into()],
                false
            ),
            RolloutProgress::Failed(m) if m.contains("nightly-2-x")
        ));
        assert!(matches!(
            cronjob_progress(&[run("nightly-2", false, Some("BackoffLimitExceeded"), None)], &[], false),
            RolloutProgress::Failed(m) if m.contains("BackoffLimitExceeded")
        ));
    }
}
