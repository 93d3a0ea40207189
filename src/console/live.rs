//! Live updates as server-sent events: a watch of Remediations made with
//! the user's client (so it shows only what they may watch), each change
//! sent as a `phase` event with the namespace, name, phase and proposal
//! hash. The stream ends when the watch fails, the session expires or the
//! console shuts down; the browser's EventSource reconnects on its own.
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, future};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;

use super::Console;
use super::pages::list::{phase_name, proposal_hash};
use crate::remediation::crd::Remediation;

/// What one `phase` event carries.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PhaseUpdate {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub hash: String,
}

impl PhaseUpdate {
    pub fn of(r: &Remediation) -> Self {
        PhaseUpdate {
            namespace: r.namespace().unwrap_or_default(),
            name: r.name_any(),
            phase: phase_name(r),
            hash: proposal_hash(r).to_string(),
        }
    }
}

/// `GET /remediations/events`: changes to every Remediation the user may watch.
pub async fn all_events(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(signed) = console.signed_in(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let api = Api::<Remediation>::all(signed.session.client.clone());
    stream(&console, &signed.session, api, watcher::Config::default())
}

/// `GET /remediations/NS/NAME/events`: changes to that one Remediation.
pub async fn one_events(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if !super::views::valid_object_key(&namespace, &name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(signed) = console.signed_in(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let api = Api::<Remediation>::namespaced(signed.session.client.clone(), &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    stream(&console, &signed.session, api, config)
}

fn stream(
    console: &Console,
    session: &super::session::Session,
    api: Api<Remediation>,
    config: watcher::Config,
) -> Response {
    let user = session.user.clone();
    let updates = watcher(api, config)
        .applied_objects()
        .take_while(move |item| {
            if let Err(error) = item {
                tracing::info!(%user, %error, "console live watch ended");
            }
            future::ready(item.is_ok())
        })
        .filter_map(|item| {
            future::ready(item.ok().and_then(|r| {
                Event::default()
                    .event("phase")
                    .json_data(PhaseUpdate::of(&r))
                    .ok()
            }))
        })
        .map(Ok::<Event, Infallible>);
    let mut shutdown = console.shutdown.clone();
    let remaining = session.remaining();
    let end = async move {
        tokio::select! {
            () = tokio::time::sleep(remaining) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => {}
        }
    };
    Sse::new(updates.take_until(end))
        .keep_alive(KeepAlive::default())
        .into_response()
}
