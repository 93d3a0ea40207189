//! The console's HTML, rendered on the server with maud, which escapes
//! every interpolated value: a hostile reason, message or log line is
//! text on the page, never markup. No inline script or style anywhere (the
//! Content-Security-Policy forbids them); the one script is
//! `/static/console.js`.
//!
//! - [`sign_in`]: the token form; [`list`]: the table of Remediations;
//!   [`detail`]: one Remediation with its buttons; [`diff`]: the dry-run
//!   diff and the timeline of phases.
pub mod detail;
pub mod diff;
pub mod list;
pub mod sign_in;

use maud::{DOCTYPE, Markup, html};

/// The signed-in user as the page header shows them.
pub struct Viewer<'a> {
    pub user: &'a str,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: &'a str,
}

/// A whole page: head with the embedded stylesheet and script, a header
/// with the user and sign-out when signed in, `body` in `<main>`.
pub fn page(title: &str, viewer: Option<&Viewer<'_>>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · aiops console" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    a class="brand" href="/remediations" { "aiops-operator" }
                    @if let Some(viewer) = viewer {
                        span class="who" { "signed in as " span id="user" { (viewer.user) } }
                        form id="sign-out" method="post" action="/session/end" {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button id="sign-out-submit" type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// `<p id="error">` when there is something to report.
pub fn error_line(error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error {
            p id="error" role="alert" { (error) }
        }
    }
}

/// A page that only reports an error (e.g. a Remediation that cannot be read).
pub fn error_page(viewer: Option<&Viewer<'_>>, error: &str) -> Markup {
    page(
        "Error",
        viewer,
        html! {
            (error_line(Some(error)))
            p { a href="/remediations" { "Back to the list" } }
        },
    )
}
