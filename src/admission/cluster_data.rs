//! What the policy engine reads from the cluster during admission: the
//! [`ClusterData`] behind `configMap` and `apiCall` context entries.
//!
//! - **ConfigMaps** come from watched caches (`kube::runtime::reflector`
//!   stores), never from a GET per request. A namespace's watch starts the
//!   first time a policy reads a ConfigMap there, and the first request
//!   waits (at most [`ClusterDataLimits::store_ready_timeout`]) for its
//!   initial list. Per namespace rather than cluster-wide because policies
//!   read a few well-known namespaces (a platform namespace, the request's
//!   own), while a cluster-wide cache would hold every ConfigMap of the
//!   cluster (each up to 1 MiB, one CA bundle per namespace) in the
//!   webhook's memory. At most [`ClusterDataLimits::watched_namespaces`]
//!   namespaces are watched; ConfigMaps of further namespaces are read
//!   like an `apiCall` (GET, cached for the TTL).
//! - **`apiCall`** is a GET of the policy's `urlPath` against the API
//!   server with the operator's identity (its ServiceAccount: what it may
//!   read is what its RBAC grants). Answers, errors included, are cached
//!   for [`ClusterDataLimits::api_ttl`] (a few seconds: a burst of pods
//!   from one Deployment costs one call), in a cache of at most
//!   [`ClusterDataLimits::api_cache_entries`] paths; each call gives up
//!   after [`ClusterDataLimits::api_timeout`], well inside the webhook's
//!   request budget, so a slow API server makes the rule an `error` (or
//!   gives its `default`) instead of holding the admission request.
//!
//! The engine is synchronous and calls these methods while evaluating. The
//! webhook runs such evaluations on Tokio's blocking pool (see
//! `routes::answer_review`); the reads themselves are futures spawned on
//! the runtime and awaited through a channel with a timeout, so even a
//! call from the wrong thread blocks for at most that timeout and never
//! panics.
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, GroupVersionKind, ListParams};
use kube::core::Selector;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::Value;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::policy::{ClusterData, ClusterDataError, ParamSource};

/// Timeouts and sizes of [`ClusterReader`].
#[derive(Debug, Clone, Copy)]
pub struct ClusterDataLimits {
    /// Longest one `apiCall` GET may take.
    pub api_timeout: Duration,
    /// How long an `apiCall` answer is reused.
    pub api_ttl: Duration,
    /// Most `apiCall` answers kept.
    pub api_cache_entries: usize,
    /// Longest a request waits for a new namespace's ConfigMap cache.
    pub store_ready_timeout: Duration,
    /// Most namespaces whose ConfigMaps are watched.
    pub watched_namespaces: usize,
}

impl Default for ClusterDataLimits {
    fn default() -> Self {
        ClusterDataLimits {
            // The webhook answers within 4 s (503 after): a rule with a
            // couple of lookups still fits.
            api_timeout: Duration::from_millis(1500),
            api_ttl: Duration::from_secs(3),
            api_cache_entries: 256,
            store_ready_timeout: Duration::from_millis(1500),
            watched_namespaces: 32,
        }
    }
}

/// The operator's [`ClusterData`]: see the module documentation.
pub struct ClusterReader {
    client: Client,
    runtime: Handle,
    limits: ClusterDataLimits,
    watched: Mutex<HashMap<String, NamespaceWatch>>,
    answers: Mutex<TtlCache>,
    /// Parameter kinds found by discovery: resource and namespaced.
    discovered: Mutex<HashMap<String, (ApiResource, bool)>>,
}

/// A watch's latest error, cleared by its next success.
type WatchError = Arc<Mutex<Option<String>>>;

/// One namespace's ConfigMap cache and the task that fills it.
struct NamespaceWatch {
    store: Store<ConfigMap>,
    /// The watch's latest error while it has none of a later success: a
    /// request does not wait for a cache whose watch keeps failing.
    last_error: WatchError,
    task: JoinHandle<()>,
}

impl ClusterReader {
    /// A reader using `client`; watches and calls run on `runtime`.
    pub fn new(client: Client, runtime: Handle, limits: ClusterDataLimits) -> ClusterReader {
        ClusterReader {
            client,
            runtime,
            limits,
            watched: Mutex::new(HashMap::new()),
            answers: Mutex::new(TtlCache::new(limits.api_cache_entries)),
            discovered: Mutex::new(HashMap::new()),
        }
    }

