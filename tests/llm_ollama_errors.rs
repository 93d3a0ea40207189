//! The `ollama` provider against an HTTP double that answers with the error
//! shapes a real Ollama 0.17 sends (recorded from the server `make ollama-up`
//! builds): a missing model, a `format` or option the server cannot use, a
//! body that is not JSON, an answer cut at the token limit, and a chat
//! template without a place for the system message. Each must end with a clear
//! error or a flagged proposal, and only an outage may be retried or count
//! against the circuit breaker.
mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiops_operator::llm::ollama::OllamaProvider;
use aiops_operator::llm::{LlmConfig, LlmError, ProposalRequest, Provider, ProviderKind};
use aiops_operator::remediation::propose::model::{Incident, ModelProposer};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use support::{pull_evidence, pull_findings};

// ------------------------------------------------------------------ double

/// Answers `/api/chat` with scripted (status, body) pairs, the last one
/// repeated, and counts the requests; `/api/show` shows `template`.
#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<(u16, String)>>,
    requests: Mutex<usize>,
    template: String,
}

/// The template `make ollama-up` imports the models with.
const CHATML: &str = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n";

struct Double {
    url: String,
    script: Arc<Script>,
}

impl Double {
    async fn start(replies: Vec<(u16, String)>) -> Double {
        Double::with_template(replies, CHATML).await
    }

    async fn with_template(replies: Vec<(u16, String)>, template: &str) -> Double {
        let script = Arc::new(Script {
            replies: Mutex::new(replies.into()),
            requests: Mutex::new(0),
            template: template.to_string(),
        });
        let app = axum::Router::new()
            .route("/api/chat", axum::routing::post(answer))
            .route("/api/show", axum::routing::post(show))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Double { url, script }
    }

    fn requests(&self) -> usize {
        *self.script.requests.lock().unwrap()
    }
}

