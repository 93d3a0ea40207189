//! OpenAI-compatible chat completions with JSON Schema outputs:
//! `POST {url}/v1/chat/completions` with
//! `response_format: {type: json_schema, json_schema: {name, strict: true, schema}}`,
//! temperature 0 and a fixed seed. Works with llama.cpp's server, vLLM,
//! LocalAI and OpenAI. `cache_prompt: true` lets llama.cpp keep the
//! previous prompt's context and read only what differs: every prompt
//! starts with the same system message, so an incident costs only its own
//! part (other servers ignore the field). The price is that a reused
//! context may change the last bits of the logits, so the same prompt is
//! not guaranteed the same answer; the proposal cache, not the seed, is
//! what makes a repeated incident get the same proposal.
//! The answer is `choices[0].message.content`; token counts come from `usage`.
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::LlmConfig;
use super::provider::{LlmError, ModelAnswer, ProposalRequest, ProposeFuture, Provider, Usage};
use super::transport::HttpTransport;
use super::validate::validate_answer;
use crate::k8s::redact::{redact, truncate};

/// A model behind an OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct OpenAiProvider {
    endpoint: String,
    model: String,
    seed: i64,
    max_tokens: u32,
    transport: HttpTransport,
}

#[derive(Debug, Deserialize)]
struct CompletionResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
    /// llama.cpp's own measurements; other servers leave it out.
    #[serde(default)]
    timings: Option<ServerTimings>,
}

/// llama.cpp's `timings`: milliseconds reading the prompt and generating,
/// and how many prompt tokens came from its cache.
#[derive(Debug, Default, Deserialize)]
struct ServerTimings {
    #[serde(default)]
    cache_n: Option<u64>,
    #[serde(default)]
    prompt_ms: Option<f64>,
    #[serde(default)]
    predicted_ms: Option<f64>,
}

fn whole_ms(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        ms.round() as u64
    } else {
        0
    }
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Option<ChoiceMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CompletionUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl OpenAiProvider {
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        Ok(OpenAiProvider {
            endpoint: format!("{}/v1/chat/completions", config.url.trim_end_matches('/')),
            model: config.model.clone(),
            seed: config.seed,
            max_tokens: config.max_tokens,
            transport: HttpTransport::new(config)?,
        })
    }

    pub fn transport(&self) -> &HttpTransport {
        &self.transport
    }

    /// The request body, exactly as sent.
    pub fn request_body(&self, request: &ProposalRequest) -> Value {
        json!({
            "model": self.model,
            "messages": request.messages_with_system(),
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "strict": true,
                    "schema": request.schema,
                },
            },
            "temperature": 0,
            "seed": self.seed,
            "max_tokens": request.completion_limit(self.max_tokens),
            "stream": false,
            "cache_prompt": true,
        })
    }

    async fn call(&self, request: &ProposalRequest) -> Result<ModelAnswer, LlmError> {
        let body = self
            .transport
            .post_json(&self.endpoint, &self.request_body(request))
            .await?;
        let malformed = |detail: String| LlmError::Malformed {
            url: self.endpoint.clone(),
            detail,
        };
        let response: CompletionResponse =
            serde_json::from_slice(&body).map_err(|e| malformed(e.to_string()))?;
        let choice = response
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| malformed("no choices in the response".into()))?;
        let message = choice
            .message
            .ok_or_else(|| malformed("choices[0] has no message".into()))?;
        if let Some(refusal) = message.refusal.filter(|r| !r.is_empty()) {
            return Err(LlmError::Refused {
                message: truncate(&redact(&refusal), 300),
            });
        }
        if choice.finish_reason.as_deref() == Some("length") {
            return Err(LlmError::Incomplete {
                reason: "the answer hit the token limit (finish_reason: length)".into(),
            });
        }
        let content = message
            .content
            .ok_or_else(|| malformed("choices[0].message.content is null".into()))?;
        let usage = response.usage.unwrap_or(CompletionUsage {
            prompt_tokens: None,
            completion_tokens: None,
        });
        let timings = response.timings.unwrap_or_default();
        Ok(ModelAnswer {
            answer: validate_answer(&request.schema, &content)?,
            usage: Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cached_prompt_tokens: timings.cache_n,
                prompt_ms: timings.prompt_ms.map(whole_ms),
                generation_ms: timings.predicted_ms.map(whole_ms),
            },
            notes: Vec::new(),
        })
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> String {
        format!("openai:{}", self.model)
    }

    fn breaker(&self) -> Option<&super::breaker::CircuitBreaker> {
        Some(self.transport.breaker())
    }

    fn propose<'a>(&'a self, request: &'a ProposalRequest) -> ProposeFuture<'a> {
        Box::pin(self.call(request))
    }
}
