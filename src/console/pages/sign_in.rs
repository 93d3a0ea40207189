//! The sign-in page: one textarea for a bearer token (from `kubectl create
//! token`, or an OIDC id token the API server accepts). The token is posted
//! once and never rendered back.
use maud::{Markup, html};

use super::{error_line, page};

/// The sign-in form, with `error` above it after a refused token.
pub fn sign_in_page(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            (error_line(error))
            p {
                "Paste a bearer token the Kubernetes API server accepts, for example "
                code { "kubectl create token NAME -n NAMESPACE" }
                " or your OIDC id token. Every request the console makes for you uses this "
                "token, so you see and may do exactly what RBAC grants it."
            }
            form id="sign-in" method="post" action="/session" {
                label for="token" { "Token" }
                textarea id="token" name="token" rows="6" autocomplete="off" spellcheck="false" required {}
                button id="sign-in-submit" type="submit" { "Sign in" }
            }
        },
    )
}
