//! Anthropic's Messages API (Claude) with structured outputs:
//! `POST {url}/v1/messages` with the key in `x-api-key`, the
//! `anthropic-version` header, the system prompt in `system`, the user
//! message in `messages`, `temperature: 0`, and the incident's JSON Schema
//! in `output_config.format` (`type: json_schema`), which constrains the
//! model's text to the schema while it is generated. The answer is the
//! text of the response's `text` content blocks; token counts come from
//! `usage.input_tokens` and `usage.output_tokens`.
//!
//! The API accepts only part of JSON Schema for this (no numeric bounds,
//! no string lengths or patterns, `minItems` of 0 or 1 only), so the schema
//! sent is [`api_schema`]: the supported part, with every other constraint
//! written into the property's description for the model to read. The
//! answer is still validated against the full schema, so nothing the API
//! could not enforce gets through unchecked.
//!
//! A response that stopped for any reason but the end of the answer is an
//! error saying so: `max_tokens` (the JSON was cut off), `refusal`, or
//! anything else; a cut answer is never handed to the JSON parser.
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::config::LlmConfig;
use super::provider::{LlmError, ModelAnswer, ProposalRequest, ProposeFuture, Provider, Usage};
use super::transport::{HttpTransport, KeyHeader, RequestHeaders};
use super::validate::validate_answer;
use crate::k8s::redact::{redact, truncate};

/// The API version every request names; the response shapes read here are
/// the ones this version documents.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

const HEADERS: RequestHeaders = RequestHeaders {
    key: KeyHeader::Named("x-api-key"),
    fixed: &[("anthropic-version", ANTHROPIC_VERSION)],
};

/// A Claude model behind Anthropic's Messages API.
#[derive(Debug)]
pub struct AnthropicProvider {
    endpoint: String,
    model: String,
    max_tokens: u32,
    transport: HttpTransport,
}

/// The documented Messages response (the fields we read).
#[derive(Debug, Deserialize)]
struct MessageResponse {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    content: Vec<ContentBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<MessageUsage>,
}

/// One content block. Only `text` blocks carry the answer; `thinking`
/// blocks (models that think by default send them first) are skipped.
#[derive(Debug, Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessageUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl AnthropicProvider {
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        // The configuration refuses a missing key already; this covers a
        // config built in code, so the mistake shows here and not as a 401.
        if config.api_key.is_none() {
            return Err(LlmError::ApiKey {
                provider: config.source_name(),
                problem: "LLM_API_KEY is not set",
            });
        }
        Ok(AnthropicProvider {
            endpoint: format!("{}/v1/messages", config.url.trim_end_matches('/')),
            model: config.model.clone(),
            max_tokens: config.max_tokens,
            transport: HttpTransport::with_headers(config, HEADERS)?,
        })
    }

    pub fn transport(&self) -> &HttpTransport {
        &self.transport
    }

    /// The request body, exactly as sent.
    pub fn request_body(&self, request: &ProposalRequest) -> Value {
        json!({
            "model": self.model,
            "max_tokens": request.completion_limit(self.max_tokens),
            "system": request.system,
            "messages": request.turns(),
            "output_config": {
                "format": {
                    "type": "json_schema",
                    "schema": api_schema(&request.schema),
                },
            },
            "temperature": 0,
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
        let response: MessageResponse =
            serde_json::from_slice(&body).map_err(|e| malformed(e.to_string()))?;
        if let Some(kind) = response.kind.as_deref().filter(|k| *k != "message") {
            return Err(malformed(format!(
                "type is {:?}, not \"message\"",
                truncate(kind, 60)
            )));
        }
        let text: String = response
            .content
            .iter()
            .filter(|block| block.kind == "text")
            .filter_map(|block| block.text.as_deref())
            .collect();
        match response.stop_reason.as_deref() {
            Some("end_turn") => {}
            Some("max_tokens") => {
                return Err(LlmError::Incomplete {
                    reason: format!(
                        "the answer was cut at the {}-token limit (stop_reason: max_tokens; \
                         the smaller of llm.maxTokens and what the answer schema needs)",
                        request.completion_limit(self.max_tokens)
                    ),
                });
            }
            Some("refusal") => {
                return Err(LlmError::Refused {
                    message: if text.trim().is_empty() {
                        "stop_reason: refusal".into()
                    } else {
                        truncate(&redact(text.trim()), 300)
                    },
                });
            }
            Some(other) => {
                return Err(LlmError::Incomplete {
                    reason: format!(
                        "the model stopped before the end of its answer (stop_reason: {})",
                        truncate(other, 60)
                    ),
                });
            }
            None => return Err(malformed("no stop_reason in the response".into())),
        }
        if !response.content.iter().any(|block| block.kind == "text") {
            return Err(malformed("no text block in content".into()));
        }
        let usage = response.usage.unwrap_or(MessageUsage {
            input_tokens: None,
            output_tokens: None,
        });
        Ok(ModelAnswer {
            answer: validate_answer(&request.schema, &text)?,
            usage: Usage {
                prompt_tokens: usage.input_tokens,
                completion_tokens: usage.output_tokens,
                ..Usage::default()
            },
            notes: Vec::new(),
        })
    }
}

impl Provider for AnthropicProvider {
    fn name(&self) -> String {
        format!("anthropic:{}", self.model)
    }

    fn breaker(&self) -> Option<&super::breaker::CircuitBreaker> {
        Some(self.transport.breaker())
    }

    fn propose<'a>(&'a self, request: &'a ProposalRequest) -> ProposeFuture<'a> {
        Box::pin(self.call(request))
    }
}

/// String formats the API can enforce; others become description text.
const API_STRING_FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "uri",
    "ipv4",
    "ipv6",
    "uuid",
];

