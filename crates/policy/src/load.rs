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
    let mut set = PolicySet::default();
    for (text, file) in read_yaml_files(dir)? {
        set.merge(from_yaml(&text, &file)?);
    }
    Ok(set)
}

/// [`load_dir`] with [`from_yaml_skipping_unsupported`] per file.
pub fn load_dir_skipping_unsupported(
    dir: &Path,
) -> Result<(PolicySet, Vec<UnsupportedRule>), PolicyError> {
    let mut set = PolicySet::default();
    let mut skipped = Vec::new();
    for (text, file) in read_yaml_files(dir)? {
        let (more, left_out) = from_yaml_skipping_unsupported(&text, &file)?;
        set.merge(more);
        skipped.extend(left_out);
    }
    Ok((set, skipped))
}

/// The text and display name of every YAML file under `dir`, in path order.
fn read_yaml_files(dir: &Path) -> Result<Vec<(String, String)>, PolicyError> {
    let mut files = Vec::new();
    collect_yaml_files(dir, &mut files)?;
    files.sort();
    files
        .into_iter()
        .map(|file| {
            std::fs::read_to_string(&file)
                .map(|text| (text, file.display().to_string()))
                .map_err(|source| PolicyError::Io { path: file, source })
        })
        .collect()
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
        if let Some(policy) = compile_document(&document, None)? {
            set.policies.push(policy);
        }
    }
    Ok(set)
}

/// A rule (or, with an empty `rule`, a whole policy) left out because it
/// uses a construct the engine does not evaluate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnsupportedRule {
    pub policy: String,
    pub rule: String,
    pub construct: String,
}

/// Like [`from_yaml`], but a rule or policy with an unsupported construct
/// is left out and listed instead of failing the whole load: what a test
/// run needs to report the rest.
pub fn from_yaml_skipping_unsupported(
    yaml: &str,
    source: &str,
) -> Result<(PolicySet, Vec<UnsupportedRule>), PolicyError> {
    let mut set = PolicySet::default();
    let mut skipped = Vec::new();
    for document in yaml_documents(yaml, source)? {
        match compile_document(&document, Some(&mut skipped)) {
            Ok(Some(policy)) => set.policies.push(policy),
            Ok(None) => {}
            Err(PolicyError::Unsupported {
                policy,
                rule,
                construct,
            }) => skipped.push(UnsupportedRule {
                policy,
                rule,
                construct,
            }),
            Err(other) => return Err(other),
        }
    }
    Ok((set, skipped))
}

/// Compiles one document; `Ok(None)` for documents that are not policies.
/// With `skipped`, rules with unsupported constructs are listed there and
/// left out rather than failing the policy.
fn compile_document(
    document: &Value,
    mut skipped: Option<&mut Vec<UnsupportedRule>>,
) -> Result<Option<Policy>, PolicyError> {
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
    let mut left_out = Vec::new();
    for raw in raw_rules {
        match (spec::parse_rule(&name, raw), skipped.as_deref_mut()) {
            (Ok(rule), _) => rules.push(rule),
            (
                Err(PolicyError::Unsupported {
                    policy,
                    rule,
                    construct,
                }),
                Some(skipped),
            ) => {
                left_out.push(rule.clone());
                skipped.push(UnsupportedRule {
                    policy,
                    rule,
                    construct,
                });
            }
            (Err(e), _) => return Err(e),
        }
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
        let generated_from = |prefix: &str| {
            raw.get("name")
                .and_then(Value::as_str)
                .and_then(|n| n.strip_prefix(prefix))
                .is_some_and(|base| left_out.iter().any(|r| r == base))
        };
        // The twin of a rule left out is left out with it.
        if generated_from("autogen-cronjob-") || generated_from("autogen-") {
            continue;
        }
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