    /// The namespace's cache, its watch started on first use; `None` when
    /// the most namespaces are already watched.
    fn namespace_watch(&self, namespace: &str) -> Option<(Store<ConfigMap>, WatchError)> {
        let mut watched = lock(&self.watched);
        if let Some(watch) = watched.get(namespace) {
            return Some((watch.store.clone(), Arc::clone(&watch.last_error)));
        }
        if watched.len() >= self.limits.watched_namespaces {
            return None;
        }
        let (store, writer) = reflector::store();
        let last_error = Arc::new(Mutex::new(None));
        let events = reflector::reflector(
            writer,
            watcher::watcher(
                Api::<ConfigMap>::namespaced(self.client.clone(), namespace),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        let errors = Arc::clone(&last_error);
        let name = namespace.to_string();
        let task = self.runtime.spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(_) => *lock(&errors) = None,
                    Err(error) => {
                        tracing::warn!(%error, namespace = %name, "ConfigMap watch error; retrying");
                        *lock(&errors) = Some(error.to_string());
                    }
                }
            }
        });
        tracing::info!(namespace, "watching ConfigMaps for policy context lookups");
        watched.insert(
            namespace.to_string(),
            NamespaceWatch {
                store: store.clone(),
                last_error: Arc::clone(&last_error),
                task,
            },
        );
        Some((store, last_error))
    }

    /// Runs `future` on the runtime and waits for it at most `timeout`.
    fn wait<T: Send + 'static>(
        &self,
        timeout: Duration,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let task = self.runtime.spawn(async move {
            // The receiver is gone after a timeout: nothing to tell.
            let _ = sender.send(future.await);
        });
        let answer = receiver.recv_timeout(timeout).ok();
        if answer.is_none() {
            task.abort();
        }
        answer
    }

    /// A GET through the cache.
    fn get(&self, path: &str) -> Result<Value, ClusterDataError> {
        if let Some(answer) = lock(&self.answers).get(path, self.limits.api_ttl) {
            tracing::debug!(path, "cluster lookup answered from the cache");
            return answer;
        }
        let what = format!("GET {path}");
        let client = self.client.clone();
        let request = http::Request::get(path).body(Vec::new());
        let answer = match request {
            Err(error) => Err(ClusterDataError::Failed {
                what,
                message: format!("not a valid request path: {error}"),
            }),
            Ok(request) => match self.wait(self.limits.api_timeout, async move {
                client.request::<Value>(request).await
            }) {
                Some(Ok(value)) => Ok(value),
                Some(Err(kube::Error::Api(status))) if status.is_not_found() => {
                    Err(ClusterDataError::NotFound { what })
                }
                Some(Err(error)) => Err(ClusterDataError::Failed {
                    what,
                    message: error.to_string(),
                }),
                None => Err(ClusterDataError::Timeout {
                    what,
                    timeout: self.limits.api_timeout,
                }),
            },
        };
        if let Err(error) = &answer {
            tracing::info!(%error, "cluster lookup failed");
        }
        lock(&self.answers).insert(path, answer.clone(), self.limits.api_ttl);
        answer
    }
}

impl ClusterData for ClusterReader {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Value, ClusterDataError> {
        let _span =
            tracing::debug_span!("context_lookup", kind = "configMap", namespace, name).entered();
        let Some((store, last_error)) = self.namespace_watch(namespace) else {
            return self.get(&format!("/api/v1/namespaces/{namespace}/configmaps/{name}"));
        };
        let ready = matches!(store.wait_until_ready().now_or_never(), Some(Ok(())));
        if !ready {
            if let Some(error) = lock(&last_error).clone() {
                return Err(ClusterDataError::Failed {
                    what: format!("the ConfigMap watch of namespace {namespace}"),
                    message: error,
                });
            }
            let waiting = store.clone();
            let became_ready = self
                .wait(self.limits.store_ready_timeout, async move {
                    waiting.wait_until_ready().await.is_ok()
                })
                .unwrap_or(false);
            if !became_ready {
                return Err(ClusterDataError::Timeout {
                    what: format!("the first list of ConfigMaps in namespace {namespace}"),
                    timeout: self.limits.store_ready_timeout,
                });
            }
        }
        let found = store.get(&ObjectRef::new(name).within(namespace));
        match found {
            Some(config_map) => {
                serde_json::to_value(&*config_map).map_err(|error| ClusterDataError::Failed {
                    what: format!("configmap {namespace}/{name}"),
                    message: error.to_string(),
                })
            }
            None => Err(ClusterDataError::NotFound {
                what: format!("configmap {namespace}/{name}"),
            }),
        }
    }

    fn api_get(&self, path: &str) -> Result<Value, ClusterDataError> {
        let _span = tracing::debug_span!("context_lookup", kind = "apiCall", path).entered();
        self.get(path)
    }

