//! The decision buttons: approve, reject, regenerate. Each POST must carry
//! a live session, that session's CSRF token and this console's origin, or
//! it is refused (403) before anything is read or written. The patch is the
//! one `kubectl aiops` sends ([`crate::remediation::decision`]), made with
//! the user's own client: RBAC and the approval webhook judge the user,
//! never the operator.
use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;
use tracing::Instrument;

use super::Console;
use super::pages::list::detail_href;
use super::session::same_origin;
use super::user_client::UserApiError;
use super::views::{forbidden, render_detail, see_other, signed_out_by_api, valid_object_key};
use crate::remediation::crd::{Phase, Remediation};
use crate::remediation::decision;

/// What a button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
    Regenerate,
}

impl Decision {
    /// The decision a route names by its last segment
    /// (`/remediations/NS/NAME/approve`).
    pub fn from_path(path: &str) -> Option<Decision> {
        let last = path.rsplit('/').next()?;
        [Decision::Approve, Decision::Reject, Decision::Regenerate]
            .into_iter()
            .find(|d| d.name() == last)
    }

    /// The route's last segment, and the name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::Regenerate => "regenerate",
        }
    }
}

/// The hidden fields of a decision form.
#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    /// The proposal hash the page showed.
    #[serde(default)]
    hash: String,
}

type Target = Path<(String, String)>;
type Posted = Result<Form<DecisionForm>, FormRejection>;

/// `POST /remediations/NS/NAME/{approve,reject,regenerate}`.
pub async fn decide(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    uri: Uri,
    Path((namespace, name)): Target,
    form: Posted,
) -> Response {
    let Some(decision) = Decision::from_path(uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !valid_object_key(&namespace, &name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(signed) = console.signed_in(&headers) else {
        return forbidden(None, "Refused: sign in first.");
    };
    let viewer = signed.viewer();
    if !same_origin(&headers, &uri) {
        tracing::warn!(user = %signed.session.user, %namespace, %name, action = decision.name(),
            "console POST from another origin refused");
        return forbidden(
            Some(&viewer),
            "Refused: the form was not posted from this console.",
        );
    }
    let form = match form {
        Ok(Form(form)) if signed.session.csrf_matches(&form.csrf) => form,
        _ => {
            tracing::warn!(user = %signed.session.user, %namespace, %name, action = decision.name(),
                "console POST without this session's CSRF token refused");
            return forbidden(
                Some(&viewer),
                "Refused: the form's CSRF token is missing or not this session's. Reload the page.",
            );
        }
    };
    let span = tracing::info_span!("console_decision", user = %signed.session.user,
        %namespace, %name, action = decision.name());
    let api = Api::<Remediation>::namespaced(signed.session.client.clone(), &namespace);
    let outcome = async {
        match api.get(&name).await {
            Ok(current) => match check(decision, &current, &form.hash) {
                Ok(()) => {
                    let patch = match decision {
                        Decision::Approve => {
                            decision::approve_patch(current.resource_version().as_deref())
                        }
                        Decision::Reject => decision::reject_patch(),
                        Decision::Regenerate => decision::regenerate_patch(),
                    };
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                        .map_err(UserApiError::from)
                }
                Err(conflict) => Err(conflict),
            },
            Err(error) => Err(UserApiError::from(error)),
        }
    }
    .instrument(span.clone())
    .await;
    match outcome {
        Ok(()) => {
            tracing::info!(parent: &span, "done");
            see_other(&detail_href(&namespace, &name), None)
        }
        Err(error) if error.unauthenticated() => signed_out_by_api(&console, &signed),
        Err(error) => {
            tracing::info!(parent: &span, code = error.status(), %error, "refused");
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_GATEWAY);
            let message = format!("{} refused: {error}", title(decision));
            render_detail(&console, &signed, &namespace, &name, Some(&message), status).await
        }
    }
}

fn title(decision: Decision) -> &'static str {
    match decision {
        Decision::Approve => "Approval",
        Decision::Reject => "Rejection",
        Decision::Regenerate => "New proposal",
    }
}

/// The console's own checks before the API server's: the case still waits
/// for review, and an approval names the proposal the page showed (a 409
/// otherwise, as the API server answers a stale write).
pub fn check(
    decision: Decision,
    current: &Remediation,
    shown_hash: &str,
) -> Result<(), UserApiError> {
    let status = current.status.clone().unwrap_or_default();
    if status.phase != Phase::Proposed {
        return Err(UserApiError::Refused {
            code: 409,
            message: format!(
                "the Remediation no longer waits for review (it is {:?})",
                status.phase
            ),
        });
    }
    if decision == Decision::Approve {
        let current_hash = status.proposal.as_ref().map(|p| p.hash.as_str());
        if current_hash != Some(shown_hash) {
            return Err(UserApiError::Refused {
                code: 409,
                message: format!(
                    "the proposal changed since the page was loaded (it is now {}); review it again",
                    current_hash.unwrap_or("gone")
                ),
            });
        }
    }
    Ok(())
}
