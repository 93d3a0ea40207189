//! A model proposal through the controller with a real model, live in the
//! sandbox: the operator runs with the `openai` provider pointed at the
//! local llama.cpp server with SmolLM2 (`make llm-up MODEL=smollm2`, which
//! `make test` starts). A new Deployment whose image repository is
//! misspelled (`ngnix:1.25.5`) has no rollout history, so the rules have no
//! fix and the controller asks the model; `nginx:1.25.5` runs in another
//! namespace, so it is the one candidate image.
//!
//! Nothing is asserted about what a 135M model chooses, only what the
//! operator does with it: the case ends in front of a reviewer either with
//! the model's proposal (its source names the model, the guardrails passed
//! it, every image it sets is the candidate) or with the rules' diagnosis
//! and the reason the model's answer was set aside; and the model metrics
//! count the call with the tokens and the server time it cost.
//!
//! When the model server is not running the test FAILS with instructions.
mod support;

use std::time::Duration;

use aiops_operator::remediation::crd::Phase;
use serde_json::json;
use support::{Sandbox, create_deployment, phase, repo_root, wait_remediation};

const CANDIDATE: &str = "nginx:1.25.5";

/// The URL `tests/llm/server.sh up` wrote.
fn model_server() -> String {
    let file = repo_root().join("target/llm/url");
    std::fs::read_to_string(&file)
        .map(|url| url.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|e| {
            panic!(
                "the local model server is not running ({}: {e}).\n\
                 Start it with `make llm-up MODEL=smollm2` (make test does this).",
                file.display()
            )
        })
}

/// The value of one exact series in Prometheus text (0 when absent).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_real_model_is_asked_through_the_controller_and_its_answer_is_guarded() {
    let url = model_server();
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    let reference = sandbox.namespace("model-live-ref").await;
    create_deployment(
        client,
        &reference.name,
        "ref-web",
        1,
        json!({"name": "web", "image": CANDIDATE}),
    )
    .await;
    support::wait_deployment_rolled_out(client, &reference.name, "ref-web").await;

    support::stop_all_operators();
    let operator = support::start_operator(
        "op-model-live",
        &[
            ("AIOPS_LLM_URL", url.as_str()),
            ("AIOPS_LLM_MODEL", "smollm2"),
        ],
    );
    let ns = sandbox.e2e_namespace("model-live").await;
    create_deployment(
        client,
        &ns.name,
        "web",
        2,
        json!({"name": "app", "image": "ngnix:1.25.5"}),
    )
    .await;
    // A model call on two shared cores: minutes at worst.
    let found = wait_remediation(
        client,
        &ns.name,
        &[Phase::Proposed, Phase::Failed],
        Duration::from_secs(300),
    )
    .await;
    let metrics = operator.metrics().await;
    let log = operator.log_tail(40);
    operator.stop();

    let status = found.status.clone().expect("a status");
    assert_eq!(phase(&found), Phase::Proposed, "{}\n{log}", status.message);
    let proposal = status.proposal.expect("a proposal");
    let model_results: Vec<(&str, f64)> = ["ok", "refused", "schema_invalid", "unusable", "error"]
        .into_iter()
        .map(|r| {
            let name = format!("remediation_model_proposal_total{{result=\"{r}\"}}");
            (r, series(&metrics, &name))
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    assert_eq!(
        model_results.iter().map(|(_, n)| n).sum::<f64>(),
        1.0,
        "one model call, counted once: {model_results:?}\n{log}"
    );
    let (result, _) = model_results[0];
    if proposal.source.starts_with("openai:") {
        assert_eq!(result, "ok");
        assert!(!proposal.actions.is_empty(), "{proposal:?}");
        assert!(
            status.guardrail.as_ref().is_some_and(|g| g.allowed),
            "{:?}",
            status.guardrail
        );
        for action in &proposal.actions {
            let image = &action.patch["spec"]["template"]["spec"]["containers"][0]["image"];
            assert!(
                image.is_null() || image == CANDIDATE,
                "an image outside the candidates: {}",
                action.patch
            );
        }
    } else {
        assert_eq!(proposal.source, "rules");
        assert!(proposal.actions.is_empty(), "the rules have no fix here");
        assert!(
            proposal
                .risks
                .iter()
                .any(|r| r.contains("the model's proposal")),
            "the reviewer reads why the model's answer is not shown: {:?}",
            proposal.risks
        );
        assert_ne!(result, "ok", "a shown answer would be the model's");
    }
    if matches!(result, "ok" | "refused") {
        // The answer arrived: the server's own counts and times are kept.
        assert!(
            series(&metrics, "remediation_model_prompt_tokens_total") > 0.0,
            "{metrics}"
        );
        assert!(series(&metrics, "remediation_model_prompt_seconds_total") > 0.0);
        assert!(series(&metrics, "remediation_model_generation_seconds_total") > 0.0);
    }
    assert_eq!(
        series(&metrics, "remediation_model_proposal_seconds_count"),
        if result == "error" { 0.0 } else { 1.0 }
    );
}
