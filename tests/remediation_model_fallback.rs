//! The model path through the controller, live in the sandbox, with a
//! scripted OpenAI-compatible model (an HTTP double on loopback that answers
//! per workload, within the schema the operator sends):
//! - a model proposal the guardrails refuse leaves the rules' diagnosis in
//!   front of the reviewer, `Proposed` and not `Failed`, and the refusal is
//!   counted in `remediation_model_proposal_total{result="refused"}`;
//! - a bare Pod with a mistyped tag takes the model's image in place (the
//!   only field of a running Pod that may change) and ends `Verified`.
mod support;

use std::sync::OnceLock;
use std::time::Duration;

use aiops_operator::remediation::crd::{Phase, Remediation};
use axum::body::Bytes;
use axum::response::IntoResponse;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use serde_json::{Map, Value, json};
use support::{OperatorProcess, Sandbox, create, create_deployment, phase, wait_until};

const STEP: Duration = Duration::from_secs(120);

/// What the scripted model answers for a workload named in the prompt.
fn scripted_fix(user_prompt: &str, schema: &Value) -> Value {
    let changes = if user_prompt.contains("pg-refused") {
        // A change that changes nothing: the guardrails refuse it.
        vec![change_for(
            schema,
            "postgres",
            &[("env", json!([{"name": "POSTGRES_DB", "value": "app"}]))],
        )]
    } else if user_prompt.contains("tools-typo") {
        vec![change_for(
            schema,
            "sh",
            &[("image", json!("busybox:1.36.1"))],
        )]
    } else {
        Vec::new()
    };
    let mut answer = json!({"confidence": 0.8, "changes": changes});
    // Only an incident the model explains asks for words.
    if schema["properties"].get("rootCause").is_some() {
        answer["rootCause"] = json!("scripted root cause");
    }
    answer
}

/// One entry of `changes`, valid for the schema's variant of `container`:
/// every required field present, null unless given.
fn change_for(schema: &Value, container: &str, values: &[(&str, Value)]) -> Value {
    let items = &schema["properties"]["changes"]["items"];
    let variant = match items.get("anyOf").and_then(Value::as_array) {
        Some(variants) => variants
            .iter()
            .find(|v| {
                v["properties"]["container"]["enum"]
                    .as_array()
                    .is_some_and(|names| names.iter().any(|n| n == container))
            })
            .unwrap_or_else(|| panic!("no schema variant for container {container}: {items}")),
        None => items,
    };
    let mut change = Map::new();
    for field in variant["required"].as_array().expect("required fields") {
        let field = field.as_str().expect("a field name");
        change.insert(field.to_string(), Value::Null);
    }
    change.insert("container".into(), json!(container));
    for (field, value) in values {
        assert!(
            change.contains_key(*field),
            "the schema offers no {field} for {container}: {variant}"
        );
        change.insert(field.to_string(), value.clone());
    }
    Value::Object(change)
}

async fn chat_completions(body: Bytes) -> axum::response::Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let user = request["messages"]
        .as_array()
        // The last user turn: worked examples come before it.
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    let schema = &request["response_format"]["json_schema"]["schema"];
    let content = scripted_fix(&user, schema).to_string();
    axum::Json(json!({
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 1_767_000_000,
        "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 500, "completion_tokens": 40, "total_tokens": 540},
    }))
    .into_response()
}

/// The scripted model's URL; it serves on its own thread for the whole binary.
fn model_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for the scripted model");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the scripted model");
                let addr = listener.local_addr().expect("its address");
                tx.send(format!("http://{addr}")).expect("report the URL");
                let app = axum::Router::new().route(
                    "/v1/chat/completions",
                    axum::routing::post(chat_completions),
                );
                axum::serve(listener, app).await.expect("serve");
            });
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the scripted model starts")
    })
}

/// One operator for this binary, with model proposals from the scripted model.
fn operator() -> &'static OperatorProcess {
    static OPERATOR: OnceLock<OperatorProcess> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        support::stop_all_operators();
        support::start_operator(
            "op-model",
            &[
                ("AIOPS_LLM_URL", model_url()),
                ("AIOPS_LLM_MODEL", "scripted"),
                (
                    "AIOPS_OPERATOR_ARGS",
                    "--verify-timeout-seconds 60 --resolve-after-seconds 15",
                ),
            ],
        )
    })
}

/// Waits for the namespace's Remediation to reach one of `want`; a case
/// that ended `Failed` prints the operator's log tail, so a failure shows why.
async fn wait_remediation(client: &Client, ns: &str, want: &[Phase]) -> Remediation {
    let op = operator();
    let found = support::wait_remediation(client, ns, want, STEP).await;
    if phase(&found) == Phase::Failed {
        eprintln!("operator log:\n{}", op.log_tail(30));
    }
    found
}

