//! Hostile and broken input, case by case: each gets a clear error or a
//! decision, and within the API server's 5 s webhook timeout (the bound is
//! what a hang would break, not a performance figure). The reviews go
//! through the same routers the TLS server uses, with the shipped policies
//! in Enforce; the fuzz targets (`make fuzz`) cover the same parsers with
//! generated input.
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_operator::admission::audit_writer::AuditSink;
use aiops_operator::admission::metrics::Metrics;
use aiops_operator::admission::modes::{Mode, ModeConfig};
use aiops_operator::admission::policy_files::load_policies;
use aiops_operator::admission::routes::{RouteLimits, router};
use aiops_operator::admission::state::{AppState, ModeHandle, PolicyHandle};
use aiops_operator::llm::validate::validate_answer;
use aiops_operator::policy::{EvalInput, PolicySet, RuleStatus};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

/// What the API server allows a webhook before it applies the failure policy.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest review the webhook reads (the API server's request limit).
const MAX_BODY: usize = 3 * 1024 * 1024;

fn webhook() -> Router {
    let policies = load_policies(&support::repo_root().join("policies"), &[])
        .unwrap_or_else(|e| panic!("the shipped policies: {e}"));
    let metrics = Arc::new(Metrics::new());
    let state = AppState::new(
        PolicyHandle::new(policies),
        ModeHandle::new(ModeConfig::with_mode("aiops-system", Mode::Enforce)),
        Arc::clone(&metrics),
        AuditSink::disabled(metrics),
    );
    router(
        Arc::new(state),
        RouteLimits {
            max_body_bytes: MAX_BODY,
            request_timeout: Duration::from_secs(4),
        },
    )
}

/// Posts `body` to `/validate`: the status, the body as text, and how long
/// the answer took.
async fn validate(body: Vec<u8>) -> (StatusCode, String, Duration) {
    let request = Request::post("/validate")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let response = webhook()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    (
        status,
        String::from_utf8_lossy(&bytes).into_owned(),
        started.elapsed(),
    )
}

fn pod_review(pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f1c",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": pod,
            "dryRun": false
        }
    })
}

fn pod(annotations: Value, privileged: bool) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": [{
            "name": "app",
            "image": "nginx:1.25.5",
            "securityContext": {"privileged": privileged}
        }]}
    })
}

fn allowed(body: &str) -> Option<bool> {
    let reply: Value = serde_json::from_str(body).ok()?;
    reply.pointer("/response/allowed")?.as_bool()
}

