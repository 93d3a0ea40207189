//! Pod readiness, read one way everywhere: from the pod's `Ready`
//! condition, the signal Services and rollouts use, not from container
//! states (a container can run without passing its readiness probe).
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};

/// The pod's `Ready` condition, when the kubelet has reported one.
pub fn ready_condition(status: &PodStatus) -> Option<&PodCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
}

/// Whether the status says Ready (the `Ready` condition is `True`).
pub fn status_is_ready(status: &PodStatus) -> bool {
    ready_condition(status).is_some_and(|c| c.status == "True")
}

/// Whether the pod is Ready; a pod without a status is not.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(status_is_ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(conditions: serde_json::Value) -> PodStatus {
        serde_json::from_value(json!({ "conditions": conditions })).expect("status fixture")
    }

    #[test]
    fn only_a_true_ready_condition_is_ready() {
        let ready = status(json!([
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"}
        ]));
        assert!(status_is_ready(&ready));
        assert!(!status_is_ready(&status(
            json!([{"type": "Ready", "status": "False"}])
        )));
        assert!(!status_is_ready(&status(
            json!([{"type": "ContainersReady", "status": "True"}])
        )));
        assert!(ready_condition(&status(json!([]))).is_none());
    }

    #[test]
    fn a_pod_without_a_status_is_not_ready() {
        assert!(!pod_is_ready(&Pod::default()));
        let pod = Pod {
            status: Some(status(json!([{"type": "Ready", "status": "True"}]))),
            ..Pod::default()
        };
        assert!(pod_is_ready(&pod));
    }
}
