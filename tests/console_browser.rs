//! The console in a real browser: Debian's Chromium, headless, driven
//! through chromedriver against an operator serving the console in the
//! sandbox (`make test-browser`).
//!
//! One case, a Deployment broken with a typo'd image tag, seen by two
//! people with their own ServiceAccount tokens (TokenRequest API), bound to
//! the shipped console roles (`manifests/console-rbac.yaml`): a reader who
//! may only get/list/watch Remediations sees the detail page without an
//! Approve button, and an approval forged from that page with the reader's
//! session and CSRF value is refused (403) with nothing approved; an
//! approver who may also patch them signs in, finds the row, opens the
//! diff, approves, and the page follows the case to `Verified`, approved by
//! the approver's own name. A local receiver gets exactly one review and
//! one verified notice, each linking to the console's detail page, which
//! the browser opens. The approver's detail page before approval is saved
//! to `target/console-detail.png` (the README's `docs/console.png`).
mod support;

use std::time::Duration;

use aiops_operator::remediation::crd::{Phase, Remediation};
use fantoccini::{Client as Page, Locator};
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;
use support::{
    APPROVER, Chromedriver, ConsoleUsers, READER, ResetReceivers, Sandbox,
    broken_after_a_good_rollout, events_about, messages_about, patch_operator_config, receiver,
    try_wait_until, wait_remediation, wait_until,
};

const STEP: Duration = Duration::from_secs(150);
/// How long a page may take to show what the test looks for.
const PAGE: Duration = Duration::from_secs(30);
const BROKEN_IMAGE: &str = "nginx:1.25.5-typo";
const GOOD_IMAGE: &str = "nginx:1.25.5";

#[tokio::test]
async fn in_chromium_a_reader_sees_no_approve_button_and_cannot_forge_one_and_an_approver_approves_a_fix_that_ends_verified_in_their_name()
 {
    // First, so a machine without the browser fails before anything starts.
    let driver = Chromedriver::start().await;
    support::stop_all_operators();
    let console_port = support::free_port().expect("a port for the console");
    let console = format!("https://127.0.0.1:{console_port}");
    let op = support::start_operator(
        "op-console",
        &[(
            "AIOPS_OPERATOR_ARGS",
            &format!(
                "--verify-timeout-seconds 60 --resolve-after-seconds 15 \
                 --console-addr 127.0.0.1:{console_port}"
            ),
        )],
    );
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    let _reset = ResetReceivers(&sandbox);
    let (hook_url, inbox) = receiver(0).await;
    let receivers = format!(
        "- name: hook\n  format: webhook\n  url: {hook_url}\n  events: [ReadyForReview, Verified]\n"
    );
    patch_operator_config(
        client,
        json!({"notify.receivers": receivers, "notify.consoleURL": console}),
    )
    .await;

    let (ns, proposed) =
        broken_after_a_good_rollout(&sandbox, "console", 2, BROKEN_IMAGE, STEP).await;
    let name = proposed.name_any();
    let users = ConsoleUsers::grant(&sandbox, &ns.name).await;

    let case = Case {
        detail: format!("{console}/remediations/{}/{name}", ns.name),
        console,
        remediations: Api::namespaced(client.clone(), &ns.name),
        namespace: ns.name.clone(),
        name,
    };
    let review = wait_until(STEP, "the review notice", || async {
        messages_about(&inbox, &case.name).into_iter().next()
    })
    .await;
    assert_eq!(review["event"], "ReadyForReview");
    assert_eq!(review["consoleLink"], json!(case.detail), "{review:#}");

    a_reader_sees_no_button_and_cannot_forge_an_approval(&driver, &case, &users).await;

    let approver = driver.session().await;
    let page = &approver.client;
    let approver_name = users.user_name(APPROVER);
    the_approver_finds_the_case_and_its_diff(
        page,
        &case,
        &users.token(APPROVER).await,
        &approver_name,
    )
    .await;
    page.find(Locator::Css("#approve"))
        .await
        .expect("the approver's page has #approve")
        .click()
        .await
        .expect("click Approve");
    // The page follows the case by itself (live updates), or the wait fails.
    try_wait_for_text(page, "#phase", "Verified")
        .await
        .unwrap_or_else(|err| panic!("{err}\noperator log:\n{}", op.log_tail(40)));
    let verified = wait_remediation(client, &case.namespace, &[Phase::Verified], PAGE).await;
    let approval = verified
        .spec
        .approval
        .as_ref()
        .expect("a verified fix has an approval record");
    assert_eq!(approval.approved_by, approver_name);
    assert!(text_of(page, "#approved-by").await.contains(&approver_name));
    approver_opens_the_verified_notice(page, &inbox, &case.name, &case.detail, &approver_name)
        .await;
    assert_eq!(
        events_about(&inbox, &case.name),
        ["ReadyForReview", "Verified"],
        "exactly one notice of each"
    );
    // And the operator sent no more than those two (no retry delivered twice).
    let metrics = op.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"remediation_notifications_total{receiver="hook",result="sent"} 2"#),
        "{metrics}"
    );
    approver.close().await;
}

