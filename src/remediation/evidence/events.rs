//! The Events of the failing pods, their ReplicaSet or Job and the workload,
//! matched by `involvedObject.uid`, deduplicated and newest first.
use super::*;

/// The objects whose Events belong to the evidence: the workload, the
/// sampled failing pods and their controllers (ReplicaSet or Job).
pub(super) fn related_uids(workload: &WorkloadRef, pods: &[&Pod]) -> BTreeSet<String> {
    let mut uids = BTreeSet::from([workload.uid.clone()]);
    for pod in pods {
        uids.extend(pod.metadata.uid.clone());
        uids.extend(
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
        );
    }
    uids.retain(|uid| !uid.is_empty());
    uids
}

/// Events whose `involvedObject.uid` is one of `uids`, by field selector
/// (one small query per object rather than every Event of the namespace).
pub(super) async fn fetch_events(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    uids: &BTreeSet<String>,
) -> Result<Vec<Event>, EvidenceError> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let lists: Vec<Vec<Event>> = futures::stream::iter(uids.iter().cloned())
        .map(|uid| {
            let api = api.clone();
            async move {
                let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
                api.list(&params).await.map(|list| list.items)
            }
        })
        .buffer_unordered(EVENT_QUERIES_IN_FLIGHT)
        .try_collect()
        .await
        .map_err(|source| EvidenceError::List {
            what: "Events",
            workload: describe(namespace, workload),
            source: Box::new(source),
        })?;
    Ok(lists.into_iter().flatten().collect())
}

/// Pod names made by a ReplicaSet (`web-7d9f8c6b5-x2x7k`) or a Job
/// (`nightly-28911-abcde`): the random suffix differs per replica.
pub(super) static GENERATED_POD_NAME: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"\b(?P<base>[a-z0-9][a-z0-9.-]*?-[a-z0-9]{5,10})-[a-z0-9]{5}\b").ok()
});
/// Object uids, which kubelet messages quote per pod.
pub(super) static UID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b").ok()
});

/// The dedup key of an event message: the same message about different
/// replicas of one template is one finding.
pub(super) fn normalize_message(message: &str, pod_names: &[String]) -> String {
    let mut normalized = message.to_string();
    for name in pod_names.iter().filter(|n| !n.is_empty()) {
        normalized = normalized.replace(name.as_str(), "<pod>");
    }
    if let Some(pattern) = GENERATED_POD_NAME.as_ref() {
        normalized = pattern.replace_all(&normalized, "$base-<pod>").into_owned();
    }
    if let Some(pattern) = UID.as_ref() {
        normalized = pattern.replace_all(&normalized, "<uid>").into_owned();
    }
    normalized
}

pub(super) fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or(event.last_timestamp.as_ref().map(|t| t.0))
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.first_timestamp.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Keeps Events of `uids` only (a namesake's Events never count),
/// deduplicates by (reason, normalised message), newest first, at most
/// [`MAX_EVENTS`]. Messages are redacted.
pub(super) fn summarize_events(
    events: Vec<Event>,
    uids: &BTreeSet<String>,
    pod_names: &[String],
) -> Vec<EventSummary> {
    let mut by_key: BTreeMap<(String, String), (Option<Timestamp>, EventSummary)> = BTreeMap::new();
    for event in events {
        let Some(uid) = event.involved_object.uid.as_deref() else {
            continue;
        };
        if !uids.contains(uid) {
            continue;
        }
        let reason = event.reason.clone().unwrap_or_default();
        let message = event.message.clone().unwrap_or_default();
        let key = (reason.clone(), normalize_message(&message, pod_names));
        let seen = event_time(&event);
        let count = event
            .series
            .as_ref()
            .map(|s| s.count.unwrap_or(1))
            .or(event.count)
            .unwrap_or(1)
            .max(1);
        let summary = EventSummary {
            type_: event.type_.clone().unwrap_or_default(),
            reason,
            message: truncate(&redact(&message), MAX_MESSAGE_BYTES),
            object: format!(
                "{}/{}",
                event.involved_object.kind.as_deref().unwrap_or("?"),
                event.involved_object.name.as_deref().unwrap_or("?")
            ),
            count,
            last_seen: seen.map(Time),
        };
        match by_key.get_mut(&key) {
            Some((newest, merged)) => {
                merged.count = merged.count.saturating_add(count);
                if seen > *newest {
                    let total = merged.count;
                    *merged = EventSummary {
                        count: total,
                        ..summary
                    };
                    *newest = seen;
                }
            }
            None => {
                by_key.insert(key, (seen, summary));
            }
        }
    }
    let mut summaries: Vec<(Option<Timestamp>, EventSummary)> = by_key.into_values().collect();
    summaries.sort_by_key(|(seen, _)| std::cmp::Reverse(*seen));
    summaries
        .into_iter()
        .take(MAX_EVENTS)
        .map(|(_, summary)| summary)
        .collect()
}

// ---------------------------------------------------------------- logs
