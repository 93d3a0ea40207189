//! The reflector stores the repair loop reads instead of asking the API
//! server: every pod, and the ReplicaSets and Jobs that sit between a pod
//! and its workload.
//!
//! The stores live as long as one leadership term: the controller starts
//! their watches when this replica starts to lead and drops them when it
//! stops, so a replica that does not lead watches nothing. The pod watch is
//! the detector's own: it drives the stream, and each event reaches it
//! after the pod store has taken it in. A reader gets the pod store only
//! once its first complete list is in; before that it reads from the API as
//! it would without a store. [`LeaderStores::workload_pods`] and
//! [`LeaderStores::running_images`] are those reads.
//!
//! The pod watch also feeds [`ReadyRevisions`]: which revisions of which
//! StatefulSets, DaemonSets and ReplicaSets the operator saw Ready, which a
//! diagnosis reads when no pod of a replaced revision is left to look at.
//!
//! Memory: the pod store holds every pod of the cluster, so each pod is
//! trimmed to what detection, evidence and verification read (see
//! [`trim_pod`]) and kept as a [`StoredPod`]; owners are held as metadata
//! only, trimmed to their names, uids and owner references.
use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde_json::Value;

use crate::k8s::workload::pod_selector;

use super::evidence::ReadyRevisions;
use super::owner::OwnerStores;

/// Pod events as the detector sees them, after the pod store applied them.
pub type PodEvents = BoxStream<'static, Result<watcher::Event<StoredPod>, watcher::Error>>;

/// One term's stores.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<StoredPod>,
    pub owners: OwnerStores,
    /// Revisions seen Ready during this term.
    pub ready: ReadyRevisions,
}

/// Label keys and values, in key order.
type Labels = Box<[(Box<str>, Box<str>)]>;

/// A pod as the pod store keeps it. The store is most of the operator's
/// memory in a large cluster, and the generated `Pod` type is large even
/// trimmed, because its structs hold every optional field inline (a `Pod`
/// takes 2.4 KiB, each `Container` 2.1 KiB and each container status
/// 0.75 KiB before any string). So the store keeps in place what its own
/// reads need (name, namespace, uid, labels, whether it runs, its images)
/// and the rest of the trimmed pod as compact JSON, read back into a `Pod`
/// only for the few pods a diagnosis or a verification asks for. Nothing is
/// held twice: the JSON leaves out what is kept in place, and the labels are
/// a boxed slice because a `BTreeMap` allocates a node of eleven entries
/// for even one label.
#[derive(Clone, Debug)]
pub struct StoredPod {
    /// Name, namespace and uid only; the store's keys come from these.
    metadata: ObjectMeta,
    labels: Option<Labels>,
    running: bool,
    images: Box<[Box<str>]>,
    /// The trimmed pod less its name, namespace, uid and labels.
    trimmed: Box<[u8]>,
}

impl StoredPod {
    /// Trims `pod` ([`trim_pod`]) and keeps it.
    pub fn new(mut pod: Pod) -> StoredPod {
        trim_pod(&mut pod);
        let running = pod
            .status
            .as_ref()
            .is_some_and(|s| s.phase.as_deref() == Some("Running"));
        let images = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().filter_map(|c| c.image.as_deref()))
            .map(Box::from)
            .collect();
        let labels = pod.metadata.labels.take().map(|labels| {
            labels
                .into_iter()
                .map(|(key, value)| (key.into_boxed_str(), value.into_boxed_str()))
                .collect()
        });
        let metadata = ObjectMeta {
            name: pod.metadata.name.take(),
            namespace: pod.metadata.namespace.take(),
            uid: pod.metadata.uid.take(),
            ..ObjectMeta::default()
        };
        // A `Pod` always serializes; an empty record would only read back
        // as a pod with its name, uid, labels and nothing else.
        let trimmed = serde_json::to_vec(&pod)
            .unwrap_or_default()
            .into_boxed_slice();
        StoredPod {
            metadata,
            labels,
            running,
            images,
            trimmed,
        }
    }

    /// The trimmed pod.
    pub fn pod(&self) -> Pod {
        let mut pod: Pod = serde_json::from_slice(&self.trimmed).unwrap_or_default();
        pod.metadata.name = self.metadata.name.clone();
        pod.metadata.namespace = self.metadata.namespace.clone();
        pod.metadata.uid = self.metadata.uid.clone();
        pod.metadata.labels = self.label_map();
        pod
    }

    /// The labels as the API types hold them.
    fn label_map(&self) -> Option<BTreeMap<String, String>> {
        self.labels.as_ref().map(|labels| {
            labels
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect()
        })
    }

    /// Whether `selector` selects this pod.
    fn selected_by(&self, selector: &Selector) -> bool {
        selector.matches(&self.label_map().unwrap_or_default())
    }
}

