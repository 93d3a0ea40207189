//! The scan's listing: each kind a page at a time, at most a fixed number
//! of objects per kind, keeping the whole object only for what is judged
//! (owned Pods are kept as names: they tell which reports are stale).
use std::collections::HashSet;

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use super::{ScanLimits, with_type};
use crate::k8s::workload::workload_resource;

/// A kind the scan lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedKind {
    pub api_version: &'static str,
    pub kind: &'static str,
}

impl ScannedKind {
    pub const ALL: [ScannedKind; 5] = [
        ScannedKind {
            api_version: "apps/v1",
            kind: "Deployment",
        },
        ScannedKind {
            api_version: "apps/v1",
            kind: "StatefulSet",
        },
        ScannedKind {
            api_version: "apps/v1",
            kind: "DaemonSet",
        },
        ScannedKind {
            api_version: "batch/v1",
            kind: "CronJob",
        },
        ScannedKind {
            api_version: "v1",
            kind: "Pod",
        },
    ];

    /// Whether reports about objects of `kind` are the scan's to refresh.
    pub fn covers(kind: &str) -> bool {
        Self::ALL.iter().any(|k| k.kind == kind)
    }
}

/// One listed object.
#[derive(Clone, Debug)]
pub struct ListedObject {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Whether something owns it (a Pod of a ReplicaSet, a Job, ...).
    pub owned: bool,
    /// The object with apiVersion and kind; `Null` when it is not judged.
    pub value: Value,
}

impl ListedObject {
    /// Workloads, and Pods that nothing owns (an owned Pod is judged
    /// through its owner).
    pub fn judged_by_scan(&self) -> bool {
        self.kind != "Pod" || !self.owned
    }
}

/// The objects of the scanned kinds that exist, by (kind, namespace, name).
#[derive(Default)]
pub struct Existing {
    objects: HashSet<(String, String, String)>,
    /// A list failed or was cut at the limit: absence proves nothing.
    pub incomplete: bool,
}

impl Existing {
    pub fn insert(&mut self, object: &ListedObject) {
        self.objects.insert((
            object.kind.to_string(),
            object.namespace.clone(),
            object.name.clone(),
        ));
    }

    pub fn contains(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.objects
            .contains(&(kind.to_string(), namespace.to_string(), name.to_string()))
    }
}

/// A kind's objects, and whether there were more than the limit.
pub struct Listed {
    pub objects: Vec<ListedObject>,
    pub truncated: bool,
}

/// Why a kind could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("listing {kind}: {source}")]
    Kube {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Resource(#[from] crate::k8s::workload::BadApiVersion),
}

/// Lists one kind in every namespace, a page at a time, up to the limit.
pub async fn list(
    client: &kube::Client,
    kind: ScannedKind,
    limits: ScanLimits,
) -> Result<Listed, ListError> {
    let resource = workload_resource(kind.api_version, kind.kind)?;
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let mut objects = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(limits.page_size.max(1));
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = api.list(&params).await.map_err(|source| ListError::Kube {
            kind: kind.kind,
            source,
        })?;
        for item in page.items {
            if objects.len() >= limits.max_objects {
                return Ok(Listed {
                    objects,
                    truncated: true,
                });
            }
            objects.push(listed(kind, item));
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(Listed {
                objects,
                truncated: false,
            });
        }
    }
}

fn listed(kind: ScannedKind, item: DynamicObject) -> ListedObject {
    let meta = &item.metadata;
    let owned = meta
        .owner_references
        .as_ref()
        .is_some_and(|owners| !owners.is_empty());
    let mut object = ListedObject {
        api_version: kind.api_version,
        kind: kind.kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        owned,
        value: Value::Null,
    };
    if object.judged_by_scan() {
        object.value = with_type(
            serde_json::to_value(&item).unwrap_or(Value::Null),
            kind.api_version,
            kind.kind,
        );
    }
    object
}
