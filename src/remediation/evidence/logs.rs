//! The previous log tail of each crashing container, bounded in lines and
//! bytes.
use super::*;

/// How to read a crashed container's log: the previous instance's after a
/// restart, the current one when it terminated without restarting (a Job).
pub(super) fn crash_log_source(container: &ContainerStatus) -> Option<bool> {
    let state = container.state.as_ref();
    let waiting = state
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.as_deref());
    let restarted = container
        .last_state
        .as_ref()
        .is_some_and(|s| s.terminated.is_some());
    if restarted || (waiting == Some("CrashLoopBackOff") && container.restart_count > 0) {
        return Some(true);
    }
    let failed_now = state
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.exit_code != 0 || t.reason.as_deref() == Some("OOMKilled"));
    failed_now.then_some(false)
}

/// The log tail of each crashed container, from the first sampled pod where
/// it crashed. Errors (no previous log yet, logs rotated away) skip the
/// container: missing logs are not worth failing the evidence for.
pub(super) async fn crash_log_tails(
    client: &Client,
    namespace: &str,
    pods: &[&Pod],
) -> Vec<LogTail> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut done = BTreeSet::new();
    let mut tails = Vec::new();
    for pod in pods {
        let Some(pod_name) = pod.metadata.name.as_deref() else {
            continue;
        };
        // Collected, not a lazy iterator: an iterator of closures held across
        // the `.await` below makes the future's Send bound fail to resolve.
        let statuses: Vec<&ContainerStatus> = pod
            .status
            .iter()
            .flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            })
            .collect();
        for container in statuses {
            if tails.len() >= MAX_LOG_TAILS || done.contains(&container.name) {
                continue;
            }
            let Some(previous) = crash_log_source(container) else {
                continue;
            };
            let params = LogParams {
                container: Some(container.name.clone()),
                previous,
                tail_lines: Some(LOG_TAIL_LINES),
                limit_bytes: Some(LOG_LIMIT_BYTES),
                ..LogParams::default()
            };
            match api.logs(pod_name, &params).await {
                Ok(text) => {
                    let lines = log_lines(&text);
                    if lines.is_empty() {
                        continue;
                    }
                    done.insert(container.name.clone());
                    tails.push(LogTail {
                        pod: pod_name.to_string(),
                        container: container.name.clone(),
                        previous,
                        lines,
                    });
                }
                Err(err) => {
                    tracing::debug!(pod = pod_name, container = %container.name, error = %err, "no crash log");
                }
            }
        }
    }
    tails
}

/// The last [`LOG_TAIL_LINES`] non-empty lines, redacted and cut to size.
pub(super) fn log_lines(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let skip = lines
        .len()
        .saturating_sub(usize::try_from(LOG_TAIL_LINES).unwrap_or(usize::MAX));
    lines[skip..]
        .iter()
        .map(|line| truncate(&redact(line), MAX_LINE_BYTES))
        .collect()
}

// ---------------------------------------------------------------- management