impl Resource for StoredPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        Pod::kind(dt)
    }

    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        Pod::group(dt)
    }

    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        Pod::version(dt)
    }

    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        Pod::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Records the revision of the event's pod if it has been Ready long enough.
fn observe_readiness(ready: &ReadyRevisions, event: &watcher::Event<Pod>) {
    use watcher::Event;
    if let Event::Apply(pod) | Event::InitApply(pod) | Event::Delete(pod) = event {
        ready.observe(pod, k8s_openapi::jiff::Timestamp::now());
    }
}

/// A pod watch event with the pod as the store keeps it.
fn stored(event: watcher::Event<Pod>) -> watcher::Event<StoredPod> {
    use watcher::Event;
    match event {
        Event::Apply(pod) => Event::Apply(StoredPod::new(pod)),
        Event::Delete(pod) => Event::Delete(StoredPod::new(pod)),
        Event::InitApply(pod) => Event::InitApply(StoredPod::new(pod)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

/// What fills one term's stores: both must be driven for the stores to
/// fill, and dropping them stops the watches.
pub struct Watches {
    /// The pod watch, driven by the detector.
    pub pods: PodEvents,
    /// The ReplicaSet and Job watches; runs until dropped.
    pub owners: BoxFuture<'static, ()>,
}

/// New, empty stores and the watches that fill them.
pub fn watch(client: &Client) -> (Stores, Watches) {
    let config = || watcher::Config::default().any_semantic();
    let (pods, pod_writer) = reflector::store();
    let ready = ReadyRevisions::default();
    let observer = ready.clone();
    let pod_events = reflector::reflector(
        pod_writer,
        watcher::watcher(Api::<Pod>::all(client.clone()), config())
            .default_backoff()
            .map_ok(move |event| {
                observe_readiness(&observer, &event);
                stored(event)
            }),
    )
    .boxed();
    let (replica_sets, replica_set_writer) = reflector::store();
    let replica_set_events = reflector::reflector(
        replica_set_writer,
        // `PartialObjectMeta` makes these metadata-only lists and watches.
        watcher::watcher(
            Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()),
            config(),
        )
        .default_backoff()
        .modify(trim_owner),
    );
    let (jobs, job_writer) = reflector::store();
    let job_events = reflector::reflector(
        job_writer,
        watcher::watcher(Api::<PartialObjectMeta<Job>>::all(client.clone()), config())
            .default_backoff()
            .modify(trim_owner),
    );
    let owners = async move {
        futures::join!(
            drain(replica_set_events, "ReplicaSet"),
            drain(job_events, "Job")
        );
    }
    .boxed();
    let stores = Stores {
        pods,
        owners: OwnerStores { replica_sets, jobs },
        ready,
    };
    let watches = Watches {
        pods: pod_events,
        owners,
    };
    (stores, watches)
}

/// Polls a watch whose only product is its store.
async fn drain<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    kind: &'static str,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if let Err(error) = event {
            tracing::warn!(%error, kind, "owner watch error; retrying");
        }
    }
}

