//! The model settings: which provider, where, which model, and the limits
//! every call runs under, parsed from the `llm.*` keys of the operator's
//! ConfigMap. The API key never comes from the ConfigMap: it is read from
//! the [`API_KEY_ENV`] variable, which the Deployment fills from a Secret.
//! Anthropic's hosted API cannot be called without one, so for that
//! provider a missing key is a configuration error, not a failed call later.
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The environment variable holding the API key of a hosted provider
/// (OpenAI-compatible or Anthropic), filled from a Secret.
pub const API_KEY_ENV: &str = "LLM_API_KEY";
/// Ollama's own defaults.
pub const OLLAMA_DEFAULT_URL: &str = "http://127.0.0.1:11434";
pub const OLLAMA_DEFAULT_MODEL: &str = "qwen2.5:7b";
/// llama.cpp's server listens here by default.
pub const OPENAI_DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Anthropic's API; `/v1/messages` is appended.
pub const ANTHROPIC_DEFAULT_URL: &str = "https://api.anthropic.com";
/// A dated snapshot rather than an alias, so the default does not change
/// model under a running operator. Haiku 4.5 takes structured outputs and
/// still accepts `temperature: 0`, which newer Claude models refuse.
pub const ANTHROPIC_DEFAULT_MODEL: &str = "claude-haiku-4-5-20251001";

/// Which model server proposals come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// Rules only: no model is asked.
    #[default]
    None,
    Ollama,
    /// Any server with OpenAI's chat completions API and JSON Schema outputs.
    Openai,
    /// Anthropic's Messages API (Claude) with structured outputs; needs LLM_API_KEY.
    Anthropic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::None => "none",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }
}

impl FromStr for ProviderKind {
    type Err = ConfigError;
    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(ProviderKind::None),
            "ollama" => Ok(ProviderKind::Ollama),
            "openai" => Ok(ProviderKind::Openai),
            "anthropic" => Ok(ProviderKind::Anthropic),
            other => Err(ConfigError::Invalid {
                key: "llm.provider",
                value: other.to_string(),
                expected: "none, ollama, openai or anthropic",
            }),
        }
    }
}

/// An API key. `Debug` and `Display` never show it; only [`ApiKey::expose`] does,
/// for the one place that writes it into a request header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Everything about how the operator talks to a model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmConfig {
    pub provider: ProviderKind,
    /// Base URL of the server (no `/api/chat` or `/v1/...` suffix).
    pub url: String,
    pub model: String,
    /// Per HTTP attempt, including reading the whole answer.
    pub timeout: Duration,
    /// Model calls in flight at once, across all Remediations.
    pub max_concurrency: usize,
    /// Ask the model even when the rules have a fix.
    pub always: bool,
    pub api_key: Option<ApiKey>,
    /// Attempts per call (first try included) on 5xx, 429, timeouts and connection errors.
    pub max_attempts: u32,
    /// The first retry's delay; it doubles per retry, with jitter.
    pub retry_backoff: Duration,
    /// Consecutive failed attempts that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker fails calls fast before trying again.
    pub breaker_cooldown: Duration,
    /// Bytes of HTTP response body read at most.
    pub max_response_bytes: usize,
    /// Sampling seed (with temperature 0) so answers are reproducible.
    pub seed: i64,
    /// Ollama's `keep_alive`: how long the model stays loaded after a call.
    pub keep_alive: String,
    /// Tokens the model may generate per answer.
    pub max_tokens: u32,
    /// Estimated tokens the prompt may take; the evidence is cut to fit.
    pub prompt_token_budget: usize,
    pub cache_capacity: usize,
    pub cache_ttl: Duration,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            provider: ProviderKind::None,
            url: String::new(),
            model: String::new(),
            timeout: Duration::from_secs(60),
            max_concurrency: 1,
            always: false,
            api_key: None,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(500),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            max_response_bytes: 256 * 1024,
            seed: 42,
            keep_alive: "5m".into(),
            max_tokens: 1024,
            prompt_token_budget: 3000,
            cache_capacity: 256,
            cache_ttl: Duration::from_secs(3600),
        }
    }
}

