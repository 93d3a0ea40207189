//! The JSON POST both HTTP providers share, with every limit a call to an
//! untrusted, possibly slow or dead server needs:
//!
//! - a concurrency limit across all calls (a semaphore);
//! - a timeout per attempt that covers reading the whole body;
//! - a cap on the response body, enforced while streaming it;
//! - the HTTP status checked before the body is used;
//! - bounded retries with exponential backoff and jitter on 5xx, 429,
//!   timeouts and connection errors, except the 5xx answers the provider
//!   knows to be refusals of the request itself;
//! - a circuit breaker that fails calls fast while the server is down.
//!
//! The API key goes only into the `Authorization` header, marked sensitive.
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

use super::breaker::CircuitBreaker;
use super::config::{ApiKey, LlmConfig};
use super::provider::LlmError;
use crate::k8s::redact::{redact, truncate};

/// The longest retry delay, whatever the attempt.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Bytes of an error body kept in an error message.
const ERROR_BODY_BYTES: usize = 300;

/// Tells, from an error status and the server's error message, that the
/// server refused the request itself (so it is neither retried nor an outage).
pub type RequestErrorCheck = fn(status: u16, message: &str) -> bool;

/// A resilient JSON-over-HTTP client for one model server.
#[derive(Debug)]
pub struct HttpTransport {
    /// For error messages and logs: `ollama:qwen2.5:7b`.
    provider: String,
    client: reqwest::Client,
    timeout: Duration,
    max_attempts: u32,
    retry_backoff: Duration,
    max_response_bytes: usize,
    breaker: CircuitBreaker,
    permits: Semaphore,
    api_key: Option<ApiKey>,
    request_error: Option<RequestErrorCheck>,
}

impl HttpTransport {
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        let provider = config.source_name();
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            // A redirect could carry the request (and its key) elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aiops-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| LlmError::Client {
                provider: provider.clone(),
                source,
            })?;
        Ok(HttpTransport {
            provider,
            client,
            timeout: config.timeout,
            max_attempts: config.max_attempts.max(1),
            retry_backoff: config.retry_backoff,
            max_response_bytes: config.max_response_bytes,
            breaker: CircuitBreaker::new(config.breaker_threshold, config.breaker_cooldown),
            permits: Semaphore::new(config.max_concurrency.max(1)),
            api_key: config.api_key.clone(),
            request_error: None,
        })
    }

    /// Some servers answer a malformed request with a 5xx; `check` picks
    /// those out so they fail at once as [`LlmError::Rejected`].
    pub fn with_request_errors(mut self, check: RequestErrorCheck) -> Self {
        self.request_error = Some(check);
        self
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// POSTs `body` to `url` and returns the response body of a 2xx answer.
    #[tracing::instrument(skip_all, fields(provider = %self.provider, url = %url))]
    pub async fn post_json(&self, url: &str, body: &Value) -> Result<Vec<u8>, LlmError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LlmError::ShuttingDown)?;
        let mut attempt = 1;
        loop {
            if let Err(retry_in) = self.breaker.admit() {
                return Err(LlmError::CircuitOpen {
                    provider: self.provider.clone(),
                    retry_in,
                });
            }
            let started = Instant::now();
            let result = match tokio::time::timeout(self.timeout, self.attempt(url, body)).await {
                Ok(result) => result,
                Err(_) => Err(LlmError::Timeout {
                    url: url.to_string(),
                    after: self.timeout,
                }),
            };
            match result {
                Ok(bytes) => {
                    self.breaker.record_success();
                    tracing::debug!(
                        attempt,
                        bytes = bytes.len(),
                        elapsed_s = started.elapsed().as_secs_f64(),
                        "model server answered"
                    );
                    return Ok(bytes);
                }
                Err(error) if error.is_transient() => {
                    self.breaker.record_failure();
                    if attempt >= self.max_attempts {
                        tracing::warn!(attempt, %error, "model call failed; no attempts left");
                        return Err(error);
                    }
                    let delay = backoff(self.retry_backoff, attempt);
                    tracing::info!(attempt, %error, delay_s = delay.as_secs_f64(), "model call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => {
                    // A 4xx or a refusal means the server is up and said no;
                    // an oversized body means it misbehaves. Neither is
                    // worth a retry.
                    if matches!(error, LlmError::Status { .. } | LlmError::Rejected { .. }) {
                        self.breaker.record_success();
                    } else {
                        self.breaker.record_failure();
                    }
                    return Err(error);
                }
            }
        }
    }

    async fn attempt(&self, url: &str, body: &Value) -> Result<Vec<u8>, LlmError> {
        let mut request = self.client.post(url).json(body);
        if let Some(key) = &self.api_key {
            // reqwest marks bearer values sensitive: never printed by Debug.
            request = request.bearer_auth(key.expose());
        }
        let mut response = request
            .send()
            .await
            .map_err(|source| transport_error(url, source))?;
        let status = response.status();
        let too_large = || LlmError::TooLarge {
            url: url.to_string(),
            limit: self.max_response_bytes,
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|source| transport_error(url, source))?
        {
            if bytes.len() + chunk.len() > self.max_response_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let (status, body) = (status.as_u16(), error_text(&bytes));
            let url = url.to_string();
            return Err(match self.request_error {
                Some(refused) if refused(status, &body) => LlmError::Rejected { url, status, body },
                _ => LlmError::Status { url, status, body },
            });
        }
        Ok(bytes)
    }
}

/// A transport error with its causes spelled out: reqwest's own message
/// ("error sending request") does not say what went wrong underneath.
fn transport_error(url: &str, source: reqwest::Error) -> LlmError {
    let source = source.without_url();
    let mut detail = source.to_string();
    let mut cause = std::error::Error::source(&source);
    while let Some(inner) = cause {
        detail.push_str(": ");
        detail.push_str(&inner.to_string());
        cause = inner.source();
    }
    LlmError::Transport {
        url: url.to_string(),
        detail: truncate(&redact(&detail), ERROR_BODY_BYTES),
        source,
    }
}

/// The server's error message (`{"error": "..."}` or `{"error": {"message": "..."}}`
/// or the raw text), redacted and cut short.
fn error_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            error
                .as_str()
                .or_else(|| error.get("message").and_then(Value::as_str))
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.into_owned());
    truncate(&redact(message.trim()), ERROR_BODY_BYTES)
}

/// Exponential backoff with jitter: `base · 2^(attempt-1)`, capped, times a
/// random factor in [0.5, 1) so retries of many callers spread out.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exponential = base
        .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
        .min(MAX_BACKOFF);
    exponential.mul_f64(0.5 + 0.5 * jitter())
}

/// A number in [0, 1) that differs per call, without a random-number crate:
/// the standard library's randomly keyed hasher over the current instant.
fn jitter() -> f64 {
    let hash = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (hash % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        for attempt in 1..=3 {
            let delay = backoff(base, attempt);
            let full = base * (1 << (attempt - 1));
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
        }
        assert!(backoff(base, 30) <= MAX_BACKOFF);
        let delays: std::collections::BTreeSet<_> = (0..20)
            .map(|_| backoff(Duration::from_secs(1), 1))
            .collect();
        assert!(delays.len() > 1, "no jitter");
    }

    #[test]
    fn error_bodies_are_extracted_redacted_and_cut() {
        assert_eq!(
            error_text(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            error_text(
                br#"{"error":{"message":"bad key sk-abcdefghijklmnopqrstuv","type":"auth"}}"#
            ),
            "bad key [REDACTED]"
        );
        assert!(error_text(&[b'x'; 5000]).len() <= ERROR_BODY_BYTES);
    }
}