/// `schema` cut down to what the structured-outputs API accepts. Kept:
/// types, `enum`, `const`, `anyOf`/`allOf` (`oneOf` becomes `anyOf`: looser
/// for the API, and the full check afterwards still wants exactly one),
/// properties, `required`, `items`, local `$ref`/`$defs`, descriptions,
/// supported string formats and `minItems` of 0 or 1. Every object is
/// closed (`additionalProperties: false`), as the API requires. Anything
/// else (`maxLength`, `pattern`, `minimum`, `maxItems`, ...) is listed in
/// the description: the model reads it, and [`validate_answer`] enforces it.
pub fn api_schema(schema: &Value) -> Value {
    let Some(object) = schema.as_object() else {
        return schema.clone();
    };
    let mut kept = Map::new();
    let mut unenforced: Vec<String> = Vec::new();
    for (key, value) in object {
        match key.as_str() {
            "type" | "enum" | "const" | "required" | "title" | "description" | "$ref" => {
                kept.insert(key.clone(), value.clone());
            }
            "properties" | "$defs" | "definitions" => {
                let children = value
                    .as_object()
                    .map(|map| {
                        map.iter()
                            .map(|(name, child)| (name.clone(), api_schema(child)))
                            .collect::<Map<_, _>>()
                    })
                    .unwrap_or_default();
                kept.insert(key.clone(), Value::Object(children));
            }
            "items" => {
                kept.insert(key.clone(), api_schema(value));
            }
            "anyOf" | "oneOf" | "allOf" => {
                let variants = value
                    .as_array()
                    .map(|list| list.iter().map(api_schema).collect())
                    .unwrap_or_default();
                let key = if key == "allOf" { "allOf" } else { "anyOf" };
                kept.insert(key.into(), Value::Array(variants));
            }
            "format" if value.as_str().is_some_and(is_api_format) => {
                kept.insert(key.clone(), value.clone());
            }
            "minItems" if matches!(value.as_u64(), Some(0 | 1)) => {
                kept.insert(key.clone(), value.clone());
            }
            // Closed below whatever it said: the API takes no other value.
            "additionalProperties" => {}
            // Annotations that constrain nothing.
            "$schema" | "$id" | "$comment" | "examples" | "default" => {}
            _ => unenforced.push(format!("{key}: {value}")),
        }
    }
    if has_type(object, "object") || kept.contains_key("properties") {
        kept.insert("additionalProperties".into(), Value::Bool(false));
    }
    if !unenforced.is_empty() {
        // Sorted, so the text (and the request) is the same whatever order
        // the schema's keys were in.
        unenforced.sort();
        let note = format!("Also required: {}.", unenforced.join(", "));
        let description = match kept.get("description").and_then(Value::as_str) {
            Some(text) => format!("{text} {note}"),
            None => note,
        };
        kept.insert("description".into(), Value::String(description));
    }
    Value::Object(kept)
}

