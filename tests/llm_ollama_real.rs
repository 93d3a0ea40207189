//! One real request through the `ollama` provider, against a real Ollama
//! built here (no Kubernetes): `/api/chat` with `stream: false`, `format`
//! set to the incident's JSON Schema, temperature 0 and a fixed seed.
//!
//! Needs the server: `make ollama-up MODEL=smollm2` (`make test` starts it
//! before `cargo test` and stops it afterwards). The URL and model come from
//! `target/ollama/env`, written by `tests/ollama/server.sh`. When the file is
//! missing or the server does not answer, the test FAILS with instructions;
//! it never skips, so a missing server cannot pass silently.
//!
//! It asserts that the answer became a proposal (the server accepted the
//! request as the provider sends it, and its answer passed the schema), and
//! that the server read the whole prompt: a chat template that drops the
//! system message shows as a prompt token count far below the estimate and
//! a flag on the proposal. It asserts nothing about which fix a 135M model
//! picks.
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aiops_operator::llm::{LlmConfig, ProviderKind};
use aiops_operator::remediation::crd::{ContainerTemplate, Evidence, Finding, WorkloadRef};
use aiops_operator::remediation::propose::model::{Incident, ModelProposer};

/// `OLLAMA_URL` and `OLLAMA_MODEL` from the file `server.sh up` writes.
fn server() -> (String, String) {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ollama/env");
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

/// A new Deployment whose image repository is misspelled, with the right
/// image running elsewhere in the cluster.
fn evidence() -> Evidence {
    Evidence {
        workload: WorkloadRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "uid-web".into(),
        },
        namespace: "shop".into(),
        containers: vec![ContainerTemplate {
            name: "app".into(),
            image: "ngnix:1.25.5".into(),
            ..ContainerTemplate::default()
        }],
        ..Evidence::default()
    }
}

fn findings() -> Vec<Finding> {
    vec![Finding {
        container: "app".into(),
        reason: "ImagePullBackOff".into(),
        message: "Back-off pulling image \"ngnix:1.25.5\": repository does not exist".into(),
        pods: 2,
        image: Some("ngnix:1.25.5".into()),
        ..Finding::default()
    }]
}

#[tokio::test]
async fn the_real_ollama_answers_the_provider_with_a_schema_valid_fix() {
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
    let (evidence, findings) = (evidence(), findings());
    let images = vec!["nginx:1.25.5".to_string(), "redis:7.2.5".to_string()];
    let incident = Incident {
        evidence: &evidence,
        findings: &findings,
        cluster_images: &images,
    };
    let started = Instant::now();
    let outcome = proposer.propose(&incident).await;
    let elapsed = started.elapsed().as_secs_f64();
    let proposal = outcome.unwrap_or_else(|e| panic!("{model} at {url}: no proposal: {e}"));

    assert_eq!(proposal.proposal.source, format!("ollama:{model}"));
    assert!(!proposal.cached);
    let prompt_tokens = proposal
        .usage
        .prompt_tokens
        .expect("Ollama reports prompt_eval_count");
    assert!(
        proposal.usage.completion_tokens.is_some_and(|n| n > 0),
        "{:?}",
        proposal.usage
    );
    // The whole prompt reached the model: the ChatML template kept the
    // system message (without it the count is about a third of this).
    assert!(
        prompt_tokens as f64 >= proposal.prompt.estimated_tokens as f64 * 0.5,
        "the server read {prompt_tokens} prompt tokens of about {} sent",
        proposal.prompt.estimated_tokens
    );
    assert!(
        proposal
            .proposal
            .risks
            .iter()
            .all(|r| !r.contains("prompt tokens of about")),
        "{:#?}",
        proposal.proposal.risks
    );
    eprintln!(
        "{model}: {} action(s) in {elapsed:.1}s ({prompt_tokens} prompt tokens, about {} \
         estimated; {:?} completion tokens): {}",
        proposal.proposal.actions.len(),
        proposal.prompt.estimated_tokens,
        proposal.usage.completion_tokens,
        proposal.proposal.summary
    );
}
