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
//! the system message silently. Two checks catch that, each noted on the
//! proposal: the template, read once (`POST {url}/api/show`), and the
//! prompt token count. `prompt_eval_count` counts every token of the
//! rendered prompt, also those the runner took from its cache (Ollama
//! 0.17.4: 433 counted for a warm call whose prompt took 26 ms), so a count
//! far below the operator's own estimate means part of the prompt never
//! reached the model.
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::LlmConfig;
use super::provider::{LlmError, ModelAnswer, ProposalRequest, ProposeFuture, Provider, Usage};
use super::transport::HttpTransport;
use super::validate::validate_answer;
use crate::k8s::redact::truncate;

/// A model served by Ollama.
#[derive(Debug)]
pub struct OllamaProvider {
    endpoint: String,
    show_endpoint: String,
    /// What the model's chat template means for the system message, once
    /// read: `Some(note)` when the template drops it.
    template_note: tokio::sync::OnceCell<Option<String>>,
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
    /// Nanoseconds reading the prompt and generating the answer.
    #[serde(default)]
    prompt_eval_duration: Option<u64>,
    #[serde(default)]
    eval_duration: Option<u64>,
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
            show_endpoint: format!("{}/api/show", config.url.trim_end_matches('/')),
            template_note: tokio::sync::OnceCell::new(),
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
            "messages": request.messages_with_system(),
            "stream": false,
            "format": request.schema,
            "options": {
                "temperature": 0,
                "seed": self.seed,
                "num_predict": request.completion_limit(self.max_tokens),
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
                    "the answer was cut at the {}-token limit (done_reason: length; \
                     the smaller of llm.maxTokens and what the answer schema needs)",
                    request.completion_limit(self.max_tokens)
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
        let mut notes: Vec<String> = self.template_note().await.into_iter().collect();
        notes.extend(short_count_note(
            response.prompt_eval_count,
            request.estimated_prompt_tokens(),
        ));
        Ok(ModelAnswer {
            answer,
            usage: Usage {
                prompt_tokens: response.prompt_eval_count,
                completion_tokens: response.eval_count,
                // Ollama does not say how many prompt tokens it reused.
                cached_prompt_tokens: None,
                prompt_ms: response.prompt_eval_duration.map(|ns| ns / 1_000_000),
                generation_ms: response.eval_duration.map(|ns| ns / 1_000_000),
            },
            notes,
        })
    }
}

impl OllamaProvider {
    /// A note when the model's chat template drops the system message. The
    /// template is read once; a failed read is tried again on the next call
    /// and adds no note (the chat call reports a server that is down).
    async fn template_note(&self) -> Option<String> {
        let read = self
            .template_note
            .get_or_try_init(|| async {
                let body = self
                    .transport
                    .post_json(&self.show_endpoint, &json!({"model": self.model}))
                    .await?;
                let shown: ShowResponse =
                    serde_json::from_slice(&body).map_err(|e| LlmError::Malformed {
                        url: self.show_endpoint.clone(),
                        detail: e.to_string(),
                    })?;
                let note = (!template_reads_system(&shown.template)).then(|| {
                    tracing::warn!(
                        model = %self.model,
                        template = %truncate(&shown.template, 200),
                        "the model's chat template has no place for the system message"
                    );
                    format!(
                        "the model's chat template in Ollama ({:?}) has no place for the system \
                         message, so the model answered without its instructions; import the \
                         model with a TEMPLATE that renders .System or .Messages",
                        truncate(&shown.template, 80)
                    )
                });
                Ok::<_, LlmError>(note)
            })
            .await;
        match read {
            Ok(note) => note.clone(),
            Err(error) => {
                tracing::debug!(%error, "cannot read the model's chat template");
                None
            }
        }
    }
}

/// A note when Ollama counted far fewer prompt tokens than were sent: less
/// than half of the operator's estimate (characters / 4, which came within
/// a few tokens of Qwen's and SmolLM2's counts for these prompts).
fn short_count_note(counted: Option<u64>, estimated: usize) -> Option<String> {
    let counted = counted?;
    if counted.saturating_mul(2) >= estimated as u64 {
        return None;
    }
    tracing::warn!(
        counted,
        estimated,
        "Ollama counted far fewer prompt tokens than were sent"
    );
    Some(format!(
        "Ollama counted {counted} prompt tokens where about {estimated} were sent: part of the \
         prompt (the system message or the incident) did not reach the model, so its answer \
         may ignore the operator's instructions"
    ))
}

/// The fields of `/api/show` read here.
#[derive(Debug, Deserialize)]
struct ShowResponse {
    #[serde(default)]
    template: String,
}

/// Whether a Go-template chat template renders the system message: through
/// `.System`, or through `.Messages`, which holds it as the first message.
pub fn template_reads_system(template: &str) -> bool {
    template.contains(".System") || template.contains(".Messages")
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

    fn breaker(&self) -> Option<&super::breaker::CircuitBreaker> {
        Some(self.transport.breaker())
    }

    fn propose<'a>(&'a self, request: &'a ProposalRequest) -> ProposeFuture<'a> {
        Box::pin(self.call(request))
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn a_template_without_a_system_slot_is_recognised() {
        // What `ollama create` gives these GGUFs without a TEMPLATE.
        assert!(!template_reads_system("{{ .Prompt }}"));
        assert!(template_reads_system(
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
        ));
        assert!(template_reads_system(
            "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>{{ end }}{{ .Prompt }}"
        ));
    }
}
