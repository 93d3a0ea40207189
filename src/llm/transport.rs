//! The JSON POST both HTTP providers share, with every limit a call to an
//! untrusted, possibly slow or dead server needs:
//!
//! - a concurrency limit across all calls (a semaphore);
//! - a timeout per attempt that covers reading the whole body;
//! - a cap on the response body, enforced while streaming it;
//! - the HTTP status checked before the body is used;
//! - bounded retries with exponential backoff and jitter on 5xx, 429,
//!   timeouts and connection errors, waiting instead as long as a
//!   `retry-after` header asks when the call's time budget allows it;
//! - a circuit breaker that fails calls fast while the server is down.
//!
//! The API key goes only into one request header (`Authorization: Bearer`,
//! or the header a provider names), marked sensitive.
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::breaker::CircuitBreaker;
use super::config::{ApiKey, LlmConfig};
use super::provider::{LlmError, RetryHint};
use crate::k8s::redact::{redact, truncate};

/// The longest retry delay, whatever the attempt.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Bytes of an error body kept in an error message.
const ERROR_BODY_BYTES: usize = 300;

/// Where a server expects the API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>` (OpenAI and compatible servers).
    Bearer,
    /// The key alone in a header of this name (Anthropic's `x-api-key`).
    Named(&'static str),
}

/// What every request to one server carries besides the body.
#[derive(Clone, Copy, Debug)]
pub struct RequestHeaders {
    pub key: KeyHeader,
    /// Fixed headers such as an API version.
    pub fixed: &'static [(&'static str, &'static str)],
}

impl Default for RequestHeaders {
    fn default() -> Self {
        RequestHeaders {
            key: KeyHeader::Bearer,
            fixed: &[],
        }
    }
}

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
    /// The fixed headers and the key's header, built once. The key's value
    /// is marked sensitive, so `Debug` of this map never prints it.
    headers: HeaderMap,
}

impl HttpTransport {
    /// A transport that sends the key (if any) as a bearer token.
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        HttpTransport::with_headers(config, RequestHeaders::default())
    }

    pub fn with_headers(config: &LlmConfig, headers: RequestHeaders) -> Result<Self, LlmError> {
        let provider = config.source_name();
        let headers = header_map(&provider, headers, config.api_key.as_ref())?;
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
            headers,
        })
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
        // The longest a call may take is what the settings already allow
        // when every attempt times out; no wait for a retry may end past it,
        // so a server asking for minutes cannot hold the caller for minutes.
        let deadline = Instant::now() + self.timeout.saturating_mul(self.max_attempts);
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
                    let delay = error
                        .retry_after()
                        .unwrap_or_else(|| backoff(self.retry_backoff, attempt));
                    if Instant::now() + delay > deadline {
                        tracing::warn!(
                            attempt,
                            %error,
                            delay_s = delay.as_secs_f64(),
                            "model call failed; the wait before a retry would outlast the call's time budget"
                        );
                        return Err(error);
                    }
                    tracing::info!(attempt, %error, delay_s = delay.as_secs_f64(), "model call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => {
                    // A 4xx means the server is up and said no; an oversized
                    // body means it misbehaves. Neither is worth a retry.
                    if matches!(error, LlmError::Status { .. }) {
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
        let mut response = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .json(body)
            .send()
            .await
            .map_err(|source| transport_error(url, source))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
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
            let (body, quota_spent) = error_text(&bytes);
            return Err(LlmError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body,
                retry: match retry_after {
                    _ if quota_spent => RetryHint::Never,
                    Some(wait) => RetryHint::After(wait),
                    None => RetryHint::Unspecified,
                },
            });
        }
        Ok(bytes)
    }
}

