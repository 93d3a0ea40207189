//! The detail page of one Remediation: what was found, the evidence in
//! brief, the proposal with its risks, rollback plan and guardrail verdict,
//! the dry-run diff, the Events, the timeline, and the buttons the user may
//! press.
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use maud::{Markup, html};

use super::diff::{diff_block, timeline};
use super::list::{detail_href, phase_name, proposal_hash};
use super::{Viewer, error_line, page};
use crate::remediation::crd::{Phase, Proposal, Remediation, RemediationStatus};

/// Which decision buttons the page offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Buttons {
    pub approve: bool,
    pub reject: bool,
    pub regenerate: bool,
}

/// The buttons for `r`: only while it waits for review (`Proposed`) and only
/// when the user may patch Remediations there. Approve also needs a fix to
/// apply and no decision yet. The API server still judges every press.
pub fn buttons(r: &Remediation, may_patch: bool) -> Buttons {
    let status = r.status.as_ref();
    let reviewing =
        may_patch && status.is_some_and(|s| s.phase == Phase::Proposed) && !r.spec.rejected;
    let has_fix = status
        .and_then(|s| s.proposal.as_ref())
        .is_some_and(|p| !p.actions.is_empty());
    let guardrails_pass = status
        .and_then(|s| s.guardrail.as_ref())
        .is_none_or(|g| g.allowed);
    Buttons {
        approve: reviewing && has_fix && guardrails_pass && !r.spec.approved,
        reject: reviewing,
        regenerate: reviewing,
    }
}

/// What the detail page shows.
pub struct DetailView<'a> {
    pub remediation: &'a Remediation,
    /// The Remediation's Events, or why they could not be read.
    pub events: Result<&'a [Event], String>,
    pub buttons: Buttons,
    pub error: Option<&'a str>,
}

/// The whole detail page.
pub fn detail_page(viewer: &Viewer<'_>, view: &DetailView<'_>) -> Markup {
    let r = view.remediation;
    let namespace = r.namespace().unwrap_or_default();
    let name = r.name_any();
    let empty = RemediationStatus::default();
    let status = r.status.as_ref().unwrap_or(&empty);
    let hash = proposal_hash(r);
    let phase = phase_name(r);
    page(
        &name,
        Some(viewer),
        html! {
            div id="detail" data-namespace=(namespace) data-name=(name) data-phase=(phase) data-hash=(hash) {
                p class="crumbs" { a href="/remediations" { "Remediations" } " / " (namespace) }
                h1 { (name) }
                (error_line(view.error))
                dl class="summary" {
                    dt { "Target" } dd { (r.spec.target.kind) "/" (r.spec.target.name) }
                    dt { "Reason" } dd { (status.reason) }
                    dt { "Phase" } dd { span id="phase" class="phase" { (phase) } }
                    @if !status.message.is_empty() { dt { "Message" } dd { (status.message) } }
                    dt { "Approved" } dd {
                        @if let Some(by) = approved_by(r) {
                            "by " span id="approved-by" { (by) }
                        } @else { "no" }
                    }
                }
                (decision_forms(&namespace, &name, hash, viewer.csrf, view.buttons))
                section id="findings" {
                    h2 { "Findings" }
                    @if status.findings.is_empty() { p { "None yet." } }
                    ul {
                        @for f in &status.findings {
                            li {
                                @if !f.container.is_empty() {
                                    @if f.init { "init container " } @else { "container " }
                                    code { (f.container) } ": "
                                }
                                strong { (f.reason) }
                                @if f.pods > 0 { " on " (f.pods) " pod(s)" }
                                @if let Some(code) = f.exit_code { ", exit " (code) }
                                @if let Some(image) = &f.image { ", image " code { (image) } }
                                @if !f.message.is_empty() { " — " (f.message) }
                            }
                        }
                    }
                }
                (evidence(status))
                (proposal(status))
                section id="dry-run" {
                    h2 { "Dry-run diff" }
                    @if let Some(dry) = &status.dry_run {
                        p { "Server-side dry run: " strong { (dry.result) } " " (dry.message) }
                    }
                    (diff_block(status.dry_run.as_ref()))
                }
                (events(&view.events))
                section id="history" {
                    h2 { "Timeline" }
                    (timeline(r))
                }
            }
        },
    )
}

/// Who approved: the webhook's record on the spec, else the controller's note.
fn approved_by(r: &Remediation) -> Option<&str> {
    r.spec
        .approval
        .as_ref()
        .map(|a| a.approved_by.as_str())
        .or_else(|| r.status.as_ref().and_then(|s| s.approved_by.as_deref()))
        .filter(|by| !by.is_empty())
}

