//! Notifications: when a Remediation becomes ready for review, or ends
//! Verified, RolledBack or Failed, a message is POSTed to each configured
//! receiver that asked for that event ([`settings`]).
//!
//! Delivery never blocks the controller: each message is sent on its own
//! task, at most [`MAX_PENDING`] at once (more are dropped and counted),
//! with a bounded number of attempts and exponential back-off. A receiver
//! that is down costs its own task's time, nothing else.
pub mod message;
pub mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::crd::{Phase, Remediation};
use super::metrics::RemediationMetrics;
use message::Notice;
use settings::{NotifyEvent, Receiver, UrlSource};

/// Deliveries in flight at most; beyond, a message is dropped (counted as
/// `dropped`) rather than held in memory without bound.
pub const MAX_PENDING: usize = 64;
/// Attempts per delivery; the waits between them double from one second.
const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends notices; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    client: kube::Client,
    operator_namespace: String,
    http: reqwest::Client,
    pending: Arc<AtomicUsize>,
    metrics: RemediationMetrics,
    first_retry: Duration,
}

/// Which event a transition to `phase` is, if any. `ready` says whether the
/// Proposed case carries a fix to approve (a diagnosis is not reviewable).
pub fn event_of(old: Phase, phase: Phase, ready: bool) -> Option<NotifyEvent> {
    if old == phase {
        return None;
    }
    match phase {
        Phase::Proposed if ready => Some(NotifyEvent::ReadyForReview),
        Phase::Verified => Some(NotifyEvent::Verified),
        Phase::RolledBack => Some(NotifyEvent::RolledBack),
        Phase::Failed => Some(NotifyEvent::Failed),
        _ => None,
    }
}

impl Notifier {
    pub fn new(
        client: kube::Client,
        operator_namespace: &str,
        metrics: RemediationMetrics,
    ) -> Self {
        // No redirects: a receiver's URL is a credential and must not be
        // forwarded elsewhere.
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aiops-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Notifier {
            client,
            operator_namespace: operator_namespace.to_string(),
            http,
            pending: Arc::default(),
            metrics,
            first_retry: Duration::from_secs(1),
        }
    }

    /// Queues `event` about `remediation` (in its new `status`) for every
    /// receiver that wants it, and returns at once.
    pub fn notify(
        &self,
        receivers: &[Receiver],
        console_url: Option<&str>,
        event: NotifyEvent,
        remediation: &Remediation,
        status: &crate::remediation::crd::RemediationStatus,
    ) {
        let notice = Notice::new(event, remediation, status, console_url);
        for receiver in receivers.iter().filter(|r| r.events.contains(&event)) {
            if self.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.metrics.notification(&receiver.name, "dropped");
                tracing::warn!(receiver = %receiver.name, event = event.as_str(),
                    "too many notifications in flight; dropping one");
                continue;
            }
            let body = notice.body(receiver.format);
            let this = self.clone();
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let result = this.deliver(&receiver, &body).await;
                this.pending.fetch_sub(1, Ordering::SeqCst);
                match result {
                    Ok(()) => this.metrics.notification(&receiver.name, "sent"),
                    Err(error) => {
                        this.metrics.notification(&receiver.name, "failed");
                        tracing::warn!(receiver = %receiver.name, event = event.as_str(), %error,
                            "notification not delivered");
                    }
                }
            });
        }
    }

    async fn deliver(&self, receiver: &Receiver, body: &serde_json::Value) -> Result<(), String> {
        let url = self.url(&receiver.url).await?;
        let mut wait = self.first_retry;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.http.post(url.as_str()).json(body).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                // A 4xx other than 429 will not get better by retrying.
                Ok(response)
                    if response.status().is_client_error()
                        && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    return Err(format!("the receiver answered {}", response.status()));
                }
                Ok(response) => last = format!("the receiver answered {}", response.status()),
                // The error's text can hold the URL; keep only its kind.
                Err(error) => last = transport_error(&error),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Err(format!("{ATTEMPTS} attempts failed; last: {last}"))
    }

    async fn url(&self, source: &UrlSource) -> Result<String, String> {
        match source {
            UrlSource::Literal(url) => Ok(url.clone()),
            UrlSource::Secret { name, key } => {
                let secret =
                    Api::<Secret>::namespaced(self.client.clone(), &self.operator_namespace)
                        .get(name)
                        .await
                        .map_err(|e| format!("reading Secret {name}: {e}"))?;
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .ok_or_else(|| format!("Secret {name} has no key {key}"))?;
                String::from_utf8(bytes.0.clone())
                    .map(|url| url.trim().to_string())
                    .map_err(|_| format!("Secret {name} key {key} is not text"))
            }
        }
    }
}

fn transport_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "cannot connect".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_phase_changes_to_the_four_moments_are_events() {
        use Phase::*;
        assert_eq!(
            event_of(Diagnosing, Proposed, true),
            Some(NotifyEvent::ReadyForReview)
        );
        assert_eq!(event_of(Diagnosing, Proposed, false), None, "a diagnosis");
        assert_eq!(event_of(Proposed, Proposed, true), None, "no change");
        assert_eq!(
            event_of(Applied, Verified, true),
            Some(NotifyEvent::Verified)
        );
        assert_eq!(
            event_of(Applied, RolledBack, true),
            Some(NotifyEvent::RolledBack)
        );
        assert_eq!(
            event_of(Diagnosing, Failed, false),
            Some(NotifyEvent::Failed)
        );
        assert_eq!(event_of(Proposed, Applying, true), None);
    }
}