/// Trims a pod to what the repair loop reads from it: name, namespace,
/// uid, creation time, labels and owner references; each container's name
/// and image (the spec's image, which the status may show resolved to a
/// digest); and the status, less addresses, per-container resources and
/// the conditions nothing reads (all but `Ready` and an unschedulable
/// `PodScheduled`).
/// Annotations, managed fields, env, volumes, probes and the rest of the
/// spec are dropped: with thousands of pods they would be most of the
/// store.
pub fn trim_pod(pod: &mut Pod) {
    let metadata = &mut pod.metadata;
    metadata.managed_fields = None;
    metadata.annotations = None;
    metadata.finalizers = None;
    metadata.generate_name = None;
    if let Some(spec) = pod.spec.take() {
        let name_and_image = |c: Container| Container {
            name: c.name,
            image: c.image,
            ..Container::default()
        };
        pod.spec = Some(PodSpec {
            containers: spec.containers.into_iter().map(name_and_image).collect(),
            init_containers: spec
                .init_containers
                .map(|list| list.into_iter().map(name_and_image).collect()),
            ..PodSpec::default()
        });
    }
    if let Some(status) = pod.status.as_mut() {
        status.host_ip = None;
        status.host_ips = None;
        status.pod_ip = None;
        status.pod_ips = None;
        status.qos_class = None;
        status.allocated_resources = None;
        status.resources = None;
        // Readiness reads `Ready`, detection an unschedulable `PodScheduled`;
        // the other conditions of a healthy pod are most of its status.
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| {
                c.type_ == "Ready" || (c.type_ == "PodScheduled" && c.status == "False")
            });
            for condition in conditions.iter_mut() {
                condition.last_probe_time = None;
            }
        }
        for container in status
            .container_statuses
            .iter_mut()
            .chain(status.init_container_statuses.iter_mut())
            .chain(status.ephemeral_container_statuses.iter_mut())
            .flatten()
        {
            container.volume_mounts = None;
            container.resources = None;
            container.allocated_resources = None;
            container.allocated_resources_status = None;
            container.user = None;
        }
    }
}

/// Trims an owner to what owner resolution reads: name, namespace, uid and
/// owner references.
fn trim_owner<K>(owner: &mut PartialObjectMeta<K>)
where
    PartialObjectMeta<K>: Resource,
{
    let metadata = owner.meta_mut();
    metadata.managed_fields = None;
    metadata.annotations = None;
    metadata.labels = None;
}

/// The stores of the current leadership term; none while this replica
/// does not lead.
#[derive(Default)]
pub struct LeaderStores(ArcSwapOption<Stores>);

impl LeaderStores {
    /// A term starts: readers use these stores from now on.
    pub fn begin(&self, stores: Stores) {
        self.0.store(Some(Arc::new(stores)));
    }

    /// The term ended: its stores are no longer filled.
    pub fn end(&self) {
        self.0.store(None);
    }

    /// The revisions seen Ready during this term (none outside one).
    pub fn ready_revisions(&self) -> ReadyRevisions {
        self.0
            .load_full()
            .map(|stores| stores.ready.clone())
            .unwrap_or_default()
    }

    /// The pod store, once it holds a complete list.
    pub fn pods(&self) -> Option<Store<StoredPod>> {
        let stores = self.0.load_full()?;
        is_ready(&stores.pods).then(|| stores.pods.clone())
    }

