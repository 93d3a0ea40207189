//! Container statuses of the failing pods, deduplicated, with their last
//! state.
use super::*;

/// One entry per failing pod and container that is not simply running and
/// ready (init containers that completed are fine too).
pub(super) fn observed_containers(pods: &[&Pod]) -> Vec<ObservedContainer> {
    let mut out = Vec::new();
    for pod in pods {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let statuses = status
            .init_container_statuses
            .iter()
            .flatten()
            .map(|s| (s, true))
            .chain(
                status
                    .container_statuses
                    .iter()
                    .flatten()
                    .map(|s| (s, false)),
            );
        for (container, init) in statuses {
            if container_is_fine(container, init) {
                continue;
            }
            out.push(ObservedContainer {
                pod: pod_name.clone(),
                container: container.name.clone(),
                state: describe_state(container.state.as_ref()),
                last_state: container
                    .last_state
                    .as_ref()
                    .filter(|s| {
                        s.waiting.is_some() || s.running.is_some() || s.terminated.is_some()
                    })
                    .map(|s| describe_state(Some(s)))
                    .unwrap_or_default(),
                restart_count: container.restart_count,
                ready: container.ready,
                image: container.image.clone(),
            });
        }
    }
    out
}

pub(super) fn container_is_fine(container: &ContainerStatus, init: bool) -> bool {
    let state = container.state.as_ref();
    let running_ready = container.ready
        && container.restart_count == 0
        && state.is_some_and(|s| s.running.is_some());
    let completed_init = init
        && state
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0);
    running_ready || completed_init
}

/// "waiting: CrashLoopBackOff: back-off 40s…", "terminated: OOMKilled (exit 137)", "running".
pub(super) fn describe_state(state: Option<&ContainerState>) -> String {
    let Some(state) = state else {
        return "unknown".into();
    };
    let with_message = |head: String, message: Option<&String>| match message {
        Some(m) if !m.is_empty() => {
            format!("{head}: {}", truncate(&redact(m), MAX_STATE_MESSAGE_BYTES))
        }
        _ => head,
    };
    if let Some(waiting) = &state.waiting {
        let head = format!(
            "waiting: {}",
            waiting.reason.as_deref().unwrap_or("unknown")
        );
        return with_message(head, waiting.message.as_ref());
    }
    if let Some(terminated) = &state.terminated {
        let mut head = format!(
            "terminated: {} (exit {}",
            terminated.reason.as_deref().unwrap_or("unknown"),
            terminated.exit_code
        );
        if let Some(signal) = terminated.signal {
            head.push_str(&format!(", signal {signal}"));
        }
        head.push(')');
        if let Some(finished) = &terminated.finished_at {
            head.push_str(&format!(" at {}", finished.0));
        }
        return with_message(head, terminated.message.as_ref());
    }
    if state.running.is_some() {
        return "running".into();
    }
    "unknown".into()
}

// ---------------------------------------------------------------- events
