//! The console's request handling without a cluster: the gates every POST
//! passes, the headers, the embedded assets, escaping, and which buttons
//! a page offers.
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use super::actions::{Decision, check};
use super::pages::Viewer;
use super::pages::detail::{Buttons, DetailView, buttons, detail_page};
use super::pages::list::{list_page, proposal_hash};
use super::*;
use crate::remediation::crd::{
    Action, DryRun, FieldChange, Finding, GuardrailVerdict, Phase, Proposal, Remediation,
    RemediationStatus,
};

/// A console whose API server does not exist: a request that got past the
/// console's own checks fails with 502, one stopped by them is 403.
fn console() -> Arc<Console> {
    let cluster = kube::Config::new(
        "https://127.0.0.1:1"
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    Arc::new(Console::new(cluster, stopped, Default::default()))
}

fn signed_in(console: &Console) -> (String, String) {
    let client =
        user_client::user_client(&console.cluster, "test-token").unwrap_or_else(|e| panic!("{e}"));
    let (id, session) = console
        .sessions
        .open("alice".into(), client, SESSION_LIFETIME)
        .unwrap_or_else(|e| panic!("{e}"));
    (id, session.csrf.clone())
}

async fn send(
    console: &Arc<Console>,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router(Arc::clone(console))
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn post(path: &str, cookie: Option<&str>, origin: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::post(path)
        .header(header::HOST, "127.0.0.1:9445")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(id) = cookie {
        request = request.header(header::COOKIE, format!("aiops_console={id}"));
    }
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    request
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|e| panic!("{e}"))
}

const OWN: &str = "https://127.0.0.1:9445";

#[tokio::test]
async fn a_visitor_without_a_session_gets_the_sign_in_form_with_the_security_headers() {
    let console = console();
    let request = Request::get("/")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, headers, body) = send(&console, request).await;
    assert_eq!(status, StatusCode::OK);
    for needle in [
        r#"<form id="sign-in" method="post" action="/session">"#,
        r#"<textarea id="token" name="token""#,
        r#"<button id="sign-in-submit" type="submit">"#,
        r#"<script src="/static/console.js" defer></script>"#,
    ] {
        assert!(body.contains(needle), "{needle} missing from {body}");
    }
    assert_eq!(
        headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok()),
        Some(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    );
    assert_eq!(
        headers
            .get(header::X_CONTENT_TYPE_OPTIONS)
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    assert_eq!(
        headers
            .get(header::REFERRER_POLICY)
            .and_then(|v| v.to_str().ok()),
        Some("no-referrer")
    );
    assert_eq!(
        headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let request = Request::get("/remediations")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, headers, _) = send(&console, request).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the list needs a session");
    assert_eq!(
        headers.get(header::LOCATION).and_then(|v| v.to_str().ok()),
        Some("/")
    );
}

#[tokio::test]
async fn a_decision_needs_a_session_its_csrf_token_and_the_consoles_origin() {
    let console = console();
    let (id, csrf) = signed_in(&console);
    let path = "/remediations/shop/web/approve";
    let good_body = format!("csrf={csrf}&hash=sha256%3Aabc");
    let refused = [
        ("no session", post(path, None, Some(OWN), &good_body)),
        (
            "unknown session",
            post(path, Some("f00d"), Some(OWN), &good_body),
        ),
        ("no CSRF token", post(path, Some(&id), Some(OWN), "hash=x")),
        (
            "another CSRF token",
            post(
                path,
                Some(&id),
                Some(OWN),
                &format!("csrf={}&hash=x", "0".repeat(64)),
            ),
        ),
        (
            "a foreign origin",
            post(path, Some(&id), Some("https://evil.example"), &good_body),
        ),
        ("no origin", post(path, Some(&id), None, &good_body)),
    ];
    for (what, request) in refused {
        let (status, _, body) = send(&console, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        assert!(body.contains(r#"<p id="error""#), "{what}: {body}");
    }
    // With all three the console goes on to the API server (absent here: 502).
    let (status, _, body) = send(&console, post(path, Some(&id), Some(OWN), &good_body)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        !body.contains("test-token"),
        "the token is never rendered: {body}"
    );
}

#[tokio::test]
async fn a_path_that_cannot_name_a_remediation_is_not_found_before_anything_else() {
    let console = console();
    let (id, csrf) = signed_in(&console);
    let body = format!("csrf={csrf}&hash=x");
    for path in [
        "/remediations/shop/%0d%0aSet-Cookie:x/approve",
        "/remediations/%2F%2Fevil.example/web/approve",
        "/remediations/Shop/web/reject",
    ] {
        let (status, headers, _) = send(&console, post(path, Some(&id), Some(OWN), &body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(headers.get(header::LOCATION).is_none(), "{path}");
    }
    let request = Request::get("/remediations/shop/%3Cscript%3E")
        .header(header::COOKIE, format!("aiops_console={id}"))
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(send(&console, request).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sign_in_from_another_origin_or_without_a_token_opens_no_session() {
    let console = console();
    let (status, headers, _) = send(
        &console,
        post("/session", None, Some("https://evil.example"), "token=abc"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(header::SET_COOKIE).is_none());
    let (status, headers, body) =
        send(&console, post("/session", None, Some(OWN), "token=++")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(headers.get(header::SET_COOKIE).is_none());
    assert!(body.contains(r#"<p id="error""#), "{body}");
    assert!(console.sessions.is_empty());
}

#[tokio::test]
async fn requests_are_counted_by_route_pattern_and_status() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::ConsoleMetrics::register(&mut registry);
    let cluster = kube::Config::new(
        "https://127.0.0.1:1"
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let console = Arc::new(Console::new(cluster, stopped, metrics));
    let _ = send(
        &console,
        post("/remediations/shop/web/approve", None, Some(OWN), ""),
    )
    .await;
    let request = Request::get("/")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = send(&console, request).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .unwrap_or_else(|e| panic!("{e}"));
    for line in [
        r#"console_requests_total{route="/remediations/{namespace}/{name}/approve",code="403"} 1"#,
        r#"console_requests_total{route="/",code="200"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(
        !text.contains("shop"),
        "an object's name became a label: {text}"
    );
}

#[tokio::test]
async fn the_embedded_assets_are_served_with_their_content_types() {
    let console = console();
    for (path, kind, needle) in [
        ("/static/console.css", "text/css", "pre#diff"),
        ("/static/console.js", "text/javascript", "EventSource"),
    ] {
        let request = Request::get(path)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, headers, body) = send(&console, request).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(body.contains(needle), "{path}");
    }
}

const HOSTILE: &str = r#"<script>alert("x")</script><img src=x onerror=alert(1)>"#;

fn case(phase: Phase) -> Remediation {
    let mut r = crate::remediation::fixtures::remediation("deployment-web");
    let proposal = Proposal {
        summary: format!("restore the image {HOSTILE}"),
        root_cause: HOSTILE.into(),
        actions: vec![Action::default()],
        risks: vec![HOSTILE.into()],
        rollback_plan: vec!["re-apply the old image".into()],
        confidence: 0.9,
        source: "rules".into(),
        class: "ImageRestore".into(),
        hash: String::new(),
    }
    .seal();
    r.status = Some(RemediationStatus {
        phase,
        reason: HOSTILE.into(),
        message: HOSTILE.into(),
        findings: vec![Finding {
            container: "web".into(),
            reason: "ImagePullBackOff".into(),
            message: HOSTILE.into(),
            pods: 2,
            ..Finding::default()
        }],
        guardrail: Some(GuardrailVerdict {
            allowed: true,
            violations: vec![],
        }),
        dry_run: Some(DryRun {
            result: "Succeeded".into(),
            diff: vec![FieldChange {
                path: "spec.template.spec.containers[web].image".into(),
                from: Some(HOSTILE.into()),
                to: Some("nginx:1.25.5".into()),
            }],
            proposal_hash: proposal.hash.clone(),
            message: String::new(),
        }),
        proposal: Some(proposal),
        ..RemediationStatus::default()
    });
    r
}

fn render(r: &Remediation, may_patch: bool) -> String {
    let viewer = Viewer {
        user: "system:serviceaccount:ops:alice",
        csrf: "c5rf",
    };
    let view = DetailView {
        remediation: r,
        events: Ok(&[]),
        buttons: buttons(r, may_patch),
        error: Some(HOSTILE),
    };
    detail_page(&viewer, &view).into_string()
}

#[test]
fn hostile_text_from_the_cluster_renders_as_inert_text() {
    let r = case(Phase::Proposed);
    let viewer = Viewer {
        user: HOSTILE,
        csrf: "c5rf",
    };
    for html in [
        render(&r, true),
        list_page(&viewer, std::slice::from_ref(&r), Some(HOSTILE)).into_string(),
    ] {
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"),
            "{html}"
        );
        // The only script element is the embedded one.
        assert_eq!(html.matches("<script").count(), 1, "{html}");
    }
}

#[test]
fn buttons_show_only_while_proposed_and_only_to_users_who_may_patch() {
    let proposed = case(Phase::Proposed);
    let all = Buttons {
        approve: true,
        reject: true,
        regenerate: true,
    };
    assert_eq!(buttons(&proposed, true), all);
    assert_eq!(buttons(&proposed, false), Buttons::default());
    for phase in [
        Phase::Diagnosing,
        Phase::Applying,
        Phase::Verified,
        Phase::Rejected,
    ] {
        assert_eq!(buttons(&case(phase), true), Buttons::default(), "{phase:?}");
    }
    let mut approved = case(Phase::Proposed);
    approved.spec.approved = true;
    assert!(!buttons(&approved, true).approve && buttons(&approved, true).reject);
    let mut diagnosis = case(Phase::Proposed);
    if let Some(p) = diagnosis.status.as_mut().and_then(|s| s.proposal.as_mut()) {
        p.actions.clear();
    }
    assert!(!buttons(&diagnosis, true).approve, "nothing to apply");
    let mut refused = case(Phase::Proposed);
    if let Some(s) = refused.status.as_mut() {
        s.guardrail = Some(GuardrailVerdict {
            allowed: false,
            violations: vec!["no".into()],
        });
    }
    assert!(!buttons(&refused, true).approve, "guardrails refused it");

    let html = render(&proposed, true);
    let hash = proposal_hash(&proposed).to_string();
    assert!(html.contains(r#"<form class="decision" method="post" action="/remediations/shop/deployment-web/approve"><input type="hidden" name="csrf" value="c5rf"><input type="hidden" name="hash" value=""#), "{html}");
    assert!(
        html.contains(&format!(r#"name="hash" value="{hash}""#)),
        "{html}"
    );
    for id in [r#"id="approve""#, r#"id="reject""#, r#"id="regenerate""#] {
        assert!(html.contains(id), "{id} missing");
        assert!(
            !render(&proposed, false).contains(id),
            "{id} shown to a reader"
        );
    }
    for id in [
        r#"<span id="phase""#,
        r#"<section id="findings""#,
        r#"<section id="evidence""#,
        r#"<section id="proposal""#,
        r#"<ul id="risks""#,
        r#"<div id="guardrails""#,
        r#"<pre id="diff""#,
        r#"<section id="events""#,
        r#"<ol id="timeline""#,
        r#"<p id="error""#,
    ] {
        assert!(html.contains(id), "{id} missing from the detail page");
    }
}

#[test]
fn an_approval_must_name_the_current_proposal_and_the_case_must_wait_for_review() {
    let r = case(Phase::Proposed);
    let hash = proposal_hash(&r).to_string();
    assert!(check(Decision::Approve, &r, &hash).is_ok());
    let stale = check(Decision::Approve, &r, "sha256:old")
        .err()
        .map(|e| e.status());
    assert_eq!(stale, Some(409));
    assert!(
        check(Decision::Reject, &r, "").is_ok(),
        "a rejection names no proposal"
    );
    let done = check(Decision::Reject, &case(Phase::Verified), "")
        .err()
        .map(|e| e.status());
    assert_eq!(done, Some(409));
}
