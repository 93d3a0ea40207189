//! `aiops-operator run`: the whole operator in one process. The admission
//! webhook (policies and approval binding) is served by every replica; the
//! remediation controller runs only on the replica holding the Lease, so two
//! replicas never both act.
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::admission::Webhook;
use crate::console::metrics::ConsoleMetrics;
use crate::remediation::approval::ApprovalKey;
use crate::remediation::approval_webhook::ApprovalWebhook;
use crate::remediation::auto_approval::SettingsHandle;
use crate::remediation::metrics::RemediationMetrics;
use crate::remediation::{ControllerConfig, Shared, controller};

/// The Secret holding the approval-signing key, shared by all replicas.
pub const APPROVAL_KEY_SECRET: &str = "aiops-operator-approval-key";

/// Flags of the remediation side of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// The operator's ServiceAccount; its identity may never approve.
    #[arg(long, env = "AIOPS_SERVICE_ACCOUNT", default_value = "aiops-operator")]
    pub service_account: String,
    /// The operator's identity, when not running as the ServiceAccount
    /// (e.g. a local run with a kubeconfig user).
    #[arg(long, env = "AIOPS_OPERATOR_IDENTITY")]
    pub operator_identity: Option<String>,
    /// How long a fixed rollout may take before it is rolled back (seconds).
    #[arg(long, default_value_t = 300)]
    pub verify_timeout_seconds: u64,
    /// How long a workload must stay free of failures before an unfixed
    /// Remediation is closed as Resolved (seconds). A crash-looping
    /// container runs for a moment between crashes; this outlasts that.
    #[arg(long, default_value_t = 60)]
    pub resolve_after_seconds: u64,
    /// How long closed Remediations are kept (seconds).
    #[arg(long, default_value_t = 86_400)]
    pub retention_seconds: u64,
    /// Bounded apply attempts per Remediation.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Highest memory limit the OOM rule proposes, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory_cap_mib: u64,
    /// How often the background policy scan judges the running workloads
    /// (besides on start and on every policy or ConfigMap change):
    /// `90s`, `10m`, `1h`, or seconds.
    #[arg(long, default_value = "10m", value_parser = parse_interval)]
    pub scan_interval: Duration,
    /// Name of the coordination.k8s.io Lease for leader election.
    #[arg(long, default_value = "aiops-operator-leader")]
    pub lease_name: String,
    /// This replica's identity in the Lease (defaults to POD_NAME or the hostname).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
}

impl ControllerArgs {
    fn config(&self, operator_namespace: &str) -> ControllerConfig {
        let mut config = ControllerConfig::new(operator_namespace, &self.service_account);
        if let Some(identity) = &self.operator_identity {
            config.operator_identity = identity.clone();
        }
        config.verify_timeout = Duration::from_secs(self.verify_timeout_seconds);
        config.resolve_after = Duration::from_secs(self.resolve_after_seconds);
        config.retention = Duration::from_secs(self.retention_seconds);
        config.max_attempts = self.max_attempts.max(1);
        config.rules.memory_cap = self.memory_cap_mib * 1024 * 1024;
        config.scan_interval = self.scan_interval;
        config
    }
}

/// `90s`, `10m`, `1h30m` or a number of seconds; at least one second.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not an interval like 30s, 10m or 1h");
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return (seconds > 0)
            .then(|| Duration::from_secs(seconds))
            .ok_or_else(bad);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let value: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(value.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_intervals_read_units_and_refuse_nonsense() {
        assert_eq!(parse_interval("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_interval("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_interval("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        for bad in ["", "0", "0s", "10x", "m", "5m3"] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
    }
}

/// Errors that stop the operator from starting.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("reading the approval key Secret {namespace}/{APPROVAL_KEY_SECRET}: {source}")]
    ApprovalKey {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("generating an approval key: {0}")]
    Random(#[source] std::io::Error),
    #[error("leader election: {0}")]
    Lease(String),
}

/// Reads the approval key, creating it once (the first replica wins a race).
pub async fn approval_key(client: &Client, namespace: &str) -> Result<ApprovalKey, OperatorError> {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |secret: &Secret| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get("key"))
            .map(|k| k.0.clone())
            .filter(|k| k.len() >= 32)
    };
    let err = |source| OperatorError::ApprovalKey {
        namespace: namespace.to_string(),
        source,
    };
    if let Some(secret) = api.get_opt(APPROVAL_KEY_SECRET).await.map_err(err)?
        && let Some(key) = read(&secret)
    {
        return Ok(ApprovalKey::new(key));
    }
    let mut bytes = vec![0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| OperatorError::Random(e.into()))?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(APPROVAL_KEY_SECRET.into()),
            ..Default::default()
        },
        data: Some([("key".to_string(), ByteString(bytes.clone()))].into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(ApprovalKey::new(bytes)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = api.get(APPROVAL_KEY_SECRET).await.map_err(err)?;
            read(&secret).map(ApprovalKey::new).ok_or_else(|| {
                OperatorError::Lease("the approval key Secret has no usable `key`".into())
            })
        }
        Err(source) => Err(err(source)),
    }
}

