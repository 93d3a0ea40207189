//! Command-line entry points of the admission side: the webhook flags of
//! `aiops-operator run --webhook-only` and `aiops-operator certs`. Each turns
//! flags into library calls and errors into an exit code.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::Reporter;
use std::time::Duration;

use crate::admission::api_server_policies::AdmissionBackend;
use crate::admission::certs::{CertsArgs, write_webhook_certs};
use crate::admission::config_watch::ConfigMapSource;
use crate::admission::modes::{DEFAULT_CONFIG_MAP, DEFAULT_OPERATOR_NAMESPACE, Mode, ModeConfig};
use crate::admission::policy_watch::PolicyFiles;
use crate::admission::serving_secret::{ServingSecret, ServingSecretConfig, service_dns_names};
use crate::admission::{Limits, ModeSource, WebhookConfig, ca_bundle, policy_files, run_webhook};

/// Flags of the admission webhook.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Address the webhook serves HTTPS on.
    #[arg(long, env = "AIOPS_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub webhook_listen: SocketAddr,
    /// Serving certificate (PEM); reloaded when it changes on disk.
    #[arg(
        long,
        env = "AIOPS_WEBHOOK_TLS_CERT",
        default_value = "/etc/aiops-operator/webhook-certs/tls.crt"
    )]
    pub webhook_tls_cert: PathBuf,
    /// Private key of the serving certificate (PEM).
    #[arg(
        long,
        env = "AIOPS_WEBHOOK_TLS_KEY",
        default_value = "/etc/aiops-operator/webhook-certs/tls.key"
    )]
    pub webhook_tls_key: PathBuf,
    /// Policy directory; only its top-level *.yaml/*.yml files are loaded.
    #[arg(long, env = "AIOPS_POLICIES_DIR", default_value = "policies")]
    pub policies_dir: PathBuf,
    /// Extra policy file or directory to load (repeatable), e.g.
    /// policies/examples/add-default-seccomp.yaml.
    #[arg(long = "extra-policies", value_name = "PATH")]
    pub extra_policies: Vec<PathBuf>,
    /// How often the policy files are checked for changes (seconds; 0 never).
    /// A changed set that loads replaces the one in force; one that does not
    /// is refused and the last good set stays.
    #[arg(long, env = "AIOPS_POLICIES_POLL_SECONDS", default_value_t = 10)]
    pub policies_poll_seconds: u64,
    /// Namespace the operator runs in; always exempt from admission.
    #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_OPERATOR_NAMESPACE)]
    pub operator_namespace: String,
    /// ConfigMap (in the operator namespace) holding the admission modes.
    #[arg(long, env = "AIOPS_ADMISSION_CONFIG_MAP", default_value = DEFAULT_CONFIG_MAP)]
    pub admission_config_map: String,
    /// Run without the Kubernetes API: no ConfigMap watch, no Events or
    /// PolicyReports; modes come from --admission-mode.
    #[arg(long)]
    pub standalone: bool,
    /// With --standalone: Enforce, Audit or Warn for every policy (default:
    /// each policy's own validationFailureAction).
    #[arg(long, requires = "standalone")]
    pub admission_mode: Option<Mode>,
    /// CA certificate to write into the webhook configurations' caBundle at start.
    #[arg(long, env = "AIOPS_WEBHOOK_CA_BUNDLE")]
    pub webhook_ca_bundle: Option<PathBuf>,
    /// ValidatingWebhookConfiguration to receive the CA bundle (repeatable).
    #[arg(
        long = "validating-webhook-config",
        default_value = "aiops-operator-validating"
    )]
    pub validating_webhook_configs: Vec<String>,
    /// MutatingWebhookConfiguration to receive the CA bundle (repeatable).
    #[arg(
        long = "mutating-webhook-config",
        default_value = "aiops-operator-mutating"
    )]
    pub mutating_webhook_configs: Vec<String>,
    /// Largest AdmissionReview body accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub webhook_max_body_bytes: usize,
    /// Where enforced CEL rules are evaluated: `webhook`; `vap` (as
    /// ValidatingAdmissionPolicies in the API server, the webhook skipping
    /// them); `auto` (`vap` when the API server serves them).
    #[arg(
        long,
        env = "AIOPS_ADMISSION_BACKEND",
        value_enum,
        default_value = "auto"
    )]
    pub admission_backend: AdmissionBackend,
    #[command(flatten)]
    pub self_managed: SelfManagedCertArgs,
}

