//! The model client: sends one structured-output request (a system and a
//! user message, and the JSON Schema the answer must fit) to a language
//! model server, and returns its answer validated against that schema. It
//! knows nothing of Kubernetes or remediations: what to ask and what the
//! answer means live in `remediation::propose::model`.
//!
//! - [`config`]: the `llm.*` keys of the operator's ConfigMap.
//! - [`provider`]: the provider interface, its request, answer and errors.
//! - [`transport`]: the resilient JSON POST every HTTP provider shares
//!   (timeouts, size cap, retries honouring `retry-after`, circuit breaker,
//!   concurrency limit, where the API key goes).
//! - [`breaker`]: the circuit breaker.
//! - [`ollama`]: Ollama's `/api/chat` with structured outputs.
//! - [`validate`]: the answer checked against the request's JSON Schema.
//! - [`openai`]: OpenAI-compatible `/v1/chat/completions` (llama.cpp, vLLM, LocalAI, OpenAI).
//! - [`anthropic`]: Anthropic's `/v1/messages` (Claude) with structured outputs.
pub mod anthropic;
pub mod breaker;
pub mod config;
pub mod ollama;
pub mod openai;
pub mod provider;
pub mod transport;
pub mod validate;

pub use config::{ApiKey, LlmConfig, ProviderKind};
pub use provider::{
    Exchange, LlmError, ModelAnswer, ProposalRequest, Provider, RetryHint, Usage, build_provider,
    estimate_conversation, estimate_tokens,
};
