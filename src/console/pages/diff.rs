//! The dry-run diff as a diff (one `ctx` line naming each changed field,
//! then its `del` and `add` lines) and the timeline of a Remediation's
//! phases from its conditions and timestamps.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use maud::{Markup, html};

use crate::remediation::crd::{DryRun, Remediation};

/// One line of the rendered diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffLine {
    /// The field the next lines change.
    Context(String),
    /// The value before the fix.
    Removed(String),
    /// The value after the fix.
    Added(String),
}

/// The diff lines of a dry run: a field that was unset has no `del` line,
/// one the fix removes has no `add` line.
pub fn diff_lines(dry_run: &DryRun) -> Vec<DiffLine> {
    let mut lines = Vec::new();
    for change in &dry_run.diff {
        lines.push(DiffLine::Context(format!("@@ {}", change.path)));
        if let Some(from) = &change.from {
            lines.push(DiffLine::Removed(format!("- {from}")));
        }
        if let Some(to) = &change.to {
            lines.push(DiffLine::Added(format!("+ {to}")));
        }
    }
    lines
}

/// `<pre id="diff">`, each line in a span classed `ctx`, `del` or `add`.
pub fn diff_block(dry_run: Option<&DryRun>) -> Markup {
    let lines = dry_run.map(diff_lines).unwrap_or_default();
    html! {
        @if lines.is_empty() {
            p class="empty" { "No dry-run diff yet." }
        }
        pre id="diff" {
            @for line in &lines {
                @match line {
                    DiffLine::Context(text) => span class="ctx" { (text) },
                    DiffLine::Removed(text) => span class="del" { (text) },
                    DiffLine::Added(text) => span class="add" { (text) },
                }
                "\n"
            }
        }
    }
}

/// One moment of the timeline.
struct Moment<'a> {
    at: &'a Time,
    what: String,
    detail: &'a str,
}

/// `<ol id="timeline">`: creation, each condition that is true with the
/// time it became so and why, and the apply and verify times, oldest first.
pub fn timeline(r: &Remediation) -> Markup {
    let mut moments = Vec::new();
    if let Some(created) = r.metadata.creation_timestamp.as_ref() {
        moments.push(Moment {
            at: created,
            what: "Opened".into(),
            detail: "",
        });
    }
    if let Some(status) = &r.status {
        for c in status.conditions.iter().filter(|c| c.status == "True") {
            moments.push(Moment {
                at: &c.last_transition_time,
                what: format!("{} ({})", c.type_, c.reason),
                detail: &c.message,
            });
        }
        if let Some(at) = &status.applied_at {
            moments.push(Moment {
                at,
                what: "Fix applied".into(),
                detail: "",
            });
        }
        if let Some(at) = &status.verified_at {
            moments.push(Moment {
                at,
                what: "Fix verified".into(),
                detail: "",
            });
        }
    }
    moments.sort_by_key(|m| m.at.0);
    html! {
        ol id="timeline" data-name=(r.name_any()) {
            @for m in &moments {
                li {
                    time datetime=(m.at.0.to_string()) { (super::detail::short_time(&m.at.0)) }
                    " " strong { (m.what) }
                    @if !m.detail.is_empty() { " — " (m.detail) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::crd::FieldChange;

    #[test]
    fn a_changed_field_renders_as_context_removed_and_added_lines() {
        let dry = DryRun {
            result: "Succeeded".into(),
            diff: vec![
                FieldChange {
                    path: "spec.template.spec.containers[web].image".into(),
                    from: Some("nginx:typo".into()),
                    to: Some("nginx:1.25.5".into()),
                },
                FieldChange {
                    path: "spec.template.spec.containers[web].resources.limits.memory".into(),
                    from: None,
                    to: Some("256Mi".into()),
                },
            ],
            ..DryRun::default()
        };
        assert_eq!(
            diff_lines(&dry),
            vec![
                DiffLine::Context("@@ spec.template.spec.containers[web].image".into()),
                DiffLine::Removed("- nginx:typo".into()),
                DiffLine::Added("+ nginx:1.25.5".into()),
                DiffLine::Context(
                    "@@ spec.template.spec.containers[web].resources.limits.memory".into()
                ),
                DiffLine::Added("+ 256Mi".into()),
            ]
        );
        let html = diff_block(Some(&dry)).into_string();
        assert!(
            html.contains(r#"<span class="del">- nginx:typo</span>"#)
                && html.contains(r#"<span class="add">+ nginx:1.25.5</span>"#)
                && html.contains(r#"<pre id="diff"><span class="ctx">@@ spec"#),
            "{html}"
        );
    }

    #[test]
    fn a_hostile_value_in_the_diff_is_text() {
        let dry = DryRun {
            diff: vec![FieldChange {
                path: "x".into(),
                from: Some("</pre><script>alert(1)</script>".into()),
                to: None,
            }],
            ..DryRun::default()
        };
        let html = diff_block(Some(&dry)).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;/pre&gt;&lt;script&gt;"), "{html}");
    }
}
