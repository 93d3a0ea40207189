//! Any bytes as the body of `POST /validate`, `/mutate` and
//! `/remediations`, through the same routers (body limits, parsing,
//! decision, encoding) the TLS server uses, with the shipped policies and
//! the example mutation in Enforce. Every body must get an HTTP answer:
//! a panic or a hang is a finding.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aiops_operator::admission::audit_writer::AuditSink;
use aiops_operator::admission::metrics::Metrics;
use aiops_operator::admission::modes::{Mode, ModeConfig};
use aiops_operator::admission::policy_files::load_policies;
use aiops_operator::admission::routes::{RouteLimits, router};
use aiops_operator::admission::state::{AppState, ModeHandle, PolicyHandle};
use aiops_operator::remediation::approval::ApprovalKey;
use aiops_operator::remediation::approval_webhook::{self, ApprovalWebhook};
use aiops_operator::remediation::auto_approval::SettingsHandle;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Target {
    runtime: tokio::runtime::Runtime,
    router: Router,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let policies = load_policies(
            &root.join("policies"),
            &[root.join("policies/examples/add-default-seccomp.yaml")],
        )
        .unwrap_or_else(|e| panic!("the shipped policies load: {e}"));
        let metrics = Arc::new(Metrics::new());
        let state = AppState::new(
            PolicyHandle::new(policies),
            ModeHandle::new(ModeConfig::with_mode("aiops-system", Mode::Enforce)),
            Arc::clone(&metrics),
            AuditSink::disabled(metrics),
        );
        let approvals = ApprovalWebhook {
            key: ApprovalKey::new(b"fuzz-approval-key-of-32-bytes-xx".to_vec()),
            operator_identity: "system:serviceaccount:aiops-system:aiops-operator".into(),
            settings: SettingsHandle::new(Default::default()),
        };
        let router = router(
            Arc::new(state),
            RouteLimits {
                max_body_bytes: 3 * 1024 * 1024,
                request_timeout: Duration::from_secs(4),
            },
        )
        .merge(approval_webhook::router(Arc::new(approvals)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("a runtime: {e}"));
        Target { runtime, router }
    })
}

fuzz_target!(|body: &[u8]| {
    let target = target();
    for path in ["/validate", "/mutate", "/remediations"] {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
            .unwrap_or_else(|e| panic!("a request: {e}"));
        let status = target.runtime.block_on(async {
            let response = target
                .router
                .clone()
                .oneshot(request)
                .await
                .unwrap_or_else(|e| match e {});
            let status = response.status();
            // The reply must encode all the way.
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap_or_else(|e| panic!("{path}: the reply body: {e}"));
            status
        });
        // A server error would make the API server apply the failure
        // policy for a reason that is ours, not the request's.
        assert!(
            status == StatusCode::OK
                || status == StatusCode::BAD_REQUEST
                || status == StatusCode::PAYLOAD_TOO_LARGE
                || status == StatusCode::UNSUPPORTED_MEDIA_TYPE
                || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: unexpected status {status}"
        );
    }
});
