//! What every bench target does around its measurement: nothing at all
//! under `cargo test --all-targets` (which runs bench targets without
//! `--bench`), and otherwise one async run whose error is the exit status.
use std::future::Future;
use std::process::ExitCode;

/// Runs `measure` on a multi-threaded runtime when invoked with `--bench`;
/// `name` prefixes the messages, `make_target` is the way to run it.
pub fn run_benchmark<F, Fut>(name: &str, make_target: &str, measure: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if !std::env::args().any(|arg| arg == "--bench") {
        eprintln!("{name}: a benchmark; run it with `make {make_target}`");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(measure()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}
