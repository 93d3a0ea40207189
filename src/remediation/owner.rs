//! Owner resolution: from a broken Pod to the workload that a fix must target.
//!
//! A patch to a Pod is undone by its controller, and a record keyed by a Pod
//! is garbage-collected with it, so every Remediation targets the top of the
//! pod's controller chain:
//!
//! - Pod → ReplicaSet → Deployment
//! - Pod → StatefulSet, Pod → DaemonSet, Pod → ReplicationController
//! - Pod → Job → CronJob
//! - a bare Pod only when nothing controls it.
//!
//! Only the intermediate links (ReplicaSet, Job) need a read; they are read
//! from [`OwnerStores`], the operator's watch caches of their metadata, and
//! from the API only when the store does not hold them (yet): a ReplicaSet
//! made a moment ago may reach the pod watch before its own. Owner kinds we
//! do not know (a custom controller) are returned as they are: the caller
//! decides whether it can patch them.
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::crd::WorkloadRef;

/// Failure to resolve a pod's owner.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("pod has no {field}; cannot resolve its owner")]
    MissingPodField { field: &'static str },
    #[error("reading {kind} {namespace}/{name} while resolving the owner of pod {pod}: {source}")]
    Lookup {
        kind: &'static str,
        namespace: String,
        name: String,
        pod: String,
        // Boxed: kube::Error is large and every Result here carries it.
        #[source]
        source: Box<kube::Error>,
    },
}

/// The workload that owns a pod, and the link in between when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedWorkload {
    pub namespace: String,
    /// The target of a fix: Deployment, StatefulSet, DaemonSet, CronJob, Job,
    /// ReplicationController, an unknown controller kind, or the Pod itself.
    pub workload: WorkloadRef,
    /// The ReplicaSet or Job between the pod and the workload, if any; its
    /// Events belong to the evidence too.
    pub via: Option<WorkloadRef>,
}

/// The metadata of every ReplicaSet and Job, kept by watches: twenty
/// failing replicas of one Deployment cost no API read at all.
#[derive(Clone)]
pub struct OwnerStores {
    pub replica_sets: Store<PartialObjectMeta<ReplicaSet>>,
    pub jobs: Store<PartialObjectMeta<Job>>,
}

/// Resolves the workload that owns `pod`, reading intermediate owners
/// from `owners` (the API on a miss). A deleted intermediate owner falls
/// back to the nearest owner that still exists (the pod itself, for a
/// deleted ReplicaSet or Job).
#[tracing::instrument(skip_all, fields(namespace = tracing::field::Empty, pod = tracing::field::Empty))]
pub async fn owner_workload(
    client: &Client,
    owners: &OwnerStores,
    pod: &Pod,
) -> Result<OwnedWorkload, OwnerError> {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .ok_or(OwnerError::MissingPodField {
            field: "metadata.namespace",
        })?;
    let pod_ref = WorkloadRef {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod
            .metadata
            .name
            .clone()
            .ok_or(OwnerError::MissingPodField {
                field: "metadata.name",
            })?,
        uid: pod
            .metadata
            .uid
            .clone()
            .ok_or(OwnerError::MissingPodField {
                field: "metadata.uid",
            })?,
    };
    let span = tracing::Span::current();
    span.record("namespace", namespace.as_str());
    span.record("pod", pod_ref.name.as_str());

    let Some(owner) = controller_reference(pod.metadata.owner_references.as_deref()) else {
        return Ok(OwnedWorkload {
            namespace,
            workload: pod_ref,
            via: None,
        });
    };
    let owner_ref = workload_ref(owner);
    let lookup = IntermediateLookup {
        client,
        namespace: &namespace,
        pod: &pod_ref,
    };
    let resolved = match (api_group(&owner.api_version), owner.kind.as_str()) {
        ("apps", "ReplicaSet") => lookup.resolve(&owners.replica_sets, &owner_ref).await?,
        ("batch", "Job") => lookup.resolve(&owners.jobs, &owner_ref).await?,
        _ => Resolved::Direct(owner_ref),
    };
    let (workload, via) = match resolved {
        Resolved::Direct(workload) => (workload, None),
        Resolved::Through {
            workload,
            intermediate,
        } => (workload, Some(intermediate)),
        Resolved::IntermediateGone => {
            tracing::warn!(
                owner_kind = %owner.kind,
                owner = %owner.name,
                "the pod's owner no longer exists; targeting the pod itself"
            );
            (pod_ref, None)
        }
    };
    tracing::debug!(kind = %workload.kind, workload = %workload.name, "resolved owner");
    Ok(OwnedWorkload {
        namespace,
        workload,
        via,
    })
}

