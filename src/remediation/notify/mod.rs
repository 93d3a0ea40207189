//! Notifications: when a Remediation becomes ready for review, or ends
//! Verified, RolledBack or Failed, a message is POSTed to each configured
//! receiver that asked for that event ([`settings`]).
//!
//! Delivery never blocks the controller: each message is sent on its own
//! task, at most [`MAX_PENDING`] at once (more are dropped and counted),
//! with a bounded number of attempts and exponential back-off. A receiver
//! that is down costs its own task's time, nothing else. One case's
//! notices reach a receiver in the order they happened: a notice waits for
//! the one before it to that receiver (delivered or given up) first, so a
//! retried review notice is never overtaken by the case's verdict.
pub mod message;
pub mod settings;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

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
    queues: Arc<Queues>,
}

/// A receiver's name and a case's uid.
type QueueKey = (String, String);
/// The number of a queued notice and the signal that it is done.
type Done = (u64, tokio::sync::oneshot::Receiver<()>);

/// Per receiver and case, the signal that the last queued notice is done.
#[derive(Default)]
struct Queues {
    last: Mutex<HashMap<QueueKey, Done>>,
    sequence: AtomicU64,
}

impl Queues {
    /// Takes the place after the last notice queued for `key`: returns this
    /// notice's number, the previous notice's done signal, and this one's.
    fn enqueue(
        &self,
        key: &QueueKey,
    ) -> (
        u64,
        Option<tokio::sync::oneshot::Receiver<()>>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let number = self.sequence.fetch_add(1, Ordering::Relaxed);
        let (done, done_signal) = tokio::sync::oneshot::channel();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous = last
            .insert(key.clone(), (number, done_signal))
            .map(|(_, rx)| rx);
        (number, previous, done)
    }

    /// Forgets `key` when notice `number` is still its last one.
    fn finished(&self, key: &QueueKey, number: u64) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.get(key).is_some_and(|(queued, _)| *queued == number) {
            last.remove(key);
        }
    }
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
            queues: Arc::default(),
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
            let key = (receiver.name.clone(), remediation.uid().unwrap_or_default());
            let (number, previous, done) = self.queues.enqueue(&key);
            tokio::spawn(async move {
                if let Some(previous) = previous {
                    // Err only means the previous task ended without a word.
                    let _ = previous.await;
                }
                let result = this.deliver(&receiver, &body).await;
                let _ = done.send(());
                this.queues.finished(&key, number);
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

    #[tokio::test]
    async fn a_notice_waits_for_the_one_before_it_to_the_same_receiver_and_case() {
        let queues = Queues::default();
        let case = ("chat".to_string(), "uid-1".to_string());
        let other = ("chat".to_string(), "uid-2".to_string());
        let (first, none, first_done) = queues.enqueue(&case);
        assert!(none.is_none());
        let (second, after_first, second_done) = queues.enqueue(&case);
        let (_, unrelated, _other_done) = queues.enqueue(&other);
        assert!(unrelated.is_none(), "another case does not wait");
        let mut after_first = after_first.expect("the second notice waits");
        assert!(
            after_first.try_recv().is_err(),
            "not before the first is done"
        );
        first_done.send(()).expect("signalled");
        queues.finished(&case, first);
        assert!(after_first.await.is_ok());
        // The second is still the case's last notice: kept until it is done.
        assert!(queues.last.lock().unwrap().contains_key(&case));
        drop(second_done);
        queues.finished(&case, second);
        assert!(!queues.last.lock().unwrap().contains_key(&case));
    }

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
