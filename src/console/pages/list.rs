//! The list page: one row per Remediation the user may list, newest first,
//! each row carrying its namespace, name and phase as data attributes for
//! the live updates.
use kube::ResourceExt;
use maud::{Markup, html};

use super::{Viewer, error_line, page};
use crate::k8s::age::short_age;
use crate::remediation::crd::Remediation;

/// The phase as the CRD spells it (`Proposed`, `Verified`…).
pub fn phase_name(remediation: &Remediation) -> String {
    format!(
        "{:?}",
        remediation
            .status
            .as_ref()
            .map(|s| s.phase)
            .unwrap_or_default()
    )
}

/// The hash of the current proposal, empty when there is none yet.
pub fn proposal_hash(remediation: &Remediation) -> &str {
    remediation
        .status
        .as_ref()
        .and_then(|s| s.proposal.as_ref())
        .map(|p| p.hash.as_str())
        .unwrap_or("")
}

/// The table of `items`; `error` (e.g. listing was forbidden) above it.
pub fn list_page(viewer: &Viewer<'_>, items: &[Remediation], error: Option<&str>) -> Markup {
    let mut sorted: Vec<&Remediation> = items.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.creation_timestamp()));
    page(
        "Remediations",
        Some(viewer),
        html! {
            h1 { "Remediations" }
            (error_line(error))
            @if sorted.is_empty() && error.is_none() {
                p class="empty" { "No Remediations you may list." }
            }
            table id="remediations" {
                thead { tr {
                    th { "Namespace" } th { "Name" } th { "Target" } th { "Reason" }
                    th { "Phase" } th { "Age" } th { "Approved" }
                } }
                tbody {
                    @for r in sorted { (row(r)) }
                }
            }
        },
    )
}

fn row(r: &Remediation) -> Markup {
    let namespace = r.namespace().unwrap_or_default();
    let name = r.name_any();
    let phase = phase_name(r);
    let reason = r.status.as_ref().map(|s| s.reason.as_str()).unwrap_or("");
    html! {
        tr class="remediation" data-namespace=(namespace) data-name=(name) data-phase=(phase) {
            td class="namespace" { (namespace) }
            td class="name" {
                a class="open" href=(detail_href(&namespace, &name)) { (name) }
            }
            td class="target" { (r.spec.target.kind) "/" (r.spec.target.name) }
            td class="reason" { (reason) }
            td class="phase" { (phase) }
            td class="age" { (short_age(r.creation_timestamp().as_ref())) }
            td class="approved" { @if r.spec.approved { "yes" } @else { "no" } }
        }
    }
}

/// `/remediations/NS/NAME`. Kubernetes names are DNS labels or subdomains
/// (letters, digits, `-`, `.`), so they need no percent-encoding in a path.
pub fn detail_href(namespace: &str, name: &str) -> String {
    format!("/remediations/{namespace}/{name}")
}
