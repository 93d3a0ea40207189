//! Command-line interface: the subcommands and their flags. Each subcommand
//! delegates to the module that owns the work.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Prevents bad Kubernetes workloads at admission and repairs broken ones at runtime.
#[derive(Debug, Parser)]
#[command(name = "aiops-operator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version and exit.
    Version,
    /// Print the Remediation CustomResourceDefinition (YAML).
    Crd,
    /// Generate the admission webhook's CA and serving certificate
    /// (ca.crt, tls.crt, tls.key).
    Certs(crate::admission::certs::CertsArgs),
    /// Run the operator: the admission webhook and, on the elected leader,
    /// the remediation controller.
    // Boxed: the flattened flag structs make this variant far larger than the others.
    Run(Box<RunArgs>),
    /// Work with Kyverno-compatible policies offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Try a language model on one evidence document, without a cluster.
    Llm {
        #[command(subcommand)]
        command: crate::remediation::propose::command::LlmCommand,
    },
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run every kyverno-test.yaml under DIR and compare with the expected results.
    Test {
        /// Directory searched recursively for kyverno-test.yaml files.
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Evaluate manifests against the policies and print violations.
    Check {
        /// Manifest files (multi-document YAML).
        #[arg(short = 'f', long = "file", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Directory with the policies to apply.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
    },
}

/// How `policy test` reports results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Flags of `aiops-operator run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Serve only the admission webhook, without the remediation controllers.
    #[arg(long)]
    pub webhook_only: bool,
    #[command(flatten)]
    pub webhook: crate::admission::command::WebhookArgs,
    #[command(flatten)]
    pub controller: crate::operator::ControllerArgs,
    /// Serve the web console (HTTPS, the webhook's certificate) on this
    /// address, e.g. 0.0.0.0:9445; off when unset. Users sign in with their
    /// own bearer token and act with it.
    #[arg(long, env = "AIOPS_CONSOLE_ADDR", conflicts_with = "webhook_only")]
    pub console_addr: Option<std::net::SocketAddr>,
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Some(Command::Version) => {
            println!("aiops-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(Command::Crd) => match crate::remediation::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: cannot render the CRD: {err}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Policy { command }) => run_policy(command),
        Some(Command::Llm { command }) => {
            crate::remediation::propose::command::run_llm_command(command)
        }
        Some(Command::Certs(args)) => crate::admission::command::run_certs_command(&args),
        Some(Command::Run(args)) if args.webhook_only => {
            crate::admission::command::run_webhook_command(args.webhook)
        }
        Some(Command::Run(args)) => {
            crate::operator::run_operator(args.webhook, args.controller, args.console_addr)
        }
        None => {
            use clap::CommandFactory;
            // No subcommand: show help on stderr and fail, like other CLIs do.
            let _ = Cli::command().print_help();
            ExitCode::from(2)
        }
    }
}

fn run_policy(command: PolicyCommand) -> ExitCode {
    use crate::policy::{check, conformance};
    match command {
        PolicyCommand::Test { dir, output } => match conformance::run_dir(&dir) {
            Ok(report) => {
                match output {
                    OutputFormat::Text => print!("{}", conformance::render_text(&report)),
                    OutputFormat::Json => match serde_json::to_string_pretty(&report.results) {
                        Ok(json) => println!("{json}"),
                        Err(e) => {
                            eprintln!("error: cannot encode results: {e}");
                            return ExitCode::FAILURE;
                        }
                    },
                }
                // A result left unevaluated is not a result that held.
                if report.failed() == 0 && report.unsupported() == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        PolicyCommand::Check { files, policies } => match check::check_files(&files, &policies) {
            Ok(report) => {
                print!("{}", report.render());
                if report.has_enforce_violation() {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
