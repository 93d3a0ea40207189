//! HTTP routes of the webhook and the tower layers around them (body limit,
//! timeout, tracing, latency metrics). Handlers stay thin: parse, decide
//! (in [`admit`]), count, reply.
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::core::admission::AdmissionResponse;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::admission::admit::{self, Admission};
use crate::admission::metrics::{ReviewResult, Stage, StageClock};
use crate::admission::review::{self, Request as ReviewRequest};
use crate::admission::state::AppState;

/// Limits applied by the router's layers.
#[derive(Debug, Clone, Copy)]
pub struct RouteLimits {
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Longest a request may take; slower ones get 503 so the API server
    /// applies the webhook's failurePolicy instead of waiting.
    pub request_timeout: Duration,
}

/// The webhook's routes with every layer applied.
pub fn router(state: Arc<AppState>, limits: RouteLimits) -> Router {
    let reviews = Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/noop", post(noop))
        // One limit, enforced by tower-http (413 before the body is read
        // when Content-Length is too large); axum's own default is off.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes));
    Router::new()
        .merge(reviews)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(middleware::from_fn_with_state(
                    Arc::clone(&state),
                    record_latency,
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    limits.request_timeout,
                )),
        )
        .with_state(state)
}

async fn validate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    answer_review(state, &VALIDATE, &body).await
}

async fn mutate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    answer_review(state, &MUTATE, &body).await
}

/// Parses the review and allows it without evaluation: the ceiling for
/// benchmarks of the real endpoints.
async fn noop(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    answer_review(state, &NOOP, &body).await
}

type Decide = fn(&AppState, &ReviewRequest, &mut StageClock) -> Admission;
type ReadsCluster = fn(&AppState, &ReviewRequest) -> bool;

/// How one review endpoint answers.
struct ReviewEndpoint {
    /// Its `endpoint` label.
    label: &'static str,
    decide: Decide,
    /// Whether deciding this review reads the cluster (policy context
    /// lookups), which blocks.
    reads_cluster: ReadsCluster,
    /// Whether its stages go into `aiops_admission_stage_seconds`.
    timed: bool,
}

const VALIDATE: ReviewEndpoint = ReviewEndpoint {
    label: "validate",
    decide: admit::validate,
    reads_cluster: admit::validate_reads_cluster,
    timed: true,
};

const MUTATE: ReviewEndpoint = ReviewEndpoint {
    label: "mutate",
    decide: admit::mutate,
    reads_cluster: admit::mutate_reads_cluster,
    timed: false,
};

const NOOP: ReviewEndpoint = ReviewEndpoint {
    label: "noop",
    decide: |_, request, _| Admission {
        response: AdmissionResponse::from(&request.typed),
        result: ReviewResult::Allowed,
    },
    reads_cluster: |_, _| false,
    timed: false,
};

