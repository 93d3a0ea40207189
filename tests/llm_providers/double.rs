//! An HTTP double of a model server: records every request, answers from a
//! script (or one reply for all), and can hang, stream or decide per request.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub type Responder = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

/// What the double answers with.
#[derive(Clone)]
pub enum Reply {
    Json(u16, Value),
    Text(u16, String),
    /// Never answers.
    Hang,
    /// A 200 streamed in chunks with no Content-Length, this many bytes.
    Chunked(usize),
    /// Decides from the request body.
    Obey(Responder),
}

#[derive(Default)]
pub struct DoubleState {
    pub bodies: Mutex<Vec<Value>>,
    pub auth: Mutex<Vec<Option<String>>>,
    pub script: Mutex<VecDeque<Reply>>,
    pub fallback: Mutex<Option<Reply>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub delay: Mutex<Duration>,
}

pub struct Double {
    pub url: String,
    pub state: Arc<DoubleState>,
}

impl Double {
    pub async fn start() -> Double {
        let state = Arc::new(DoubleState::default());
        let app = axum::Router::new()
            .route("/api/chat", axum::routing::post(handle))
            .route("/v1/chat/completions", axum::routing::post(handle))
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

    pub fn push(&self, reply: Reply) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    pub fn always(&self, reply: Reply) {
        *self.state.fallback.lock().unwrap() = Some(reply);
    }

    pub fn requests(&self) -> usize {
        self.state.bodies.lock().unwrap().len()
    }

    pub fn last_body(&self) -> Value {
        self.state
            .bodies
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

async fn handle(
    State(state): State<Arc<DoubleState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).expect("the request body is JSON");
    state.bodies.lock().unwrap().push(body.clone());
    state.auth.lock().unwrap().push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    );
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = *state.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let scripted = state.script.lock().unwrap().pop_front();
    let mut reply = scripted
        .or_else(|| state.fallback.lock().unwrap().clone())
        .unwrap_or(Reply::Text(500, "no reply scripted".into()));
    if let Reply::Obey(decide) = &reply {
        reply = decide(&body);
    }
    let response = match reply {
        Reply::Json(status, value) => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            value.to_string(),
        )
            .into_response(),
        Reply::Text(status, text) => (StatusCode::from_u16(status).unwrap(), text).into_response(),
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Chunked(total) => {
            let chunks = (0..total / 8192 + 1)
                .map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 8192])));
            Response::new(Body::from_stream(futures::stream::iter(chunks)))
        }
        Reply::Obey(_) => (StatusCode::INTERNAL_SERVER_ERROR, "nested obey").into_response(),
    };
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

/// Ollama's documented non-streaming `/api/chat` response.
pub fn ollama_reply(content: &str) -> Reply {
    Reply::Json(
        200,
        json!({
            "model": "qwen2.5:7b",
            "created_at": "2026-05-01T10:00:00.000000Z",
            "message": {"role": "assistant", "content": content},
            "done_reason": "stop",
            "done": true,
            "total_duration": 4_883_583_458u64,
            "load_duration": 1_334_875,
            "prompt_eval_count": 812,
            "prompt_eval_duration": 342_546_000,
            "eval_count": 64,
            "eval_duration": 4_535_599_000u64
        }),
    )
}

/// The OpenAI chat completions response, as llama.cpp's server sends it.
pub fn openai_reply(content: &str) -> Reply {
    Reply::Json(
        200,
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_767_000_000,
            "model": "qwen2.5-coder-0.5b",
            "system_fingerprint": "b1-abc",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 900, "completion_tokens": 70, "total_tokens": 970}
        }),
    )
}