/// A bad `llm.*` setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{key}: {value:?} is not valid; expected {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{key} is required when llm.provider is {provider}")]
    Missing {
        key: &'static str,
        provider: &'static str,
    },
    #[error("unknown setting {key:?} (known: {known})")]
    Unknown { key: String, known: String },
    #[error(
        "llm.provider is {provider} but the {env} environment variable is unset or empty; \
         fill it from a Secret (valueFrom.secretKeyRef) in the Deployment"
    )]
    MissingApiKey {
        env: &'static str,
        provider: &'static str,
    },
}

const KEYS: &[&str] = &[
    "llm.provider",
    "llm.url",
    "llm.model",
    "llm.timeoutSeconds",
    "llm.maxConcurrency",
    "llm.always",
    "llm.maxAttempts",
    "llm.retryBackoffMillis",
    "llm.breakerThreshold",
    "llm.breakerCooldownSeconds",
    "llm.maxResponseBytes",
    "llm.seed",
    "llm.keepAlive",
    "llm.maxTokens",
    "llm.promptTokenBudget",
    "llm.cacheSize",
    "llm.cacheTtlSeconds",
];

impl LlmConfig {
    /// Parses the `llm.*` keys of a ConfigMap's data (other keys belong to
    /// other parts of the operator and are ignored). `env` looks up
    /// environment variables: `OLLAMA_URL`, `OLLAMA_MODEL` fill in what the
    /// ConfigMap leaves out for Ollama, and [`API_KEY_ENV`] holds the key.
    pub fn from_config_map(
        data: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<LlmConfig, ConfigError> {
        if let Some(key) = data
            .keys()
            .find(|k| k.starts_with("llm.") && !KEYS.contains(&k.as_str()))
        {
            return Err(ConfigError::Unknown {
                key: key.clone(),
                known: KEYS.join(", "),
            });
        }
        let get = |key: &str| {
            data.get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let defaults = LlmConfig::default();
        let provider: ProviderKind = get("llm.provider").unwrap_or_default().parse()?;

        let (url, model) = match provider {
            ProviderKind::None => (String::new(), String::new()),
            ProviderKind::Ollama => (
                get("llm.url")
                    .or_else(|| env("OLLAMA_URL"))
                    .unwrap_or_else(|| OLLAMA_DEFAULT_URL.into()),
                get("llm.model")
                    .or_else(|| env("OLLAMA_MODEL"))
                    .unwrap_or_else(|| OLLAMA_DEFAULT_MODEL.into()),
            ),
            ProviderKind::Openai => (
                get("llm.url").unwrap_or_else(|| OPENAI_DEFAULT_URL.into()),
                get("llm.model").ok_or(ConfigError::Missing {
                    key: "llm.model",
                    provider: "openai",
                })?,
            ),
            ProviderKind::Anthropic => (
                get("llm.url").unwrap_or_else(|| ANTHROPIC_DEFAULT_URL.into()),
                get("llm.model").unwrap_or_else(|| ANTHROPIC_DEFAULT_MODEL.into()),
            ),
        };
        let api_key = env(API_KEY_ENV).map(|k| ApiKey::new(k.trim()));
        if provider == ProviderKind::Anthropic && api_key.is_none() {
            return Err(ConfigError::MissingApiKey {
                env: API_KEY_ENV,
                provider: "anthropic",
            });
        }
        if provider != ProviderKind::None {
            check_url(&url)?;
        }

        Ok(LlmConfig {
            provider,
            url: url.trim_end_matches('/').to_string(),
            model,
            timeout: seconds(&get, "llm.timeoutSeconds", 1..=600)?.unwrap_or(defaults.timeout),
            max_concurrency: number(&get, "llm.maxConcurrency", 1..=16)?
                .map_or(defaults.max_concurrency, |n| n as usize),
            always: boolean(&get, "llm.always")?.unwrap_or(defaults.always),
            api_key,
            max_attempts: number(&get, "llm.maxAttempts", 1..=10)?
                .map_or(defaults.max_attempts, |n| n as u32),
            retry_backoff: number(&get, "llm.retryBackoffMillis", 0..=60_000)?
                .map_or(defaults.retry_backoff, Duration::from_millis),
            breaker_threshold: number(&get, "llm.breakerThreshold", 1..=100)?
                .map_or(defaults.breaker_threshold, |n| n as u32),
            breaker_cooldown: seconds(&get, "llm.breakerCooldownSeconds", 1..=3600)?
                .unwrap_or(defaults.breaker_cooldown),
            max_response_bytes: number(&get, "llm.maxResponseBytes", 1024..=16 * 1024 * 1024)?
                .map_or(defaults.max_response_bytes, |n| n as usize),
            seed: match get("llm.seed") {
                None => defaults.seed,
                Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
                    key: "llm.seed",
                    value: v,
                    expected: "an integer",
                })?,
            },
            keep_alive: get("llm.keepAlive").unwrap_or(defaults.keep_alive),
            max_tokens: number(&get, "llm.maxTokens", 64..=16_384)?
                .map_or(defaults.max_tokens, |n| n as u32),
            prompt_token_budget: number(&get, "llm.promptTokenBudget", 500..=128_000)?
                .map_or(defaults.prompt_token_budget, |n| n as usize),
            cache_capacity: number(&get, "llm.cacheSize", 0..=100_000)?
                .map_or(defaults.cache_capacity, |n| n as usize),
            cache_ttl: seconds(&get, "llm.cacheTtlSeconds", 1..=7 * 24 * 3600)?
                .unwrap_or(defaults.cache_ttl),
        })
    }

