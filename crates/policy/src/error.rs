//! Errors of the policy engine: loading problems ([`PolicyError`]) and
//! per-rule evaluation problems ([`EvalError`], reported as `error` outcomes).

use std::path::PathBuf;

/// Why policies could not be loaded or a mutation could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid YAML in {source_name}: {message}")]
    Yaml {
        source_name: String,
        message: String,
    },
    #[error("policy {policy:?} rule {rule:?}: unsupported construct `{construct}`")]
    Unsupported {
        policy: String,
        rule: String,
        construct: String,
    },
    #[error("policy {policy:?} rule {rule:?} is invalid: {reason}")]
    Invalid {
        policy: String,
        rule: String,
        reason: String,
    },
    #[error("mutation by policy {policy:?} rule {rule:?} failed: {reason}")]
    Mutation {
        policy: String,
        rule: String,
        reason: String,
    },
}

/// A problem evaluating one rule against one resource.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EvalError {
    #[error("failed to substitute variable {variable} at path {path}: {message}")]
    Variable {
        variable: String,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}
