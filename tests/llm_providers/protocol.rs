//! What the providers send and how they read the answers: the documented
//! request bodies, the API key only in the header, redaction, the cache
//! and the concurrency limit.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aiops_operator::k8s::redact::redact;
use aiops_operator::llm::{ApiKey, ProviderKind};
use aiops_operator::remediation::crd::LogTail;
use aiops_operator::remediation::evidence::summarize_containers;
use aiops_operator::remediation::guardrails::GuardrailLimits;
use aiops_operator::remediation::propose::command::guard_offline;
use aiops_operator::remediation::propose::model::Incident;
use serde_json::json;

use crate::double::{Double, ollama_reply, openai_reply};
use crate::support::{baseline_policies, crash_findings, no_change_answer, pull_evidence};
use crate::{PullIncident, ask, config, good_answer, proposer};

#[tokio::test]
async fn ollama_gets_the_documented_request_and_its_response_is_parsed() {
    let double = Double::start().await;
    double.push(ollama_reply(&good_answer()));
    let config = config(ProviderKind::Ollama, &double.url, "qwen2.5:7b");
    let proposer = proposer(&config);
    let parts = PullIncident::of(pull_evidence("shop"));
    let incident = parts.incident();
    let (request, stats) = proposer.request_for(&incident);
    let model = proposer.propose(&incident).await.expect("a proposal");

    let body = double.last_body();
    assert_eq!(
        body,
        json!({
            "model": "qwen2.5:7b",
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.examples[0].user},
                {"role": "assistant", "content": request.examples[0].assistant},
                {"role": "user", "content": request.user}
            ],
            "stream": false,
            "format": request.schema,
            "options": {"temperature": 0, "seed": 42, "num_predict": request.completion_limit(1024)},
            "keep_alive": "5m"
        })
    );
    // The schema offers the verified candidate, not the broken image.
    assert_eq!(
        body["format"]["properties"]["changes"]["items"]["properties"]["image"]["enum"],
        json!(["nginx:1.25.5", null])
    );
    assert_eq!(body["format"]["additionalProperties"], false);

    assert_eq!(model.proposal.source, "ollama:qwen2.5:7b");
    assert_eq!(model.usage.prompt_tokens, Some(812));
    assert_eq!(model.usage.completion_tokens, Some(64));
    assert_eq!(model.prompt.estimated_tokens, stats.estimated_tokens);
    assert!(stats.estimated_tokens <= config.prompt_token_budget);
    let patch = &model.proposal.actions[0].patch;
    assert_eq!(
        patch.pointer("/spec/template/spec/containers/0"),
        Some(&json!({"name": "app", "image": "nginx:1.25.5"}))
    );
    let verdict = guard_offline(
        &parts.evidence,
        &parts.findings,
        &model,
        &baseline_policies(),
        &GuardrailLimits::default(),
    );
    assert!(verdict.allowed, "{:?}", verdict.violations);
}

#[tokio::test]
async fn openai_gets_json_schema_strict_and_the_key_only_in_the_header() {
    let double = Double::start().await;
    double.push(openai_reply(&good_answer()));
    let mut config = config(ProviderKind::Openai, &double.url, "qwen2.5-coder-0.5b");
    config.api_key = Some(ApiKey::new("sk-planted-key-0123456789abcdef"));
    let proposer = proposer(&config);
    let parts = PullIncident::of(pull_evidence("shop"));
    let incident = parts.incident();
    let (request, _) = proposer.request_for(&incident);
    let model = proposer.propose(&incident).await.expect("a proposal");

    assert_eq!(
        double.last_body(),
        json!({
            "model": "qwen2.5-coder-0.5b",
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.examples[0].user},
                {"role": "assistant", "content": request.examples[0].assistant},
                {"role": "user", "content": request.user}
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "remediation_fix", "strict": true, "schema": request.schema}
            },
            "temperature": 0,
            "seed": 42,
            "max_tokens": request.completion_limit(1024),
            "stream": false,
            "cache_prompt": true
        })
    );
    assert_eq!(
        double
            .state
            .auth
            .lock()
            .unwrap()
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some("Bearer sk-planted-key-0123456789abcdef")
    );
    assert!(!double.last_body().to_string().contains("sk-planted"));
    assert!(!format!("{config:?} {proposer:?}").contains("sk-planted"));
    assert_eq!(model.proposal.source, "openai:qwen2.5-coder-0.5b");
    assert_eq!(model.usage.prompt_tokens, Some(900));
    assert_eq!(model.proposal.hash, model.proposal.content_hash());
}

