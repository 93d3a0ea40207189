//! The `aiops-operator` command line: parses flags and hands off to the library.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = aiops_operator::cli::Cli::parse();
    aiops_operator::cli::run(cli)
}
