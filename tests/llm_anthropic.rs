//! The Anthropic provider against a double of the Messages API on
//! 127.0.0.1 (no network, no model): the exact request (headers and body,
//! the schema cut to what structured outputs accept), the documented
//! response and error shapes, and what each error does to retries and to
//! the circuit breaker: `overloaded_error` (529) and `rate_limit_error`
//! (429, with `retry-after`) are retried, a `max_tokens` stop is a clear
//! error, request errors (400, 401, 403, 404) are neither retried nor held
//! against the breaker. Also: the key only in `x-api-key`, planted secrets
//! never sent, and `aiops-operator llm propose --provider anthropic`.
mod support;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiops_operator::llm::anthropic::{ANTHROPIC_VERSION, AnthropicProvider, api_schema};
use aiops_operator::llm::{
    ApiKey, LlmConfig, LlmError, ProposalRequest, Provider, ProviderKind, build_provider,
};
use aiops_operator::remediation::crd::LogTail;
use aiops_operator::remediation::evidence::summarize_containers;
use aiops_operator::remediation::propose::model::{Incident, ModelProposer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use support::{crash_findings, no_change_answer, pull_evidence, pull_findings};

const KEY: &str = "sk-ant-api03-planted-key-0123456789abcdef";
const MODEL: &str = "claude-haiku-4-5-20251001";

// ------------------------------------------------------------------ double

/// One scripted answer: status, extra headers, JSON body.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

/// What one request carried.
#[derive(Clone, Debug)]
struct Seen {
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct DoubleState {
    seen: Mutex<Vec<Seen>>,
    script: Mutex<VecDeque<Reply>>,
}

struct Double {
    url: String,
    state: Arc<DoubleState>,
}

impl Double {
    async fn start() -> Double {
        let state = Arc::new(DoubleState::default());
        let app = axum::Router::new()
            .route("/v1/messages", axum::routing::post(messages))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Double { url, state }
    }

    fn push(&self, reply: Reply) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    fn requests(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    fn last(&self) -> Seen {
        self.state
            .seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

async fn messages(
    State(state): State<Arc<DoubleState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).expect("the request body is JSON");
    state.seen.lock().unwrap().push(Seen { headers, body });
    let reply = state.script.lock().unwrap().pop_front().unwrap_or(Reply {
        status: 500,
        headers: vec![],
        body: api_error("api_error", "no reply scripted"),
    });
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", "application/json")],
        reply.body.to_string(),
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

/// A documented Messages response: the answer in one `text` block.
fn message(text: &str, stop_reason: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![("request-id", "req_double_1".into())],
        body: json!({
            "id": "msg_double_0001",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": {
                "input_tokens": 1210,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 96,
                "service_tier": "standard"
            }
        }),
    }
}

/// The documented error body every failed call carries.
fn api_error(kind: &str, message: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_double_error"
    })
}

fn error_reply(status: u16, kind: &str, message: &str) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: api_error(kind, message),
    }
}

// ---------------------------------------------------------------- fixtures

fn config(url: &str) -> LlmConfig {
    LlmConfig {
        provider: ProviderKind::Anthropic,
        url: url.into(),
        model: MODEL.into(),
        api_key: Some(ApiKey::new(KEY)),
        timeout: Duration::from_secs(5),
        max_concurrency: 2,
        retry_backoff: Duration::from_millis(20),
        breaker_threshold: 5,
        breaker_cooldown: Duration::from_secs(60),
        cache_capacity: 0,
        ..LlmConfig::default()
    }
}

fn cluster_images() -> Vec<String> {
    vec!["nginx:1.25.5".into()]
}

fn good_answer() -> String {
    json!({
        "changes": [{"container": "app", "image": "nginx:1.25.5"}],
        "confidence": 0.8
    })
    .to_string()
}

fn proposer(config: &LlmConfig) -> ModelProposer {
    ModelProposer::new(build_provider(config).expect("provider"), config, 2 << 30)
}

