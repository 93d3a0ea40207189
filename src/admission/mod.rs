//! The TLS admission webhook: Kubernetes sends `admission.k8s.io/v1`
//! AdmissionReviews to `/validate` and `/mutate`; the [`crate::policy`]
//! engine judges the object and the modes from the operator's ConfigMap
//! decide whether a violation denies (Enforce), or admits with a warning and
//! is recorded (Audit) or only warned about (Warn).
//!
//! - [`review`]: the AdmissionReview wire format; [`admit`]: the decision;
//!   [`cluster_data`]: the ConfigMaps and API reads of policy context
//!   entries; [`namespace_labels`]: the labels `namespaceSelector` reads;
//!   [`verdict`]: outcomes to deny message and warnings; [`modes`]: the
//!   ConfigMap schema; [`config_watch`]: keeping modes live.
//! - [`routes`]: HTTP routes and tower layers; [`server`]: the TLS accept
//!   loop and graceful shutdown; [`tls`]: certificate hot reload.
//! - [`audit_writer`] and [`policy_report`]: Events and PolicyReports,
//!   written off the request path.
//! - [`certs`]: `aiops-operator certs`; [`ca_bundle`]: publishing the CA
//!   into the webhook configurations; [`command`]: the CLI entry points.
//!
//! [`run_webhook`] is the entry point of `aiops-operator run --webhook-only`;
//! [`Webhook::bind`] + [`Webhook::serve`] let tests pick a port and inject
//! the modes.
pub mod admit;
pub mod api_server_policies;
pub mod audit_writer;
pub mod ca_bundle;
pub mod certs;
pub mod cluster_data;
pub mod command;
pub mod config_watch;
pub mod metrics;
pub mod modes;
pub mod namespace_labels;
pub mod policy_files;
pub mod policy_report;
pub mod policy_watch;
pub mod refusals;
pub mod review;
pub mod routes;
pub mod server;
pub mod serving_secret;
pub mod state;
pub mod tls;
pub mod verdict;
pub mod webhook_registration;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::Reporter;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admission::api_server_policies::{
    AdmissionBackend, ApiServerRules, MoveScope, SyncTarget, SyncTiming,
};
use crate::admission::audit_writer::AuditSink;
use crate::admission::cluster_data::{ClusterDataLimits, ClusterReader};
use crate::admission::config_watch::ConfigMapSource;
use crate::admission::metrics::Metrics;
use crate::admission::modes::ModeConfig;
use crate::admission::namespace_labels::NamespaceLabels;
use crate::admission::policy_watch::PolicyFiles;
use crate::admission::refusals::{ConfigRefusals, RefusalReporter};
use crate::admission::state::{AppState, ModeHandle, PolicyHandle};
use crate::admission::tls::{ReloadingCert, TlsError};
use crate::policy::{ClusterData, PolicySet};

pub use crate::admission::modes::Mode;

/// Where the admission modes come from.
#[derive(Debug, Clone)]
pub enum ModeSource {
    /// A fixed configuration (tests, `--standalone`).
    Fixed(ModeConfig),
    /// The operator's ConfigMap, watched live; needs a client.
    ConfigMap(ConfigMapSource),
}

/// Sizes and timeouts of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest AdmissionReview body accepted (413 above).
    pub max_body_bytes: usize,
    /// Longest one request may take (503 after).
    pub request_timeout: Duration,
    /// Longest a TLS handshake or request header may take.
    pub handshake_timeout: Duration,
    /// Longest shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// How often the certificate files are checked for changes.
    pub cert_poll_interval: Duration,
    /// Audit records that may wait for the writer before new ones are dropped.
    pub audit_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Object (1.5 MiB etcd limit) plus oldObject fits with room.
            max_body_bytes: 3 * 1024 * 1024,
            // Below the API server's 5 s webhook timeout, so we answer
            // (503) before it gives up on us.
            request_timeout: Duration::from_secs(4),
            handshake_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
            cert_poll_interval: Duration::from_secs(1),
            audit_queue: 1024,
        }
    }
}