fn is_api_format(format: &str) -> bool {
    API_STRING_FORMATS.contains(&format)
}

/// Whether `type` is `name` or a list that includes it.
fn has_type(schema: &Map<String, Value>, name: &str) -> bool {
    match schema.get("type") {
        Some(Value::String(kind)) => kind == name,
        Some(Value::Array(kinds)) => kinds.iter().any(|k| k.as_str() == Some(name)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::config::{ApiKey, ProviderKind};

    fn config() -> LlmConfig {
        LlmConfig {
            provider: ProviderKind::Anthropic,
            url: "https://api.anthropic.com/".into(),
            model: "claude-haiku-4-5-20251001".into(),
            api_key: Some(ApiKey::new("sk-ant-unit-0123456789")),
            ..LlmConfig::default()
        }
    }

    #[test]
    fn unsupported_constraints_move_into_the_description() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "required": ["summary", "confidence", "changes"],
            "properties": {
                "summary": {"type": "string", "minLength": 1, "maxLength": 300},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "when": {"type": "string", "format": "date-time"},
                "changes": {
                    "type": "array",
                    "maxItems": 2,
                    "minItems": 1,
                    "items": {"anyOf": [{
                        "type": "object",
                        "properties": {
                            "image": {"type": ["string", "null"], "pattern": "^[a-z]+$",
                                      "description": "The new image."},
                            "memoryLimitMiB": {"type": ["integer", "null"], "enum": [64, 128, null]}
                        }
                    }]}
                }
            }
        });
        let sent = api_schema(&schema);
        assert_eq!(sent.get("$schema"), None);
        assert_eq!(sent["additionalProperties"], false);
        assert_eq!(sent["required"], schema["required"]);
        assert_eq!(
            sent["properties"]["summary"],
            json!({"type": "string", "description": "Also required: maxLength: 300, minLength: 1."})
        );
        assert_eq!(
            sent["properties"]["confidence"]["description"],
            "Also required: maximum: 1, minimum: 0."
        );
        assert_eq!(sent["properties"]["when"]["format"], "date-time");
        let changes = &sent["properties"]["changes"];
        assert_eq!(changes["minItems"], 1);
        assert_eq!(changes.get("maxItems"), None);
        assert_eq!(changes["description"], "Also required: maxItems: 2.");
        let variant = &changes["items"]["anyOf"][0];
        // An object without additionalProperties is closed for the API.
        assert_eq!(variant["additionalProperties"], false);
        assert_eq!(
            variant["properties"]["image"],
            json!({"type": ["string", "null"],
                   "description": "The new image. Also required: pattern: \"^[a-z]+$\"."})
        );
        assert_eq!(
            variant["properties"]["memoryLimitMiB"]["enum"],
            json!([64, 128, null])
        );
    }

    #[test]
    fn the_body_names_the_model_limit_system_and_schema() {
        let provider = AnthropicProvider::new(&config()).unwrap();
        let request = ProposalRequest {
            max_answer_tokens: None,
            examples: Vec::new(),
            system: "You fix workloads.".into(),
            user: "The pod crashes.".into(),
            schema: json!({"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}},
                           "required": ["a"], "additionalProperties": false}),
            schema_name: "remediation_fix".into(),
        };
        assert_eq!(
            provider.request_body(&request),
            json!({
                "model": "claude-haiku-4-5-20251001",
                "max_tokens": 1024,
                "system": "You fix workloads.",
                "messages": [{"role": "user", "content": "The pod crashes."}],
                "output_config": {"format": {"type": "json_schema", "schema": {
                    "type": "object",
                    "properties": {"a": {"type": "string", "description": "Also required: maxLength: 3."}},
                    "required": ["a"],
                    "additionalProperties": false
                }}},
                "temperature": 0
            })
        );
        assert_eq!(provider.name(), "anthropic:claude-haiku-4-5-20251001");
        assert_eq!(provider.endpoint, "https://api.anthropic.com/v1/messages");
        assert!(!format!("{provider:?}").contains("sk-ant-unit"));
    }

    #[test]
    fn no_key_is_refused_before_any_call() {
        let mut config = config();
        config.api_key = None;
        let error = AnthropicProvider::new(&config).unwrap_err();
        assert!(matches!(error, LlmError::ApiKey { .. }), "{error}");
        assert!(error.to_string().contains("LLM_API_KEY"), "{error}");
    }
}
