//! What a notification says: the target, the reason, a one-line summary of
//! the proposal, the command that approves it and a console link, shaped
//! for Slack-compatible chat or as the operator's own JSON.
//!
//! Only what `kubectl get rem` and `kubectl aiops show` already show goes
//! out: summaries name fields, never env values (the rules keep values out
//! of summaries), and no evidence or logs are sent.
use kube::ResourceExt;
use serde_json::{Value, json};

use super::settings::{Format, NotifyEvent};
use crate::remediation::crd::{Remediation, RemediationStatus};

/// Longest summary sent; chat tools truncate anyway, and a message is a pointer.
const SUMMARY_CHARS: usize = 300;

/// One notice, ready to be shaped per receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub event: NotifyEvent,
    pub namespace: String,
    pub name: String,
    pub target: String,
    pub reason: String,
    pub summary: String,
    pub class: String,
    pub approved_by: Option<String>,
    /// Set only for ReadyForReview.
    pub approve_command: Option<String>,
    pub console_link: Option<String>,
    pub message: String,
}

impl Notice {
    pub fn new(
        event: NotifyEvent,
        remediation: &Remediation,
        status: &RemediationStatus,
        console_url: Option<&str>,
    ) -> Self {
        let namespace = remediation.namespace().unwrap_or_default();
        let name = remediation.name_any();
        let proposal = status.proposal.as_ref();
        let summary: String = proposal
            .map(|p| p.summary.chars().take(SUMMARY_CHARS).collect())
            .unwrap_or_default();
        let target = if status.target_display.is_empty() {
            format!(
                "{}/{}",
                remediation.spec.target.kind, remediation.spec.target.name
            )
        } else {
            status.target_display.clone()
        };
        Notice {
            event,
            approve_command: (event == NotifyEvent::ReadyForReview)
                .then(|| format!("kubectl aiops approve {name} -n {namespace}")),
            console_link: console_url.map(|base| format!("{base}/remediations/{namespace}/{name}")),
            namespace,
            name,
            target,
            reason: status.reason.clone(),
            summary,
            class: proposal.map(|p| p.class.clone()).unwrap_or_default(),
            approved_by: status.approved_by.clone(),
            message: status.message.chars().take(SUMMARY_CHARS).collect(),
        }
    }

    /// The request body for a receiver of `format`.
    pub fn body(&self, format: Format) -> Value {
        match format {
            Format::Webhook => self.webhook_body(),
            Format::Slack => self.slack_body(),
        }
    }

    fn headline(&self) -> String {
        let what = match self.event {
            NotifyEvent::ReadyForReview => "ready for review",
            NotifyEvent::Verified => "fix verified",
            NotifyEvent::RolledBack => "fix rolled back",
            NotifyEvent::Failed => "failed",
        };
        format!(
            "{} in {} ({}): {what}",
            self.target, self.namespace, self.reason
        )
    }

    fn webhook_body(&self) -> Value {
        json!({
            "event": self.event.as_str(),
            "remediation": {"namespace": self.namespace, "name": self.name},
            "target": self.target,
            "reason": self.reason,
            "class": self.class,
            "summary": self.summary,
            "message": self.message,
            "approvedBy": self.approved_by,
            "approveCommand": self.approve_command,
            "consoleLink": self.console_link,
        })
    }

    fn slack_body(&self) -> Value {
        let mut lines = vec![format!("*{}*", self.headline())];
        if !self.summary.is_empty() {
            lines.push(self.summary.clone());
        }
        if let Some(by) = &self.approved_by {
            lines.push(format!("approved by {by}"));
        }
        if self.event != NotifyEvent::ReadyForReview && !self.message.is_empty() {
            lines.push(self.message.clone());
        }
        if let Some(command) = &self.approve_command {
            lines.push(format!("approve: `{command}`"));
        }
        if let Some(link) = &self.console_link {
            lines.push(format!("<{link}|open in the console>"));
        }
        let text = lines.join("\n");
        json!({
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::crd::{Phase, Proposal, RemediationSpec, WorkloadRef};

    fn ready() -> (Remediation, RemediationStatus) {
        let mut r = Remediation::new(
            "deployment-web-1",
            RemediationSpec {
                target: WorkloadRef {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    uid: "u".into(),
                },
                approved: false,
                rejected: false,
                approval: None,
            },
        );
        r.metadata.namespace = Some("shop".into());
        let status = RemediationStatus {
            phase: Phase::Proposed,
            reason: "ImagePullBackOff".into(),
            target_display: "Deployment/web".into(),
            proposal: Some(Proposal {
                summary: "Deployment/web: restore image nginx:1.25.5".into(),
                class: "ImageRestore".into(),
                ..Proposal::default()
            }),
            ..RemediationStatus::default()
        };
        (r, status)
    }

    #[test]
    fn a_review_notice_carries_the_summary_the_approve_command_and_the_link() {
        let (r, status) = ready();
        let notice = Notice::new(
            NotifyEvent::ReadyForReview,
            &r,
            &status,
            Some("https://aiops.example.com"),
        );
        let body = notice.body(Format::Webhook);
        assert_eq!(body["event"], "ReadyForReview");
        assert_eq!(body["target"], "Deployment/web");
        assert_eq!(body["class"], "ImageRestore");
        assert_eq!(
            body["approveCommand"],
            "kubectl aiops approve deployment-web-1 -n shop"
        );
        assert_eq!(
            body["consoleLink"],
            "https://aiops.example.com/remediations/shop/deployment-web-1"
        );
        let slack = notice.body(Format::Slack);
        let text = slack["text"].as_str().unwrap();
        assert!(text.starts_with("*Deployment/web in shop (ImagePullBackOff): ready for review*"));
        assert!(text.contains("restore image nginx:1.25.5"), "{text}");
        assert!(
            text.contains("`kubectl aiops approve deployment-web-1 -n shop`"),
            "{text}"
        );
        assert_eq!(slack["blocks"][0]["text"]["text"], text);
    }

    #[test]
    fn an_outcome_notice_has_no_approve_command_and_says_who_approved() {
        let (r, mut status) = ready();
        status.phase = Phase::Verified;
        status.approved_by = Some("alice".into());
        let notice = Notice::new(NotifyEvent::Verified, &r, &status, None);
        let body = notice.body(Format::Webhook);
        assert!(body["approveCommand"].is_null());
        assert!(body["consoleLink"].is_null());
        assert_eq!(body["approvedBy"], "alice");
        let text = notice.body(Format::Slack)["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.contains("fix verified") && text.contains("approved by alice"),
            "{text}"
        );
    }
}
