//! Records audited violations in the cluster (a Warning Event on the object
//! and a PolicyReport in its namespace) off the request path.
//!
//! Admission only pushes an [`AuditRecord`] into a bounded channel with
//! `try_send`; one background task does the API calls. When the channel is
//! full the record is dropped and counted
//! (`aiops_admission_side_effects_total{kind="record",result="dropped_full"}`),
//! because a slow API server must never slow down or fail admission.
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::admission::metrics::Metrics;
use crate::admission::policy_report::{build_report, report_name, report_resource};
use crate::admission::verdict::Violation;

/// Field manager for the PolicyReports written by admission.
pub const FIELD_MANAGER: &str = "aiops-operator-admission";
/// Events carry at most 1 kB of note.
const MAX_EVENT_NOTE: usize = 1024;

/// What to record about one admitted request.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub subject: ObjectReference,
    pub operation: String,
    /// Audit-mode violations only.
    pub violations: Vec<Violation>,
    pub observed_at: SystemTime,
}

/// The admission side of the channel. Cloning is cheap.
#[derive(Clone)]
pub struct AuditSink {
    tx: Option<mpsc::Sender<AuditRecord>>,
    metrics: Arc<Metrics>,
}

impl AuditSink {
    /// A sink that records nothing (no cluster); records are counted as dropped.
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        AuditSink { tx: None, metrics }
    }

    /// A sink holding at most `capacity` pending records, and the receiver
    /// for [`spawn_writer`].
    pub fn bounded(capacity: usize, metrics: Arc<Metrics>) -> (Self, mpsc::Receiver<AuditRecord>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            AuditSink {
                tx: Some(tx),
                metrics,
            },
            rx,
        )
    }

    /// Queues a record without waiting; drops it (and counts it) when full.
    pub fn submit(&self, record: AuditRecord) {
        let Some(tx) = &self.tx else {
            self.metrics.side_effect("record", "dropped_disabled");
            return;
        };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(record)) => {
                self.metrics.side_effect("record", "dropped_full");
                tracing::warn!(
                    kind = record.subject.kind.as_deref().unwrap_or_default(),
                    namespace = record.subject.namespace.as_deref().unwrap_or_default(),
                    name = record.subject.name.as_deref().unwrap_or_default(),
                    "audit queue full; violation record dropped"
                );
            }
            Err(TrySendError::Closed(_)) => {
                self.metrics.side_effect("record", "dropped_closed");
            }
        }
    }
}

/// Writes queued records until every [`AuditSink`] is dropped and the queue
/// is drained.
pub fn spawn_writer(
    client: kube::Client,
    reporter: Reporter,
    mut rx: mpsc::Receiver<AuditRecord>,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let recorder = Recorder::new(client.clone(), reporter);
        while let Some(record) = rx.recv().await {
            let span = tracing::info_span!(
                "audit_record",
                kind = record.subject.kind.as_deref().unwrap_or_default(),
                namespace = record.subject.namespace.as_deref().unwrap_or_default(),
                name = record.subject.name.as_deref().unwrap_or_default(),
            );
            write_record(&client, &recorder, &record, &metrics)
                .instrument(span)
                .await;
        }
        tracing::debug!("audit writer stopped");
    })
}

async fn write_record(
    client: &kube::Client,
    recorder: &Recorder,
    record: &AuditRecord,
    metrics: &Metrics,
) {
    // One Event per admitted request naming every audited rule: the event
    // recorder folds Events with the same reason on the same object into a
    // count, so one Event per rule would keep only the first rule's words.
    if !record.violations.is_empty() {
        let event = Event {
            type_: EventType::Warning,
            reason: "PolicyViolation".into(),
            note: Some(event_note(&record.violations)),
            action: "Admission".into(),
            secondary: None,
        };
        match recorder.publish(&event, &record.subject).await {
            Ok(()) => metrics.side_effect("event", "written"),
            Err(error) => {
                metrics.side_effect("event", "failed");
                tracing::warn!(%error, violations = record.violations.len(), "could not publish the violation Event");
            }
        }
    }

    let Some(name) = report_name(&record.subject) else {
        metrics.side_effect("policyreport", "skipped_unnamed");
        return;
    };
    let report = build_report(
        &name,
        &record.subject,
        &record.operation,
        &record.violations,
        record.observed_at,
    );
    let namespace = record
        .subject
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty());
    let resource = report_resource(namespace.is_some());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    // Apply replaces our previous results for this object in one call.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(&report)).await {
        Ok(_) => metrics.side_effect("policyreport", "written"),
        Err(error) => {
            metrics.side_effect("policyreport", "failed");
            tracing::warn!(%error, report = %name, "could not write the PolicyReport");
        }
    }
}

/// `[Audit] policy/rule: message; [Audit] policy/rule: message`, cut to the
/// Event size limit.
fn event_note(violations: &[Violation]) -> String {
    let mut note = violations
        .iter()
        .map(|v| format!("[{}] {}", v.mode, v.describe()))
        .collect::<Vec<_>>()
        .join("; ");
    if note.len() > MAX_EVENT_NOTE {
        let mut cut = MAX_EVENT_NOTE - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::modes::Mode;

    fn record() -> AuditRecord {
        AuditRecord {
            subject: ObjectReference::default(),
            operation: "CREATE".into(),
            violations: vec![],
            observed_at: SystemTime::now(),
        }
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let metrics = Arc::new(Metrics::new());
        let (sink, _rx) = AuditSink::bounded(1, Arc::clone(&metrics));
        sink.submit(record());
        sink.submit(record());
        let text = metrics.encode().unwrap_or_default();
        assert!(
            text.contains(
                "aiops_admission_side_effects_total{kind=\"record\",result=\"dropped_full\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn disabled_sink_counts_drops() {
        let metrics = Arc::new(Metrics::new());
        AuditSink::disabled(Arc::clone(&metrics)).submit(record());
        let text = metrics.encode().unwrap_or_default();
        assert!(text.contains("result=\"dropped_disabled\"} 1"), "{text}");
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let violation = Violation {
            policy: "p".into(),
            rule: "r".into(),
            message: "é".repeat(2000),
            mode: Mode::Audit,
            errored: false,
        };
        let note = event_note(&[violation]);
        assert!(note.len() <= MAX_EVENT_NOTE);
        assert!(note.ends_with("..."));
    }

    #[test]
    fn one_note_names_every_audited_rule() {
        let violation = |rule: &str| Violation {
            policy: "baseline".into(),
            rule: rule.into(),
            message: format!("{rule} is not allowed"),
            mode: Mode::Audit,
            errored: false,
        };
        let note = event_note(&[violation("privileged"), violation("latest-tag")]);
        assert_eq!(
            note,
            "[Audit] baseline/privileged: privileged is not allowed; \
             [Audit] baseline/latest-tag: latest-tag is not allowed"
        );
    }
}