enum Resolved {
    /// The pod's controller is the workload.
    Direct(WorkloadRef),
    /// The workload is the controller of the pod's controller.
    Through {
        workload: WorkloadRef,
        intermediate: WorkloadRef,
    },
    /// The pod's controller was deleted (or replaced by a namesake).
    IntermediateGone,
}

struct IntermediateLookup<'a> {
    client: &'a Client,
    namespace: &'a str,
    pod: &'a WorkloadRef,
}

impl IntermediateLookup<'_> {
    /// Resolves a ReplicaSet or Job to its own controller, or to itself when
    /// it has none.
    async fn resolve<K>(
        &self,
        store: &Store<PartialObjectMeta<K>>,
        intermediate: &WorkloadRef,
    ) -> Result<Resolved, OwnerError>
    where
        K: k8s_openapi::Resource
            + Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug
            + 'static,
    {
        // A different uid is a namesake created after ours was deleted.
        let ours = |meta: &PartialObjectMeta<K>| {
            meta.metadata.uid.as_deref() == Some(intermediate.uid.as_str())
        };
        let key = ObjectRef::new(&intermediate.name).within(self.namespace);
        let owners = match store.get(&key).filter(|meta| ours(meta)) {
            Some(meta) => meta.metadata.owner_references.clone(),
            None => {
                let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
                let meta = api
                    .get_metadata_opt(&intermediate.name)
                    .await
                    .map_err(|source| OwnerError::Lookup {
                        kind: K::KIND,
                        namespace: self.namespace.to_string(),
                        name: intermediate.name.clone(),
                        pod: self.pod.name.clone(),
                        source: Box::new(source),
                    })?;
                match meta.filter(|meta| ours(meta)) {
                    Some(meta) => meta.metadata.owner_references,
                    None => return Ok(Resolved::IntermediateGone),
                }
            }
        };
        // Without a controller of its own (a bare ReplicaSet, a Job not
        // created by a CronJob) the intermediate is the workload.
        let workload = controller_reference(owners.as_deref())
            .map(workload_ref)
            .unwrap_or_else(|| intermediate.clone());
        Ok(if workload.uid == intermediate.uid {
            Resolved::Direct(workload)
        } else {
            Resolved::Through {
                workload,
                intermediate: intermediate.clone(),
            }
        })
    }
}

/// The owner reference marked `controller: true`, or the only owner when
/// none is marked (older objects and hand-written references omit the flag).
fn controller_reference(refs: Option<&[OwnerReference]>) -> Option<&OwnerReference> {
    let refs = refs.unwrap_or_default();
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or(match refs {
            [only] => Some(only),
            _ => None,
        })
}

