//! Proposals: what to change to repair a broken workload. Both sources
//! produce the same sealed `Proposal`, which the guardrails, the dry run and
//! the approval then treat alike.
//!
//! - [`rules`]: fixes proposed without a model, when the cluster knows the
//!   answer (history, limits, the last healthy revision).
//! - [`model`]: a language model's proposal for what the rules cannot fix:
//!   the per-incident schema, the prompt, reading the answer, the cache.
//! - [`policy_fixes`]: fixes for policy violations of running workloads.
//! - [`command`]: `aiops-operator llm propose`, the model pipeline offline.
pub mod command;
pub mod model;
pub mod policy_fixes;
pub mod rules;