/// The fixed headers plus the key's header, with the key marked sensitive.
fn header_map(
    provider: &str,
    headers: RequestHeaders,
    key: Option<&ApiKey>,
) -> Result<HeaderMap, LlmError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers.fixed {
        map.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if let Some(key) = key {
        let (name, value) = match headers.key {
            KeyHeader::Bearer => (
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", key.expose()),
            ),
            KeyHeader::Named(name) => (HeaderName::from_static(name), key.expose().to_string()),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| LlmError::ApiKey {
            provider: provider.to_string(),
            problem: "it contains characters an HTTP header cannot carry",
        })?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

/// A `retry-after` header in seconds. The HTTP-date form is not read: model
/// APIs send seconds, and without it our own backoff applies anyway.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: f64 = text.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
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

/// The error code Anthropic puts in a 429 when the organisation's monthly
/// spend cap is reached: access resumes next month, so retrying is futile.
const SPEND_CAP_CODE: &str = "enforced_spend_limit_reached";

/// The server's error message (`{"error": "..."}`, `{"error": {"message": "..."}}`
/// or `{"error": {"type": "...", "message": "..."}}`, or the raw text),
/// redacted and cut short, and whether it says the quota is spent.
fn error_text(bytes: &[u8]) -> (String, bool) {
    let text = String::from_utf8_lossy(bytes);
    let parsed = serde_json::from_str::<Value>(&text).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error.and_then(|error| {
        if let Some(text) = error.as_str() {
            return Some(text.to_string());
        }
        let message = error.get("message").and_then(Value::as_str)?;
        // The type says what kind of "no" it is (`rate_limit_error`,
        // `authentication_error`), which the message alone often does not.
        Some(match error.get("type").and_then(Value::as_str) {
            Some(kind) => format!("{kind}: {message}"),
            None => message.to_string(),
        })
    });
    let quota_spent = error
        .and_then(|e| e.pointer("/details/error_code"))
        .and_then(Value::as_str)
        == Some(SPEND_CAP_CODE);
    let message = message.unwrap_or_else(|| text.into_owned());
    (
        truncate(&redact(message.trim()), ERROR_BODY_BYTES),
        quota_spent,
    )
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
            ("model 'x' not found".to_string(), false)
        );
        assert_eq!(
            error_text(
                br#"{"error":{"message":"bad key sk-abcdefghijklmnopqrstuv","type":"auth"}}"#
            )
            .0,
            "auth: bad key [REDACTED]"
        );
        assert_eq!(
            error_text(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#
            ),
            ("overloaded_error: Overloaded".to_string(), false)
        );
        assert!(error_text(&[b'x'; 5000]).0.len() <= ERROR_BODY_BYTES);
    }

    #[test]
    fn a_spent_quota_is_recognised_and_retry_after_is_read_in_seconds() {
        let spent = br#"{"type":"error","error":{"type":"rate_limit_error","message":"monthly spend cap reached","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        assert!(error_text(spent).1);
        assert!(!error_text(br#"{"error":{"type":"rate_limit_error","message":"slow down"}}"#).1);

        let headers = |value: &'static str| {
            let mut map = HeaderMap::new();
            map.insert(RETRY_AFTER, HeaderValue::from_static(value));
            map
        };
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&headers(" 0.5 ")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&headers("-3")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn the_key_goes_in_one_sensitive_header() {
        let key = ApiKey::new("sk-ant-secret-0123456789");
        let anthropic = RequestHeaders {
            key: KeyHeader::Named("x-api-key"),
            fixed: &[("anthropic-version", "2023-06-01")],
        };
        let map = header_map("anthropic:m", anthropic, Some(&key)).unwrap();
        assert_eq!(map["x-api-key"], "sk-ant-secret-0123456789");
        assert!(map["x-api-key"].is_sensitive());
        assert_eq!(map["anthropic-version"], "2023-06-01");
        assert!(map.get("authorization").is_none());
        assert!(!format!("{map:?}").contains("sk-ant-secret"));

        let map = header_map("openai:m", RequestHeaders::default(), Some(&key)).unwrap();
        assert_eq!(map["authorization"], "Bearer sk-ant-secret-0123456789");
        assert!(map["authorization"].is_sensitive());
        assert!(
            header_map("openai:m", RequestHeaders::default(), None)
                .unwrap()
                .is_empty()
        );

        let broken = ApiKey::new("sk-with\nnewline");
        assert!(matches!(
            header_map("anthropic:m", anthropic, Some(&broken)),
            Err(LlmError::ApiKey { .. })
        ));
    }
}
