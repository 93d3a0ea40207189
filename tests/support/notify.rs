//! Notification receivers as local HTTP servers in the test, and the
//! operator's `notify.*` ConfigMap keys pointed at them (and cleared when
//! the test ends).
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::sandbox::Sandbox;

/// What one local receiver got, and how many requests it should refuse first.
#[derive(Default)]
pub struct Inbox {
    pub bodies: Vec<Value>,
    pub requests: usize,
    pub refuse_first: usize,
}

async fn receive(State(inbox): State<Arc<Mutex<Inbox>>>, Json(body): Json<Value>) -> StatusCode {
    let mut inbox = inbox.lock().unwrap();
    inbox.requests += 1;
    if inbox.requests <= inbox.refuse_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    inbox.bodies.push(body);
    StatusCode::OK
}

/// Serves one receiver on 127.0.0.1 that refuses its first `refuse_first`
/// requests; returns its URL and inbox.
pub async fn receiver(refuse_first: usize) -> (String, Arc<Mutex<Inbox>>) {
    let inbox = Arc::new(Mutex::new(Inbox {
        refuse_first,
        ..Inbox::default()
    }));
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(Arc::clone(&inbox));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}

/// The events a webhook-format receiver got about the Remediation `name`, in order.
pub fn events_about(inbox: &Mutex<Inbox>, name: &str) -> Vec<String> {
    messages_about(inbox, name)
        .iter()
        .filter_map(|b| b["event"].as_str().map(str::to_string))
        .collect()
}

/// The webhook-format messages a receiver got about the Remediation `name`, in order.
pub fn messages_about(inbox: &Mutex<Inbox>, name: &str) -> Vec<Value> {
    inbox
        .lock()
        .unwrap()
        .bodies
        .iter()
        .filter(|b| b["remediation"]["name"].as_str() == Some(name))
        .cloned()
        .collect()
}

/// Merges `data` into the operator's ConfigMap (which it watches).
pub async fn patch_operator_config(client: &Client, data: Value) {
    Api::<ConfigMap>::namespaced(client.clone(), "aiops-system")
        .patch(
            "aiops-operator-config",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": data })),
        )
        .await
        .expect("patch the operator's ConfigMap");
}

/// Removes the receivers and the console URL when the test ends, failed or
/// not (Drop cannot be async; kubectl works while a panic unwinds).
pub struct ResetReceivers<'a>(pub &'a Sandbox);

impl Drop for ResetReceivers<'_> {
    fn drop(&mut self) {
        let (ok, out) = self.0.kubectl(&[
            "-n",
            "aiops-system",
            "patch",
            "configmap",
            "aiops-operator-config",
            "--type=merge",
            "-p",
            r#"{"data":{"notify.receivers":null,"notify.consoleURL":null}}"#,
        ]);
        if !ok {
            eprintln!("could not remove the receivers: {out}");
        }
    }
}