async fn answer(State(script): State<Arc<Script>>) -> Response {
    *script.requests.lock().unwrap() += 1;
    let mut replies = script.replies.lock().unwrap();
    let (status, body) = if replies.len() > 1 {
        replies.pop_front().expect("a reply")
    } else {
        replies.front().cloned().expect("a reply")
    };
    (
        StatusCode::from_u16(status).expect("a status"),
        [("content-type", "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn show(State(script): State<Arc<Script>>) -> Response {
    axum::Json(json!({"template": script.template, "details": {"format": "gguf"}})).into_response()
}

fn error(status: u16, message: &str) -> (u16, String) {
    (status, json!({ "error": message }).to_string())
}

/// A finished, non-streaming `/api/chat` answer as Ollama 0.17 sends it.
fn chat(content: &str, done_reason: &str, prompt_eval_count: u64) -> (u16, String) {
    let body = json!({
        "model": "smollm2-135m-instruct",
        "created_at": "2026-11-30T21:04:11.5Z",
        "message": {"role": "assistant", "content": content},
        "done": true,
        "done_reason": done_reason,
        "total_duration": 3_812_000_000u64,
        "load_duration": 41_000_000,
        "prompt_eval_count": prompt_eval_count,
        "prompt_eval_duration": 2_100_000_000u64,
        "eval_count": 107,
        "eval_duration": 1_600_000_000u64
    });
    (200, body.to_string())
}

// ---------------------------------------------------------------- fixtures

/// Three attempts and a breaker that opens on the first failure: a request
/// error that were treated as an outage would show as extra requests or as
/// an open breaker.
fn config(url: &str) -> LlmConfig {
    LlmConfig {
        provider: ProviderKind::Ollama,
        url: url.into(),
        model: "smollm2-135m-instruct".into(),
        timeout: Duration::from_secs(5),
        max_attempts: 3,
        retry_backoff: Duration::from_millis(10),
        breaker_threshold: 1,
        breaker_cooldown: Duration::from_secs(60),
        ..LlmConfig::default()
    }
}

fn request() -> ProposalRequest {
    ProposalRequest {
        max_answer_tokens: None,
        examples: Vec::new(),
        system: "Answer with one JSON object.".into(),
        user: "Which image?".into(),
        schema: json!({
            "type": "object",
            "properties": {"image": {"type": "string"}},
            "required": ["image"],
            "additionalProperties": false
        }),
        schema_name: "fix".into(),
    }
}

/// Sends one request and returns the outcome, the requests the double saw,
/// and whether the breaker still lets calls through.
async fn call_once(replies: Vec<(u16, String)>) -> (Result<Value, LlmError>, usize, bool) {
    call_with(config, replies).await
}

async fn call_with(
    config: impl Fn(&str) -> LlmConfig,
    replies: Vec<(u16, String)>,
) -> (Result<Value, LlmError>, usize, bool) {
    let double = Double::start(replies).await;
    let provider = OllamaProvider::new(&config(&double.url)).expect("provider");
    let outcome = provider.propose(&request()).await.map(|a| a.answer);
    let admitted = provider.transport().breaker().admit().is_ok();
    (outcome, double.requests(), admitted)
}

// ------------------------------------------------------------------ shapes

#[tokio::test]
async fn a_missing_model_is_a_404_with_the_servers_words_and_no_retry() {
    let (outcome, requests, admitted) =
        call_once(vec![error(404, "model 'smollm2-135m-instruct' not found")]).await;
    match outcome {
        Err(LlmError::Status {
            status: 404, body, ..
        }) => {
            assert_eq!(body, "model 'smollm2-135m-instruct' not found")
        }
        other => panic!("expected a 404 status error, got {other:?}"),
    }
    assert_eq!(requests, 1);
    assert!(admitted, "a missing model opened the breaker");
}

#[tokio::test]
async fn an_unusable_format_is_a_refused_request_not_an_outage() {
    for message in [
        "invalid JSON schema in format",
        "invalid format: \"yaml\"; expected \"json\" or a valid JSON Schema object",
    ] {
        let (outcome, requests, admitted) = call_once(vec![error(500, message)]).await;
        match outcome {
            Err(LlmError::Rejected {
                status: 500, body, ..
            }) => assert_eq!(body, message),
            other => panic!("{message}: expected a refused request, got {other:?}"),
        }
        assert_eq!(requests, 1, "{message}: retried");
        assert!(admitted, "{message}: counted against the breaker");
    }
}

#[tokio::test]
async fn a_wrongly_typed_option_is_a_refused_request_not_an_outage() {
    let message = "option \"temperature\" must be of type float32";
    let (outcome, requests, admitted) = call_once(vec![error(500, message)]).await;
    assert!(
        matches!(&outcome, Err(LlmError::Rejected { status: 500, body, .. }) if body == message),
        "{outcome:?}"
    );
    let shown = outcome.expect_err("an error").to_string();
    assert!(shown.contains("refused the request"), "{shown}");
    assert_eq!(requests, 1);
    assert!(admitted);
}

#[tokio::test]
async fn a_dead_runner_is_still_an_outage_retried_and_held_against_the_server() {
    // The breaker opens only after all three attempts, so each one is seen.
    let patient = |url: &str| LlmConfig {
        breaker_threshold: 3,
        ..config(url)
    };
    let (outcome, requests, admitted) = call_with(
        patient,
        vec![error(
            500,
            "llama runner process has terminated: signal: killed",
        )],
    )
    .await;
    assert!(
        matches!(outcome, Err(LlmError::Status { status: 500, .. })),
        "{outcome:?}"
    );
    assert_eq!(requests, 3, "an outage was not retried");
    assert!(!admitted, "an outage did not count against the breaker");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_400_and_not_retried() {
    let (outcome, requests, admitted) = call_once(vec![error(
        400,
        "invalid character 'x' looking for beginning of value",
    )])
    .await;
    assert!(
        matches!(outcome, Err(LlmError::Status { status: 400, .. })),
        "{outcome:?}"
    );
    assert_eq!(requests, 1);
    assert!(admitted);
}

#[tokio::test]
async fn an_answer_cut_at_the_token_limit_is_a_clear_error() {
    // Ollama reports the cut with done: true and done_reason "length".
    let (outcome, _, _) = call_once(vec![chat("{\"image\": \"ngi", "length", 12)]).await;
    match outcome {
        Err(LlmError::Incomplete { reason }) => {
            assert!(
                reason.contains("token limit") && reason.contains("llm.maxTokens"),
                "{reason}"
            )
        }
        other => panic!("expected an incomplete answer, got {other:?}"),
    }
}

// ------------------------------------------------------- dropped system prompt

fn fix() -> String {
    json!({
        "changes": [{"container": "app", "image": "nginx:1.25.5"}],
        "confidence": 0.7
    })
    .to_string()
}

/// The proposal's risks when Ollama shows `template` for the model and
/// reports `prompt_eval_count` as `count` of the operator's estimate.
async fn risks_with(template: &str, count: impl Fn(usize) -> u64) -> Vec<String> {
    let (evidence, findings) = (pull_evidence("shop"), pull_findings());
    let images = vec!["nginx:1.25.5".to_string()];
    let incident = Incident {
        evidence: &evidence,
        findings: &findings,
        cluster_images: &images,
    };
    let probe =
        ModelProposer::from_config(&config("http://127.0.0.1:9"), 2 << 30).expect("proposer");
    let estimated = probe.request_for(&incident).1.estimated_tokens;
    let double =
        Double::with_template(vec![chat(&fix(), "stop", count(estimated))], template).await;
    let proposer = ModelProposer::from_config(&config(&double.url), 2 << 30).expect("proposer");
    let model = proposer.propose(&incident).await.expect("a proposal");
    assert_eq!(model.proposal.hash, model.proposal.content_hash());
    model.proposal.risks
}

#[tokio::test]
async fn a_template_that_drops_the_system_message_is_flagged_on_the_proposal() {
    // What `ollama create` gives a bare GGUF: the system message is lost.
    let risks = risks_with("{{ .Prompt }}", |estimated| estimated as u64 / 3).await;
    let flagged: Vec<_> = risks
        .iter()
        .filter(|r| r.contains("system message") && r.contains("{{ .Prompt }}"))
        .collect();
    assert_eq!(flagged.len(), 1, "{risks:#?}");
}

#[tokio::test]
async fn a_full_count_with_a_chat_template_carries_no_flag() {
    // Ollama counts cached prompt tokens too: a warm call's count is the
    // whole prompt's, within the estimate's error.
    for share in [0.8, 1.0, 1.3] {
        let risks = risks_with(CHATML, |estimated| (estimated as f64 * share) as u64).await;
        assert!(
            risks
                .iter()
                .all(|r| !r.contains("system message") && !r.contains("prompt tokens")),
            "{share}: {risks:#?}"
        );
    }
}

#[tokio::test]
async fn a_count_far_below_the_estimate_is_flagged_whatever_the_template() {
    let risks = risks_with(CHATML, |estimated| estimated as u64 / 3).await;
    let flagged: Vec<_> = risks
        .iter()
        .filter(|r| r.contains("prompt tokens where about") && r.contains("did not reach"))
        .collect();
    assert_eq!(flagged.len(), 1, "{risks:#?}");
}
