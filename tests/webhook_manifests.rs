//! The admission manifests parse as the Kubernetes types they claim to be
//! and keep the lock-out protections; the example ConfigMap is read by the
//! same parser the operator uses, without a single ignored key.
mod support;

use std::collections::BTreeMap;

use aiops_operator::admission::modes::{Mode, parse_config_map};
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ServiceReference, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;
use support::{read_yaml_documents, repo_root};

const EXEMPT: [&str; 3] = ["kube-system", "kube-node-lease", "aiops-system"];

fn documents(file: &str) -> Result<Vec<Value>> {
    read_yaml_documents(&repo_root().join("manifests").join(file))
}

fn of_kind<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> Result<T> {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("no {kind}"))?;
    Ok(serde_json::from_value(doc.clone())?)
}

fn excludes_system_namespaces(selector: Option<&LabelSelector>) -> Result<()> {
    let expressions = selector
        .and_then(|s| s.match_expressions.as_ref())
        .context("namespaceSelector without matchExpressions")?;
    let excluded = expressions
        .iter()
        .find(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
        .and_then(|e| e.values.clone())
        .unwrap_or_default();
    for namespace in EXEMPT {
        ensure!(
            excluded.iter().any(|n| n == namespace),
            "{namespace} not excluded"
        );
    }
    Ok(())
}

/// The fields of a webhook, validating or mutating alike, that keep a
/// cluster safe from the webhook itself.
struct WebhookSafety<'a> {
    side_effects: &'a str,
    timeout_seconds: Option<i32>,
    failure_policy: Option<&'a str>,
    namespace_selector: Option<&'a LabelSelector>,
    service: Option<&'a ServiceReference>,
}

impl<'a> WebhookSafety<'a> {
    /// No side effects on dry runs, a short timeout, `failure_policy`, the
    /// system namespaces left out, and a Service at `path`, which it returns.
    fn check(&self, failure_policy: &str, path: &str) -> Result<&'a ServiceReference> {
        assert_eq!(self.side_effects, "NoneOnDryRun");
        assert!(self.timeout_seconds.is_some_and(|t| t <= 5));
        assert_eq!(self.failure_policy, Some(failure_policy));
        excludes_system_namespaces(self.namespace_selector)?;
        let service = self.service.context("no service")?;
        assert_eq!(service.path.as_deref(), Some(path));
        Ok(service)
    }
}

#[test]
fn webhook_configurations_keep_the_cluster_safe() -> Result<()> {
    let docs = documents("webhook-configurations.yaml")?;
    let service: Service = of_kind(&docs, "Service")?;
    let service_name = service.metadata.name.clone().unwrap_or_default();

    let validating: ValidatingWebhookConfiguration =
        of_kind(&docs, "ValidatingWebhookConfiguration")?;
    let webhooks = validating.webhooks.unwrap_or_default();
    ensure!(!webhooks.is_empty());
    for webhook in &webhooks {
        assert_eq!(webhook.admission_review_versions, vec!["v1".to_string()]);
        let target = WebhookSafety {
            side_effects: &webhook.side_effects,
            timeout_seconds: webhook.timeout_seconds,
            failure_policy: webhook.failure_policy.as_deref(),
            namespace_selector: webhook.namespace_selector.as_ref(),
            service: webhook.client_config.service.as_ref(),
        }
        .check("Fail", "/validate")?;
        assert_eq!(target.name, service_name);
        let resources: Vec<String> = webhook
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.resources.clone().unwrap_or_default())
            .collect();
        for needed in [
            "pods",
            "deployments",
            "cronjobs",
            "jobs",
            "statefulsets",
            "daemonsets",
        ] {
            assert!(
                resources.iter().any(|r| r == needed),
                "{needed} not sent to /validate"
            );
        }
    }

    let mutating: MutatingWebhookConfiguration = of_kind(&docs, "MutatingWebhookConfiguration")?;
    for webhook in mutating.webhooks.unwrap_or_default() {
        WebhookSafety {
            side_effects: &webhook.side_effects,
            timeout_seconds: webhook.timeout_seconds,
            failure_policy: webhook.failure_policy.as_deref(),
            namespace_selector: webhook.namespace_selector.as_ref(),
            service: webhook.client_config.service.as_ref(),
        }
        .check("Ignore", "/mutate")?;
    }
    Ok(())
}

#[test]
fn example_config_map_is_fully_understood() -> Result<()> {
    let docs = documents("admission-config.yaml")?;
    let config_map: ConfigMap = of_kind(&docs, "ConfigMap")?;
    assert_eq!(
        config_map.metadata.name.as_deref(),
        Some("aiops-operator-config")
    );
    let data: BTreeMap<String, String> = config_map.data.unwrap_or_default();
    let (config, issues) = parse_config_map(Some(&data), "aiops-system");
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(config.mode, None);
    assert_eq!(
        config.policy_modes.get("disallow-latest-tag"),
        Some(&Mode::Enforce)
    );
    for namespace in EXEMPT {
        assert!(config.exempt_namespaces.contains(namespace), "{namespace}");
    }
    Ok(())
}

#[test]
fn policy_report_crds_are_served_and_structural() -> Result<()> {
    let docs = documents("policyreport-crd.yaml")?;
    let mut seen = Vec::new();
    for doc in docs {
        let crd: CustomResourceDefinition = serde_json::from_value(doc)?;
        assert_eq!(crd.spec.group, "wgpolicyk8s.io");
        let version = crd.spec.versions.first().context("no version")?;
        assert_eq!(version.name, "v1alpha2");
        assert!(version.served && version.storage);
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .context("no schema")?;
        let properties = schema.properties.as_ref().context("no properties")?;
        for field in ["scope", "summary", "results"] {
            assert!(properties.contains_key(field), "{field}");
        }
        seen.push((crd.spec.names.kind.clone(), crd.spec.scope.clone()));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("ClusterPolicyReport".to_string(), "Cluster".to_string()),
            ("PolicyReport".to_string(), "Namespaced".to_string()),
        ]
    );
    Ok(())
}