/// The case both users look at.
struct Case {
    console: String,
    /// The console's page of the case (what the notices link to).
    detail: String,
    remediations: Api<Remediation>,
    namespace: String,
    name: String,
}

/// The reader, in a browser of their own: the case's page has no decision
/// buttons, and an approval posted from it with the reader's session and
/// CSRF value is refused by the API server with nothing approved.
async fn a_reader_sees_no_button_and_cannot_forge_an_approval(
    driver: &Chromedriver,
    case: &Case,
    users: &ConsoleUsers<'_>,
) {
    let reader = driver.session().await;
    let page = &reader.client;
    sign_in(page, &case.console, &users.token(READER).await).await;
    assert_eq!(text_of(page, "#user").await, users.user_name(READER));
    page.goto(&case.detail).await.expect("open the detail page");
    wait_for_text(page, "#phase", "Proposed").await;
    for button in ["#approve", "#reject", "#regenerate"] {
        assert!(
            page.find_all(Locator::Css(button))
                .await
                .expect("find buttons")
                .is_empty(),
            "the reader's page shows {button}"
        );
    }
    // The proposal's current hash, so that only RBAC can refuse the forgery
    // (a stale hash would be refused with 409 before the API is asked).
    let hash = case
        .remediations
        .get(&case.name)
        .await
        .ok()
        .and_then(|r| r.status?.proposal.map(|p| p.hash))
        .expect("a Proposed remediation has a proposal");
    let (status, body) = forge_approval(page, &case.namespace, &case.name, &hash).await;
    assert_eq!(
        status, 403,
        "the reader's forged approval answered:\n{body}"
    );
    // Kubernetes' RBAC wording: the refusal is the API server's, so the
    // session, CSRF value and origin passed the console's own checks.
    assert!(
        body.contains("cannot patch"),
        "the refusal is not the API server's RBAC refusal:\n{body}"
    );
    let after = case
        .remediations
        .get(&case.name)
        .await
        .expect("read the remediation");
    assert!(
        !after.spec.approved && after.spec.approval.is_none(),
        "the forged approval changed the remediation: {:?}",
        after.spec
    );
    reader.close().await;
}

/// The approver signs in, finds the case's row in the list, opens it and
/// sees the dry-run diff; the page is saved as the README's screenshot.
async fn the_approver_finds_the_case_and_its_diff(
    page: &Page,
    case: &Case,
    token: &str,
    approver_name: &str,
) {
    sign_in(page, &case.console, token).await;
    assert_eq!(text_of(page, "#user").await, approver_name);
    let row = format!(
        r#"tr.remediation[data-namespace="{}"][data-name="{}"]"#,
        case.namespace, case.name
    );
    let found = wait_until(PAGE, "the remediation's row in the list", || async {
        page.find(Locator::Css(&row)).await.ok()
    })
    .await;
    assert_eq!(
        found.attr("data-phase").await.expect("data-phase"),
        Some("Proposed".to_string())
    );
    found
        .find(Locator::Css("a.open"))
        .await
        .expect("the row's link")
        .click()
        .await
        .expect("open the remediation");
    wait_for_text(page, "#phase", "Proposed").await;
    assert_eq!(
        page.current_url().await.expect("the page's URL").as_str(),
        case.detail
    );
    let removed = text_of(page, "#diff span.del").await;
    let added = text_of(page, "#diff span.add").await;
    assert!(removed.contains(BROKEN_IMAGE), "removed: {removed}");
    assert!(
        added.contains(GOOD_IMAGE) && !added.contains(BROKEN_IMAGE),
        "added: {added}"
    );
    // The screenshot shows the proposal from its top, and all of its diff.
    let diff_in_view = page
        .execute(
            r#"
            const diff = document.getElementById("diff");
            document.getElementById("proposal").scrollIntoView({block: "start"});
            if (diff.getBoundingClientRect().bottom > window.innerHeight) {
                diff.scrollIntoView({block: "end"});
            }
            const box = diff.getBoundingClientRect();
            return box.top >= 0 && box.bottom <= window.innerHeight;
            "#,
            vec![],
        )
        .await
        .expect("scroll to the proposal");
    assert_eq!(diff_in_view, json!(true), "the diff is in the screenshot");
    save_screenshot(page).await;
}