/// Everything the webhook needs to run.
pub struct WebhookConfig {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub policies: PolicySet,
    /// The files `policies` came from, polled for changes; `None` keeps
    /// `policies` for the process's lifetime.
    pub policy_files: Option<PolicyFiles>,
    pub modes: ModeSource,
    /// Kubernetes client for the ConfigMap watch, audit writes and policy
    /// context lookups; `None` runs without a cluster (audit records are
    /// then only counted, context lookups are rule errors).
    pub client: Option<kube::Client>,
    pub limits: Limits,
    /// Reporting controller named on Events.
    pub reporter: Reporter,
    /// Where enforced CEL rules run (needs `client` for anything but
    /// `Webhook`).
    pub backend: AdmissionBackend,
    /// The ValidatingWebhookConfiguration that owns the API server
    /// policies (their garbage-collection owner).
    pub owner_configuration: Option<String>,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("the ConfigMap mode source needs a Kubernetes client")]
    MissingClient,
}

/// Additions from the rest of the operator: more routes on the same TLS
/// server (e.g. the Remediation approval endpoint) and more metrics in the
/// same registry (served on `/metrics`).
#[derive(Default)]
pub struct WebhookExtras {
    pub routes: Option<axum::Router>,
    #[allow(clippy::type_complexity)]
    pub register_metrics:
        Option<Box<dyn FnOnce(&mut prometheus_client::registry::Registry) + Send>>,
}

/// Longest the start waits for the first list of namespace labels: long
/// enough for a healthy API server, short enough not to hold a restart.
const NAMESPACE_LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A bound, not yet serving, webhook.
pub struct Webhook {
    extra_routes: Option<axum::Router>,
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<AppState>,
    limits: Limits,
    background: Vec<JoinHandle<()>>,
    audit_writer: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Loads the certificate, binds the port and starts the background
    /// tasks (certificate reload, ConfigMap watch, audit writer). Must run
    /// inside a Tokio runtime.
    pub async fn bind(config: WebhookConfig) -> Result<Self, WebhookError> {
        Self::bind_with(config, WebhookExtras::default()).await
    }

    /// [`Webhook::bind`] with extra routes and metrics.
    pub async fn bind_with(
        config: WebhookConfig,
        extras: WebhookExtras,
    ) -> Result<Self, WebhookError> {
        // Check the configuration before acquiring or spawning anything.
        if matches!(config.modes, ModeSource::ConfigMap(_)) && config.client.is_none() {
            return Err(WebhookError::MissingClient);
        }
        let provider = tls::crypto_provider();
        let cert = ReloadingCert::load(&config.cert_file, &config.key_file, Arc::clone(&provider))?;
        let acceptor = TlsAcceptor::from(tls::server_config(Arc::clone(&cert), provider)?);
        // Bind before spawning anything, so a taken port leaks no task.
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| WebhookError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| WebhookError::Bind {
            addr: config.listen,
            source,
        })?;
        let metrics = Arc::new(match extras.register_metrics {
            Some(register) => Metrics::new_with(register),
            None => Metrics::new(),
        });
        let mut background =
            vec![cert.spawn_reloader(config.limits.cert_poll_interval, Arc::clone(&metrics))];
        let refusals = ConfigRefusals::default();
        let reporter = RefusalReporter::new(
            refusals.clone(),
            Arc::clone(&metrics),
            config.client.clone(),
            config.reporter.clone(),
        );
        let policies = PolicyHandle::new(config.policies);
        if let Some(files) = config.policy_files {
            background.push(policy_watch::spawn_policy_watch(
                files,
                policies.clone(),
                Arc::clone(&metrics),
                reporter.clone(),
            ));
        }
        let client_for_policies = config.client.clone();
        let instance = match &config.modes {
            ModeSource::ConfigMap(source) => Some(source.operator_namespace.clone()),
            ModeSource::Fixed(_) => None,
        };
        let modes = match config.modes {
            ModeSource::Fixed(fixed) => ModeHandle::new(fixed),
            ModeSource::ConfigMap(source) => {
                let client = config.client.clone().ok_or(WebhookError::MissingClient)?;
                let handle = ModeHandle::new(ModeConfig::defaults(&source.operator_namespace));
                background.push(config_watch::spawn_config_watch(
                    client,
                    source,
                    handle.clone(),
                    Arc::clone(&metrics),
                    reporter,
                ));
                handle
            }
        };