fn workload_ref(owner: &OwnerReference) -> WorkloadRef {
    WorkloadRef {
        api_version: owner.api_version.clone(),
        kind: owner.kind.clone(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
    }
}

/// "apps" for "apps/v1", "" for the core group's "v1".
fn api_group(api_version: &str) -> &str {
    api_version
        .split_once('/')
        .map(|(group, _)| group)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn owner(api_version: &str, kind: &str, name: &str, uid: &str, controller: bool) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
               "controller": controller})
    }

    fn pod_owned_by(owners: Vec<Value>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-5d8f-abcde", "namespace": "shop", "uid": "pod-uid",
                         "ownerReferences": owners},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.25.5"}]}
        }))
        .expect("pod fixture")
    }

    /// A fake API server: answers GETs from `objects` (path → JSON), 404
    /// otherwise, and counts requests.
    fn fake_client(objects: Vec<(&str, Value)>) -> (Client, Arc<AtomicUsize>) {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let objects: HashMap<String, Value> = objects
            .into_iter()
            .map(|(path, body)| (path.to_string(), body))
            .collect();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            counter.fetch_add(1, Ordering::SeqCst);
            let found = objects.get(request.uri().path()).cloned();
            async move {
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

    fn metadata(name: &str, uid: &str, owners: Vec<Value>) -> Value {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMeta",
               "metadata": {"name": name, "namespace": "shop", "uid": uid,
                            "ownerReferences": owners}})
    }

    /// Stores that have taken in a complete list of these objects.
    fn stores(replica_sets: Vec<Value>, jobs: Vec<Value>) -> OwnerStores {
        fn filled<K>(objects: Vec<Value>) -> Store<PartialObjectMeta<K>>
        where
            PartialObjectMeta<K>: Resource<DynamicType = ()> + Clone + DeserializeOwned,
        {
            let (store, mut writer) = reflector::store();
            writer.apply_watcher_event(&Event::Init);
            for object in objects {
                let meta = serde_json::from_value(object).expect("metadata fixture");
                writer.apply_watcher_event(&Event::InitApply(meta));
            }
            writer.apply_watcher_event(&Event::InitDone);
            store
        }
        OwnerStores {
            replica_sets: filled::<ReplicaSet>(replica_sets),
            jobs: filled::<Job>(jobs),
        }
    }

    fn empty_stores() -> OwnerStores {
        stores(vec![], vec![])
    }

    const RS_PATH: &str = "/apis/apps/v1/namespaces/shop/replicasets/web-5d8f";

    fn web_replicaset(uid: &str) -> Value {
        metadata(
            "web-5d8f",
            uid,
            vec![owner("apps/v1", "Deployment", "web", "deploy-uid", true)],
        )
    }

    fn web_pod() -> Pod {
        pod_owned_by(vec![owner(
            "apps/v1",
            "ReplicaSet",
            "web-5d8f",
            "rs-uid",
            true,
        )])
    }

    #[tokio::test]
    async fn replicaset_pods_resolve_to_the_deployment_from_the_store_without_a_get() {
        let (client, requests) = fake_client(vec![]);
        let owners = stores(vec![web_replicaset("rs-uid")], vec![]);
        for _ in 0..20 {
            let owned = owner_workload(&client, &owners, &web_pod())
                .await
                .expect("resolves");
            assert_eq!(owned.namespace, "shop");
            assert_eq!(owned.workload.kind, "Deployment");
            assert_eq!(owned.workload.name, "web");
            assert_eq!(owned.workload.uid, "deploy-uid");
            assert_eq!(
                owned.via.as_ref().map(|v| v.kind.as_str()),
                Some("ReplicaSet")
            );
        }
        assert_eq!(requests.load(Ordering::SeqCst), 0, "no GET for 20 pods");
    }

    #[tokio::test]
    async fn a_replicaset_the_store_does_not_hold_yet_is_read_from_the_api() {
        let (client, requests) = fake_client(vec![(RS_PATH, web_replicaset("rs-uid"))]);
        let owned = owner_workload(&client, &empty_stores(), &web_pod())
            .await
            .expect("resolves");
        assert_eq!(owned.workload.kind, "Deployment");
        assert_eq!(owned.workload.uid, "deploy-uid");
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn job_pods_resolve_to_the_cronjob() {
        let (client, requests) = fake_client(vec![]);
        let owners = stores(
            vec![],
            vec![metadata(
                "nightly-290",
                "job-uid",
                vec![owner("batch/v1", "CronJob", "nightly", "cron-uid", true)],
            )],
        );
        let pod = pod_owned_by(vec![owner(
            "batch/v1",
            "Job",
            "nightly-290",
            "job-uid",
            true,
        )]);
        let owned = owner_workload(&client, &owners, &pod)
            .await
            .expect("resolves");
        assert_eq!(owned.workload.kind, "CronJob");
        assert_eq!(owned.workload.uid, "cron-uid");
        assert_eq!(owned.via.map(|v| v.name), Some("nightly-290".to_string()));
        assert_eq!(requests.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_job_without_a_cronjob_is_the_workload() {
        let (client, _) = fake_client(vec![(
            "/apis/batch/v1/namespaces/shop/jobs/migrate",
            metadata("migrate", "job-uid", vec![]),
        )]);
        let pod = pod_owned_by(vec![owner("batch/v1", "Job", "migrate", "job-uid", true)]);
        let owned = owner_workload(&client, &empty_stores(), &pod)
            .await
            .expect("resolves");
        assert_eq!(owned.workload.kind, "Job");
        assert_eq!(owned.workload.name, "migrate");
        assert_eq!(owned.via, None);
    }

    #[tokio::test]
    async fn direct_controllers_need_no_read() {
        let (client, requests) = fake_client(vec![]);
        let owners = empty_stores();
        for (api_version, kind) in [
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "DaemonSet"),
            ("v1", "ReplicationController"),
            ("example.com/v1", "CustomThing"),
        ] {
            let pod = pod_owned_by(vec![owner(api_version, kind, "x", "x-uid", true)]);
            let owned = owner_workload(&client, &owners, &pod)
                .await
                .expect("resolves");
            assert_eq!(owned.workload.kind, kind);
            assert_eq!(owned.workload.api_version, api_version);
            assert_eq!(owned.via, None);
        }
        assert_eq!(requests.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_bare_pod_is_its_own_workload() {
        let (client, _) = fake_client(vec![]);
        let pod = pod_owned_by(vec![]);
        let owned = owner_workload(&client, &empty_stores(), &pod)
            .await
            .expect("resolves");
        assert_eq!(owned.workload.kind, "Pod");
        assert_eq!(owned.workload.api_version, "v1");
        assert_eq!(owned.workload.uid, "pod-uid");
    }

    #[tokio::test]
    async fn the_controller_reference_wins_over_other_owners() {
        let (client, _) = fake_client(vec![]);
        let pod = pod_owned_by(vec![
            owner("v1", "ConfigMap", "not-a-controller", "cm-uid", false),
            owner("apps/v1", "StatefulSet", "db", "sts-uid", true),
        ]);
        let owned = owner_workload(&client, &empty_stores(), &pod)
            .await
            .expect("resolves");
        assert_eq!(owned.workload.kind, "StatefulSet");
    }

    #[tokio::test]
    async fn a_deleted_replicaset_falls_back_to_the_pod() {
        let (client, requests) = fake_client(vec![]);
        let owned = owner_workload(&client, &empty_stores(), &web_pod())
            .await
            .expect("resolves");
        assert_eq!(owned.workload.kind, "Pod");
        assert_eq!(owned.via, None);
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_namesake_replicaset_with_another_uid_counts_as_deleted() {
        // The store holds the namesake: the API is asked, and holds it too.
        let (client, requests) = fake_client(vec![(RS_PATH, web_replicaset("other-uid"))]);
        let owners = stores(vec![web_replicaset("other-uid")], vec![]);
        let owned = owner_workload(&client, &owners, &web_pod())
            .await
            .expect("resolves");
        assert_eq!(owned.workload.kind, "Pod");
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn api_errors_carry_the_object_and_pod() {
        let service = tower::service_fn(|_request: http::Request<kube::client::Body>| async {
            http::Response::builder()
                .status(500)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "InternalError", "code": 500, "message": "etcd down"})
                    .to_string()
                    .into_bytes(),
                ))
        });
        let client = Client::new(service, "default");
        let err = owner_workload(&client, &empty_stores(), &web_pod())
            .await
            .expect_err("a 500 is an error, not a fallback");
        let text = err.to_string();
        assert!(text.contains("ReplicaSet shop/web-5d8f"), "{text}");
        assert!(text.contains("web-5d8f-abcde"), "{text}");
    }

    #[tokio::test]
    async fn a_pod_without_a_namespace_is_an_error() {
        let (client, _) = fake_client(vec![]);
        let mut pod = pod_owned_by(vec![]);
        pod.metadata.namespace = None;
        let err = owner_workload(&client, &empty_stores(), &pod)
            .await
            .expect_err("needs a namespace");
        assert!(err.to_string().contains("metadata.namespace"));
    }

    #[test]
    fn api_group_of_core_and_named_groups() {
        assert_eq!(api_group("v1"), "");
        assert_eq!(api_group("apps/v1"), "apps");
        assert_eq!(api_group("batch/v1"), "batch");
    }
}
