//! The provider interface: one structured-output chat call that returns an
//! answer already validated against the request's JSON Schema, whatever
//! server is behind it, and the errors such a call can end with.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::anthropic::AnthropicProvider;
use super::config::{LlmConfig, ProviderKind};
use super::ollama::OllamaProvider;
use super::openai::OpenAiProvider;

/// A worked question and its answer, sent as a user and an assistant turn
/// before the real question.
#[derive(Clone, Debug, PartialEq)]
pub struct Exchange {
    pub user: String,
    pub assistant: String,
}

/// What a provider is asked: a system and a user message, and the JSON
/// Schema the answer must satisfy.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposalRequest {
    pub system: String,
    /// Worked exchanges between the system message and the user's. They are
    /// the same for every incident of a kind, so a server's prompt cache
    /// keeps them with the system message.
    pub examples: Vec<Exchange>,
    pub user: String,
    pub schema: Value,
    /// A name for the schema (`[A-Za-z0-9_-]`, at most 64), as OpenAI requires.
    pub schema_name: String,
    /// The most answer tokens this request needs (from its schema); the
    /// provider sends the smaller of this and its configured limit.
    pub max_answer_tokens: Option<u32>,
}

impl ProposalRequest {
    /// The conversation after the system message: the examples' turns, then
    /// the user message.
    pub fn turns(&self) -> Vec<Value> {
        let mut turns = Vec::with_capacity(self.examples.len() * 2 + 1);
        for example in &self.examples {
            turns.push(serde_json::json!({"role": "user", "content": example.user}));
            turns.push(serde_json::json!({"role": "assistant", "content": example.assistant}));
        }
        turns.push(serde_json::json!({"role": "user", "content": self.user}));
        turns
    }

    /// The prompt's tokens, estimated the way the operator budgets them.
    pub fn estimated_prompt_tokens(&self) -> usize {
        estimate_conversation(&self.system, &self.examples, &self.user)
    }

    /// The conversation with the system message first, for chat APIs that
    /// take it as a turn.
    pub fn messages_with_system(&self) -> Vec<Value> {
        let mut messages = vec![serde_json::json!({"role": "system", "content": self.system})];
        messages.extend(self.turns());
        messages
    }

    /// The completion limit to send: `configured`, lowered to what the
    /// answer can need.
    pub fn completion_limit(&self, configured: u32) -> u32 {
        self.max_answer_tokens
            .map_or(configured, |needed| needed.min(configured))
    }
}

/// Tokens in `text`, estimated: about four characters per token for the
/// English and JSON these prompts hold.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// Tokens in a whole conversation: the system message, the examples' turns
/// and the user message.
pub fn estimate_conversation(system: &str, examples: &[Exchange], user: &str) -> usize {
    let examples: usize = examples
        .iter()
        .map(|e| estimate_tokens(&e.user) + estimate_tokens(&e.assistant))
        .sum();
    estimate_tokens(system) + examples + estimate_tokens(user)
}

/// Token counts the server reported, when it reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Prompt tokens the server reused from the previous prompt instead of
    /// reading them again (llama.cpp's `timings.cache_n`).
    pub cached_prompt_tokens: Option<u64>,
    /// Server time spent reading the prompt: the time to the first answer
    /// token, less queueing and model loading.
    pub prompt_ms: Option<u64>,
    /// Server time spent generating the answer tokens.
    pub generation_ms: Option<u64>,
}

/// A schema-valid answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelAnswer {
    /// The answer object; it passed the request's schema.
    pub answer: Value,
    pub usage: Usage,
    /// What the provider noticed about the call that a reviewer of the
    /// proposal should read (a prompt the server only partly read).
    pub notes: Vec<String>,
}

/// The future a provider returns: boxed so providers can live behind `dyn`.
pub type ProposeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ModelAnswer, LlmError>> + Send + 'a>>;

/// A model server.
pub trait Provider: Send + Sync {
    /// `ollama:qwen2.5:7b`, `openai:qwen2.5-coder-0.5b`,
    /// `anthropic:claude-haiku-4-5-20251001`, or `none`.
    fn name(&self) -> String;

    /// Asks the model once (with the provider's retries) and returns the
    /// answer only if it is valid JSON that satisfies `request.schema`.
    fn propose<'a>(&'a self, request: &'a ProposalRequest) -> ProposeFuture<'a>;

    /// The circuit breaker in front of the server, if the provider has one.
    fn breaker(&self) -> Option<&super::breaker::CircuitBreaker> {
        None
    }
}

