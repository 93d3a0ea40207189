//! The admission webhook against the real sandbox API server (issue 3 §5).
//!
//! Each test starts the built binary (`aiops-operator run --webhook-only`)
//! as a local process on a free loopback port, with its own certificates,
//! its own operator namespace and ConfigMap, and registers it with a
//! ValidatingWebhookConfiguration (`clientConfig.url` + `caBundle`) whose
//! namespaceSelector matches only that test's namespaces. Nothing else in
//! the shared cluster is ever sent to it, and the configuration is deleted
//! when the test ends, panics included ([`live_webhook::LiveWebhook`]'s `Drop`).
//!
//! What is shown: Enforce denies every bad Kyverno pod-security fixture
//! naming the right policy and admits every good one (plus `:latest` and
//! untagged images); Audit admits with a warning, a Warning Event and a
//! PolicyReport result; a ConfigMap switch to Enforce applies within 2 s in
//! the same process; exempt namespaces are never blocked; rotating the
//! certificate files under load fails no request; a ConfigMap or policy
//! file that does not parse leaves the last good set in force.
//!
//! - [`api_server`]: `--admission-backend vap`: an enforced CEL policy
//!   decided by the API server's own ValidatingAdmissionPolicy, and back
//!   in the webhook when the ConfigMap makes it Audit.
//! - [`kyverno_fixtures`]: the Kyverno baseline suites through the API server.
//! - [`context`]: `configMap` and `apiCall` policy context lookups.
//! - [`modes`]: image tags, Audit, the ConfigMap switch, exempt namespaces.
//! - [`namespaces`]: namespaceSelector and `namespaceObject` read the
//!   namespace's labels.
//! - [`registration`]: the webhook configuration's rules narrowed to what
//!   the webhook still judges, and widened again.
//! - [`refusals`]: a bad ConfigMap or policy file leaves the last good set.
//! - [`outage`]: the webhook process gone, with `Fail` and with `Ignore`.
//! - [`rotation`]: certificate rotation under load.
//! - [`live_webhook`] and [`objects`]: the webhook process and what the API
//!   server makes of the objects sent to it.
//!
//! Needs the sandbox (`make cluster-up`); fails loudly without it.
#[path = "../support/mod.rs"]
mod support;

mod api_server;
mod context;
mod kyverno_fixtures;
mod live_webhook;
mod modes;
mod namespaces;
mod objects;
mod outage;
mod refusals;
mod registration;
mod rotation;

/// Namespaces carrying this label (value: the webhook's id) are sent to
/// that test's webhook, and only those.
const LIVE_LABEL: &str = "aiops-operator.dev/admission-live";
/// The ConfigMap each test's webhook reads its modes from.
const CONFIG_MAP: &str = "aiops-operator-config";
/// A privileged container with a pinned image: violates exactly one of our
/// policies, `disallow-privileged-containers` (Audit by default).
const PRIVILEGED_POLICY: &str = "disallow-privileged-containers";
