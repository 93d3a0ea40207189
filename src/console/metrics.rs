//! The console's one metric, in the process's registry (served on the
//! webhook's `/metrics`): `console_requests_total{route,code}`, by the
//! route's pattern (`/remediations/{namespace}/{name}`), never the path,
//! so names of objects do not become label values.
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;

use super::Console;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    code: String,
}

/// Requests answered by the console.
#[derive(Clone, Debug, Default)]
pub struct ConsoleMetrics {
    requests: Family<RequestLabels, Counter>,
}

impl ConsoleMetrics {
    /// Registers the metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ConsoleMetrics::default();
        registry.register(
            "console_requests",
            "Requests answered by the web console, by route pattern and HTTP status",
            metrics.requests.clone(),
        );
        metrics
    }

    /// Counts one answer.
    pub fn request(&self, route: &str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                code: code.to_string(),
            })
            .inc();
    }
}

/// Middleware: counts every answer under its route's pattern.
pub async fn count_requests(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    console.metrics.request(&route, response.status().as_u16());
    response
}
