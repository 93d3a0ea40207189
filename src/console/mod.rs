//! The web console: on-call engineers review and decide Remediations in a
//! browser. Served over HTTPS on its own port (`--console-addr`) with the
//! webhook's serving certificate and its hot reload, on every replica.
//!
//! Identity is the user's own: they sign in with a bearer token the API
//! server accepts, and every Kubernetes call the console makes for them
//! uses a client holding only that token, so RBAC decides what they see
//! and do and the approval webhook records their name. The operator's
//! identity is never used for a user's request.
//!
//! - [`session`]: server-side sessions, the cookie, CSRF and origin checks.
//! - [`user_client`]: the user's client, who they are, what they may patch.
//! - [`views`]: sign-in, sign-out, the list and detail pages.
//! - [`actions`]: approve, reject, regenerate.
//! - [`live`]: server-sent events from a watch made as the user.
//! - [`pages`]: the HTML; [`headers`]: CSP and the other security headers.
//! - [`metrics`]: the count of requests by route and status.
pub mod actions;
pub mod headers;
pub mod live;
pub mod metrics;
pub mod pages;
pub mod session;
pub mod user_client;
pub mod views;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admission::server::{ConnectionLimits, serve_tls};
use session::{SESSION_LIFETIME, Sessions};

/// Largest form accepted: an OIDC id token is a few KiB; nothing else is big.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest a page or action may take (the live streams are exempt).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("binding the console on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The console's shared state.
pub struct Console {
    /// The operator's cluster settings: the API server and its CA. Only
    /// ever used with the credentials replaced by a user's token.
    cluster: kube::Config,
    sessions: Sessions,
    session_lifetime: Duration,
    /// Flips to true at shutdown, ending the live streams.
    shutdown: watch::Receiver<bool>,
    metrics: metrics::ConsoleMetrics,
}

impl Console {
    /// A console for the cluster `cluster` points at; its credentials are
    /// never used.
    pub fn new(
        cluster: kube::Config,
        shutdown: watch::Receiver<bool>,
        metrics: metrics::ConsoleMetrics,
    ) -> Self {
        Console {
            cluster,
            sessions: Sessions::default(),
            session_lifetime: SESSION_LIFETIME,
            shutdown,
            metrics,
        }
    }
}

/// The routes, with the security headers on every response.
pub fn router(console: Arc<Console>) -> Router {
    let pages = Router::new()
        .route("/", get(views::index))
        .route("/session", post(views::sign_in))
        .route("/session/end", post(views::sign_out))
        .route("/remediations", get(views::list))
        .route("/remediations/{namespace}/{name}", get(views::detail))
        .route(
            "/remediations/{namespace}/{name}/approve",
            post(actions::decide),
        )
        .route(
            "/remediations/{namespace}/{name}/reject",
            post(actions::decide),
        )
        .route(
            "/remediations/{namespace}/{name}/regenerate",
            post(actions::decide),
        )
        .route("/static/console.css", get(stylesheet))
        .route("/static/console.js", get(script))
        .route("/healthz", get(|| async { "ok" }))
        // Browsers ask for it on every site; an empty answer, not a 404.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ));
    let live = Router::new()
        .route("/remediations/events", get(live::all_events))
        .route(
            "/remediations/{namespace}/{name}/events",
            get(live::one_events),
        );
    pages
        .merge(live)
        .layer(axum::middleware::from_fn(headers::security_headers))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            metrics::count_requests,
        ))
        .with_state(console)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("static/console.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("static/console.js"),
    )
}

/// A bound, not yet serving, console.
pub struct ConsoleServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: TlsAcceptor,
    console: Arc<Console>,
    stop: watch::Sender<bool>,
}

impl ConsoleServer {
    /// Binds `addr`; `acceptor` is the webhook's, so the console serves the
    /// same certificate and picks up its rotations.
    pub async fn bind(
        addr: SocketAddr,
        cluster: kube::Config,
        acceptor: TlsAcceptor,
        metrics: metrics::ConsoleMetrics,
    ) -> Result<Self, ConsoleError> {
        let bind_error = |source| ConsoleError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let (stop, stopped) = watch::channel(false);
        Ok(ConsoleServer {
            listener,
            local_addr,
            acceptor,
            console: Arc::new(Console::new(cluster, stopped, metrics)),
            stop,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes; live streams end at once, other
    /// requests are given a grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(addr = %self.local_addr, "console listening");
        let stop = self.stop;
        let shutdown = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        serve_tls(
            self.listener,
            self.acceptor,
            router(self.console),
            ConnectionLimits {
                handshake_timeout: Duration::from_secs(10),
                shutdown_grace: Duration::from_secs(10),
            },
            shutdown,
        )
        .await;
        tracing::info!("console stopped");
    }
}

#[cfg(test)]
mod tests;
