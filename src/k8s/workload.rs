//! Workloads of any kind, read without a Rust type per kind: the dynamic API
//! for an `apiVersion` and `kind`, and the label selector that picks a
//! workload's pods. Fixes target Deployments, StatefulSets, DaemonSets,
//! Jobs, CronJobs, ReplicationControllers and bare Pods alike, so these work
//! on the object as JSON.
use std::collections::BTreeMap;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::core::Selector;
use serde_json::Value;

/// An `apiVersion` that is neither `group/version` nor a core `version`.
#[derive(Debug, thiserror::Error)]
#[error("workload apiVersion {api_version:?} is not group/version or version")]
pub struct BadApiVersion {
    pub api_version: String,
}

/// The API resource of `kind` in `api_version` ("apps/v1", or "v1" for the core group).
pub fn workload_resource(api_version: &str, kind: &str) -> Result<ApiResource, BadApiVersion> {
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) if !group.is_empty() && !version.is_empty() => (group, version),
        None if !api_version.is_empty() => ("", api_version),
        _ => {
            return Err(BadApiVersion {
                api_version: api_version.to_string(),
            });
        }
    };
    Ok(ApiResource::from_gvk(&GroupVersionKind::gvk(
        group, version, kind,
    )))
}

/// A namespaced API for workloads of `kind` in `api_version`.
pub fn workload_api(
    client: &Client,
    namespace: &str,
    api_version: &str,
    kind: &str,
) -> Result<Api<DynamicObject>, BadApiVersion> {
    let resource = workload_resource(api_version, kind)?;
    Ok(Api::namespaced_with(client.clone(), namespace, &resource))
}

/// The labels that pick the workload's pods: `spec.selector.matchLabels`,
/// or for a CronJob (which has no selector) the labels of its jobs' pod
/// template. Empty when there are none, e.g. a selector made only of
/// `matchExpressions`; the caller decides what an empty selector means.
pub fn pod_selector(workload: &Value) -> Selector {
    workload
        .pointer("/spec/selector/matchLabels")
        .or_else(|| workload.pointer("/spec/jobTemplate/spec/template/metadata/labels"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
        .collect::<BTreeMap<String, String>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::SelectorExt;
    use serde_json::json;

    #[test]
    fn core_and_named_groups_are_read_and_malformed_versions_refused() {
        let apps = workload_resource("apps/v1", "Deployment").expect("apps/v1");
        assert_eq!((apps.group.as_str(), apps.version.as_str()), ("apps", "v1"));
        assert_eq!(apps.plural, "deployments");
        let core = workload_resource("v1", "Pod").expect("v1");
        assert_eq!((core.group.as_str(), core.api_version.as_str()), ("", "v1"));
        for bad in ["", "/v1", "apps/"] {
            assert!(workload_resource(bad, "Deployment").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_selector_comes_from_match_labels_or_the_cronjob_template() {
        let deployment =
            json!({"spec": {"selector": {"matchLabels": {"app": "web", "tier": "front"}}}});
        let selector = pod_selector(&deployment);
        assert_eq!(selector.to_string(), "app=web,tier=front");
        let labels = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
            ("pod-template-hash".to_string(), "5d8f".to_string()),
        ]);
        assert!(selector.matches(&labels));
        assert!(!selector.matches(&BTreeMap::from([("app".to_string(), "web".to_string())])));

        let cronjob = json!({"spec": {"jobTemplate": {"spec": {"template": {"metadata": {"labels": {"job": "nightly"}}}}}}});
        assert_eq!(pod_selector(&cronjob).to_string(), "job=nightly");
    }

    #[test]
    fn a_selector_of_expressions_only_is_empty() {
        let workload = json!({"spec": {"selector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["web"]}]}}});
        assert!(pod_selector(&workload).selects_all());
        assert!(pod_selector(&json!({"kind": "Pod"})).selects_all());
    }
}