/// What the repair loop is given besides the cluster and the webhook.
pub struct RepairInputs {
    pub key: ApprovalKey,
    pub metrics: RemediationMetrics,
    pub llm: Option<Arc<crate::remediation::propose::model::ModelProposer>>,
    pub settings: SettingsHandle,
}

/// Everything the controller half needs, built once the webhook is bound.
pub struct ControllerParts {
    pub shared: Arc<Shared>,
    pub lease_name: String,
    pub identity: String,
}

impl ControllerParts {
    pub fn new(
        client: Client,
        args: &ControllerArgs,
        operator_namespace: &str,
        webhook: &Webhook,
        inputs: RepairInputs,
    ) -> Self {
        let RepairInputs {
            key,
            metrics,
            llm,
            settings,
        } = inputs;
        let identity = args
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("aiops-operator-{}", std::process::id()));
        let reporter = Reporter {
            controller: "aiops-operator".into(),
            instance: Some(identity.clone()),
        };
        let notifier = crate::remediation::notify::Notifier::new(
            client.clone(),
            operator_namespace,
            metrics.clone(),
        );
        let shared = Arc::new(Shared {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config: args.config(operator_namespace),
            policies: webhook.policies(),
            key,
            metrics,
            modes: webhook.modes(),
            llm,
            model_calls: Default::default(),
            stores: Default::default(),
            settings,
            notifier,
        });
        ControllerParts {
            shared,
            lease_name: args.lease_name.clone(),
            identity,
        }
    }
}

/// The approval endpoint's state for this operator.
pub fn approval_endpoint(
    key: ApprovalKey,
    config: &ControllerConfig,
    settings: SettingsHandle,
) -> Arc<ApprovalWebhook> {
    Arc::new(ApprovalWebhook {
        key,
        operator_identity: config.operator_identity.clone(),
        settings,
    })
}

/// Runs the controller whenever this replica holds the Lease, until `stop` flips.
pub async fn lead_and_control(
    parts: ControllerParts,
    mut stop: watch::Receiver<bool>,
) -> Result<(), OperatorError> {
    let namespace = parts.shared.config.operator_namespace.clone();
    let manager = LeaseManagerBuilder::new(parts.shared.client.clone(), &parts.lease_name)
        .with_namespace(&namespace)
        .with_identity(&parts.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|e| OperatorError::Lease(e.to_string()))?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(identity = %parts.identity, lease = %parts.lease_name, "waiting for leadership");
    loop {
        // Wait to lead (or to stop).
        while !*leader.borrow_and_update() {
            tokio::select! {
                changed = leader.changed() => if changed.is_err() { return lease_ended(lease_task).await; },
                _ = stop.changed() => { drop(leader); return lease_ended(lease_task).await; }
            }
        }
        tracing::info!(identity = %parts.identity, "leading: the remediation controller runs here");
        let mut lost = leader.clone();
        let mut stopping = stop.clone();
        let shutdown = async move {
            tokio::select! {
                _ = async { while *lost.borrow_and_update() { if lost.changed().await.is_err() { break; } } } => {}
                _ = stopping.changed() => {}
            }
        };
        controller::run(Arc::clone(&parts.shared), shutdown).await;
        if *stop.borrow() {
            drop(leader);
            return lease_ended(lease_task).await;
        }
        tracing::warn!(identity = %parts.identity, "lost leadership; the controller stopped here");
    }
}

async fn lease_ended(
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) -> Result<(), OperatorError> {
    // Dropping the receiver ends the watch task; release the lease so
    // another replica takes over at once instead of after expiry.
    match task.await {
        Ok(Ok(manager)) => manager
            .release()
            .await
            .map_err(|e| OperatorError::Lease(e.to_string())),
        Ok(Err(error)) => Err(OperatorError::Lease(error.to_string())),
        Err(error) => Err(OperatorError::Lease(error.to_string())),
    }
}