/// Flags of the self-managed serving certificate (`serving_secret`).
#[derive(Debug, Clone, clap::Args)]
pub struct SelfManagedCertArgs {
    /// Keep the serving pair in this Secret (operator namespace) with no
    /// manual step: made when missing, renewed before expiry, its CA
    /// published into the webhook configurations, written to the
    /// --webhook-tls-cert/--webhook-tls-key paths for the hot reload.
    /// Leave unset to bring your own pair (e.g. from cert-manager).
    #[arg(long, env = "AIOPS_WEBHOOK_CERT_SECRET")]
    pub webhook_cert_secret: Option<String>,
    /// The Service the API server calls; its in-cluster DNS names go into
    /// the certificate.
    #[arg(long, default_value = "aiops-operator-webhook")]
    pub webhook_service: String,
    /// Extra DNS name for the certificate (repeatable).
    #[arg(long = "webhook-cert-dns", value_name = "NAME")]
    pub webhook_cert_dns: Vec<String>,
    /// Extra IP address for the certificate (repeatable), for a webhook
    /// called by address rather than through its Service.
    #[arg(long = "webhook-cert-ip", value_name = "IP")]
    pub webhook_cert_ip: Vec<std::net::IpAddr>,
    /// Lifetime of a new serving certificate, in hours.
    #[arg(long, default_value_t = 24 * 365)]
    pub webhook_cert_validity_hours: u64,
    /// Renew when less than this many hours remain.
    #[arg(long, default_value_t = 24 * 30)]
    pub webhook_cert_renew_before_hours: u64,
    /// Seconds the API server is given to load a new caBundle before a
    /// certificate from the new CA is served.
    #[arg(long, default_value_t = 2)]
    pub webhook_ca_propagation_seconds: u64,
}