/// Waits for the Verified notice, checks its console link and opens it.
async fn approver_opens_the_verified_notice(
    page: &Page,
    inbox: &std::sync::Mutex<support::Inbox>,
    name: &str,
    detail: &str,
    approver_name: &str,
) {
    let notice = wait_until(STEP, "the verified notice", || async {
        messages_about(inbox, name)
            .into_iter()
            .find(|m| m["event"] == "Verified")
    })
    .await;
    assert_eq!(notice["consoleLink"], json!(detail), "{notice:#}");
    assert_eq!(notice["approvedBy"], json!(approver_name), "{notice:#}");
    page.goto(detail).await.expect("open the notice's link");
    wait_for_text(page, "#phase", "Verified").await;
}

/// Signs in on the console's sign-in page with `token`; returns when the
/// console has redirected to the list.
async fn sign_in(page: &Page, console: &str, token: &str) {
    page.goto(&format!("{console}/"))
        .await
        .expect("open the console");
    let field = page
        .find(Locator::Css("form#sign-in textarea#token"))
        .await
        .expect("the sign-in page's token field");
    field.send_keys(token).await.expect("type the token");
    page.find(Locator::Css("#sign-in-submit"))
        .await
        .expect("the sign-in button")
        .click()
        .await
        .expect("sign in");
    let list = format!("{console}/remediations");
    let signed_in = try_wait_until(PAGE, "the list after signing in", || async {
        let url = page.current_url().await.ok()?;
        (url.as_str() == list).then_some(())
    })
    .await;
    if let Err(err) = signed_in {
        panic!("{err:#}\n{}", what_the_page_shows(page).await);
    }
}

/// The page's URL and text, for a failure message.
async fn what_the_page_shows(page: &Page) -> String {
    let url = page
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    let text = match page.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(err) => format!("(no body: {err})"),
    };
    format!("the page at {url} shows:\n{text}")
}

/// Posts an approval from the page's own origin with its session cookie
/// and the page's CSRF value, as a script injected into the page would;
/// returns the status (0: a redirect, i.e. accepted) and the body.
async fn forge_approval(page: &Page, namespace: &str, name: &str, hash: &str) -> (u64, String) {
    let csrf = page
        .find(Locator::Css("input[name=csrf]"))
        .await
        .expect("the reader's page carries its session's CSRF value (the sign-out form's)")
        .prop("value")
        .await
        .expect("the CSRF value")
        .unwrap_or_default();
    let script = r#"
        const [url, csrf, hash] = arguments;
        return fetch(url, {
            method: "POST",
            body: new URLSearchParams({csrf, hash}),
            credentials: "same-origin",
            redirect: "manual",
        }).then(r => r.text().then(body => [r.status, body]));
    "#;
    let answer = page
        .execute(
            script,
            vec![
                json!(format!("/remediations/{namespace}/{name}/approve")),
                json!(csrf),
                json!(hash),
            ],
        )
        .await
        .expect("run the forged POST in the page");
    (
        answer[0].as_u64().unwrap_or_default(),
        answer[1].as_str().unwrap_or_default().to_string(),
    )
}

/// The text of the first element matching `css`, failing the test when
/// there is none.
async fn text_of(page: &Page, css: &str) -> String {
    let element = page.find(Locator::Css(css)).await.unwrap_or_else(|err| {
        panic!("the page has no {css}: {err}");
    });
    element.text().await.expect("an element's text")
}

/// Waits until `css` shows `expected`, failing the test after [`STEP`].
async fn wait_for_text(page: &Page, css: &str, expected: &str) {
    try_wait_for_text(page, css, expected)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
}

/// Waits until `css` shows `expected` (found anew each time: the page may
/// reload itself); the error names what it showed last.
async fn try_wait_for_text(page: &Page, css: &str, expected: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + STEP;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(element) = page.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if text.trim() == expected {
                return Ok(());
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "{css} did not show {expected} within {STEP:?}; last: {last:?}"
    ))
}

/// Saves the viewport to `target/console-detail.png` (the README's
/// screenshot, `docs/console.png`, is a copy of it).
async fn save_screenshot(page: &Page) {
    let png = page.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    // The IHDR chunk's width and height: the viewport was sized to WINDOW.
    let dimension =
        |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    assert_eq!(
        (dimension(16), dimension(20)),
        support::WINDOW,
        "the screenshot's size"
    );
    let path = support::repo_root().join("target/console-detail.png");
    std::fs::write(&path, png).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
}