#[tokio::test]
async fn a_refused_model_proposal_leaves_the_rules_diagnosis_in_front_and_stays_proposed() {
    let sandbox = Sandbox::connect().await;
    let op = operator();
    let ns = sandbox.e2e_namespace("model-refused").await;
    let client = &sandbox.client;
    create::<StatefulSet>(
        client,
        &ns.name,
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "pg-refused"},
            "spec": {
                "serviceName": "pg-refused", "replicas": 1,
                "selector": {"matchLabels": {"app": "pg-refused"}},
                "template": {
                    "metadata": {"labels": {"app": "pg-refused"}},
                    "spec": {"containers": [{
                        "name": "postgres", "image": "postgres:16.4",
                        "env": [{"name": "POSTGRES_DB", "value": "app"}],
                        "resources": {"limits": {"memory": "512Mi"}},
                    }]},
                },
            },
        }),
    )
    .await;

    let rem = wait_remediation(client, &ns.name, &[Phase::Proposed, Phase::Failed]).await;
    let status = rem.status.clone().expect("status");
    assert_eq!(
        status.phase,
        Phase::Proposed,
        "a refused model proposal must not end the case: {}",
        status.message
    );
    let proposal = status.proposal.expect("a proposal");
    assert_eq!(proposal.source, "rules", "the rules' diagnosis stands in");
    assert!(proposal.actions.is_empty(), "a diagnosis: {proposal:?}");
    let note = proposal
        .risks
        .iter()
        .find(|r| r.contains("the model's proposal"))
        .unwrap_or_else(|| panic!("a note on the model's answer: {:?}", proposal.risks));
    assert!(
        note.contains("set aside") && note.contains("changes nothing"),
        "the note says why: {note}"
    );
    assert!(
        status.message.contains("needs a human") && status.message.contains("set aside"),
        "{}",
        status.message
    );
    let evidence = status.evidence.expect("evidence");
    assert!(
        serde_json::to_string(&evidence)
            .unwrap()
            .contains("superuser password is not specified"),
        "the crash line is in the evidence: {evidence:?}"
    );
    assert!(status.guardrail.is_some_and(|g| g.allowed));
    let metrics = op.metrics().await;
    assert!(
        // The series exists from the start at 0; it must have moved.
        metrics.lines().any(|l| l
            .strip_prefix("remediation_model_proposal_total{result=\"refused\"} ")
            .is_some_and(|n| n != "0")),
        "the refusal is counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("model_proposal_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn a_bare_pod_with_a_mistyped_tag_takes_the_models_image_in_place_and_ends_verified() {
    let sandbox = Sandbox::connect().await;
    operator();
    let ns = sandbox.e2e_namespace("model-pod").await;
    let client = &sandbox.client;
    // The candidate runs elsewhere in the cluster.
    create_deployment(
        client,
        &ns.name,
        "shell",
        1,
        json!({"name": "sh", "image": "busybox:1.36.1"}),
    )
    .await;
    wait_until(STEP, "busybox:1.36.1 running", || async {
        support::pods(client, &ns.name, "app=shell")
            .await
            .into_iter()
            .find(support::pod_ready)
    })
    .await;
    create::<Pod>(
        client,
        &ns.name,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "tools-typo", "labels": {"app": "tools-typo"}},
               "spec": {"containers": [{"name": "sh", "image": "busybox:1.36.11"}]}}),
    )
    .await;

    let rem = wait_remediation(client, &ns.name, &[Phase::Proposed, Phase::Failed]).await;
    let status = rem.status.clone().expect("status");
    assert_eq!(status.phase, Phase::Proposed, "{}", status.message);
    let proposal = status.proposal.clone().expect("a proposal");
    assert!(
        proposal.source.contains("scripted"),
        "the model's proposal: {proposal:?}"
    );
    assert_eq!(
        proposal.actions[0].patch["spec"]["containers"][0]["image"],
        "busybox:1.36.1"
    );
    assert_eq!(status.dry_run.expect("a dry run").result, "Succeeded");

    let name = rem.metadata.name.clone().expect("a name");
    let (ok, out) = sandbox.approve(&ns.name, &name);
    assert!(ok, "approve: {out}");
    let done = wait_remediation(
        client,
        &ns.name,
        &[Phase::Verified, Phase::RolledBack, Phase::Failed],
    )
    .await;
    assert_eq!(
        phase(&done),
        Phase::Verified,
        "{:?}",
        done.status.map(|s| s.message)
    );
    let pod = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .get("tools-typo")
        .await
        .expect("the same pod, fixed in place");
    assert!(support::pod_ready(&pod));
    assert_eq!(
        pod.spec.expect("spec").containers[0].image.as_deref(),
        Some("busybox:1.36.1")
    );
}
