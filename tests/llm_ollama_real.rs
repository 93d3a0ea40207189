//! One real request through the `ollama` provider, against a real Ollama
//! built here (no Kubernetes): `/api/chat` with `stream: false`, `format`
//! set to the incident's JSON Schema, temperature 0 and a fixed seed.
//!
//! Needs the server: `make ollama-up MODEL=smollm2`, then
//! `cargo test --test llm_ollama_real`. `test = false` in `Cargo.toml` keeps
//! it out of `cargo test --all-targets`: `make test` builds Ollama in the
//! background while the other tests run, then starts the server and runs
//! this one by name. The URL and model come from
//! `target/ollama/env`, written by `tests/ollama/server.sh`. When the file is
//! missing or the server does not answer, the test FAILS with instructions;
//! it never skips, so a missing server cannot pass silently.
//!
//! It asserts that the answer became a proposal (the server accepted the
//! request as the provider sends it, and its answer passed the schema), that
//! the model's chat template renders the system message (a template that
//! drops it would also put a flag on the proposal), and that whatever fix
//! came back passes the guardrails
//! and names only facts of the incident. It asserts nothing about which fix
//! a 135M model picks.
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aiops_operator::llm::{LlmConfig, ProviderKind};
use aiops_operator::remediation::guardrails::{AdmissionView, GuardrailLimits, guard_proposal};
use aiops_operator::remediation::propose::model::mentions::IncidentWords;
use aiops_operator::remediation::propose::model::prompt::redact_evidence;
use aiops_operator::remediation::propose::model::schema::incident_facts;
use aiops_operator::remediation::propose::model::{Incident, ModelProposer};
use serde_json::json;
use support::{baseline_policies, pull_evidence, pull_findings, repo_root, web_workload};

/// `OLLAMA_URL` and `OLLAMA_MODEL` from the file `server.sh up` writes.
fn server() -> (String, String) {
    let file = repo_root().join("target/ollama/env");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "the Ollama server is not running ({}: {e}).\n\
             Start it with `make ollama-up MODEL=smollm2` (make test does this).",
            file.display()
        )
    });
    let vars: HashMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    match (vars.get("OLLAMA_URL"), vars.get("OLLAMA_MODEL")) {
        (Some(url), Some(model)) => (url.to_string(), model.to_string()),
        _ => panic!(
            "{} lacks OLLAMA_URL or OLLAMA_MODEL:\n{text}",
            file.display()
        ),
    }
}

#[tokio::test]
async fn the_real_ollama_answers_the_provider_with_a_fix_that_passes_the_guardrails() {
    let (url, model) = server();
    let http = reqwest::Client::new();
    match http.get(format!("{url}/api/version")).send().await {
        Ok(r) if r.status().is_success() => {}
        other => panic!(
            "the Ollama server at {url} does not answer ({other:?}).\n\
             Start it with `make ollama-up MODEL=smollm2` (make test does this)."
        ),
    }

    let config = LlmConfig {
        provider: ProviderKind::Ollama,
        url: url.clone(),
        model: model.clone(),
        // A cold model load plus a prompt on two busy cores.
        timeout: Duration::from_secs(300),
        max_attempts: 1,
        ..LlmConfig::default()
    };
    let proposer = ModelProposer::from_config(&config, 2 << 30).expect("the provider builds");
    let workload = web_workload();
    let evidence = pull_evidence("shop");
    let findings = pull_findings();
    let images = vec!["nginx:1.25.5".to_string(), "redis:7.2.5".to_string()];
    let incident = Incident {
        evidence: &evidence,
        findings: &findings,
        cluster_images: &images,
    };
    let started = Instant::now();
    let outcome = proposer.propose(&incident).await;
    let elapsed = started.elapsed().as_secs_f64();
    let answer = outcome.unwrap_or_else(|e| panic!("{model} at {url}: no proposal: {e}"));

    assert_eq!(answer.proposal.source, format!("ollama:{model}"));
    assert_eq!(
        answer.proposal.hash,
        answer.proposal.content_hash(),
        "sealed"
    );
    assert!(!answer.cached);
    let prompt_tokens = answer
        .usage
        .prompt_tokens
        .expect("Ollama reports prompt_eval_count");
    assert!(
        answer.usage.completion_tokens.is_some_and(|n| n > 0),
        "{:?}",
        answer.usage
    );
    // The whole prompt reached the model: Ollama counts every token of the
    // rendered prompt, those its runner kept from an earlier call too, and
    // the count is about the operator's estimate; the template the server
    // applies renders the system message; and the provider flagged neither.
    assert!(
        prompt_tokens as usize * 2 >= answer.prompt.estimated_tokens,
        "Ollama counted {prompt_tokens} prompt tokens of about {} sent",
        answer.prompt.estimated_tokens
    );
    let shown: serde_json::Value = http
        .post(format!("{url}/api/show"))
        .json(&json!({"model": model}))
        .send()
        .await
        .expect("/api/show answers")
        .json()
        .await
        .expect("/api/show is JSON");
    let template = shown["template"].as_str().unwrap_or_default();
    assert!(
        aiops_operator::llm::ollama::template_reads_system(template),
        "the served template drops the system message: {template:?}"
    );
    assert!(
        answer
            .proposal
            .risks
            .iter()
            .all(|r| !r.contains("system message") && !r.contains("prompt tokens")),
        "{:#?}",
        answer.proposal.risks
    );

    // Whatever the model chose, an action targets the workload, sets only an
    // offered candidate image, and passes the guardrails.
    let live = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ngnix:1.25.5"}]}}}});
    let verdict = guard_proposal(
        "shop",
        &workload,
        &findings,
        &answer.proposal,
        &live,
        &AdmissionView::policies(&baseline_policies()),
        &GuardrailLimits::default(),
    );
    for action in &answer.proposal.actions {
        assert_eq!(action.target, workload);
        let image = action.patch["spec"]["template"]["spec"]["containers"][0]["image"].as_str();
        assert!(
            image.is_none_or(|i| images.iter().any(|c| c == i)),
            "an image outside the candidates {images:?}: {}",
            action.patch
        );
    }
    if !answer.proposal.actions.is_empty() {
        assert!(verdict.allowed, "the real model's fix passes: {verdict:?}");
    }
    // The cause a reviewer sees names only facts of this incident.
    let facts = incident_facts(&redact_evidence(&evidence), &findings, &images, 2 << 30);
    let words = IncidentWords::for_proposal(&evidence, &facts, &answer.proposal);
    assert_eq!(
        words.unknown_mentions(&answer.proposal.root_cause),
        Vec::<String>::new(),
        "the shown cause: {}",
        answer.proposal.root_cause
    );
    eprintln!(
        "{model} on Ollama: {} action(s) in {elapsed:.1}s ({prompt_tokens} prompt tokens, \
         about {} estimated; {:?} completion tokens): {}",
        answer.proposal.actions.len(),
        answer.prompt.estimated_tokens,
        answer.usage.completion_tokens,
        answer.proposal.summary
    );
}
