//! Model providers: proposals from a language model for the failures the
//! rules cannot fix, held to the same guardrails as every other proposal.
//!
//! Nothing a model says is trusted (origin flaws #8 and #10). The model
//! never writes a patch or chooses a target: it fills in a small "fix"
//! object whose JSON Schema is built per incident from cluster facts
//! (container names, verified candidate images, memory bounds, known env
//! names), the answer is validated against that schema client-side, and
//! this crate's code turns it into a server-side-apply patch of the
//! Remediation's own workload, which the guardrails then check.
//!
//! - [`config`]: the `llm.*` keys of the operator's ConfigMap.
//! - [`provider`]: the provider interface, its request, answer and errors.
//! - [`transport`]: the resilient JSON POST both HTTP providers share
//!   (timeouts, size cap, retries, circuit breaker, concurrency limit).
//! - [`breaker`]: the circuit breaker.
//! - [`ollama`]: Ollama's `/api/chat` with structured outputs.
//! - [`openai`]: OpenAI-compatible `/v1/chat/completions` (llama.cpp, vLLM, LocalAI, OpenAI).
//! - [`schema`]: the per-incident JSON Schema and client-side validation.
//! - [`prompt`]: the prompt, its token budget and the redaction of what goes in.
//! - [`answer`]: from a schema-valid answer to a sealed [`Proposal`](crate::remediation::crd::Proposal).
//! - [`cache`]: answers reused for identical failure fingerprints.
//! - [`propose`]: the pipeline the controller calls.
//! - [`command`]: `aiops-operator llm propose`, the same pipeline offline.
pub mod answer;
pub mod breaker;
pub mod cache;
pub mod command;
pub mod config;
pub mod ollama;
pub mod openai;
pub mod prompt;
pub mod propose;
pub mod provider;
pub mod schema;
pub mod transport;

pub use config::{ApiKey, LlmConfig, ProviderKind};
pub use propose::{Incident, ModelProposal, ModelProposer};
pub use provider::{LlmError, ModelAnswer, ProposalRequest, Provider, Usage, build_provider};