/// A small request for the provider-level tests.
fn small_request() -> ProposalRequest {
    ProposalRequest {
        max_answer_tokens: None,
        examples: Vec::new(),
        system: "Answer with the fix object.".into(),
        user: "The pod cannot pull ngnix:1.25.5.".into(),
        schema: json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["image"],
            "properties": {"image": {"type": "string", "enum": ["nginx:1.25.5"]}}
        }),
        schema_name: "remediation_fix".into(),
    }
}

fn small_answer() -> Reply {
    message(r#"{"image":"nginx:1.25.5"}"#, "end_turn")
}

fn header(seen: &Seen, name: &str) -> Option<String> {
    seen.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Keywords structured outputs refuse, anywhere in a schema; and every
/// object must be closed.
fn unsupported_keywords(schema: &Value, at: &str, found: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for key in [
                "maxLength",
                "minLength",
                "pattern",
                "minimum",
                "maximum",
                "maxItems",
                "oneOf",
            ] {
                if map.contains_key(key) {
                    found.push(format!("{at}/{key}"));
                }
            }
            if map.get("type") == Some(&json!("object"))
                && map.get("additionalProperties") != Some(&json!(false))
            {
                found.push(format!("{at}: open object"));
            }
            for (key, child) in map {
                // Property names are data, not keywords.
                if key == "properties" {
                    for (name, property) in child.as_object().into_iter().flatten() {
                        unsupported_keywords(property, &format!("{at}/properties/{name}"), found);
                    }
                } else {
                    unsupported_keywords(child, &format!("{at}/{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unsupported_keywords(item, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------- protocol

#[tokio::test]
async fn claude_gets_the_documented_request_and_its_answer_becomes_a_proposal() {
    let double = Double::start().await;
    double.push(message(&good_answer(), "end_turn"));
    let config = config(&double.url);
    let proposer = proposer(&config);
    let evidence = pull_evidence("shop");
    let findings = pull_findings();
    let images = cluster_images();
    let incident = Incident {
        evidence: &evidence,
        findings: &findings,
        cluster_images: &images,
    };
    let (request, _) = proposer.request_for(&incident);
    let model = proposer.propose(&incident).await.expect("a proposal");

    // A decision: one worked example, as a user and an assistant turn.
    assert_eq!(request.examples.len(), 1);
    let seen = double.last();
    assert_eq!(header(&seen, "x-api-key").as_deref(), Some(KEY));
    assert_eq!(
        header(&seen, "anthropic-version").as_deref(),
        Some(ANTHROPIC_VERSION)
    );
    assert_eq!(ANTHROPIC_VERSION, "2023-06-01");
    assert_eq!(
        header(&seen, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        header(&seen, "authorization"),
        None,
        "the key travels once, in x-api-key"
    );
    assert_eq!(
        seen.body,
        json!({
            "model": MODEL,
            "max_tokens": request.completion_limit(1024),
            "system": request.system,
            "messages": [
                {"role": "user", "content": request.examples[0].user},
                {"role": "assistant", "content": request.examples[0].assistant},
                {"role": "user", "content": request.user},
            ],
            "output_config": {"format": {"type": "json_schema", "schema": api_schema(&request.schema)}},
            "temperature": 0
        })
    );
    let schema = &seen.body["output_config"]["format"]["schema"];
    let mut unsupported = Vec::new();
    unsupported_keywords(schema, "", &mut unsupported);
    assert!(
        unsupported.is_empty(),
        "not accepted by structured outputs: {unsupported:?}"
    );
    // The verified candidate is still an enum the API enforces.
    let variant = &schema["properties"]["changes"]["items"];
    let image = variant
        .get("anyOf")
        .and_then(|v| v[0]["properties"]["image"].as_object())
        .or_else(|| variant["properties"]["image"].as_object())
        .cloned()
        .expect("an image property");
    assert_eq!(image["enum"], json!(["nginx:1.25.5", null]));
    // What the API cannot enforce is still told to the model.
    assert!(
        schema["properties"]["changes"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("maxItems: 1")),
        "{}",
        schema["properties"]["changes"]
    );

    assert_eq!(model.proposal.source, format!("anthropic:{MODEL}"));
    assert_eq!(model.usage.prompt_tokens, Some(1210));
    assert_eq!(model.usage.completion_tokens, Some(96));
    assert_eq!(
        model.proposal.actions[0]
            .patch
            .pointer("/spec/template/spec/containers/0"),
        Some(&json!({"name": "app", "image": "nginx:1.25.5"}))
    );
}

#[tokio::test]
async fn thinking_blocks_before_the_text_are_skipped() {
    let double = Double::start().await;
    let mut reply = small_answer();
    reply.body["content"] = json!([
        {"type": "thinking", "thinking": "The repository is misspelled.", "signature": "c2ln"},
        {"type": "text", "text": "{\"image\":"},
        {"type": "text", "text": "\"nginx:1.25.5\"}"}
    ]);
    double.push(reply);
    let provider = AnthropicProvider::new(&config(&double.url)).unwrap();
    let answer = provider.propose(&small_request()).await.expect("an answer");
    assert_eq!(answer.answer, json!({"image": "nginx:1.25.5"}));
}

#[tokio::test]
async fn the_answer_is_checked_against_the_full_schema_not_the_one_sent() {
    let double = Double::start().await;
    let mut request = small_request();
    request.schema["properties"]["note"] = json!({"type": "string", "maxLength": 5});
    request.schema["required"] = json!(["image", "note"]);
    double.push(message(
        r#"{"image":"nginx:1.25.5","note":"far longer than five"}"#,
        "end_turn",
    ));
    let provider = AnthropicProvider::new(&config(&double.url)).unwrap();
    let outcome = provider.propose(&request).await;
    assert!(
        matches!(&outcome, Err(LlmError::SchemaViolation { violations })
            if violations.iter().any(|v| v.contains("/note"))),
        "{outcome:?}"
    );
    // The bound was not sent as a keyword, only as words.
    let sent = &double.last().body["output_config"]["format"]["schema"]["properties"]["note"];
    assert_eq!(sent.get("maxLength"), None);
    assert!(
        sent["description"]
            .as_str()
            .unwrap()
            .contains("maxLength: 5")
    );
}

// ------------------------------------------------------------------ errors

#[tokio::test]
async fn an_overloaded_api_is_retried_and_then_answers() {
    let double = Double::start().await;
    double.push(error_reply(529, "overloaded_error", "Overloaded"));
    double.push(error_reply(529, "overloaded_error", "Overloaded"));
    double.push(small_answer());
    let provider = AnthropicProvider::new(&config(&double.url)).unwrap();
    let answer = provider.propose(&small_request()).await.expect("an answer");
    assert_eq!(answer.answer["image"], "nginx:1.25.5");
    assert_eq!(double.requests(), 3);
    assert!(!provider.transport().breaker().is_open());
}

#[tokio::test]
async fn an_api_that_stays_overloaded_opens_the_breaker() {
    let double = Double::start().await;
    let mut config = config(&double.url);
    config.max_attempts = 3;
    config.breaker_threshold = 3;
    let provider = AnthropicProvider::new(&config).unwrap();
    for _ in 0..3 {
        double.push(error_reply(529, "overloaded_error", "Overloaded"));
    }
    let outcome = provider.propose(&small_request()).await;
    let error = outcome.as_ref().err().map(ToString::to_string);
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("HTTP 529: overloaded_error: Overloaded")),
        "{error:?}"
    );
    assert_eq!(double.requests(), 3);
    assert!(provider.transport().breaker().is_open());
    let outcome = provider.propose(&small_request()).await;
    assert!(
        matches!(outcome, Err(LlmError::CircuitOpen { .. })),
        "{outcome:?}"
    );
    assert_eq!(double.requests(), 3, "nothing sent while open");
}

#[tokio::test]
async fn a_rate_limit_waits_as_long_as_retry_after_says_then_retries() {
    let double = Double::start().await;
    let mut limited = error_reply(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization",
    );
    limited.headers.push(("retry-after", "1".into()));
    double.push(limited);
    double.push(small_answer());
    let provider = AnthropicProvider::new(&config(&double.url)).unwrap();
    let started = Instant::now();
    let answer = provider.propose(&small_request()).await.expect("an answer");
    let elapsed = started.elapsed();
    assert_eq!(answer.answer["image"], "nginx:1.25.5");
    assert_eq!(double.requests(), 2);
    // Our own backoff here is 20 ms; the server asked for a second.
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
}

#[tokio::test]
async fn a_retry_after_beyond_the_calls_time_budget_is_not_waited_for() {
    let double = Double::start().await;
    let mut config = config(&double.url);
    config.timeout = Duration::from_secs(1);
    config.max_attempts = 3;
    let mut limited = error_reply(429, "rate_limit_error", "Number of request tokens exceeded");
    limited.headers.push(("retry-after", "60".into()));
    double.push(limited);
    let provider = AnthropicProvider::new(&config).unwrap();
    let started = Instant::now();
    let outcome = provider.propose(&small_request()).await;
    assert!(
        matches!(&outcome, Err(LlmError::Status { status: 429, body, .. })
            if body.starts_with("rate_limit_error:")),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(800));
    assert_eq!(double.requests(), 1);
}

#[tokio::test]
async fn a_spent_monthly_quota_is_not_retried() {
    let double = Double::start().await;
    let mut spent = error_reply(
        429,
        "rate_limit_error",
        "Your organization has reached its monthly spend limit",
    );
    spent.body["error"]["details"] = json!({"error_code": "enforced_spend_limit_reached"});
    double.push(spent);
    let provider = AnthropicProvider::new(&config(&double.url)).unwrap();
    let outcome = provider.propose(&small_request()).await;
    assert!(
        matches!(outcome, Err(LlmError::Status { status: 429, .. })),
        "{outcome:?}"
    );
    assert_eq!(double.requests(), 1);
}

#[tokio::test]
async fn a_max_tokens_stop_is_a_cut_answer_not_a_schema_error() {
    let double = Double::start().await;
    double.push(message(r#"{"image":"ngi"#, "max_tokens"));
    let provider = AnthropicProvider::new(&config(&double.url)).unwrap();
    let outcome = provider.propose(&small_request()).await;
    let error = match outcome {
        Err(error @ LlmError::Incomplete { .. }) => error,
        other => panic!("expected an incomplete answer, got {other:?}"),
    };
    let text = error.to_string();
    assert!(text.contains("stop_reason: max_tokens"), "{text}");
    assert!(text.contains("llm.maxTokens"), "{text}");
    assert!(error.is_bad_answer());
    assert_eq!(double.requests(), 1, "the same limit would cut it again");
    assert!(!provider.transport().breaker().is_open());
}

#[tokio::test]
async fn a_refusal_is_reported_as_one() {
    let double = Double::start().await;
    double.push(message("", "refusal"));
    let provider = AnthropicProvider::new(&config(&double.url)).unwrap();
    let outcome = provider.propose(&small_request()).await;
    assert!(
        matches!(outcome, Err(LlmError::Refused { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn request_errors_are_neither_retried_nor_held_against_the_breaker() {
    let double = Double::start().await;
    let mut config = config(&double.url);
    // One failure would open it: none of these may count as one.
    config.breaker_threshold = 1;
    let provider = AnthropicProvider::new(&config).unwrap();
    let cases = [
        (
            400,
            "invalid_request_error",
            "temperature: Input should be less than or equal to 1",
        ),
        (401, "authentication_error", "invalid x-api-key"),
        (
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        (404, "not_found_error", "model: claude-nonexistent"),
    ];
    for (status, kind, message) in cases {
        double.push(error_reply(status, kind, message));
        let before = double.requests();
        let outcome = provider.propose(&small_request()).await;
        let error = outcome
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            error.contains(&format!("HTTP {status}: {kind}: {message}")),
            "{status}: {error}"
        );
        assert!(!error.contains(KEY), "{error}");
        assert_eq!(double.requests(), before + 1, "{status} was retried");
        assert!(
            !provider.transport().breaker().is_open(),
            "{status} opened the breaker"
        );
        assert_eq!(outcome.err().map(|e| e.outcome_label()), Some("error"));
    }
    double.push(small_answer());
    assert!(provider.propose(&small_request()).await.is_ok());
}

#[tokio::test]
async fn an_error_body_that_echoes_a_credential_is_redacted() {
    let double = Double::start().await;
    double.push(error_reply(
        401,
        "authentication_error",
        &format!("invalid x-api-key {KEY}"),
    ));
    let provider = AnthropicProvider::new(&config(&double.url)).unwrap();
    let error = provider.propose(&small_request()).await.unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(!text.contains("planted-key"), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
}

// --------------------------------------------------------------- redaction

#[tokio::test]
async fn planted_secrets_and_the_key_never_reach_the_request_body() {
    let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(json!({
        "containers": [{
            "name": "app",
            "image": "ngnix:1.25.5",
            "args": ["--db-password", "PLANTED-ARG-hunter2", "--api-key=PLANTED-FLAG-k3y"],
            "env": [{"name": "DB_PASSWORD", "value": "PLANTED-ENV-s3cret"}]
        }]
    }))
    .expect("pod spec");
    let mut evidence = pull_evidence("shop");
    evidence.containers = summarize_containers(&spec);
    // Raw log lines, as if the gatherer had not redacted them.
    evidence.logs = vec![LogTail {
        pod: "web-1".into(),
        container: "app".into(),
        previous: true,
        lines: vec![
            "connecting with password=PLANTED-LOG-pw1 to db:5432".into(),
            "Authorization: Bearer PLANTEDLOGBEARER0123456789".into(),
            "using key AKIAIOSFODNN7EXAMPLE".into(),
        ],
    }];

    let double = Double::start().await;
    // A crash: its change classes send the env names, the args and the log.
    double.push(message(&no_change_answer(), "end_turn"));
    let config = config(&double.url);
    let proposer = proposer(&config);
    proposer
        .propose(&Incident {
            evidence: &evidence,
            findings: &crash_findings(),
            cluster_images: &[],
        })
        .await
        .expect("a proposal");
    let sent = double.last().body.to_string();
    for planted in [
        "PLANTED-ARG",
        "PLANTED-FLAG",
        "PLANTED-ENV",
        "PLANTED-LOG",
        "PLANTEDLOGBEARER",
        "AKIAIOSFODNN7EXAMPLE",
        KEY,
    ] {
        assert!(!sent.contains(planted), "{planted} was sent to the model");
    }
    assert!(
        sent.contains("DB_PASSWORD"),
        "names are kept, values are not"
    );
    assert!(!format!("{config:?} {proposer:?}").contains("planted-key"));
}

// --------------------------------------------------------------------- CLI

fn run_cli(url: &str, key: Option<&str>, file: &Path) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_aiops-operator"));
    command
        .args(["llm", "propose", "--provider", "anthropic", "--url", url])
        .arg("--evidence")
        .arg(file)
        .arg("--policies")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
        .args(["--cluster-image", "nginx:1.25.5"])
        .env_remove("LLM_API_KEY");
    if let Some(key) = key {
        command.env("LLM_API_KEY", key);
    }
    command.output().expect("run the binary")
}

#[tokio::test]
async fn llm_propose_takes_the_anthropic_provider_and_needs_the_key() {
    let double = Double::start().await;
    double.push(message(&good_answer(), "end_turn"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evidence.json");
    let mut evidence = serde_json::to_value(pull_evidence("shop")).unwrap();
    evidence["statuses"] = json!([{"pod": "web-1", "container": "app",
        "state": "waiting: ImagePullBackOff", "image": "ngnix:1.25.5"}]);
    std::fs::write(&file, evidence.to_string()).unwrap();

    let url = double.url.clone();
    let cli_file = file.clone();
    let output = tokio::task::spawn_blocking(move || run_cli(&url, Some(KEY), &cli_file))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(report["source"], format!("anthropic:{MODEL}"));
    assert_eq!(report["guardrail"]["allowed"], true);
    assert_eq!(report["usage"]["promptTokens"], 1210);
    assert_eq!(header(&double.last(), "x-api-key").as_deref(), Some(KEY));
    assert!(!stdout.contains("planted-key"));

    let url = double.url.clone();
    let output = tokio::task::spawn_blocking(move || run_cli(&url, None, &file))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(stdout.contains("LLM_API_KEY"), "{stdout}");
    assert_eq!(double.requests(), 1, "nothing is sent without a key");
}