async fn answer_review(
    state: Arc<AppState>,
    endpoint: &'static ReviewEndpoint,
    body: &[u8],
) -> Response {
    let mut clock = state.metrics.stage_clock(endpoint.timed);
    let request = match review::parse_review(body) {
        Ok(request) => request,
        Err(error) => {
            state.metrics.review(endpoint.label, ReviewResult::Invalid);
            tracing::warn!(endpoint = endpoint.label, %error, "rejected an unusable review");
            return error.into_response();
        }
    };
    clock.lap(Stage::Parse);
    if !(endpoint.reads_cluster)(&state, &request) {
        return decide_and_reply(&state, endpoint, &request, &mut clock);
    }
    // A rule reads ConfigMaps or the API server. The engine is synchronous
    // and those reads block (a cache's first list, an API call up to its
    // timeout), so this review is decided on the blocking pool rather than
    // on an async worker, where a slow API server would stall every other
    // review on that worker. Only such reviews pay for the hand-off:
    // prefetching instead would mean evaluating variables (`urlPath`s built
    // from the request and earlier entries) before the engine does.
    let span = tracing::Span::current();
    let blocking_state = Arc::clone(&state);
    let decided = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut clock = blocking_state.metrics.stage_clock(endpoint.timed);
        decide_and_reply(&blocking_state, endpoint, &request, &mut clock)
    })
    .await;
    match decided {
        Ok(reply) => reply,
        Err(error) => {
            // The decision panicked or the runtime is shutting down: an
            // error status lets the API server apply the failurePolicy.
            tracing::error!(endpoint = endpoint.label, %error, "review decision did not finish");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn decide_and_reply(
    state: &AppState,
    endpoint: &ReviewEndpoint,
    request: &ReviewRequest,
    clock: &mut StageClock,
) -> Response {
    let admission = (endpoint.decide)(state, request, clock);
    state.metrics.review(endpoint.label, admission.result);
    let reply = review::reply(admission.response).into_response();
    clock.lap(Stage::Encode);
    reply
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready while serving; 503 once shutdown has begun, so no new traffic is
/// routed here while in-flight requests finish. A refused policy or
/// ConfigMap update leaves the webhook ready (it serves the last good
/// version, which is better than failing every request), but the body
/// says which source is stale and why.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let refusals = state.config_refusals.list();
    if refusals.is_empty() {
        return "ok".into_response();
    }
    let mut body = String::from("ok, serving the last good configuration");
    for (source, reason) in refusals {
        body.push_str(&format!(
            "\n{}: newest version refused: {reason}",
            source.as_str()
        ));
    }
    body.into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "could not encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Observes every request's latency under a bounded set of endpoint labels.
async fn record_latency(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = endpoint_label(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.latency(endpoint, started.elapsed());
    response
}

/// Known paths keep their name; anything else is `other`, so a scanner
/// cannot blow up the metric's label set.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/validate" => "validate",
        "/mutate" => "mutate",
        "/noop" => "noop",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::audit_writer::AuditSink;
    use crate::admission::metrics::Metrics;
    use crate::admission::modes::ModeConfig;
    use crate::admission::refusals::{ConfigRefusals, ConfigSource};
    use crate::admission::review::tests::pod_review;
    use crate::admission::state::{ModeHandle, PolicyHandle};
    use crate::policy::PolicySet;
    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use futures::StreamExt;
    use tower::ServiceExt;

    fn test_router(max_body_bytes: usize) -> Router {
        test_router_with(max_body_bytes, ConfigRefusals::default())
    }

    fn test_router_with(max_body_bytes: usize, refusals: ConfigRefusals) -> Router {
        let policies = PolicySet::from_yaml("", "empty").unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(Metrics::new());
        let mut state = AppState::new(
            PolicyHandle::new(policies),
            ModeHandle::new(ModeConfig::defaults("aiops-system")),
            Arc::clone(&metrics),
            AuditSink::disabled(metrics),
        );
        state.config_refusals = refusals;
        router(
            Arc::new(state),
            RouteLimits {
                max_body_bytes,
                request_timeout: Duration::from_secs(5),
            },
        )
    }

    async fn post(router: Router, path: &str, body: impl Into<Body>) -> (StatusCode, String) {
        let request = HttpRequest::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap_or_else(|e| panic!("{e}"));
        send(router, request).await
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let request = HttpRequest::get(path)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        send(router, request).await
    }

    async fn send(router: Router, request: HttpRequest<Body>) -> (StatusCode, String) {
        let response = router.oneshot(request).await.unwrap_or_else(|e| match e {});
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A ConfigMap lookup that takes `delay` of blocking work, as a cold
    /// cache or a slow API server would.
    struct SlowConfigMaps {
        delay: Duration,
    }

    impl crate::policy::ClusterData for SlowConfigMaps {
        fn config_map(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<serde_json::Value, crate::policy::ClusterDataError> {
            std::thread::sleep(self.delay);
            Ok(
                serde_json::json!({"metadata": {"name": name, "namespace": namespace},
                "data": {"allowed": "good.example"}}),
            )
        }

        fn api_get(
            &self,
            path: &str,
        ) -> Result<serde_json::Value, crate::policy::ClusterDataError> {
            Err(crate::policy::ClusterDataError::NotFound {
                what: format!("GET {path}"),
            })
        }
    }

    const REGISTRY_POLICY: &str = "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\n\
        metadata: {name: registries}\nspec:\n  validationFailureAction: Enforce\n  rules:\n\
        \x20 - name: allowed\n    match: {any: [{resources: {kinds: [Pod]}}]}\n\
        \x20   context:\n    - name: registries\n      configMap: {name: registries, namespace: platform}\n\
        \x20   validate:\n      message: not allowed\n      deny:\n        conditions:\n\
        \x20         any:\n          - key: \"{{ images.containers.*.registry }}\"\n\
        \x20           operator: AnyNotIn\n            value: [\"{{ registries.data.allowed }}\"]\n";

    /// On a single-threaded runtime: a review whose rule blocks on a
    /// lookup must not hold up other reviews, so it runs off the worker.
    #[tokio::test(flavor = "current_thread")]
    async fn reviews_that_read_the_cluster_do_not_block_the_runtime() {
        let policies =
            PolicySet::from_yaml(REGISTRY_POLICY, "inline").unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(Metrics::new());
        let mut state = AppState::new(
            PolicyHandle::new(policies),
            ModeHandle::new(ModeConfig::defaults("aiops-system")),
            Arc::clone(&metrics),
            AuditSink::disabled(metrics),
        );
        state.cluster_data = Some(Arc::new(SlowConfigMaps {
            delay: Duration::from_millis(800),
        }));
        let router = router(
            Arc::new(state),
            RouteLimits {
                max_body_bytes: 1 << 20,
                request_timeout: Duration::from_secs(5),
            },
        );
        let evil = pod_review(
            serde_json::json!({"containers": [{"name": "a", "image": "evil.example/app:1"}]}),
        );
        let started = std::time::Instant::now();
        let slow = tokio::spawn(post(router.clone(), "/validate", evil.to_string()));
        // Lets the slow review start; decided inline, it would hold the
        // only worker, and this sleep, for the whole lookup.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (status, _) = post(router.clone(), "/noop", evil.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "the other review was answered after {:?}",
            started.elapsed()
        );
        let (status, text) = slow.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("\"allowed\":false"), "{text}");
        assert!(text.contains("registries/allowed: not allowed"), "{text}");
        let good = pod_review(
            serde_json::json!({"containers": [{"name": "a", "image": "good.example/app:1"}]}),
        );
        let (_, text) = post(router, "/validate", good.to_string()).await;
        assert!(text.contains("\"allowed\":true"), "{text}");
    }

    #[tokio::test]
    async fn malformed_body_is_a_400() {
        for path in ["/validate", "/mutate", "/noop"] {
            let (status, text) = post(test_router(1024), path, "{not json").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            assert!(text.contains("not a valid AdmissionReview"), "{text}");
        }
    }

    #[tokio::test]
    async fn non_v1_review_is_a_400() {
        let mut review = pod_review(serde_json::json!({"containers": []}));
        review["apiVersion"] = "admission.k8s.io/v1beta1".into();
        let (status, text) = post(test_router(1 << 20), "/validate", review.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            text.contains("only AdmissionReview admission.k8s.io/v1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn oversized_body_is_a_413() {
        let (status, _) = post(test_router(1024), "/validate", vec![b' '; 4096]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_review_slower_than_the_timeout_gets_a_503() {
        // A body that stalls after its first bytes keeps the handler
        // waiting; the timeout answers 503 so the API server applies the
        // failurePolicy before the registration's 5 s timeoutSeconds.
        let stalled = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("{")) })
            .chain(futures::stream::pending());
        let policies = PolicySet::from_yaml("", "empty").unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(Metrics::new());
        let state = AppState::new(
            PolicyHandle::new(policies),
            ModeHandle::new(ModeConfig::defaults("aiops-system")),
            Arc::clone(&metrics),
            AuditSink::disabled(metrics),
        );
        let limits = RouteLimits {
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_millis(300),
        };
        let started = Instant::now();
        let (status, _) = post(
            router(Arc::new(state), limits),
            "/validate",
            Body::from_stream(stalled),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "answered after {waited:?}"
        );
    }

    #[tokio::test]
    async fn oversized_streamed_body_is_a_413() {
        // No Content-Length: the limit must still hold while reading.
        let chunks = futures::stream::iter(
            (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 512]))),
        );
        let (status, _) = post(test_router(1024), "/validate", Body::from_stream(chunks)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn noop_allows_and_echoes_the_uid() {
        let review = pod_review(serde_json::json!({"containers": [{"name": "c", "image": "x:1"}]}));
        let (status, text) = post(test_router(1 << 20), "/noop", review.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["allowed"], true);
        assert_eq!(body["response"]["uid"], review["request"]["uid"]);
    }

    #[tokio::test]
    async fn only_validate_reviews_are_timed_stage_by_stage() {
        let router = test_router(1 << 20);
        let review = pod_review(serde_json::json!({"containers": [{"name": "c", "image": "x:1"}]}));
        for path in ["/validate", "/noop", "/mutate"] {
            let (status, _) = post(router.clone(), path, review.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
        let (_, text) = get(router, "/metrics").await;
        for stage in ["parse", "match", "evaluate", "encode"] {
            let count = format!("aiops_admission_stage_seconds_count{{stage=\"{stage}\"}} 1\n");
            assert!(text.contains(&count), "{count} missing from\n{text}");
        }
    }

    #[tokio::test]
    async fn health_and_metrics_are_served() {
        let router = test_router(1024);
        let (status, _) = post(router.clone(), "/noop", "junk").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        for path in ["/healthz", "/readyz"] {
            let (status, _) = get(router.clone(), path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
        let (_, text) = get(router, "/metrics").await;
        assert!(
            text.contains("aiops_admission_requests_total{endpoint=\"noop\",result=\"invalid\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("aiops_admission_request_duration_seconds_count{endpoint=\"noop\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn readyz_names_a_refused_source_and_stays_ready() {
        let refusals = ConfigRefusals::default();
        let router = test_router_with(1024, refusals.clone());
        let (status, body) = get(router.clone(), "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        refusals.refuse(ConfigSource::Policies, "policies/a.yaml: bad YAML".into());
        let (status, body) = get(router.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("last good"), "{body}");
        assert!(
            body.contains("policies: newest version refused: policies/a.yaml: bad YAML"),
            "{body}"
        );
        refusals.accept(ConfigSource::Policies);
        let (_, body) = get(router, "/readyz").await;
        assert_eq!(body, "ok");
    }
}
