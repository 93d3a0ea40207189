//! The web console over HTTPS against the sandbox, with the operator run
//! with `--console-addr`: two ServiceAccounts signed in with their own
//! tokens (TokenRequest API), bound here to the roles of
//! manifests/console-rbac.yaml. A reader sees the case and no
//! Approve button, and their forged approval is refused by the API server
//! (403) with nothing changed; POSTs without the CSRF token or from another
//! origin are refused (403) with nothing changed; a wrong token does not
//! sign in; the approver approves in the console, the approval webhook
//! records *their* name and the case reaches Verified. No token ever
//! appears in a response or the operator's log.
mod support;

use std::time::Duration;

use aiops_operator::console::pages::list::proposal_hash;
use aiops_operator::remediation::crd::{Phase, Remediation};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use support::{OperatorProcess, Sandbox, TestNamespace, operators_dir, phase, wait_until};

const STEP: Duration = Duration::from_secs(120);

/// A free loopback port for the console.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("a free port: {e}"))
}

/// The operator of this test, with the console on `port`.
fn start_operator(port: u16) -> OperatorProcess {
    support::stop_all_operators();
    let args = format!("--console-addr 127.0.0.1:{port}");
    support::start_operator("op-console", &[("AIOPS_OPERATOR_ARGS", args.as_str())])
}

/// The ClusterRoleBinding made by the test, removed when it ends.
struct ClusterBinding {
    sandbox_kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    name: String,
}

impl Drop for ClusterBinding {
    fn drop(&mut self) {
        let _ = support::kubectl(
            &self.sandbox_kubectl,
            &self.kubeconfig,
            &[
                "delete",
                "clusterrolebinding",
                &self.name,
                "--ignore-not-found",
            ],
        );
    }
}

/// The shipped roles (manifests/console-rbac.yaml), bound: both users may
/// read Remediations and Events everywhere; only the approver may patch
/// Remediations, and only in `case_ns`.
fn grant(sandbox: &Sandbox, users: &str, case_ns: &str) -> ClusterBinding {
    let roles = support::repo_root().join("manifests/console-rbac.yaml");
    let (ok, out) = sandbox.kubectl(&["apply", "-f", &roles.display().to_string()]);
    assert!(ok, "applying manifests/console-rbac.yaml: {out}");
    let read = format!("{users}-console-read");
    let yaml = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {users}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: approver, namespace: {users}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {read}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: aiops-operator-console-reader}}
subjects:
- {{kind: ServiceAccount, name: reader, namespace: {users}}}
- {{kind: ServiceAccount, name: approver, namespace: {users}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: console-approver, namespace: {case_ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: aiops-operator-console-approver}}
subjects:
- {{kind: ServiceAccount, name: approver, namespace: {users}}}
"#
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("bindings.yaml");
    std::fs::write(&file, yaml).unwrap_or_else(|e| panic!("{e}"));
    let binding = ClusterBinding {
        sandbox_kubectl: sandbox.kubectl_path(),
        kubeconfig: sandbox.kubeconfig.clone(),
        name: read,
    };
    let (ok, out) = sandbox.kubectl(&["apply", "-f", &file.display().to_string()]);
    assert!(ok, "applying the users and their bindings: {out}");
    binding
}

/// A token for the ServiceAccount `name` from the TokenRequest API.
async fn token(sandbox: &Sandbox, namespace: &str, name: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let api = Api::<ServiceAccount>::namespaced(sandbox.client.clone(), namespace);
    wait_until(
        Duration::from_secs(30),
        &format!("a token for {namespace}/{name}"),
        || async {
            api.create_token_request(name, &PostParams::default(), &request)
                .await
                .ok()
                .and_then(|t| t.status)
                .map(|s| s.token)
        },
    )
    .await
}

