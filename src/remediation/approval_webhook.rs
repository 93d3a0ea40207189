//! The admission endpoint for Remediations (`POST /remediations`): it binds
//! approvals to proposals (see [`super::approval`]) on the same TLS server
//! as the policy webhook. Registered with `failurePolicy: Fail`, so when it
//! is down nobody can approve: approval fails closed.
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::admission::AdmissionResponse;
use serde::Deserialize;
use serde_json::Value;

use super::approval::{ApprovalDecision, ApprovalKey, Requester, review_remediation_change};
use super::auto_approval::SettingsHandle;
use super::crd::Remediation;
use crate::admission::review::{parse_review, reply};

/// What the endpoint needs.
pub struct ApprovalWebhook {
    pub key: ApprovalKey,
    pub operator_identity: String,
    /// Which auto-approval rules exist now (the operator's only approvals).
    pub settings: SettingsHandle,
}

/// The route, to be merged into the webhook's router (inside its layers).
pub fn router(state: Arc<ApprovalWebhook>) -> Router {
    // A Remediation is small; the limit and timeout keep a hostile body cheap.
    Router::new()
        .route("/remediations", post(review_remediation))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1024 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            std::time::Duration::from_secs(4),
        ))
        .with_state(state)
}

fn to_remediation(object: &Value) -> Result<Remediation, String> {
    Remediation::deserialize(object).map_err(|e| format!("not a valid Remediation: {e}"))
}

async fn review_remediation(State(state): State<Arc<ApprovalWebhook>>, body: Bytes) -> Response {
    let request = match parse_review(&body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let response = AdmissionResponse::from(&request.typed);
    let decision = (|| {
        let new = request.object.as_ref().ok_or("the request has no object")?;
        let new = to_remediation(new)?;
        let old = request
            .old_object
            .as_ref()
            .map(to_remediation)
            .transpose()?;
        let username = request.user_info.username.clone().unwrap_or_default();
        let groups = request.user_info.groups.clone().unwrap_or_default();
        let who = Requester {
            username: &username,
            groups: &groups,
        };
        let settings = state.settings.current();
        Ok::<_, String>(review_remediation_change(
            old.as_ref(),
            &new,
            &who,
            &state.operator_identity,
            &settings.rule_names(),
            &state.key,
            Time(k8s_openapi::jiff::Timestamp::now()),
        ))
    })();
    let span = tracing::info_span!("approval", uid = %request.uid, name = %request.name,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        user = request.user_info.username.as_deref().unwrap_or_default());
    let _guard = span.enter();
    let response = match decision {
        Err(message) => response.deny(message),
        Ok(ApprovalDecision::Allow) => response,
        Ok(ApprovalDecision::Deny(message)) => {
            tracing::info!(%message, "approval refused");
            response.deny(message)
        }
        Ok(ApprovalDecision::Record(record)) => {
            tracing::info!(approved_by = %record.approved_by, proposal = %record.proposal_hash, "approval recorded");
            with_ops(
                response,
                serde_json::json!([
                    {"op": "add", "path": "/spec/approval", "value": record}
                ]),
            )
        }
        Ok(ApprovalDecision::Withdraw) => with_ops(
            response,
            serde_json::json!([{"op": "remove", "path": "/spec/approval"}]),
        ),
    };
    reply(response).into_response()
}

/// Attaches RFC 6902 operations; if they cannot be encoded, deny rather
/// than admit an approval without its record.
fn with_ops(response: AdmissionResponse, ops: serde_json::Value) -> AdmissionResponse {
    let patch: Result<kube_json_patch::Patch, _> = serde_json::from_value(ops);
    match patch
        .map_err(|e| e.to_string())
        .and_then(|p| response.clone().with_patch(p).map_err(|e| e.to_string()))
    {
        Ok(patched) => patched,
        Err(error) => response.deny(format!("cannot record the approval: {error}")),
    }
}