/// `aiops-operator certs`: writes ca.crt, tls.crt and tls.key.
pub fn run_certs_command(args: &CertsArgs) -> ExitCode {
    match write_webhook_certs(&args.out, &args.dns, &args.ip) {
        Ok(written) => {
            for path in [&written.ca_cert, &written.cert, &written.key] {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("aiops-operator certs: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the webhook until SIGTERM/Ctrl-C.
pub fn run_webhook_command(args: WebhookArgs) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("aiops-operator: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "admission webhook failed");
            eprintln!("aiops-operator: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Errors on the way from flags to a running webhook.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Policies(#[from] policy_files::PolicyFilesError),
    #[error("connecting to Kubernetes: {0}")]
    Client(#[source] kube::Error),
    #[error("reading the CA bundle {path}: {source}")]
    ReadCaBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    CaBundle(#[from] ca_bundle::CaBundleError),
    #[error(transparent)]
    Webhook(#[from] crate::admission::WebhookError),
    #[error(transparent)]
    ServingSecret(#[from] crate::admission::serving_secret::ServingSecretError),
}

async fn serve(args: WebhookArgs) -> Result<(), CommandError> {
    let config = prepare_webhook(args).await?;
    run_webhook(config).await?;
    Ok(())
}

/// Turns the flags into a webhook configuration: loads the policies,
/// connects to Kubernetes (unless standalone) and publishes the CA bundle.
pub async fn prepare_webhook(args: WebhookArgs) -> Result<WebhookConfig, CommandError> {
    let policies = policy_files::load_policies(&args.policies_dir, &args.extra_policies)?;
    tracing::info!(
        policies = policies.policies().count(),
        dir = %args.policies_dir.display(),
        "policies loaded"
    );
    let (client, modes) = if args.standalone {
        let mut fixed = ModeConfig::defaults(&args.operator_namespace);
        fixed.mode = args.admission_mode;
        (None, ModeSource::Fixed(fixed))
    } else {
        let client = kube::Client::try_default()
            .await
            .map_err(CommandError::Client)?;
        let source = ConfigMapSource {
            namespace: args.operator_namespace.clone(),
            name: args.admission_config_map.clone(),
            operator_namespace: args.operator_namespace.clone(),
        };
        (Some(client), ModeSource::ConfigMap(source))
    };
    if let (Some(client), Some(secret)) = (&client, &args.self_managed.webhook_cert_secret) {
        // The pair must be on disk before the webhook loads it; afterwards
        // the keeper follows the Secret for the process's lifetime.
        let keeper = ServingSecret::new(client.clone(), self_managed_config(&args, secret));
        keeper.reconcile().await?;
        tokio::spawn(keeper.run());
    } else if let (Some(client), Some(path)) = (&client, &args.webhook_ca_bundle) {
        let ca = tokio::fs::read(path)
            .await
            .map_err(|source| CommandError::ReadCaBundle {
                path: path.clone(),
                source,
            })?;
        ca_bundle::publish_ca_bundle(
            client,
            &ca,
            &args.validating_webhook_configs,
            &args.mutating_webhook_configs,
        )
        .await?;
    }
    let pod_name = std::env::var("POD_NAME").ok();
    let policy_files = (args.policies_poll_seconds > 0).then(|| PolicyFiles {
        dir: args.policies_dir.clone(),
        extra: args.extra_policies.clone(),
        poll_interval: Duration::from_secs(args.policies_poll_seconds),
        // A refusal is news about this replica, so its Event goes on the Pod.
        event_object: pod_name.as_ref().map(|name| ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.clone()),
            namespace: Some(args.operator_namespace.clone()),
            ..ObjectReference::default()
        }),
    });
    let config = WebhookConfig {
        listen: args.webhook_listen,
        cert_file: args.webhook_tls_cert,
        key_file: args.webhook_tls_key,
        policies,
        policy_files,
        modes,
        client,
        limits: Limits {
            max_body_bytes: args.webhook_max_body_bytes,
            ..Limits::default()
        },
        reporter: Reporter {
            controller: "aiops-operator".into(),
            instance: pod_name,
        },
        backend: args.admission_backend,
        owner_configuration: named(&args.validating_webhook_configs).into_iter().next(),
    };
    Ok(config)
}

fn named(names: &[String]) -> Vec<String> {
    names.iter().filter(|n| !n.is_empty()).cloned().collect()
}

fn self_managed_config(args: &WebhookArgs, secret: &str) -> ServingSecretConfig {
    let flags = &args.self_managed;
    let mut dns = service_dns_names(&flags.webhook_service, &args.operator_namespace);
    dns.extend(flags.webhook_cert_dns.iter().cloned());
    let hours = |h: u64| Duration::from_secs(h.saturating_mul(3600));
    let renew_before = hours(flags.webhook_cert_renew_before_hours);
    ServingSecretConfig {
        namespace: args.operator_namespace.clone(),
        secret: secret.to_string(),
        dns,
        ips: flags.webhook_cert_ip.clone(),
        cert_file: args.webhook_tls_cert.clone(),
        key_file: args.webhook_tls_key.clone(),
        // An empty name (`--mutating-webhook-config ""`) means none.
        validating: named(&args.validating_webhook_configs),
        mutating: named(&args.mutating_webhook_configs),
        validity: hours(flags.webhook_cert_validity_hours),
        renew_before,
        propagation: Duration::from_secs(flags.webhook_ca_propagation_seconds),
        // Often enough that renewal never waits long past its threshold.
        check_every: (renew_before / 4).clamp(Duration::from_secs(60), Duration::from_secs(3600)),
    }
}

/// Logs to stderr, filtered by RUST_LOG (default `info`). Does nothing if
/// the binary already installed a subscriber.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal, not a log collector.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
