//! Kyverno's pod-security baseline fixtures through the sandbox API server:
//! every bad document denied naming its policy, every good one admitted.
use std::path::Path;

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::PRIVILEGED_POLICY;
use crate::live_webhook::{Certs, Expect, LiveWebhook};
use crate::objects::create_object;
use crate::support::{Sandbox, create_review, read_yaml_documents, repo_root};

/// Where the Kyverno pod-security suites live, beside this repository.
const FIXTURES: &str = "../shared/conformance/kyverno/pod-security/baseline";

/// Asks the webhook directly, as the API server would, about creating
/// `manifest` in `namespace`; returns the denial message, if denied.
async fn review_directly(
    webhook: &LiveWebhook,
    namespace: &str,
    manifest: &Value,
) -> Option<String> {
    let mut review = create_review(manifest, namespace, "direct-fixture-review");
    review["request"]["dryRun"] = json!(true);
    let reply: Value = webhook
        .https_client(false)
        .post(webhook.url("/validate"))
        .json(&review)
        .send()
        .await
        .expect("POST /validate")
        .json()
        .await
        .expect("an AdmissionReview reply");
    (reply["response"]["allowed"] == false).then(|| {
        reply["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

/// Our policy for a Kyverno baseline fixture directory.
fn policy_for_fixture(dir: &str) -> &str {
    match dir {
        // Kyverno tests host ports in two suites (a list check and an
        // alternate range check); our one policy covers both.
        "disallow-host-ports-range" => "disallow-host-ports",
        other => other,
    }
}

/// The 12 Kyverno baseline suites, sorted.
fn fixture_suites() -> Vec<String> {
    let fixtures = repo_root().join(FIXTURES);
    let mut dirs: Vec<String> = std::fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("reading {}: {e}", fixtures.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join(".chainsaw-test").is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 12, "the 12 Kyverno baseline suites: {dirs:?}");
    for dir in &dirs {
        let policy = policy_for_fixture(dir);
        assert!(
            repo_root()
                .join(format!("policies/{policy}.yaml"))
                .is_file(),
            "fixture {dir} maps to policy {policy}, which we do not ship"
        );
    }
    dirs
}

/// What became of the documents of some fixture files.
#[derive(Default)]
struct FixtureOutcome {
    /// One line per document that did not behave.
    problems: Vec<String>,
    tried: usize,
    /// Bad documents the API server's own validation refused before any
    /// webhook ran; the webhook's verdict on them was asked directly.
    checked_directly: Vec<String>,
}

impl FixtureOutcome {
    fn merge(&mut self, other: FixtureOutcome) {
        self.problems.extend(other.problems);
        self.tried += other.tried;
        self.checked_directly.extend(other.checked_directly);
    }
}

/// How a fixture document must fare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict<'a> {
    /// Denied by our webhook, naming this policy.
    DeniedBy(&'a str),
    Admitted,
}

/// Creates every document of one fixture file in `namespace` and checks
/// each against `verdict`. A bad document that the API server rejects as
/// invalid before admission (422) is judged by asking the same webhook
/// directly, and listed in `checked_directly`.
async fn check_fixture_file(
    webhook: &LiveWebhook,
    namespace: &str,
    file: &Path,
    verdict: Verdict<'_>,
) -> FixtureOutcome {
    let documents = read_yaml_documents(file).unwrap_or_else(|e| panic!("fixture: {e:#}"));
    assert!(
        !documents.is_empty(),
        "{} holds no documents",
        file.display()
    );
    let mut outcome = FixtureOutcome {
        tried: documents.len(),
        ..FixtureOutcome::default()
    };
    for doc in &documents {
        let label = format!(
            "{} {} {}",
            file.strip_prefix(repo_root()).unwrap_or(file).display(),
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?"),
        );
        let created = create_object(&webhook.client, namespace, doc, false).await;
        match (verdict, created) {
            (Verdict::Admitted, Ok(())) => {}
            (Verdict::Admitted, Err(refusal)) => {
                outcome
                    .problems
                    .push(format!("{label}: refused: {refusal}"));
            }
            (Verdict::DeniedBy(_), Ok(())) => {
                outcome
                    .problems
                    .push(format!("{label}: admitted, expected a denial"));
            }
            (Verdict::DeniedBy(policy), Err(refusal)) if refusal.is_denial_by(policy) => {}
            (Verdict::DeniedBy(policy), Err(refusal)) if refusal.is_invalid_object() => {
                match review_directly(webhook, namespace, doc).await {
                    // Asked directly, there is no API server wording around it.
                    Some(message) if message.contains(&format!("{policy}/")) => {
                        outcome.checked_directly.push(label);
                    }
                    Some(message) => outcome.problems.push(format!(
                        "{label}: invalid for the API server, and our direct denial does not name {policy}: {message}"
                    )),
                    None => outcome.problems.push(format!(
                        "{label}: invalid for the API server, and our webhook allows it directly"
                    )),
                }
            }
            (Verdict::DeniedBy(policy), Err(refusal)) => {
                outcome
                    .problems
                    .push(format!("{label}: not denied by {policy}: {refusal}"));
            }
        }
    }
    outcome
}

fn assert_fixtures_behaved(what: &str, outcome: &FixtureOutcome) {
    assert!(
        outcome.problems.is_empty(),
        "{what}: {} of {} fixture documents misbehaved:\n{}",
        outcome.problems.len(),
        outcome.tried,
        outcome.problems.join("\n")
    );
    eprintln!(
        "{what}: all {} fixture documents behaved; {} bad ones were invalid for the API server \
         itself (refused before admission), and our webhook denied them when asked directly:\n  {}",
        outcome.tried,
        outcome.checked_directly.len(),
        outcome.checked_directly.join("\n  ")
    );
}

#[tokio::test]
async fn enforce_with_all_policies_denies_every_bad_fixture_naming_its_policy() {
    let sandbox = Sandbox::connect().await;
    let webhook = LiveWebhook::start(&sandbox, &[("mode", "Enforce")], Certs::Cli).await;
    let suites = fixture_suites();
    let fixtures = repo_root().join(FIXTURES);

    // One namespace per suite: the suites reuse object names.
    let (webhook, sandbox, fixtures) = (&webhook, &sandbox, &fixtures);
    let outcomes: Vec<FixtureOutcome> = futures::stream::iter(suites)
        .map(|suite| async move {
            let ns = sandbox.namespace("awh-bad").await;
            webhook.serve(&ns.name, Expect::Deny).await;
            let verdict = Verdict::DeniedBy(policy_for_fixture(&suite));
            let dir = fixtures.join(&suite).join(".chainsaw-test");
            let mut outcome = FixtureOutcome::default();
            for file in ["pod-bad.yaml", "podcontroller-bad.yaml"] {
                outcome
                    .merge(check_fixture_file(webhook, &ns.name, &dir.join(file), verdict).await);
            }
            outcome
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut total = FixtureOutcome::default();
    outcomes.into_iter().for_each(|o| total.merge(o));
    assert_fixtures_behaved("all 12 policies in Enforce", &total);
}

/// Each suite the way Kyverno's chainsaw test runs it: the suite's policy
/// in Enforce; here the other 11 are in Warn (chainsaw installs no other
/// policy). Some good fixtures break another baseline control on purpose
/// (host-process ones need hostNetwork; proc-mount ones use untagged
/// images), so they can only be admitted with that policy not enforcing.
#[tokio::test]
async fn each_suite_as_chainsaw_runs_it_admits_good_and_denies_bad_fixtures() {
    let sandbox = Sandbox::connect().await;
    let fixtures = repo_root().join(FIXTURES);
    let (sandbox, fixtures) = (&sandbox, &fixtures);
    let outcomes: Vec<FixtureOutcome> = futures::stream::iter(fixture_suites())
        .map(|suite| async move {
            let policy = policy_for_fixture(&suite);
            let policy_modes = format!("{policy}: Enforce\n");
            let webhook = LiveWebhook::start(
                sandbox,
                &[("mode", "Warn"), ("policyModes", &policy_modes)],
                Certs::Cli,
            )
            .await;
            let ns = sandbox.namespace("awh-suite").await;
            let probe = if policy == PRIVILEGED_POLICY {
                Expect::Deny
            } else {
                Expect::Warning("Warn")
            };
            webhook.serve(&ns.name, probe).await;
            let dir = fixtures.join(&suite).join(".chainsaw-test");
            let mut outcome = FixtureOutcome::default();
            for (file, verdict) in [
                ("pod-good.yaml", Verdict::Admitted),
                ("podcontroller-good.yaml", Verdict::Admitted),
                ("pod-bad.yaml", Verdict::DeniedBy(policy)),
                ("podcontroller-bad.yaml", Verdict::DeniedBy(policy)),
            ] {
                outcome
                    .merge(check_fixture_file(&webhook, &ns.name, &dir.join(file), verdict).await);
            }
            outcome
        })
        .buffer_unordered(3)
        .collect()
        .await;
    let mut total = FixtureOutcome::default();
    outcomes.into_iter().for_each(|o| total.merge(o));
    assert_fixtures_behaved("each suite's policy in Enforce", &total);
}