    /// The pods selected by the workload (or the bare Pod itself), by name:
    /// from the pod store once it is complete, from the API before.
    pub async fn workload_pods(
        &self,
        client: &Client,
        namespace: &str,
        live: &Value,
    ) -> Result<Vec<Pod>, kube::Error> {
        let store = self.pods();
        if live.get("kind").and_then(Value::as_str) == Some("Pod") {
            let name = live
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(store) = store {
                let key = ObjectRef::new(name).within(namespace);
                return Ok(store.get(&key).map(|pod| pod.pod()).into_iter().collect());
            }
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            return Ok(api.get_opt(name).await?.into_iter().collect());
        }
        // No labels to match selects nothing here, not every pod in the namespace.
        let selector = pod_selector(live);
        if selector.selects_all() {
            return Ok(Vec::new());
        }
        let Some(store) = store else {
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let params = ListParams::default().labels_from(&selector);
            return Ok(api.list(&params).await?.items);
        };
        let mut pods: Vec<Pod> = store
            .state_filter(|pod| {
                pod.metadata.namespace.as_deref() == Some(namespace) && pod.selected_by(&selector)
            })
            .into_iter()
            .map(|pod| pod.pod())
            .collect();
        // In the order a list returns them.
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// Images running in the cluster: candidates the model may choose from.
    /// From the pod store; listing every running pod of the cluster is left to
    /// the moments before the store is complete.
    pub async fn running_images(&self, client: &Client) -> Result<Vec<String>, kube::Error> {
        let mut images: Vec<String> = match self.pods() {
            Some(store) => store
                .state_filter(|pod| pod.running)
                .iter()
                .flat_map(|pod| pod.images.iter().map(|image| image.to_string()))
                .collect(),
            None => {
                let api: Api<Pod> = Api::all(client.clone());
                let params = ListParams::default().fields("status.phase=Running");
                api.list(&params)
                    .await?
                    .items
                    .iter()
                    .filter_map(|p| p.spec.as_ref())
                    .flat_map(|s| s.containers.iter().filter_map(|c| c.image.clone()))
                    .collect()
            }
        };
        images.sort();
        images.dedup();
        Ok(images)
    }
}

/// Whether the store has taken in its first complete list.
pub fn is_ready<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    #[test]
    fn a_trimmed_pod_keeps_what_detection_and_evidence_read() {
        let mut pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-5d8f-abcde", "namespace": "shop", "uid": "u",
                "generateName": "web-5d8f-", "labels": {"app": "web"},
                "annotations": {"big": "x"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-5d8f", "uid": "rs", "controller": true}],
                "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": "n1", "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [{"name": "app", "image": "nginx:1.25.5",
                    "env": [{"name": "PASSWORD", "value": "x"}],
                    "command": ["nginx"]}],
                "initContainers": [{"name": "setup", "image": "busybox:1.36"}]},
            "status": {"phase": "Pending", "podIP": "10.0.0.1", "qosClass": "BestEffort",
                "startTime": "2024-01-01T00:00:00Z",
                "conditions": [{"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "False", "lastProbeTime": "2024-01-01T00:00:00Z",
                        "lastTransitionTime": "2024-01-01T00:00:00Z"},
                    {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": "app", "image": "nginx:1.25.5",
                    "imageID": "", "ready": false, "restartCount": 2,
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "m"}},
                    "lastState": {"terminated": {"exitCode": 1}}}]}
        }))
        .expect("pod fixture");
        let stored = StoredPod::new(pod.clone());
        trim_pod(&mut pod);
        // The store gives back exactly the trimmed pod, and keeps the
        // fields its own reads need in place.
        assert_eq!(stored.pod(), pod);
        assert!(stored.selected_by(&Selector::from_iter([("app", "web")])));
        assert!(!stored.selected_by(&Selector::from_iter([("app", "db")])));
        assert_eq!(stored.namespace().as_deref(), Some("shop"));
        assert_eq!(stored.uid().as_deref(), Some("u"));
        assert!(!stored.running, "Pending");
        assert_eq!(&*stored.images, [Box::from("nginx:1.25.5")]);
        // What is kept in place is not kept again in the JSON.
        let record: Value = serde_json::from_slice(&stored.trimmed).expect("JSON");
        assert_eq!(record["metadata"]["ownerReferences"][0]["uid"], "rs");
        for kept_in_place in ["name", "namespace", "uid", "labels"] {
            assert!(
                record["metadata"].get(kept_in_place).is_none(),
                "{kept_in_place}"
            );
        }
        assert!(
            stored.trimmed.len() < 1000,
            "{} bytes",
            stored.trimmed.len()
        );
        let kept = serde_json::to_value(&pod).expect("serializes");
        assert_eq!(kept["metadata"]["labels"]["app"], "web");
        assert_eq!(kept["metadata"]["ownerReferences"][0]["uid"], "rs");
        assert!(kept["metadata"].get("annotations").is_none());
        assert!(kept["metadata"].get("managedFields").is_none());
        assert_eq!(
            kept["spec"],
            json!({"containers": [{"name": "app", "image": "nginx:1.25.5"}],
                   "initContainers": [{"name": "setup", "image": "busybox:1.36"}]})
        );
        let status = &kept["status"];
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["startTime"], "2024-01-01T00:00:00Z");
        assert_eq!(
            status["conditions"],
            json!([{"type": "Ready", "status": "False",
                    "lastTransitionTime": "2024-01-01T00:00:00Z"}])
        );
        assert!(status.get("podIP").is_none());
        let container = &status["containerStatuses"][0];
        assert_eq!(container["state"]["waiting"]["reason"], "ImagePullBackOff");
        assert_eq!(container["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(container["restartCount"], 2);
        assert!(container.get("volumeMounts").is_none());
    }

    #[test]
    fn outside_a_term_there_is_no_pod_store() {
        let stores = LeaderStores::default();
        assert!(stores.pods().is_none());
        let (pods, mut writer) = reflector::store::<StoredPod>();
        let (replica_sets, _rs) = reflector::store();
        let (jobs, _jobs) = reflector::store();
        stores.begin(Stores {
            pods,
            owners: OwnerStores { replica_sets, jobs },
            ready: ReadyRevisions::default(),
        });
        assert!(stores.pods().is_none(), "not before the first list is in");
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(stores.pods().is_some());
        stores.end();
        assert!(stores.pods().is_none());
    }
}
