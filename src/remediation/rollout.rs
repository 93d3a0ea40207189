//! Rollout verification: after a fix is applied, is the workload's new
//! revision fully rolled out and healthy, still progressing, or failing?
//!
//! Pure functions over the workload object (as JSON) and the findings of
//! pods created since the apply, so each kind's rule is unit-tested.
use k8s_openapi::api::core::v1::PodStatus;
use serde::Deserialize;
use serde_json::Value;

use crate::k8s::pod::status_is_ready;

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutProgress {
    Complete,
    Progressing(String),
    Failed(String),
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
        // A Job's or CronJob's next pods use the new template; nothing rolls.
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
}