/// Why no usable answer came back. Messages never contain the API key;
/// text from the server or the model is redacted and cut short.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("no model provider is configured (llm.provider is none): rules only")]
    NotConfigured,
    #[error("cannot build the HTTP client for {provider}: {source}")]
    Client {
        provider: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the API key for {provider} cannot be used: {problem}")]
    ApiKey {
        provider: String,
        problem: &'static str,
    },
    #[error(
        "the circuit breaker for {provider} is open after repeated failures; retry in {retry_in:?}"
    )]
    CircuitOpen {
        provider: String,
        retry_in: Duration,
    },
    #[error("POST {url}: no complete answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("POST {url}: {detail}")]
    Transport {
        url: String,
        /// The error and its causes ("error sending request: … Connection refused").
        detail: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("POST {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
        /// What the server said about trying again.
        retry: RetryHint,
    },
    /// The server is up and refused this request (a bad `format`, a wrongly
    /// typed option) under a 5xx status: retrying cannot help.
    #[error("POST {url}: HTTP {status}: the server refused the request: {body}")]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
    #[error("POST {url}: the response is larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: usize },
    #[error("POST {url}: the response is not the documented shape: {detail}")]
    Malformed { url: String, detail: String },
    #[error("the model's answer is incomplete: {reason}")]
    Incomplete { reason: String },
    #[error("the model refused: {message}")]
    Refused { message: String },
    #[error("the model's answer is not JSON ({source}); it began {excerpt:?}")]
    InvalidJson {
        excerpt: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the model's answer does not match the schema: {}", violations.join("; "))]
    SchemaViolation { violations: Vec<String> },
    #[error("the incident's JSON Schema does not compile: {detail}")]
    BadSchema { detail: String },
    #[error("the model's answer cannot be used: {reason}")]
    Unusable { reason: String },
    #[error("the model call limiter is closed (shutting down)")]
    ShuttingDown,
}

impl LlmError {
    /// Worth another attempt: the server may answer next time.
    pub fn is_transient(&self) -> bool {
        match self {
            LlmError::Timeout { .. } | LlmError::Transport { .. } => true,
            LlmError::Status { status, retry, .. } => {
                *retry != RetryHint::Never && (*status >= 500 || *status == 429)
            }
            _ => false,
        }
    }

    /// How long the server asked us to wait before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Status {
                retry: RetryHint::After(wait),
                ..
            } => Some(*wait),
            _ => None,
        }
    }

    /// The metric label of a failed model call: `schema_invalid` when the
    /// answer is not JSON matching the incident's schema, `unusable` when it
    /// matches but cannot become a proposal, `error` when no answer came.
    pub fn outcome_label(&self) -> &'static str {
        match self {
            LlmError::Incomplete { .. }
            | LlmError::Refused { .. }
            | LlmError::InvalidJson { .. }
            | LlmError::SchemaViolation { .. } => "schema_invalid",
            LlmError::Unusable { .. } => "unusable",
            _ => "error",
        }
    }

    /// The answer arrived but cannot be trusted: the proposal is discarded,
    /// the server itself is fine.
    pub fn is_bad_answer(&self) -> bool {
        matches!(
            self,
            LlmError::Incomplete { .. }
                | LlmError::Refused { .. }
                | LlmError::InvalidJson { .. }
                | LlmError::SchemaViolation { .. }
                | LlmError::Unusable { .. }
        )
    }
}

/// What an error response said about trying again, beyond its status code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetryHint {
    /// Nothing: the status code decides, with our own backoff.
    #[default]
    Unspecified,
    /// A `retry-after` header: the server will take us again after this long.
    After(Duration),
    /// The server said waiting will not help (a spent quota): no retry.
    Never,
}

/// The rules-only provider: every call says "not configured".
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProvider;

impl Provider for NoProvider {
    fn name(&self) -> String {
        "none".into()
    }

    fn propose<'a>(&'a self, _request: &'a ProposalRequest) -> ProposeFuture<'a> {
        Box::pin(async { Err(LlmError::NotConfigured) })
    }
}

/// The provider the configuration names.
pub fn build_provider(config: &LlmConfig) -> Result<Arc<dyn Provider>, LlmError> {
    Ok(match config.provider {
        ProviderKind::None => Arc::new(NoProvider),
        ProviderKind::Ollama => Arc::new(OllamaProvider::new(config)?),
        ProviderKind::Openai => Arc::new(OpenAiProvider::new(config)?),
        ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(config)?),
    })
}