    /// Named ConfigMaps come from the watched cache; any other kind is
    /// found by discovery (is it namespaced, what is its plural) and read
    /// with a GET or a LIST through the answer cache.
    fn params(
        &self,
        source: &ParamSource,
        request_namespace: &str,
    ) -> Result<Vec<Value>, ClusterDataError> {
        let _span = tracing::debug_span!(
            "context_lookup",
            kind = "params",
            param_kind = %source.kind,
            api_version = %source.api_version,
        )
        .entered();
        let explicit_namespace = source.namespace.as_deref().filter(|n| !n.is_empty());
        if source.api_version == "v1"
            && source.kind == "ConfigMap"
            && let Some(name) = &source.name
        {
            let namespace = explicit_namespace.unwrap_or(request_namespace);
            return self.config_map(namespace, name).map(|found| vec![found]);
        }
        let (resource, namespaced) = self.discover(&source.api_version, &source.kind)?;
        let namespace = match (namespaced, explicit_namespace) {
            (false, _) => None,
            (true, Some(namespace)) => Some(namespace),
            (true, None) if !request_namespace.is_empty() => Some(request_namespace),
            (true, None) => {
                return Err(ClusterDataError::Failed {
                    what: format!("parameter {} {}", source.api_version, source.kind),
                    message:
                        "a namespaced kind, a cluster-scoped request and no paramRef.namespace"
                            .into(),
                });
            }
        };
        let group_version = if resource.group.is_empty() {
            format!("/api/{}", resource.version)
        } else {
            format!("/apis/{}/{}", resource.group, resource.version)
        };
        let base = match namespace {
            Some(namespace) => {
                format!("{group_version}/namespaces/{namespace}/{}", resource.plural)
            }
            None => format!("{group_version}/{}", resource.plural),
        };
        let request = kube::core::Request::new(base);
        let built = match (&source.name, &source.selector) {
            (Some(name), _) => request.get(name, &Default::default()),
            (None, selector) => {
                let selector = selector_text(selector.as_ref())?;
                request.list(&ListParams::default().labels(&selector))
            }
        };
        let path = built
            .map_err(|error| ClusterDataError::Failed {
                what: format!("parameter {} {}", source.api_version, source.kind),
                message: error.to_string(),
            })?
            .uri()
            .to_string();
        let answer = self.get(&path)?;
        Ok(match source.name {
            Some(_) => vec![answer],
            None => answer
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

impl ClusterReader {
    /// The API resource of `api_version`/`kind` and whether it is
    /// namespaced, from discovery; answers are kept for the process's life
    /// (a kind's scope and plural do not change), failures are not.
    fn discover(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), ClusterDataError> {
        let key = format!("{api_version}/{kind}");
        if let Some(found) = lock(&self.discovered).get(&key) {
            return Ok(found.clone());
        }
        let what = format!("discovery of {api_version} {kind}");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let client = self.client.clone();
        let found = match self.wait(self.limits.api_timeout, async move {
            kube::discovery::pinned_kind(&client, &gvk).await
        }) {
            Some(Ok((resource, capabilities))) => (
                resource,
                capabilities.scope == kube::discovery::Scope::Namespaced,
            ),
            Some(Err(error)) => {
                return Err(ClusterDataError::Failed {
                    what,
                    message: error.to_string(),
                });
            }
            None => {
                return Err(ClusterDataError::Timeout {
                    what,
                    timeout: self.limits.api_timeout,
                });
            }
        };
        lock(&self.discovered).insert(key, found.clone());
        Ok(found)
    }
}

/// A `paramRef.selector` as a label selector query (empty: everything).
fn selector_text(selector: Option<&Value>) -> Result<String, ClusterDataError> {
    let Some(selector) = selector else {
        return Ok(String::new());
    };
    let invalid = |message: String| ClusterDataError::Failed {
        what: "paramRef.selector".into(),
        message,
    };
    let selector: LabelSelector =
        serde_json::from_value(selector.clone()).map_err(|e| invalid(e.to_string()))?;
    let selector = Selector::try_from(selector).map_err(|e| invalid(e.to_string()))?;
    Ok(selector.to_string())
}

impl Drop for ClusterReader {
    fn drop(&mut self) {
        for watch in lock(&self.watched).values() {
            watch.task.abort();
        }
    }
}

/// A lock that survives a panic elsewhere: the data it guards (caches,
/// an error text) stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `apiCall` answers by path, each for a TTL, at most `capacity` of them.
struct TtlCache {
    capacity: usize,
    entries: HashMap<String, (Instant, Result<Value, ClusterDataError>)>,
}

impl TtlCache {
    fn new(capacity: usize) -> TtlCache {
        TtlCache {
            capacity,
            entries: HashMap::new(),
        }
    }

    fn get(&self, path: &str, ttl: Duration) -> Option<Result<Value, ClusterDataError>> {
        let (stored, answer) = self.entries.get(path)?;
        (stored.elapsed() < ttl).then(|| answer.clone())
    }

    fn insert(&mut self, path: &str, answer: Result<Value, ClusterDataError>, ttl: Duration) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(path) {
            self.entries.retain(|_, (stored, _)| stored.elapsed() < ttl);
            // Still full of fresh answers: the oldest goes.
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (stored, _))| *stored)
                    .map(|(key, _)| key.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries
            .insert(path.to_string(), (Instant::now(), answer));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    /// A fake API server: `paths` answer 200 with their body, anything
    /// else 404; `delay` holds every answer back; requests are counted.
    fn fake_client(paths: Vec<(&str, Value)>, delay: Duration) -> (Client, Arc<AtomicUsize>) {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let paths: HashMap<String, Value> = paths
            .into_iter()
            .map(|(path, body)| (path.to_string(), body))
            .collect();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            counter.fetch_add(1, Ordering::SeqCst);
            let key = match request.uri().query() {
                Some(query) => format!("{}?{query}", request.uri().path()),
                None => request.uri().path().to_string(),
            };
            let found = paths.get(&key).cloned();
            async move {
                tokio::time::sleep(delay).await;
                let (status, body) = match found {
                    Some(body) => (200, body),
                    None => (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                };
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(body.to_string().into_bytes()))
            }
        });
        (Client::new(service, "default"), requests)
    }

    fn limits() -> ClusterDataLimits {
        ClusterDataLimits {
            api_timeout: Duration::from_millis(300),
            api_ttl: Duration::from_secs(60),
            api_cache_entries: 2,
            store_ready_timeout: Duration::from_millis(300),
            watched_namespaces: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn api_answers_are_cached_and_errors_are_typed() {
        let (client, requests) = fake_client(
            vec![("/api/v1/namespaces/a/pods", json!({"items": [1, 2]}))],
            Duration::ZERO,
        );
        let reader = Arc::new(ClusterReader::new(client, Handle::current(), limits()));
        let answers = tokio::task::spawn_blocking(move || {
            let first = reader.api_get("/api/v1/namespaces/a/pods");
            let again = reader.api_get("/api/v1/namespaces/a/pods");
            let missing = reader.api_get("/api/v1/namespaces/b/pods");
            let missing_again = reader.api_get("/api/v1/namespaces/b/pods");
            (first, again, missing, missing_again)
        })
        .await
        .expect("the blocking task ends");
        assert_eq!(answers.0, Ok(json!({"items": [1, 2]})));
        assert_eq!(answers.1, answers.0);
        assert_eq!(
            answers.2,
            Err(ClusterDataError::NotFound {
                what: "GET /api/v1/namespaces/b/pods".into()
            })
        );
        assert_eq!(answers.3, answers.2);
        // One request per path: the rest came from the cache.
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_api_server_times_out() {
        let (client, _requests) = fake_client(
            vec![("/api/v1/nodes", json!({"items": []}))],
            Duration::from_secs(5),
        );
        let reader = Arc::new(ClusterReader::new(client, Handle::current(), limits()));
        let started = Instant::now();
        let answer = tokio::task::spawn_blocking(move || reader.api_get("/api/v1/nodes"))
            .await
            .expect("the blocking task ends");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            answer,
            Err(ClusterDataError::Timeout {
                what: "GET /api/v1/nodes".into(),
                timeout: Duration::from_millis(300)
            })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn config_maps_beyond_the_watched_namespaces_are_read_once_per_ttl() {
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "n"}, "data": {"k": "v"}});
        let (client, requests) = fake_client(
            vec![("/api/v1/namespaces/n/configmaps/c", config_map.clone())],
            Duration::ZERO,
        );
        let reader = Arc::new(ClusterReader::new(client, Handle::current(), limits()));
        let (first, second) = tokio::task::spawn_blocking(move || {
            (reader.config_map("n", "c"), reader.config_map("n", "c"))
        })
        .await
        .expect("the blocking task ends");
        assert_eq!(first, Ok(config_map));
        assert_eq!(second, first);
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_answer_cache_is_bounded_and_expires() {
        let mut cache = TtlCache::new(2);
        let ttl = Duration::from_secs(60);
        cache.insert("/a", Ok(json!(1)), ttl);
        cache.insert("/b", Ok(json!(2)), ttl);
        cache.insert("/c", Ok(json!(3)), ttl);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("/a", ttl), None, "the oldest went");
        assert_eq!(cache.get("/c", ttl), Some(Ok(json!(3))));
        assert_eq!(cache.get("/c", Duration::ZERO), None, "expired");
        let mut off = TtlCache::new(0);
        off.insert("/a", Ok(json!(1)), ttl);
        assert_eq!(off.len(), 0);
    }
}
