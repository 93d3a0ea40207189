//! OpenAI-compatible chat completions with JSON Schema outputs:
//! `POST {url}/v1/chat/completions` with
//! `response_format: {type: json_schema, json_schema: {name, strict: true, schema}}`,
//! temperature 0 and a fixed seed. Works with llama.cpp's server, vLLM,
//! LocalAI and OpenAI. `cache_prompt: false` makes llama.cpp recompute the
//! prompt so a fixed seed gives the same answer; other servers ignore it.
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
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.user},
            ],
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
            "max_tokens": self.max_tokens,
            "stream": false,
            "cache_prompt": false,
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
        Ok(ModelAnswer {
            answer: validate_answer(&request.schema, &content)?,
            usage: Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            },
            notes: Vec::new(),
        })
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> String {
        format!("openai:{}", self.model)
    }

    fn propose<'a>(&'a self, request: &'a ProposalRequest) -> ProposeFuture<'a> {
        Box::pin(self.call(request))
    }
}
