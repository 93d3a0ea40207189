//! Command-line entry points of the admission side: the webhook flags of
//! `aiops-operator run --webhook-only` and `aiops-operator certs`. Each turns
//! flags into library calls and errors into an exit code.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kube::runtime::events::Reporter;

use crate::admission::certs::{CertsArgs, write_webhook_certs};
use crate::admission::config_watch::ConfigMapSource;
use crate::admission::modes::{DEFAULT_CONFIG_MAP, DEFAULT_OPERATOR_NAMESPACE, Mode, ModeConfig};
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
    if let (Some(client), Some(path)) = (&client, &args.webhook_ca_bundle) {
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
    let config = WebhookConfig {
        listen: args.webhook_listen,
        cert_file: args.webhook_tls_cert,
        key_file: args.webhook_tls_key,
        policies: Arc::new(policies),
        modes,
        client,
        limits: Limits {
            max_body_bytes: args.webhook_max_body_bytes,
            ..Limits::default()
        },
        reporter: Reporter {
            controller: "aiops-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    };
    Ok(config)
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
