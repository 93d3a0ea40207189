//! The GET pages and the session routes: sign-in (`POST /session`),
//! sign-out, the list and the detail page. Every Kubernetes read here is
//! made with the signed-in user's client.
use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use maud::Markup;
use serde::Deserialize;

use super::Console;
use super::pages::detail::{DetailView, buttons, detail_page};
use super::pages::list::list_page;
use super::pages::sign_in::sign_in_page;
use super::pages::{Viewer, error_page};
use super::session::{self, Session, cleared_cookie, same_origin, session_cookie};
use super::user_client::{UserApiError, may_patch_remediations, user_client, who_am_i};
use crate::remediation::crd::Remediation;

/// A request's live session and its id.
pub struct SignedIn {
    pub id: String,
    pub session: Arc<Session>,
}

impl SignedIn {
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer {
            user: &self.session.user,
            csrf: &self.session.csrf,
        }
    }
}

impl Console {
    /// The session the request's cookie names, if it is live.
    pub fn signed_in(&self, headers: &HeaderMap) -> Option<SignedIn> {
        let id = session::session_id(headers)?;
        let session = self.sessions.find(&id)?;
        Some(SignedIn { id, session })
    }
}

/// An HTML page with `status`.
pub fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// `303 See Other` to `location`, optionally setting a cookie.
pub fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// 403 with nothing done: no session, no valid CSRF token, or another origin.
pub fn forbidden(viewer: Option<&Viewer<'_>>, why: &str) -> Response {
    html(StatusCode::FORBIDDEN, error_page(viewer, why))
}

/// The token stopped working (expired or revoked): the session ends and
/// the user is sent to sign in again.
pub fn signed_out_by_api(console: &Console, signed: &SignedIn) -> Response {
    tracing::info!(user = %signed.session.user, "the API server no longer accepts the session's token; session ended");
    console.sessions.end(&signed.id);
    see_other("/", Some(cleared_cookie()))
}

/// Whether `namespace` and `name` can name a Remediation: DNS subdomain
/// characters only (lower-case letters, digits, `-`, `.`), at most 253.
/// Anything else is answered 404 before any API call, and so never reaches
/// a URL, a header or a log line the console writes.
pub fn valid_object_key(namespace: &str, name: &str) -> bool {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    valid(namespace) && valid(name)
}

/// `GET /`: the sign-in page, or the list when already signed in.
pub async fn index(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if console.signed_in(&headers).is_some() {
        return see_other("/remediations", None);
    }
    html(StatusCode::OK, sign_in_page(None))
}

/// The sign-in form. Deliberately not `Debug`: it holds the token.
#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
}

/// `POST /session`: asks the API server who the token belongs to (with the
/// token), and on success opens a session holding a client built from it.
pub async fn sign_in(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    // A sign-in from another site would log the victim into the attacker's account.
    if !same_origin(&headers, &uri) {
        return forbidden(
            None,
            "Sign-in refused: the form was not posted from this console.",
        );
    }
    let Ok(Form(form)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            sign_in_page(Some(
                "The form could not be read; paste a token and try again.",
            )),
        );
    };
    let token = form.token.trim();
    if token.is_empty() {
        return html(
            StatusCode::BAD_REQUEST,
            sign_in_page(Some("Paste a token first.")),
        );
    }
    // A header value cannot carry control characters; such text is no token.
    if token.chars().any(|c| c.is_control() || c == ' ') {
        return html(
            StatusCode::UNAUTHORIZED,
            sign_in_page(Some(
                "That is not a bearer token: it contains spaces or control characters.",
            )),
        );
    }
    let identity = match user_client(&console.cluster, token) {
        Ok(client) => who_am_i(&client).await.map(|user| (user, client)),
        Err(error) => Err(error),
    };
    let (user, client) = match identity {
        Ok(found) => found,
        Err(error) if error.unauthenticated() => {
            tracing::info!("console sign-in refused: the API server did not accept the token");
            return html(
                StatusCode::UNAUTHORIZED,
                sign_in_page(Some(
                    "The Kubernetes API server did not accept this token (401 Unauthorized): \
                     it may be wrong, expired or revoked.",
                )),
            );
        }
        Err(error) => {
            tracing::warn!(%error, "console sign-in failed");
            let message = format!("Signing in failed: {error}");
            let code = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_GATEWAY);
            return html(code, sign_in_page(Some(&message)));
        }
    };
    match console
        .sessions
        .open(user.clone(), client, console.session_lifetime)
    {
        Ok((id, _)) => {
            tracing::info!(%user, "console sign-in");
            see_other(
                "/remediations",
                Some(session_cookie(&id, console.session_lifetime)),
            )
        }
        Err(error) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            sign_in_page(Some(&error.to_string())),
        ),
    }
}

