//! The `aiops-operator` command line: parses flags and hands off to the
//! library. Invoked as `kubectl-aiops` (a kubectl plugin), the same binary
//! serves `kubectl aiops list|show|approve|reject|regenerate`.
use std::process::ExitCode;

use clap::Parser;

// The webhook's request path allocates many small, short-lived values (JSON
// trees, JMESPath variables); glibc's malloc spent about a third of the
// server's CPU on them under load (perf, bench-webhook). mimalloc's
// thread-local free lists make that a small fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let invoked_as = std::env::args_os().next().and_then(|arg0| {
        std::path::Path::new(&arg0)
            .file_name()
            .map(|n| n.to_os_string())
    });
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new("kubectl-aiops")) {
        return aiops_operator::plugin::run_plugin(aiops_operator::plugin::PluginCli::parse());
    }
    let cli = aiops_operator::cli::Cli::parse();
    aiops_operator::cli::run(cli)
}