fn decision_forms(namespace: &str, name: &str, hash: &str, csrf: &str, buttons: Buttons) -> Markup {
    let base = detail_href(namespace, name);
    let form = |action: &str, id: &str, label: &str| {
        html! {
            form class="decision" method="post" action={(base) "/" (action)} {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="hash" value=(hash);
                button id=(id) type="submit" { (label) }
            }
        }
    };
    html! {
        @if buttons.approve || buttons.reject || buttons.regenerate {
            div class="decisions" {
                @if buttons.approve { (form("approve", "approve", "Approve this fix")) }
                @if buttons.reject { (form("reject", "reject", "Reject")) }
                @if buttons.regenerate { (form("regenerate", "regenerate", "Ask for a new proposal")) }
            }
        }
    }
}

fn evidence(status: &RemediationStatus) -> Markup {
    html! {
        section id="evidence" {
            h2 { "Evidence" }
            @if let Some(e) = &status.evidence {
                p {
                    (e.workload.kind) " " (e.namespace) "/" (e.workload.name) ": "
                    (e.containers.len()) " container(s), "
                    (e.statuses.len()) " observed container status(es), "
                    (e.events.len()) " event(s), " (e.logs.len()) " log tail(s), "
                    (e.history.len()) " revision(s)"
                    @if e.truncated { " (truncated to fit)" }
                }
                ul {
                    @for c in &e.containers {
                        li { "container " code { (c.name) } " image " code { (c.image) } }
                    }
                    @for s in e.statuses.iter().take(10) {
                        li {
                            "pod " code { (s.pod) } " " code { (s.container) } ": " (s.state)
                            @if !s.last_state.is_empty() { " (last: " (s.last_state) ")" }
                            ", " (s.restart_count) " restart(s)"
                        }
                    }
                    @for ev in e.events.iter().take(10) {
                        li { (ev.type_) " " strong { (ev.reason) } " ×" (ev.count) ": " (ev.message) }
                    }
                }
            } @else {
                p { "Not gathered yet." }
            }
        }
    }
}

fn proposal(status: &RemediationStatus) -> Markup {
    html! {
        section id="proposal" {
            h2 { "Proposal" }
            @if let Some(p) = &status.proposal {
                (proposal_body(p))
            } @else {
                p { "No proposal yet." }
            }
            div id="guardrails" {
                @match &status.guardrail {
                    Some(g) if g.allowed => { p class="pass" { "Guardrails: passed" } }
                    Some(g) => {
                        p class="fail" { "Guardrails: refused" }
                        ul { @for v in &g.violations { li { (v) } } }
                    }
                    None => { p { "Guardrails: not checked yet" } }
                }
            }
        }
    }
}

fn proposal_body(p: &Proposal) -> Markup {
    html! {
        p class="proposal-summary" { strong { (p.summary) } }
        dl {
            dt { "Rationale" } dd { (p.root_cause) }
            dt { "Source" } dd { (p.source) }
            @if !p.class.is_empty() { dt { "Class" } dd { (p.class) } }
            dt { "Confidence" } dd { (format!("{:.2}", p.confidence)) }
            dt { "Hash" } dd { code { (p.hash) } }
        }
        h3 { "Risks" }
        ul id="risks" { @for risk in &p.risks { li { (risk) } } }
        h3 { "Rollback plan" }
        ol id="rollback" { @for step in &p.rollback_plan { li { (step) } } }
        @if p.actions.is_empty() {
            p { "No automatic fix: this needs a human." }
        }
        @for a in &p.actions {
            details class="action" {
                summary { "Server-side apply to " (a.target.kind) " " (a.namespace) "/" (a.target.name) }
                pre { (serde_yaml::to_string(&a.patch).unwrap_or_default()) }
            }
        }
    }
}

fn events(events: &Result<&[Event], String>) -> Markup {
    html! {
        section id="events" {
            h2 { "Events" }
            @match events {
                Err(why) => p class="unavailable" { "Events cannot be shown: " (why) },
                Ok(list) if list.is_empty() => p { "No Events." },
                Ok(list) => table {
                    thead { tr { th { "Type" } th { "Reason" } th { "Message" } th { "Count" } th { "Last seen" } } }
                    tbody {
                        @for e in *list {
                            tr class="event" {
                                td { (e.type_.as_deref().unwrap_or("")) }
                                td { (e.reason.as_deref().unwrap_or("")) }
                                td { (e.message.as_deref().unwrap_or("")) }
                                td { (e.count.unwrap_or(1)) }
                                td { (event_time(e)) }
                            }
                        }
                    }
                },
            }
        }
    }
}

/// When an Event last happened, whichever of its time fields is set.
pub fn event_time(e: &Event) -> String {
    e.last_timestamp
        .as_ref()
        .map(|t| short_time(&t.0))
        .or_else(|| e.event_time.as_ref().map(|t| short_time(&t.0)))
        .or_else(|| e.first_timestamp.as_ref().map(|t| short_time(&t.0)))
        .unwrap_or_default()
}

/// A time to the second, in UTC (`2026-12-03 20:09:24 UTC`); sorts as text.
pub fn short_time(at: &k8s_openapi::jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}