        // Lazy: nothing is watched or called until a policy reads the cluster.
        let cluster_data = config.client.clone().map(|client| {
            Arc::new(ClusterReader::new(
                client,
                tokio::runtime::Handle::current(),
                ClusterDataLimits::default(),
            )) as Arc<dyn ClusterData + Send + Sync>
        });
        let namespaces = match config.client.clone() {
            Some(client) => {
                let (labels, task) = NamespaceLabels::watch(client, NAMESPACE_LIST_TIMEOUT).await;
                background.push(task);
                Some(labels)
            }
            None => None,
        };
        let (audit, audit_writer) = match config.client {
            Some(client) => {
                let (sink, rx) =
                    AuditSink::bounded(config.limits.audit_queue, Arc::clone(&metrics));
                let writer =
                    audit_writer::spawn_writer(client, config.reporter, rx, Arc::clone(&metrics));
                (sink, Some(writer))
            }
            None => (AuditSink::disabled(Arc::clone(&metrics)), None),
        };

        let skip = ApiServerRules::new(Default::default());
        if let (Some(client), Some(instance)) = (&client_for_policies, &instance) {
            let use_api_server = match config.backend {
                AdmissionBackend::Webhook => false,
                AdmissionBackend::Vap => true,
                AdmissionBackend::Auto => {
                    api_server_policies::api_server_supports_vap(client).await
                }
            };
            let scope = match config.backend {
                AdmissionBackend::Vap => MoveScope::Every,
                _ => MoveScope::WholeResources,
            };
            if !use_api_server && let Some(configuration) = config.owner_configuration.clone() {
                // A previous run with the API server backend may have
                // narrowed the registration: every rule is the webhook's now.
                let client = client.clone();
                background.push(tokio::spawn(async move {
                    api_server_policies::restore_registration(&client, &configuration).await;
                }));
            }
            if use_api_server {
                background.push(api_server_policies::spawn_sync(
                    client.clone(),
                    policies.clone(),
                    modes.clone(),
                    skip.clone(),
                    SyncTarget {
                        instance: instance.clone(),
                        owner: config.owner_configuration.clone(),
                        scope,
                    },
                    SyncTiming::default(),
                ));
            }
        }
        let mut state = AppState::new(policies, modes, metrics, audit);
        state.config_refusals = refusals;
        state.api_server_rules = skip;
        state.cluster_data = cluster_data;
        state.namespaces = namespaces;
        let state = Arc::new(state);
        Ok(Webhook {
            extra_routes: extras.routes,
            listener,
            local_addr,
            acceptor,
            state,
            limits: config.limits,
            background,
            audit_writer,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The live modes; replacing them applies to the next request.
    pub fn modes(&self) -> ModeHandle {
        self.state.modes.clone()
    }

    /// The policies the webhook enforces (shared with the guardrails).
    pub fn policies(&self) -> PolicyHandle {
        self.state.policies.clone()
    }

    /// The TLS acceptor serving the webhook's certificate (reloaded when
    /// it changes on disk), for another HTTPS listener of the same process.
    pub fn tls_acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// The webhook's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and
    /// the audit queue and stops the background tasks.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(addr = %self.local_addr, "admission webhook listening");
        let router = routes::router(
            Arc::clone(&self.state),
            routes::RouteLimits {
                max_body_bytes: self.limits.max_body_bytes,
                request_timeout: self.limits.request_timeout,
            },
        );
        let router = match self.extra_routes {
            Some(extra) => router.merge(extra),
            None => router,
        };
        let draining = Arc::clone(&self.state);
        let shutdown = async move {
            shutdown.await;
            draining.start_draining();
        };
        server::serve_tls(
            self.listener,
            self.acceptor,
            router,
            server::ConnectionLimits {
                handshake_timeout: self.limits.handshake_timeout,
                shutdown_grace: self.limits.shutdown_grace,
            },
            shutdown,
        )
        .await;
        for task in &self.background {
            task.abort();
        }
        // The writer ends once the last sender (in the state) is gone.
        drop(self.state);
        if let Some(writer) = self.audit_writer
            && tokio::time::timeout(Duration::from_secs(5), writer)
                .await
                .is_err()
        {
            tracing::warn!("audit writer did not drain in time; pending records dropped");
        }
        tracing::info!("admission webhook stopped");
    }
}

/// Runs the webhook until SIGTERM or Ctrl-C; the entry point of
/// `aiops-operator run --webhook-only`.
pub async fn run_webhook(config: WebhookConfig) -> Result<(), WebhookError> {
    let webhook = Webhook::bind(config).await?;
    webhook.serve(shutdown_signal()).await;
    Ok(())
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