#[tokio::test]
async fn a_review_of_exactly_the_size_limit_is_decided_and_one_byte_more_is_refused() {
    // A privileged pod padded with one annotation up to exactly 3 MiB.
    let empty = serde_json::to_vec(&pod_review(pod(json!({"pad": ""}), true)))
        .unwrap_or_else(|e| panic!("{e}"));
    let pad = "x".repeat(MAX_BODY - empty.len());
    let body = serde_json::to_vec(&pod_review(pod(json!({"pad": pad}), true)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body.len(), MAX_BODY);
    let (status, text, took) = validate(body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{}", &text[..text.len().min(300)]);
    assert_eq!(allowed(&text), Some(false), "the privileged pod is denied");
    assert!(took < WEBHOOK_TIMEOUT, "3 MiB review took {took:?}");

    let mut over = body;
    over.push(b' ');
    let (status, _, took) = validate(over).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(took < WEBHOOK_TIMEOUT, "refusing took {took:?}");
}

#[tokio::test]
async fn json_nested_ten_thousand_deep_is_a_clear_400() {
    let mut body = pod_review(pod(json!({}), false)).to_string();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    body = body.replacen("\"annotations\":{}", &format!("\"annotations\":{deep}"), 1);
    assert!(body.contains("[[[[["), "the nesting is in the body");
    let (status, text, took) = validate(body.into_bytes()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("recursion limit"), "says why: {text}");
    assert!(took < WEBHOOK_TIMEOUT, "took {took:?}");
}

#[tokio::test]
async fn invalid_utf8_in_a_string_is_a_clear_400() {
    let mut body = pod_review(pod(json!({"note": "MARK"}), false))
        .to_string()
        .into_bytes();
    let at = body
        .windows(4)
        .position(|w| w == b"MARK")
        .unwrap_or_else(|| panic!("marker"));
    body[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    let (status, text, took) = validate(body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.to_lowercase().contains("utf-8"), "says why: {text}");
    assert!(took < WEBHOOK_TIMEOUT, "took {took:?}");
}

#[tokio::test]
async fn a_duplicated_key_is_read_as_the_api_server_reads_it_the_last_one_wins() {
    // Go's encoding/json, which the API server decodes with, keeps the last
    // of two equal keys; judging the first would judge another object than
    // the one stored.
    let body = pod_review(pod(json!({}), false)).to_string().replacen(
        "\"privileged\":false",
        "\"privileged\":false,\"privileged\":true",
        1,
    );
    assert!(body.contains("\"privileged\":false,\"privileged\":true"));
    let (status, text, took) = validate(body.into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(allowed(&text), Some(false), "judged as privileged: {text}");
    assert!(text.contains("disallow-privileged-containers"), "{text}");
    assert!(took < WEBHOOK_TIMEOUT, "took {took:?}");
}

/// A policy whose deny condition is `expression` (a JMESPath), loaded and
/// evaluated against a pod: the rule's status and how long it took.
fn deny_condition_outcome(expression: &str) -> (Result<Vec<RuleStatus>, String>, Duration) {
    let policy = format!(
        r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: hostile
spec:
  validationFailureAction: Enforce
  rules:
    - name: hostile
      match:
        any:
          - resources:
              kinds: [Pod]
      validate:
        message: "hostile"
        deny:
          conditions:
            any:
              - key: "{{{{ {expression} }}}}"
                operator: Equals
                value: "never"
"#
    );
    let started = Instant::now();
    let resource = pod(json!({"a": "b"}), false);
    let outcome = PolicySet::from_yaml(&policy, "hostile.yaml")
        .map_err(|e| e.to_string())
        .map(|set| {
            set.validate(&EvalInput::for_resource(&resource))
                .into_iter()
                .map(|outcome| outcome.status)
                .collect()
        });
    (outcome, started.elapsed())
}

#[test]
fn a_pathologically_deep_jmespath_is_refused_or_decided_without_blowing_the_stack() {
    let nested = |depth: usize| {
        format!(
            "{}request.object.metadata.name{}",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    // A field chain 20,000 long nests as deep in the parsed expression.
    let chain = format!("request{}", ".a".repeat(20_000));
    for expression in [nested(10), nested(100), nested(10_000), chain] {
        let depth = expression.len();
        let (outcome, took) = deny_condition_outcome(&expression);
        match &outcome {
            Err(error) => assert!(!error.is_empty()),
            Ok(statuses) => assert_eq!(statuses.len(), 1, "one rule, one outcome: {statuses:?}"),
        }
        assert!(took < WEBHOOK_TIMEOUT, "{depth} bytes took {took:?}");
    }
}

#[test]
fn a_huge_slice_and_a_backtracking_regex_are_decided_quickly() {
    for expression in [
        // Slices are bounded by the array, not by the numbers written.
        "request.object.spec.containers[0:999999999999]",
        // A pattern that takes exponential time in a backtracking engine.
        "regex_match('^(a+)+$', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!')",
    ] {
        let (outcome, took) = deny_condition_outcome(expression);
        let statuses = outcome.unwrap_or_else(|e| panic!("{expression}: {e}"));
        assert_eq!(statuses.len(), 1, "{expression}: {statuses:?}");
        assert!(took < WEBHOOK_TIMEOUT, "{expression} took {took:?}");
    }
}

#[test]
fn a_one_mebibyte_model_answer_is_a_short_clear_error() {
    let schema = json!({
        "type": "object",
        "required": ["summary"],
        "properties": {"summary": {"type": "string", "maxLength": 160}}
    });
    // Valid JSON, far too long for the schema.
    let long = json!({"summary": "y".repeat(1 << 20)}).to_string();
    let started = Instant::now();
    let error = validate_answer(&schema, &long).expect_err("a 1 MiB summary breaks maxLength");
    let text = error.to_string();
    assert!(
        text.len() < 2_000,
        "the error stays short: {} bytes",
        text.len()
    );
    // Not JSON at all.
    let garbage = "{".repeat(1 << 20);
    let error = validate_answer(&schema, &garbage).expect_err("not JSON");
    assert!(error.to_string().len() < 2_000);
    assert!(
        started.elapsed() < WEBHOOK_TIMEOUT,
        "took {:?}",
        started.elapsed()
    );
}
