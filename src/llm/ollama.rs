//! Ollama's chat API with structured outputs: `POST {url}/api/chat` with
//! `stream: false`, `format` set to the incident's JSON Schema, `options`
//! with temperature 0 and a fixed seed, and `keep_alive`. The answer is
//! `message.content` of the single, `done` response object; token counts
//! come from `prompt_eval_count` and `eval_count`.
//!
//! Ollama answers a request it cannot run (an invalid `format`, an option of
//! the wrong type) with HTTP 500, the status it also uses when the model
//! runner dies; only the message tells them apart, so those messages are
//! recognised here and never retried. Ollama also applies the chat template
//! the model was imported with, and a template without a system slot drops
//! the system message silently: `prompt_eval_count` far below the prompt's
//! size is the only sign, and it becomes a note on the proposal.
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::LlmConfig;
use super::provider::{
    LlmError, ModelAnswer, ProposalRequest, ProposeFuture, Provider, Usage, prompt_shortfall,
};
use super::transport::HttpTransport;
use super::validate::validate_answer;

/// A model served by Ollama.
#[derive(Debug)]
pub struct OllamaProvider {
    endpoint: String,
    model: String,
    seed: i64,
    keep_alive: String,
    max_tokens: u32,
    transport: HttpTransport,
}

/// The documented non-streaming `/api/chat` response (fields we read).
#[derive(Debug, Deserialize)]
struct ChatResponse {
    message: Option<Message>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    content: String,
}

impl OllamaProvider {
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        Ok(OllamaProvider {
            endpoint: format!("{}/api/chat", config.url.trim_end_matches('/')),
            model: config.model.clone(),
            seed: config.seed,
            keep_alive: config.keep_alive.clone(),
            max_tokens: config.max_tokens,
            transport: HttpTransport::new(config)?.with_request_errors(refuses_request),
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
            "stream": false,
            "format": request.schema,
            "options": {
                "temperature": 0,
                "seed": self.seed,
                "num_predict": self.max_tokens,
            },
            "keep_alive": self.keep_alive,
        })
    }

    async fn call(&self, request: &ProposalRequest) -> Result<ModelAnswer, LlmError> {
        let body = self
            .transport
            .post_json(&self.endpoint, &self.request_body(request))
            .await?;
        let response: ChatResponse =
            serde_json::from_slice(&body).map_err(|e| LlmError::Malformed {
                url: self.endpoint.clone(),
                detail: e.to_string(),
            })?;
        if !response.done {
            return Err(LlmError::Incomplete {
                reason: "Ollama answered with done: false".into(),
            });
        }
        if response.done_reason.as_deref() == Some("length") {
            return Err(LlmError::Incomplete {
                reason: format!(
                    "the answer was cut at the {}-token limit (done_reason: length); \
                     raise llm.maxTokens or shorten the prompt",
                    self.max_tokens
                ),
            });
        }
        let content = response
            .message
            .map(|m| m.content)
            .ok_or_else(|| LlmError::Malformed {
                url: self.endpoint.clone(),
                detail: "no message in the response".into(),
            })?;
        let answer = validate_answer(&request.schema, &content)?;
        let notes: Vec<String> =
            prompt_shortfall(request.estimated_prompt_tokens, response.prompt_eval_count)
                .into_iter()
                .collect();
        if !notes.is_empty() {
            tracing::warn!(
                model = %self.model,
                prompt_tokens = response.prompt_eval_count,
                prompt_tokens_estimated = request.estimated_prompt_tokens,
                "the server read far fewer prompt tokens than were sent; its chat template may drop the system message"
            );
        }
        Ok(ModelAnswer {
            answer,
            usage: Usage {
                prompt_tokens: response.prompt_eval_count,
                completion_tokens: response.eval_count,
            },
            notes,
        })
    }
}

/// The 500s Ollama sends for a request it cannot run, by their messages
/// (`llm/server.go` and `api/types.go` in Ollama 0.17): an unusable `format`
/// and an option of the wrong type. Every other 500 may be an outage.
fn refuses_request(status: u16, message: &str) -> bool {
    status == 500
        && (message.starts_with("invalid format")
            || message.starts_with("invalid JSON schema")
            || (message.starts_with("option \"") && message.contains("must be of type")))
}

impl Provider for OllamaProvider {
    fn name(&self) -> String {
        format!("ollama:{}", self.model)
    }

    fn propose<'a>(&'a self, request: &'a ProposalRequest) -> ProposeFuture<'a> {
        Box::pin(self.call(request))
    }
}