/// A form that carries only the CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /session/end`: signs out.
pub async fn sign_out(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let Some(signed) = console.signed_in(&headers) else {
        return see_other("/", Some(cleared_cookie()));
    };
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if !same_origin(&headers, &uri) || !signed.session.csrf_matches(&csrf) {
        return forbidden(
            Some(&signed.viewer()),
            "Sign-out refused: the form was not this console's.",
        );
    }
    console.sessions.end(&signed.id);
    tracing::info!(user = %signed.session.user, "console sign-out");
    see_other("/", Some(cleared_cookie()))
}

/// `GET /remediations`: every Remediation the user may list, cluster-wide.
pub async fn list(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(signed) = console.signed_in(&headers) else {
        return see_other("/", None);
    };
    let api = Api::<Remediation>::all(signed.session.client.clone());
    let (items, error) = match api.list(&ListParams::default()).await {
        Ok(list) => (list.items, None),
        Err(error) => {
            let error = UserApiError::from(error);
            if error.unauthenticated() {
                return signed_out_by_api(&console, &signed);
            }
            let message = match &error {
                UserApiError::Refused { code: 403, message } => {
                    format!("You may not list Remediations across the cluster: {message}")
                }
                other => format!("Listing Remediations failed: {other}"),
            };
            (Vec::new(), Some(message))
        }
    };
    html(
        StatusCode::OK,
        list_page(&signed.viewer(), &items, error.as_deref()),
    )
}

/// `GET /remediations/NS/NAME`.
pub async fn detail(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if !valid_object_key(&namespace, &name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(signed) = console.signed_in(&headers) else {
        return see_other("/", None);
    };
    render_detail(&console, &signed, &namespace, &name, None, StatusCode::OK).await
}

/// The detail page read now with the user's client, with `error` shown and
/// answered with `status` (an action's refusal keeps the API's status).
pub async fn render_detail(
    console: &Console,
    signed: &SignedIn,
    namespace: &str,
    name: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let client = &signed.session.client;
    let remediation = match Api::<Remediation>::namespaced(client.clone(), namespace)
        .get(name)
        .await
    {
        Ok(remediation) => remediation,
        Err(read_error) => {
            let read_error = UserApiError::from(read_error);
            if read_error.unauthenticated() {
                return signed_out_by_api(console, signed);
            }
            let message = match error {
                Some(first) => {
                    format!("{first} (and the Remediation cannot be read: {read_error})")
                }
                None => format!("Remediation {namespace}/{name} cannot be read: {read_error}"),
            };
            let code = if error.is_some() {
                status
            } else {
                StatusCode::from_u16(read_error.status()).unwrap_or(StatusCode::BAD_GATEWAY)
            };
            return html(code, error_page(Some(&signed.viewer()), &message));
        }
    };
    let events = remediation_events(client, &remediation).await;
    let may_patch = match may_patch_remediations(client, namespace).await {
        Ok(allowed) => allowed,
        Err(check_error) => {
            // No answer means no buttons: the page must not offer what may be refused.
            tracing::warn!(error = %check_error, "access review failed; showing no buttons");
            false
        }
    };
    let view = DetailView {
        remediation: &remediation,
        events: events.as_deref().map_err(Clone::clone),
        buttons: buttons(&remediation, may_patch),
        error,
    };
    html(status, detail_page(&signed.viewer(), &view))
}

/// The Remediation's Events, read with the user's token; a refusal is a
/// reason to show instead.
async fn remediation_events(
    client: &kube::Client,
    remediation: &Remediation,
) -> Result<Vec<Event>, String> {
    let namespace = remediation.namespace().unwrap_or_default();
    let uid = remediation.meta().uid.clone().unwrap_or_default();
    let selector = format!(
        "involvedObject.kind=Remediation,involvedObject.name={},involvedObject.uid={uid}",
        remediation.name_any()
    );
    let mut events = Api::<Event>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|e| UserApiError::from(e).to_string())?
        .items;
    events.sort_by_key(super::pages::detail::event_time);
    Ok(events)
}
