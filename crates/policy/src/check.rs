//! `policy check`: evaluates manifests offline against a policy directory and
//! reports violations per resource and rule.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::load::yaml_documents;
use crate::{EvalInput, FailureAction, PolicyError, PolicySet, RuleOutcome, RuleStatus};

/// One violation (or evaluation error) of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// `Kind/namespace/name` (namespace omitted for cluster-scoped objects).
    pub resource: String,
    pub outcome: RuleOutcome,
}

/// The result of checking a set of manifests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    pub resources_checked: usize,
    pub violations: Vec<Violation>,
}

impl CheckReport {
    /// True when some violation comes from an `Enforce` rule.
    pub fn has_enforce_violation(&self) -> bool {
        self.violations.iter().any(|v| {
            v.outcome.status == RuleStatus::Fail && v.outcome.action == FailureAction::Enforce
        })
    }

    /// Human-readable report, one line per violation plus a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for v in &self.violations {
            out.push_str(&format!(
                "{} {}/{} [{}] {}: {}\n",
                v.resource,
                v.outcome.policy,
                v.outcome.rule,
                match v.outcome.action {
                    FailureAction::Audit => "Audit",
                    FailureAction::Enforce => "Enforce",
                },
                v.outcome.status.as_str(),
                v.outcome.message
            ));
        }
        out.push_str(&format!(
            "{} resources checked, {} violations\n",
            self.resources_checked,
            self.violations.len()
        ));
        out
    }
}

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot load policies from {}: {source}", dir.display())]
    Policies {
        dir: PathBuf,
        #[source]
        source: PolicyError,
    },
    #[error("cannot read manifest {}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid manifest: {0}")]
    Yaml(#[source] PolicyError),
}

/// Checks every document of `files` against the policies under `policy_dir`.
pub fn check_files(files: &[PathBuf], policy_dir: &Path) -> Result<CheckReport, CheckError> {
    let policies = PolicySet::load_dir(policy_dir).map_err(|source| CheckError::Policies {
        dir: policy_dir.to_path_buf(),
        source,
    })?;
    let mut manifests = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|source| CheckError::Manifest {
            path: file.clone(),
            source,
        })?;
        manifests
            .extend(yaml_documents(&text, &file.display().to_string()).map_err(CheckError::Yaml)?);
    }
    Ok(check_manifests(&policies, &manifests))
}

/// Checks already parsed manifests.
pub fn check_manifests(policies: &PolicySet, manifests: &[Value]) -> CheckReport {
    let mut report = CheckReport::default();
    for manifest in manifests.iter().filter(|m| m.get("kind").is_some()) {
        report.resources_checked += 1;
        let resource = describe(manifest);
        for outcome in policies.validate(&EvalInput::for_resource(manifest)) {
            if matches!(outcome.status, RuleStatus::Fail | RuleStatus::Error) {
                report.violations.push(Violation {
                    resource: resource.clone(),
                    outcome,
                });
            }
        }
    }
    report
}

fn describe(manifest: &Value) -> String {
    let field = |pointer: &str| {
        manifest
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let (kind, namespace, name) = (
        field("/kind"),
        field("/metadata/namespace"),
        field("/metadata/name"),
    );
    if namespace.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{namespace}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_enforce_violations() {
        let policies = PolicySet::from_yaml(
            r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: no-latest}
spec:
  validationFailureAction: Enforce
  rules:
  - name: tag
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: no latest
      pattern: {spec: {containers: [{image: "!*:latest"}]}}
"#,
            "inline",
        )
        .unwrap();
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "x"},
            "spec": {"containers": [{"name": "c", "image": "nginx:latest"}]}});
        let good = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.0"}]}});
        let report = check_manifests(&policies, &[bad, good]);
        assert_eq!(report.resources_checked, 2);
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].resource, "Pod/x/a");
        assert!(report.has_enforce_violation());
        assert!(report.render().contains("no-latest/tag [Enforce] fail"));
    }
}
