//! What the bench's own watches see, each event stamped on arrival: the
//! first failing pod of every Deployment, and every Remediation `ADDED`.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiops_operator::remediation::crd::Remediation;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

use crate::{PULL_REASONS, log};

/// What the bench's own watches saw, stamped on arrival.
#[derive(Default)]
pub struct Observed {
    /// (namespace, deployment) → first pod seen in ErrImagePull or ImagePullBackOff.
    pub first_failing: HashMap<(String, String), Instant>,
    /// (namespace, deployment) → first pod seen in ImagePullBackOff.
    pub first_backoff: HashMap<(String, String), Instant>,
    /// (namespace, target name) → the ADDED times of its Remediations.
    pub added: BTreeMap<(String, String), Vec<(Instant, String)>>,
    /// Remediations first seen by a (re)list rather than an ADDED event.
    pub listed: BTreeSet<String>,
    pub pod_events: u64,
    pub remediation_events: u64,
    pub relists: u64,
}

pub type Shared = Arc<Mutex<Observed>>;

pub fn lock(observed: &Shared) -> std::sync::MutexGuard<'_, Observed> {
    observed.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn is_bench_namespace(ns: &str) -> bool {
    ns.starts_with("bench-detect-")
}

pub fn observe_pod(observed: &Shared, at: Instant, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let Some(app) = pod.labels().get("app").cloned() else {
        return;
    };
    let reasons: Vec<&str> = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.as_deref())
        .collect();
    let mut seen = lock(observed);
    seen.pod_events += 1;
    if reasons.iter().any(|r| PULL_REASONS.contains(r)) {
        seen.first_failing
            .entry((ns.clone(), app.clone()))
            .or_insert(at);
    }
    if reasons.contains(&"ImagePullBackOff") {
        seen.first_backoff.entry((ns, app)).or_insert(at);
    }
}

pub fn observe_remediation(observed: &Shared, at: Instant, r: &Remediation, added: bool) {
    let ns = r.namespace().unwrap_or_default();
    if !is_bench_namespace(&ns) {
        return;
    }
    let name = r.name_any();
    let mut seen = lock(observed);
    seen.remediation_events += 1;
    let key = (ns, r.spec.target.name.clone());
    let entry = seen.added.entry(key).or_default();
    if entry.iter().any(|(_, n)| n == &name) {
        return;
    }
    entry.push((at, name.clone()));
    if !added {
        seen.listed.insert(name);
    }
}

/// A raw watch (so `ADDED` is told apart from `MODIFIED`), relisting on 410.
/// Every event is stamped the moment it arrives.
pub async fn watch_raw<K, F>(api: Api<K>, labels: Option<&str>, observed: Shared, on_event: F)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(&Shared, Instant, &K, bool),
{
    let mut list_params = ListParams::default();
    let mut watch_params = WatchParams::default().timeout(290);
    if let Some(labels) = labels {
        list_params = list_params.labels(labels);
        watch_params = watch_params.labels(labels);
    }
    let mut first = true;
    loop {
        let list = match api.list(&list_params).await {
            Ok(list) => list,
            Err(error) => {
                log(format!("watch: list failed ({error}); retrying"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !first {
            lock(&observed).relists += 1;
        }
        // Listed objects are not ADDED events (there should be none of
        // ours on the first list: the namespaces are fresh).
        for item in &list.items {
            on_event(&observed, Instant::now(), item, false);
        }
        first = false;
        let mut version = list.metadata.resource_version.unwrap_or_default();
        'watch: loop {
            let stream = match api.watch(&watch_params, &version).await {
                Ok(stream) => stream,
                Err(error) => {
                    log(format!("watch: failed ({error}); relisting"));
                    break 'watch;
                }
            };
            let mut stream = std::pin::pin!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(event)) => {
                        let at = Instant::now();
                        match event {
                            WatchEvent::Added(o) => {
                                version = o.resource_version().unwrap_or_default();
                                on_event(&observed, at, &o, true);
                            }
                            WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                                version = o.resource_version().unwrap_or_default();
                                on_event(&observed, at, &o, false);
                            }
                            WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                            WatchEvent::Error(status) => {
                                log(format!(
                                    "watch: {} {}; relisting",
                                    status.code, status.message
                                ));
                                break 'watch;
                            }
                        }
                    }
                    Ok(None) => continue 'watch,
                    Err(error) => {
                        log(format!("watch: stream error ({error}); relisting"));
                        break 'watch;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