/// `aiops-operator run`: the webhook on every replica, the controller on the leader.
pub fn run_operator(
    webhook: crate::admission::command::WebhookArgs,
    controller: ControllerArgs,
    console_addr: Option<std::net::SocketAddr>,
) -> std::process::ExitCode {
    crate::admission::command::init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("aiops-operator: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_operator(webhook, controller, console_addr)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "operator failed");
            eprintln!("aiops-operator: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Why `run` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Command(#[from] crate::admission::command::CommandError),
    #[error(transparent)]
    Webhook(#[from] crate::admission::WebhookError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error("the operator needs the Kubernetes API; --standalone is only for --webhook-only")]
    Standalone,
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    #[error("reading the cluster settings for the console: {0}")]
    ConsoleCluster(#[source] kube::config::InferConfigError),
}

async fn serve_operator(
    webhook_args: crate::admission::command::WebhookArgs,
    args: ControllerArgs,
    console_addr: Option<std::net::SocketAddr>,
) -> Result<(), RunError> {
    if webhook_args.standalone {
        return Err(RunError::Standalone);
    }
    let namespace = webhook_args.operator_namespace.clone();
    let webhook_config_map = webhook_args.admission_config_map.clone();
    let config = crate::admission::command::prepare_webhook(webhook_args).await?;
    let client = config.client.clone().ok_or(RunError::Standalone)?;
    let key = approval_key(&client, &namespace).await?;
    let controller_config = args.config(&namespace);
    // Every replica keeps the repair settings: its approval webhook needs
    // the rule names, and whichever replica leads needs the rest.
    let settings = SettingsHandle::new(Default::default());
    let settings_watch = crate::remediation::auto_approval::watch::spawn_settings_watch(
        client.clone(),
        namespace.clone(),
        webhook_config_map.clone(),
        settings.clone(),
    );
    let metrics_slot: Arc<std::sync::Mutex<Option<RemediationMetrics>>> = Arc::default();
    let slot = Arc::clone(&metrics_slot);
    let console_metrics_slot: Arc<std::sync::Mutex<Option<ConsoleMetrics>>> = Arc::default();
    let console_slot = Arc::clone(&console_metrics_slot);
    let with_console = console_addr.is_some();
    let extras = crate::admission::WebhookExtras {
        routes: Some(crate::remediation::approval_webhook::router(
            approval_endpoint(key.clone(), &controller_config, settings.clone()),
        )),
        register_metrics: Some(Box::new(move |registry| {
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(RemediationMetrics::register(registry));
            }
            if with_console && let Ok(mut slot) = console_slot.lock() {
                *slot = Some(ConsoleMetrics::register(registry));
            }
        })),
    };
    let webhook = Webhook::bind_with(config, extras).await?;
    let console = match console_addr {
        // Every replica serves it: it holds no lease-bound state, and each
        // user's requests run with their own token.
        Some(addr) => Some(
            crate::console::ConsoleServer::bind(
                addr,
                kube::Config::infer()
                    .await
                    .map_err(RunError::ConsoleCluster)?,
                webhook.tls_acceptor(),
                console_metrics_slot
                    .lock()
                    .ok()
                    .and_then(|mut slot| slot.take())
                    .unwrap_or_default(),
            )
            .await?,
        ),
        None => None,
    };
    let metrics = metrics_slot
        .lock()
        .ok()
        .and_then(|mut slot| slot.take())
        .unwrap_or_else(RemediationMetrics::unregistered);
    let llm = model_proposer(&client, &namespace, &webhook_config_map, &controller_config).await;
    if let Some(proposer) = &llm {
        proposer.report_breaker_open_to(metrics.model_breaker_open());
    }
    let inputs = RepairInputs {
        key,
        metrics,
        llm,
        settings,
    };
    let parts = ControllerParts::new(client, &args, &namespace, &webhook, inputs);
    let (stop_tx, stop_rx) = watch::channel(false);
    let console = console.map(|console| {
        let mut stopping = stop_rx.clone();
        tokio::spawn(console.serve(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }))
    });
    let controller = tokio::spawn(lead_and_control(parts, stop_rx));
    webhook
        .serve(async move {
            crate::admission::shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .await;
    settings_watch.abort();
    if let Some(console) = console
        && let Err(error) = console.await
    {
        tracing::warn!(%error, "console task ended abnormally");
    }
    match controller.await {
        Ok(result) => result?,
        Err(error) => tracing::warn!(%error, "controller task ended abnormally"),
    }
    Ok(())
}

/// The model proposer from the `llm.*` keys of the operator's ConfigMap
/// (read at start; a change takes effect on restart). A missing ConfigMap
/// or `llm.provider: none` means rules only; an invalid setting is logged
/// and also means rules only, never a half-configured provider.
async fn model_proposer(
    client: &Client,
    namespace: &str,
    config_map: &str,
    config: &ControllerConfig,
) -> Option<Arc<crate::remediation::propose::model::ModelProposer>> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let data = match Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(config_map)
        .await
    {
        Ok(found) => found.and_then(|cm| cm.data).unwrap_or_default(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the operator ConfigMap; proposals come from rules only");
            return None;
        }
    };
    let llm = match crate::llm::config::LlmConfig::from_config_map(&data, |key| {
        std::env::var(key).ok()
    }) {
        Ok(llm) => llm,
        Err(error) => {
            tracing::warn!(%error, "invalid llm.* settings; proposals come from rules only");
            return None;
        }
    };
    match crate::remediation::propose::model::ModelProposer::from_config(
        &llm,
        config.rules.memory_cap,
    ) {
        Ok(proposer) => {
            tracing::info!(provider = ?llm.provider, model = %llm.model, url = %llm.url, "model proposals configured");
            Some(Arc::new(proposer))
        }
        Err(error) => {
            tracing::warn!(%error, "cannot build the model provider; proposals come from rules only");
            None
        }
    }
}
