//! Test support, the one copy shared by the integration tests
//! (`tests/*.rs`, `tests/*/main.rs`) and the benches (`tests/bench/`, which
//! include it with `#[path = "../support/mod.rs"] mod support;`).
//!
//! Live tests run against the sandbox cluster: a test connects with
//! [`Sandbox::connect`], which fails the test with a message naming `make
//! cluster-up` when the sandbox is not running (a sandbox test never
//! skips), and works in its own namespace ([`Sandbox::namespace`]),
//! deleted when the guard drops, even on panic. Functions named `try_*`
//! return an error instead of failing the test, for the benches, which
//! clean up before they report it.
//!
//! - [`sandbox`]: connecting, namespaces, kubectl, waiting.
//! - [`workloads`]: manifests, pods, container states, rollouts.
//! - [`operator`]: local operator replicas and their Remediations.
//! - [`webhook`]: the admission webhook as a process, TLS, AdmissionReviews.
//! - [`manifests`]: YAML documents and what a manifest names.
//! - [`notify`]: local notification receivers and the `notify.*` keys.
//! - [`incident`]: the image-pull incident of the model tests.
//! - [`bench`]: what every bench target does around its measurement.
//! - [`console`]: console users (ServiceAccounts, shipped roles, tokens).
//! - [`browser`]: headless Chromium through chromedriver (WebDriver).
//! - [`process`]: a process's memory, open files and threads, the load.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod bench;
pub mod browser;
pub mod console;
pub mod incident;
pub mod manifests;
pub mod notify;
pub mod operator;
pub mod process;
pub mod sandbox;
pub mod webhook;
pub mod workloads;

// The flat surface tests import from (`support::Sandbox`); a binary that
// uses nothing of one module is not a mistake.
#[allow(unused_imports)]
pub use bench::*;
#[allow(unused_imports)]
pub use browser::*;
#[allow(unused_imports)]
pub use console::*;
#[allow(unused_imports)]
pub use incident::*;
#[allow(unused_imports)]
pub use manifests::*;
#[allow(unused_imports)]
pub use notify::*;
#[allow(unused_imports)]
pub use operator::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use sandbox::*;
#[allow(unused_imports)]
pub use webhook::*;
#[allow(unused_imports)]
pub use workloads::*;
