//! Reading policy documents: YAML files and directories, picking out
//! `kyverno.io` `ClusterPolicy`/`Policy` documents, compiling their rules
//! and adding the auto-generated pod-controller rules.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::autogen;
use crate::error::PolicyError;
use crate::spec::{self, parse_failure_action, parse_overrides};
use crate::validating_policy;
use crate::{FailureAction, Policy, PolicySet};

/// Loads every YAML file under `dir`, recursively, in path order. Hidden
/// directories (`.kyverno-test`, `.chainsaw-test`, `.git`) hold fixtures and
/// tooling, not policies, and are not searched.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
    let mut files = Vec::new();
    collect_yaml_files(dir, &mut files)?;
    files.sort();
    let mut set = PolicySet::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| PolicyError::Io {
            path: file.clone(),
            source,
        })?;
        set.merge(from_yaml(&text, &file.display().to_string())?);
    }
    Ok(set)
}

fn collect_yaml_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), PolicyError> {
    let io_error = |source| PolicyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if path.is_dir() {
            if !hidden {
                collect_yaml_files(&path, files)?;
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
        {
            files.push(path);
        }
    }
    Ok(())
}

/// Parses all documents of a multi-document YAML string into JSON values.
pub fn yaml_documents(yaml: &str, source: &str) -> Result<Vec<Value>, PolicyError> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|e| PolicyError::Yaml {
                source_name: source.to_string(),
                message: e.to_string(),
            })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// Loads the policies of one multi-document YAML string.
pub fn from_yaml(yaml: &str, source: &str) -> Result<PolicySet, PolicyError> {
    let mut set = PolicySet::default();
    for document in yaml_documents(yaml, source)? {
        if let Some(policy) = compile_document(&document)? {
            set.policies.push(policy);
        }
    }
    Ok(set)
}

/// Compiles one document; `Ok(None)` for documents that are not policies.
fn compile_document(document: &Value) -> Result<Option<Policy>, PolicyError> {
    let api_version = document
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = document.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = document
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if api_version.starts_with("policies.kyverno.io/") {
        if matches!(kind, "ValidatingPolicy" | "NamespacedValidatingPolicy")
            && document.get("spec").is_some()
        {
            let namespace = (kind == "NamespacedValidatingPolicy").then(|| {
                document
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string()
            });
            if name.is_empty() {
                return Err(PolicyError::Invalid {
                    policy: name,
                    rule: String::new(),
                    reason: "policy has no metadata.name".into(),
                });
            }
            return validating_policy::compile(document, &name, namespace).map(Some);
        }
        // Mutating, generating and image-verifying CEL policies are not
        // evaluated by this engine.
        return Err(PolicyError::Unsupported {
            policy: name,
            rule: String::new(),
            construct: format!("{api_version} {kind}"),
        });
    }
    if !api_version.starts_with("kyverno.io/") || !matches!(kind, "ClusterPolicy" | "Policy") {
        return Ok(None);
    }
    if document.get("spec").is_none() {
        // A spec-less document is a status/assertion fragment (e.g. a test
        // assertion), not a policy definition.
        return Ok(None);
    }
    let invalid = |reason: &str| PolicyError::Invalid {
        policy: name.clone(),
        rule: String::new(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("policy has no metadata.name"));
    }
    let namespace = if kind == "Policy" {
        Some(
            document
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string(),
        )
    } else {
        None
    };
    let spec = document
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("policy has no spec"))?;
    let failure_action = match spec.get("validationFailureAction").and_then(Value::as_str) {
        Some(text) => parse_failure_action(text)
            .ok_or_else(|| invalid(&format!("unknown validationFailureAction {text:?}")))?,
        None => FailureAction::Audit,
    };
    let overrides = parse_overrides(&name, "", spec.get("validationFailureActionOverrides"))?;
    let raw_rules = spec
        .get("rules")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("policy has no rules"))?;
    let mut rules = Vec::new();
    for raw in raw_rules {
        rules.push(spec::parse_rule(&name, raw)?);
    }
    let annotations = document
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(Map::new);
    // Generated rules replace any autogen rules stored in the policy.
    let generated = autogen::generate_rules(raw_rules, &annotations);
    if !generated.is_empty() {
        rules.retain(|rule| !rule.name.starts_with("autogen-"));
    }
    for raw in &generated {
        rules.push(spec::parse_rule(&name, raw)?);
    }
    Ok(Some(Policy {
        name,
        namespace,
        failure_action,
        overrides,
        apply_one: spec.get("applyRules").and_then(Value::as_str) == Some("One"),
        background: spec
            .get("background")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        rules,
    }))
}