/// A browser-like HTTPS client of the console: trusts the operator's test
/// CA, follows no redirect (the test reads each 303), keeps its cookie and
/// every body it was sent.
struct User {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    bodies: Vec<String>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl User {
    fn new(port: u16) -> User {
        let ca_file = operators_dir().join("certs/ca.crt");
        let ca = std::fs::read(&ca_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", ca_file.display()));
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&ca).unwrap_or_else(|e| panic!("{e}")),
            )
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        User {
            http,
            base: format!("https://127.0.0.1:{port}"),
            cookie: None,
            bodies: Vec::new(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let request = match &self.cookie {
            Some(cookie) => request.header(header::COOKIE, format!("aiops_console={cookie}")),
            None => request,
        };
        let response = request.send().await.unwrap_or_else(|e| panic!("{e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        self.bodies.push(body.clone());
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// The first server-sent event of the stream at `path`.
    async fn first_event(&mut self, path: &str) -> String {
        let cookie = format!("aiops_console={}", self.cookie.clone().unwrap_or_default());
        let mut response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, cookie)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event on {path} within 20 s: {text:?}"))
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .unwrap_or_else(|| panic!("{path} ended: {text:?}"));
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        self.bodies.push(text.clone());
        text
    }

    /// A form POST; `origin` as a browser would send it (or none).
    async fn post(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        self.send(request).await
    }

    /// Signs in with `token`; returns the answer (the cookie is kept on success).
    async fn sign_in(&mut self, token: &str) -> Answer {
        let origin = self.base.clone();
        let answer = self
            .post("/session", &[("token", token)], Some(&origin))
            .await;
        let set_cookie = answer
            .headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(value) = set_cookie
            .strip_prefix("aiops_console=")
            .and_then(|rest| rest.split(';').next())
        {
            for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
                assert!(
                    set_cookie.contains(attribute),
                    "{attribute} missing: {set_cookie}"
                );
            }
            self.cookie = Some(value.to_string());
        }
        answer
    }
}

/// The value of the hidden input `name` in the first form that has one.
fn hidden(body: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    body.split(&marker)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no hidden {name} in {body}"))
        .to_string()
}

async fn current(sandbox: &Sandbox, ns: &str, name: &str) -> Remediation {
    Api::<Remediation>::namespaced(sandbox.client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{ns}/{name}: {e}"))
}

/// Nothing a refused POST could have changed did change.
async fn unchanged(sandbox: &Sandbox, ns: &str, name: &str, what: &str) {
    let now = current(sandbox, ns, name).await;
    assert!(
        !now.spec.approved && !now.spec.rejected && now.spec.approval.is_none(),
        "{what} changed the Remediation: {:?}",
        now.spec
    );
    assert_eq!(phase(&now), Phase::Proposed, "{what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_cannot_approve_through_the_console_and_an_approver_approves_as_themselves() {
    let sandbox = Sandbox::connect().await;
    let port = free_port();
    let operator = start_operator(port);
    let users: TestNamespace = sandbox.namespace("console-users").await;
    let (case_ns, proposed) =
        support::broken_after_a_good_rollout(&sandbox, "console", 1, "nginx:0.0.0-gone", STEP)
            .await;
    let ns = case_ns.name.clone();
    let name = proposed.name_any();
    let _rbac = grant(&sandbox, &users.name, &ns);
    let reader_token = token(&sandbox, &users.name, "reader").await;
    let approver_token = token(&sandbox, &users.name, "approver").await;
    let own = format!("https://127.0.0.1:{port}");
    let detail = format!("/remediations/{ns}/{name}");
    let approve = format!("{detail}/approve");

    // A wrong token does not sign in.
    let mut stranger = User::new(port);
    let refused = stranger.sign_in("not-a-token-the-api-server-knows").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert!(
        refused.body.contains(r#"<p id="error""#),
        "{}",
        refused.body
    );
    assert!(stranger.cookie.is_none() && refused.headers.get(header::SET_COOKIE).is_none());
    let list = stranger.get("/remediations").await;
    assert_eq!(list.status, StatusCode::SEE_OTHER, "no session, no list");

    // The reader sees the case, and no Approve button.
    let mut reader = User::new(port);
    let signed = reader.sign_in(&reader_token).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    assert_eq!(
        signed
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some("/remediations")
    );
    let list = reader.get("/remediations").await;
    assert_eq!(list.status, StatusCode::OK);
    let reader_name = format!("system:serviceaccount:{}:reader", users.name);
    assert!(
        list.body
            .contains(&format!(r#"<span id="user">{reader_name}</span>"#)),
        "{}",
        list.body
    );
    assert!(
        list.body.contains(&format!(
            r#"<tr class="remediation" data-namespace="{ns}" data-name="{name}" data-phase="Proposed">"#
        )),
        "{}",
        list.body
    );
    let page = reader.get(&detail).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(r#"<span id="phase" class="phase">Proposed</span>"#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"<pre id="diff"><span class="ctx">"#),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(r#"id="approve""#),
        "a reader is offered Approve"
    );
    // The live stream, fed by a watch made with the reader's token.
    let first = reader.first_event(&format!("{detail}/events")).await;
    assert!(
        first.contains("event: phase")
            && first.contains(&format!(r#""name":"{name}""#))
            && first.contains(r#""phase":"Proposed""#),
        "{first}"
    );
    // A forged approval with the reader's own valid session and CSRF token:
    // the API server refuses it, and the console says so with its 403.
    let csrf = hidden(&page.body, "csrf");
    let hash = proposal_hash(&proposed).to_string();
    let forged = reader
        .post(&approve, &[("csrf", &csrf), ("hash", &hash)], Some(&own))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    assert!(
        forged.body.contains(r#"<p id="error""#) && forged.body.contains("forbidden"),
        "{}",
        forged.body
    );
    unchanged(&sandbox, &ns, &name, "the reader's approval").await;

    // The approver is offered Approve; POSTs without the CSRF token or from
    // another origin are refused before anything is done.
    let mut approver = User::new(port);
    assert_eq!(
        approver.sign_in(&approver_token).await.status,
        StatusCode::SEE_OTHER
    );
    let page = approver.get(&detail).await;
    assert!(
        page.body.contains(r#"<button id="approve""#),
        "{}",
        page.body
    );
    let csrf = hidden(&page.body, "csrf");
    // The first form with a hash is Approve's (sign-out carries none).
    assert_eq!(
        hidden(&page.body, "hash"),
        hash,
        "the form carries the proposal's hash"
    );
    let no_csrf = approver
        .post(&approve, &[("hash", &hash)], Some(&own))
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN, "{}", no_csrf.body);
    unchanged(&sandbox, &ns, &name, "a POST without the CSRF token").await;
    let foreign = approver
        .post(
            &approve,
            &[("csrf", &csrf), ("hash", &hash)],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "{}", foreign.body);
    unchanged(&sandbox, &ns, &name, "a POST from another origin").await;
    let stale = approver
        .post(
            &approve,
            &[("csrf", &csrf), ("hash", "sha256:0")],
            Some(&own),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    unchanged(&sandbox, &ns, &name, "an approval of another proposal").await;

    // The approver approves; the webhook records them, and the fix holds.
    let approved = approver
        .post(&approve, &[("csrf", &csrf), ("hash", &hash)], Some(&own))
        .await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    assert_eq!(
        approved
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some(detail.as_str())
    );
    let approver_name = format!("system:serviceaccount:{}:approver", users.name);
    let now = current(&sandbox, &ns, &name).await;
    assert_eq!(
        now.spec.approval.as_ref().map(|a| a.approved_by.as_str()),
        Some(approver_name.as_str()),
        "spec.approval: {:?}",
        now.spec.approval
    );
    let verified = wait_until(STEP, &format!("{ns}/{name} to be Verified"), || async {
        let r = current(&sandbox, &ns, &name).await;
        (phase(&r) == Phase::Verified).then_some(r)
    })
    .await;
    assert_eq!(
        verified
            .status
            .as_ref()
            .and_then(|s| s.approved_by.as_deref()),
        Some(approver_name.as_str())
    );
    let page = approver.get(&detail).await;
    assert!(
        page.body
            .contains(&format!(r#"<span id="approved-by">{approver_name}</span>"#)),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(r#"id="approve""#),
        "nothing left to approve"
    );

    // Signing out ends the session on the server.
    let csrf = hidden(&page.body, "csrf");
    let out = approver
        .post("/session/end", &[("csrf", &csrf)], Some(&own))
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        approver.get("/remediations").await.status,
        StatusCode::SEE_OTHER
    );

    // No token anywhere it could leak.
    let log = operator.log();
    for (who, token) in [("reader", &reader_token), ("approver", &approver_token)] {
        for user in [&stranger, &reader, &approver] {
            assert!(
                !user.bodies.iter().any(|b| b.contains(token.as_str())),
                "the {who}'s token is in a response"
            );
        }
        assert!(
            !log.contains(token.as_str()),
            "the {who}'s token is in the operator's log"
        );
    }
    assert!(
        log.contains("console listening"),
        "{}",
        operator.log_tail(20)
    );
}