    /// `ollama:qwen2.5:7b`: the proposal `source` and the log name.
    pub fn source_name(&self) -> String {
        format!("{}:{}", self.provider.as_str(), self.model)
    }
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: "llm.url",
            value: url.to_string(),
            expected: "an http:// or https:// URL",
        })
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ConfigError> {
    let Some(text) = get(key) else {
        return Ok(None);
    };
    match text.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(ConfigError::Invalid {
            key,
            value: text,
            expected: "a whole number in the allowed range (see the README)",
        }),
    }
}

fn seconds(
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<Duration>, ConfigError> {
    Ok(number(get, key, range)?.map(Duration::from_secs))
}

fn boolean(
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
) -> Result<Option<bool>, ConfigError> {
    match get(key).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ConfigError::Invalid {
            key,
            value: other.to_string(),
            expected: "true or false",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn empty_data_means_rules_only() {
        let config = LlmConfig::from_config_map(&data(&[("mode", "Enforce")]), no_env).unwrap();
        assert_eq!(config.provider, ProviderKind::None);
        assert!(!config.always);
        assert_eq!(config.max_concurrency, 1);
    }

    #[test]
    fn ollama_defaults_follow_ollama_and_env_fills_gaps() {
        let config =
            LlmConfig::from_config_map(&data(&[("llm.provider", "ollama")]), no_env).unwrap();
        assert_eq!(config.url, OLLAMA_DEFAULT_URL);
        assert_eq!(config.model, OLLAMA_DEFAULT_MODEL);
        assert_eq!(config.source_name(), "ollama:qwen2.5:7b");

        let env = |name: &str| match name {
            "OLLAMA_URL" => Some("http://ollama.ai.svc:11434/".to_string()),
            "OLLAMA_MODEL" => Some("llama3.2:3b".to_string()),
            _ => None,
        };
        let config = LlmConfig::from_config_map(&data(&[("llm.provider", "ollama")]), env).unwrap();
        assert_eq!(config.url, "http://ollama.ai.svc:11434");
        assert_eq!(config.model, "llama3.2:3b");

        // The ConfigMap wins over the environment.
        let config = LlmConfig::from_config_map(
            &data(&[("llm.provider", "ollama"), ("llm.model", "qwen2.5:14b")]),
            env,
        )
        .unwrap();
        assert_eq!(config.model, "qwen2.5:14b");
    }

    #[test]
    fn openai_needs_a_model_and_takes_the_key_from_the_environment() {
        let err =
            LlmConfig::from_config_map(&data(&[("llm.provider", "openai")]), no_env).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                key: "llm.model",
                ..
            }
        ));

        let env = |name: &str| (name == API_KEY_ENV).then(|| "sk-test-123".to_string());
        let config = LlmConfig::from_config_map(
            &data(&[
                ("llm.provider", "OpenAI"),
                ("llm.url", "https://api.example.com"),
                ("llm.model", "gpt-4o-mini"),
                ("llm.timeoutSeconds", "30"),
                ("llm.maxConcurrency", "4"),
                ("llm.always", "true"),
            ]),
            env,
        )
        .unwrap();
        assert_eq!(config.provider, ProviderKind::Openai);
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.max_concurrency, 4);
        assert!(config.always);
        assert_eq!(
            config.api_key.as_ref().map(ApiKey::expose),
            Some("sk-test-123")
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-test-123"), "{debug}");
        assert!(debug.contains("REDACTED"));
    }

    #[test]
    fn anthropic_defaults_to_the_hosted_api_and_needs_a_key() {
        let err = LlmConfig::from_config_map(&data(&[("llm.provider", "anthropic")]), no_env)
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::MissingApiKey {
                env: API_KEY_ENV,
                provider: "anthropic"
            }
        );
        assert!(err.to_string().contains("LLM_API_KEY"), "{err}");
        // A blank Secret value is no key either.
        let blank = |name: &str| (name == API_KEY_ENV).then(|| "  \n".to_string());
        assert!(
            LlmConfig::from_config_map(&data(&[("llm.provider", "anthropic")]), blank).is_err()
        );

        let env =
            |name: &str| (name == API_KEY_ENV).then(|| "sk-ant-test-0123456789\n".to_string());
        let config =
            LlmConfig::from_config_map(&data(&[("llm.provider", "Anthropic")]), env).unwrap();
        assert_eq!(config.provider, ProviderKind::Anthropic);
        assert_eq!(config.url, ANTHROPIC_DEFAULT_URL);
        assert_eq!(config.model, ANTHROPIC_DEFAULT_MODEL);
        assert_eq!(
            config.source_name(),
            format!("anthropic:{ANTHROPIC_DEFAULT_MODEL}")
        );
        assert_eq!(
            config.api_key.as_ref().map(ApiKey::expose),
            Some("sk-ant-test-0123456789")
        );
        assert!(!format!("{config:?}").contains("sk-ant-test"));

        let config = LlmConfig::from_config_map(
            &data(&[
                ("llm.provider", "anthropic"),
                ("llm.url", "https://llm-gateway.example.com/"),
                ("llm.model", "claude-sonnet-4-6"),
            ]),
            env,
        )
        .unwrap();
        assert_eq!(config.url, "https://llm-gateway.example.com");
        assert_eq!(config.model, "claude-sonnet-4-6");
    }

    #[test]
    fn bad_values_and_unknown_keys_are_errors() {
        for (key, value) in [
            ("llm.provider", "gpt"),
            ("llm.timeoutSeconds", "0"),
            ("llm.timeoutSeconds", "ten"),
            ("llm.maxConcurrency", "100"),
            ("llm.always", "yes"),
            ("llm.url", "ftp://x"),
        ] {
            let result = LlmConfig::from_config_map(
                &data(&[("llm.provider", "ollama"), (key, value)]),
                no_env,
            );
            assert!(result.is_err(), "{key}={value} was accepted");
        }
        let err = LlmConfig::from_config_map(&data(&[("llm.modle", "x")]), no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Unknown { .. }));
    }
}
