//! Ollama's chat API with structured outputs: `POST {url}/api/chat` with
//! `stream: false`, `format` set to the incident's JSON Schema, `options`
//! with temperature 0 and a fixed seed, and `keep_alive`. The answer is
//! `message.content` of the single, `done` response object; token counts
//! come from `prompt_eval_count` and `eval_count`.
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::LlmConfig;
use super::provider::{LlmError, ModelAnswer, ProposalRequest, ProposeFuture, Provider, Usage};
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
                reason: "the answer hit the token limit (done_reason: length)".into(),
            });
        }
        let content = response
            .message
            .map(|m| m.content)
            .ok_or_else(|| LlmError::Malformed {
                url: self.endpoint.clone(),
                detail: "no message in the response".into(),
            })?;
        Ok(ModelAnswer {
            answer: validate_answer(&request.schema, &content)?,
            usage: Usage {
                prompt_tokens: response.prompt_eval_count,
                completion_tokens: response.eval_count,
            },
        })
    }
}

impl Provider for OllamaProvider {
    fn name(&self) -> String {
        format!("ollama:{}", self.model)
    }

    fn propose<'a>(&'a self, request: &'a ProposalRequest) -> ProposeFuture<'a> {
        Box::pin(self.call(request))
    }
}