#[tokio::test]
async fn planted_secrets_reach_neither_the_request_nor_the_stored_evidence() {
    let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(json!({
        "containers": [{
            "name": "app",
            "image": "ngnix:1.25.5",
            "args": ["--db-password", "PLANTED-ARG-hunter2", "--api-key=PLANTED-FLAG-k3y"],
            "env": [
                {"name": "DB_PASSWORD", "value": "PLANTED-ENV-s3cret"},
                {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}}
            ]
        }]
    }))
    .expect("pod spec");
    let log_lines = [
        "connecting with password=PLANTED-LOG-pw1 to db:5432",
        "Authorization: Bearer PLANTEDLOGBEARER0123456789",
        "using key AKIAIOSFODNN7EXAMPLE",
    ];
    // Stored evidence, as the gatherer builds it (templates summarised, log lines redacted).
    let mut stored = pull_evidence("shop");
    stored.containers = summarize_containers(&spec);
    stored.logs = vec![LogTail {
        pod: "web-1".into(),
        container: "app".into(),
        previous: true,
        lines: log_lines.iter().map(|l| redact(l)).collect(),
    }];
    // A gatherer bug that left the log raw must not leak either.
    let mut raw = stored.clone();
    raw.logs[0].lines = log_lines.iter().map(|l| l.to_string()).collect();

    let double = Double::start().await;
    // A crash: its change classes send the env names, the args and the log.
    double.always(openai_reply(&no_change_answer()));
    let config = config(ProviderKind::Openai, &double.url, "m");
    let proposer = proposer(&config);
    for evidence in [&stored, &raw] {
        let model = proposer
            .propose(&Incident {
                evidence,
                findings: &crash_findings(),
                cluster_images: &[],
            })
            .await
            .expect("a proposal");
        let sent = serde_json::to_string(&double.last_body()).unwrap();
        let kept = serde_json::to_string(&stored).unwrap();
        let proposal = serde_json::to_string(&model.proposal).unwrap();
        for planted in [
            "PLANTED-ARG",
            "PLANTED-FLAG",
            "PLANTED-ENV",
            "PLANTED-LOG",
            "PLANTEDLOGBEARER",
            "AKIAIOSFODNN7EXAMPLE",
        ] {
            assert!(!sent.contains(planted), "{planted} was sent to the model");
            assert!(
                !kept.contains(planted),
                "{planted} is in the stored evidence"
            );
            assert!(!proposal.contains(planted), "{planted} is in the proposal");
        }
        // The names are there; the values are not.
        assert!(sent.contains("DB_PASSWORD"));
    }
}

#[tokio::test]
async fn identical_failures_reuse_the_cached_answer_for_their_own_workload() {
    let double = Double::start().await;
    double.always(ollama_reply(&good_answer()));
    let proposer = proposer(&config(ProviderKind::Ollama, &double.url, "m"));
    let first = ask(&proposer, &pull_evidence("shop")).await.unwrap();
    assert!(!first.cached);
    let mut twin = pull_evidence("shop-eu");
    twin.workload.name = "web-eu".into();
    twin.workload.uid = "uid-web-eu".into();
    let second = ask(&proposer, &twin).await.unwrap();
    assert!(second.cached);
    assert_eq!(double.requests(), 1, "the model was asked once");
    let action = &second.proposal.actions[0];
    assert_eq!(action.target.uid, "uid-web-eu");
    assert_eq!(action.namespace, "shop-eu");
    assert_eq!(
        action.patch["metadata"],
        json!({"name": "web-eu", "namespace": "shop-eu"})
    );

    // Another failure signature asks again.
    let mut other = pull_evidence("shop");
    other.containers[0].image = "ngnix:1.26.0".into();
    ask(&proposer, &other).await.unwrap();
    assert_eq!(double.requests(), 2);
}

#[tokio::test]
async fn concurrent_calls_respect_the_limit() {
    let double = Double::start().await;
    double.always(ollama_reply(&good_answer()));
    *double.state.delay.lock().unwrap() = Duration::from_millis(150);
    let mut config = config(ProviderKind::Ollama, &double.url, "m");
    config.max_concurrency = 1;
    config.cache_capacity = 0;
    let proposer = Arc::new(proposer(&config));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let proposer = proposer.clone();
        tasks.push(tokio::spawn(async move {
            ask(&proposer, &pull_evidence("shop")).await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("a proposal");
    }
    assert_eq!(double.requests(), 3);
    assert_eq!(double.state.max_in_flight.load(Ordering::SeqCst), 1);
}
