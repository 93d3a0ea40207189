//! aiops-operator: prevents bad workloads at admission and repairs broken ones
//! at runtime, with one policy engine guarding both paths.
//!
//! - [`policy`]: the Kyverno-compatible policy engine.
//! - [`admission`]: the TLS admission webhook.
//! - [`remediation`]: detect → propose → approve → apply → verify.
//! - [`llm`]: model providers for proposals.
//! - [`console`]: the web console for reviewing and deciding Remediations.
pub mod admission;
pub mod cli;
pub mod console;
pub mod k8s;
pub mod llm;
pub mod operator;
pub mod plugin;
pub use aiops_policy as policy;
pub mod remediation;
