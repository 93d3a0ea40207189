//! The admission manifests parse as the Kubernetes types they claim to be
//! and keep the lock-out protections; the example ConfigMap is read by the
//! same parser the operator uses, without a single ignored key.
use std::collections::BTreeMap;
use std::path::Path;

use aiops_operator::admission::modes::{Mode, parse_config_map};
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde_json::Value;

const EXEMPT: [&str; 3] = ["kube-system", "kube-node-lease", "aiops-system"];

fn documents(file: &str) -> Result<Vec<Value>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(file);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut docs = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
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
        assert_eq!(webhook.side_effects, "NoneOnDryRun");
        assert!(webhook.timeout_seconds.is_some_and(|t| t <= 5));
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
        excludes_system_namespaces(webhook.namespace_selector.as_ref())?;
        let target = webhook
            .client_config
            .service
            .as_ref()
            .context("no service")?;
        assert_eq!(target.name, service_name);
        assert_eq!(target.path.as_deref(), Some("/validate"));
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
        assert_eq!(webhook.side_effects, "NoneOnDryRun");
        assert!(webhook.timeout_seconds.is_some_and(|t| t <= 5));
        assert_eq!(webhook.failure_policy.as_deref(), Some("Ignore"));
        excludes_system_namespaces(webhook.namespace_selector.as_ref())?;
        let target = webhook
            .client_config
            .service
            .as_ref()
            .context("no service")?;
        assert_eq!(target.path.as_deref(), Some("/mutate"));
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
