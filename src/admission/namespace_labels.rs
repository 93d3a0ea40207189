//! The labels of the request's namespace, for `namespaceSelector` matches
//! and CEL's `namespaceObject`: an AdmissionReview names the namespace but
//! does not carry its labels, so the webhook keeps them in a watched cache.
//!
//! One cluster-wide metadata-only watch: namespaces are few and small, and
//! only their labels are needed, so the cache holds object metadata and no
//! specs or statuses. The server waits (briefly) for the first list before
//! it serves, so a selector is not judged against "no labels" right after a
//! start; a namespace created a moment before its first object may still be
//! missing, and is then judged as having no labels, as in any cache-backed
//! admission controller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::task::JoinHandle;

/// The watched labels of every namespace.
#[derive(Clone)]
pub struct NamespaceLabels {
    store: Store<PartialObjectMeta<Namespace>>,
}

/// A namespace's cached metadata; [`NamespaceEntry::labels`] borrows from it.
pub struct NamespaceEntry(Arc<PartialObjectMeta<Namespace>>);

impl NamespaceEntry {
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.0.metadata.labels.as_ref()
    }
}

impl NamespaceLabels {
    /// Starts the watch on the current runtime, and waits at most
    /// `ready_timeout` for its first list (a warning, not an error, when it
    /// takes longer: the cache fills in the background).
    pub async fn watch(
        client: Client,
        ready_timeout: Duration,
    ) -> (NamespaceLabels, JoinHandle<()>) {
        let (store, writer) = reflector::store();
        let events = reflector::reflector(
            writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let Err(error) = event {
                    tracing::warn!(%error, "namespace watch error; retrying");
                }
            }
        });
        let labels = NamespaceLabels { store };
        if tokio::time::timeout(ready_timeout, labels.store.wait_until_ready())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_ms = ready_timeout.as_millis() as u64,
                "namespace labels not listed yet; namespaceSelector sees no labels until they are"
            );
        }
        (labels, task)
    }

    /// The cached namespace `name`, if it is known.
    pub fn get(&self, name: &str) -> Option<NamespaceEntry> {
        self.store.get(&ObjectRef::new(name)).map(NamespaceEntry)
    }

    /// A cache over `store`, for tests that fill it themselves.
    #[cfg(test)]
    pub fn from_store(store: Store<PartialObjectMeta<Namespace>>) -> NamespaceLabels {
        NamespaceLabels { store }
    }
}
