//! Kubernetes manifests as JSON values: multi-document YAML files and the
//! group, version and kind a manifest names.
use std::path::Path;

use anyhow::Context;
use kube::api::GroupVersionKind;
use serde::Deserialize;
use serde_json::Value;

/// The documents of a multi-document YAML text, as JSON; empty documents
/// (a leading `---`, a trailing one) are left out.
pub fn yaml_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        // Through YAML's own value type: it takes what JSON's cannot
        // (e.g. a number as a mapping key), and turns it into JSON.
        let yaml = serde_yaml::Value::deserialize(document).context("a YAML document")?;
        let value = serde_json::to_value(yaml).context("a YAML document that maps to JSON")?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// [`yaml_documents`] of a file.
pub fn read_yaml_documents(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    yaml_documents(&text).with_context(|| path.display().to_string())
}

/// The group, version and kind a manifest names.
pub fn gvk_of(manifest: &Value) -> GroupVersionKind {
    let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = manifest["kind"].as_str().unwrap_or_default();
    GroupVersionKind::gvk(group, version, kind)
}
