//! The real local model answers a structured-output request (no Kubernetes).
//!
//! Needs the local model server: `make llm-up MODEL=smollm2` (`make test`
//! starts it before `cargo test` and stops it afterwards). The URL comes from
//! `AIOPS_LLM_URL` or `target/llm/url`, written by `tests/llm/server.sh`.
//! When neither leads to a healthy server the test FAILS with instructions;
//! it never skips, so a missing model can't pass silently.
//!
//! It sends one OpenAI-style `/v1/chat/completions` request with a strict
//! `response_format: json_schema` whose only field is an `enum` of candidate
//! images — the per-incident schema shape of issue 5 — at temperature 0 with
//! a fixed seed and `cache_prompt: false`, and asserts that the answer is JSON
//! that matches the schema. It asserts nothing about which candidate the model
//! picks. Plain reqwest for now; it moves to the real provider (src/llm) later.
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CANDIDATES: [&str; 2] = ["nginx:1.25.5", "nginx:1.27.3"];

fn server_url() -> String {
    if let Ok(url) = std::env::var("AIOPS_LLM_URL") {
        return url.trim_end_matches('/').to_string();
    }
    let file = support::repo_root().join("target/llm/url");
    match std::fs::read_to_string(&file) {
        Ok(url) => url.trim().trim_end_matches('/').to_string(),
        Err(e) => panic!(
            "the local model server is not running ({}: {e}).\n\
             Start it with `make llm-up MODEL=smollm2` (make test does this), \
             or set AIOPS_LLM_URL to an OpenAI-compatible server.",
            file.display()
        ),
    }
}

/// The proposer the operator would build for the local SmolLM2 server.
fn smollm2_proposer() -> aiops_operator::remediation::propose::model::ModelProposer {
    use aiops_operator::llm::config::{LlmConfig, ProviderKind};
    let config = LlmConfig {
        provider: ProviderKind::Openai,
        url: server_url(),
        model: "smollm2".into(),
        timeout: Duration::from_secs(120),
        ..LlmConfig::default()
    };
    aiops_operator::remediation::propose::model::ModelProposer::from_config(&config, 2 << 30)
        .expect("provider")
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": { "image": { "type": "string", "enum": CANDIDATES } },
        "required": ["image"],
        "additionalProperties": false
    })
}

/// The answer must be exactly what the schema allows: an object with one
/// key, `image`, whose value is one of the candidates. `Err` says why not.
fn check_schema(content: &str) -> Result<(), String> {
    let value: Value =
        serde_json::from_str(content).map_err(|e| format!("not JSON ({e}): {content:?}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| format!("not a JSON object: {content:?}"))?;
    if object.len() != 1 || !object.contains_key("image") {
        return Err(format!("keys other than exactly `image`: {content:?}"));
    }
    let image = object["image"]
        .as_str()
        .ok_or_else(|| format!("`image` is not a string: {content:?}"))?;
    if !CANDIDATES.contains(&image) {
        return Err(format!(
            "`image` is {image:?}, not in the enum {CANDIDATES:?}"
        ));
    }
    Ok(())
}

#[tokio::test]
async fn the_local_model_answers_with_schema_valid_json() {
    let base = server_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();

    let health = http.get(format!("{base}/health")).send().await;
    match health {
        Ok(r) if r.status().is_success() => {}
        other => panic!(
            "the local model server at {base} is not healthy ({other:?}).\n\
             Start it with `make llm-up MODEL=smollm2` (make test does this)."
        ),
    }
    let models: Value = http
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let model = models["data"][0]["id"]
        .as_str()
        .expect("/v1/models lists the served model")
        .to_string();

    let body = json!({
        "model": model,
        "messages": [
            {"role": "system", "content":
                "You repair Kubernetes workloads. Answer with one JSON object that follows the \
                 schema. Choose the image among the allowed candidates only."},
            {"role": "user", "content":
                "<evidence>\nDeployment shop/web, container web: ImagePullBackOff.\n\
                 Failed to pull image \"nginx:1.25.55\": not found.\n\
                 Revision 3 ran nginx:1.25.5 healthily; nginx:1.27.3 runs in edge/proxy.\n\
                 </evidence>\nWhich image should container web run?"}
        ],
        "temperature": 0,
        "seed": 42,
        "cache_prompt": false,
        "max_tokens": 64,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "image_fix", "strict": true, "schema": schema()}
        }
    });
    let started = Instant::now();
    let response = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {base}/v1/chat/completions: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "HTTP {status}: {text}");
    let answer: Value = serde_json::from_str(&text).expect("the response is JSON");

    let choice = &answer["choices"][0];
    assert_eq!(
        choice["finish_reason"], "stop",
        "the answer was cut off: {text}"
    );
    let content = choice["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no message content: {text}"));
    if let Err(why) = check_schema(content) {
        panic!("the model's answer does not match the schema: {why}");
    }
    eprintln!(
        "{model}: {content:?} in {:.1}s ({} prompt + {} completion tokens)",
        started.elapsed().as_secs_f64(),
        answer["usage"]["prompt_tokens"],
        answer["usage"]["completion_tokens"]
    );
}

#[test]
fn the_schema_check_rejects_what_the_schema_forbids() {
    assert_eq!(check_schema(r#"{"image": "nginx:1.27.3"}"#), Ok(()));
    for bad in [
        r#"{"image": "nginx:1.25.55"}"#,
        r#"{"image": "nginx:1.25.5", "privileged": true}"#,
        r#"{"img": "nginx:1.25.5"}"#,
        r#"{"image": ["nginx:1.25.5"]}"#,
        r#"["nginx:1.25.5"]"#,
        r#"{"image": "nginx:1.25.5""#,
    ] {
        assert!(check_schema(bad).is_err(), "accepted {bad}");
    }
}

/// The real model through the real provider path (`openai` against the
/// local llama.cpp server): the answer parses against the per-incident
/// schema and goes through the guardrails with the baseline policies.
/// Nothing is asserted about the quality of what the model chose.
#[tokio::test]
async fn the_real_model_answers_through_the_provider_and_the_guardrails() {
    use aiops_operator::remediation::guardrails::{AdmissionView, GuardrailLimits, guard_proposal};
    use aiops_operator::remediation::propose::model::Incident;
    use aiops_operator::remediation::propose::model::mentions::IncidentWords;
    use aiops_operator::remediation::propose::model::prompt::redact_evidence;
    use aiops_operator::remediation::propose::model::schema::incident_facts;
    use support::{baseline_policies, pull_evidence, pull_findings, web_workload};

    let proposer = smollm2_proposer();
    let workload = web_workload();
    let evidence = pull_evidence("shop");
    let findings = pull_findings();
    let images = vec!["nginx:1.25.5".to_string(), "nginx:1.27.3".to_string()];
    let answer = proposer
        .propose(&Incident {
            evidence: &evidence,
            findings: &findings,
            cluster_images: &images,
        })
        .await
        .expect("a schema-valid answer from the real model");
    assert!(
        answer.proposal.source.starts_with("openai:"),
        "{}",
        answer.proposal.source
    );
    assert_eq!(
        answer.proposal.hash,
        answer.proposal.content_hash(),
        "sealed"
    );
    assert!(
        answer.usage.completion_tokens.unwrap_or(0) > 0,
        "{:?}",
        answer.usage
    );

    let live = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ngnix:1.25.5"}]}}}});
    let policies = baseline_policies();
    let verdict = guard_proposal(
        "shop",
        &workload,
        &findings,
        &answer.proposal,
        &live,
        &AdmissionView::policies(&policies),
        &GuardrailLimits::default(),
    );
    // Whatever the model chose, an action targets the workload, passes the
    // guardrails, and sets only an offered candidate image.
    for action in &answer.proposal.actions {
        assert_eq!(action.target, workload);
        assert_eq!(action.namespace, "shop");
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
    assert!(
        verdict.allowed || !verdict.violations.is_empty(),
        "a refusal always carries its reasons: {verdict:?}"
    );
    // The cause a reviewer sees names only facts of this incident, whatever
    // the model wrote (it is kept, flagged, among the risks otherwise).
    let facts = incident_facts(&redact_evidence(&evidence), &findings, &images, 2 << 30);
    let words = IncidentWords::for_proposal(&evidence, &facts, &answer.proposal);
    assert!(
        answer
            .proposal
            .root_cause
            .starts_with("Container app (image ngnix:1.25.5)"),
        "the operator's words lead: {}",
        answer.proposal.root_cause
    );
    assert_eq!(
        words.unknown_mentions(&answer.proposal.root_cause),
        Vec::<String>::new(),
        "the shown cause: {}",
        answer.proposal.root_cause
    );
    eprintln!(
        "real model proposal: {:?}; guardrails: {verdict:?}",
        answer.proposal.summary
    );
}

/// A crash is an incident the model explains: the schema asks for its
/// reading of the log. Whatever the real model writes, the cause a
/// reviewer is shown starts with the operator's words and names only
/// facts of this incident; anything else is moved to the risks.
#[tokio::test]
async fn the_real_models_reading_of_a_crash_shows_only_facts_of_the_incident() {
    use aiops_operator::remediation::crd::{ContainerTemplate, LogTail};
    use aiops_operator::remediation::propose::model::Incident;
    use aiops_operator::remediation::propose::model::mentions::IncidentWords;
    use aiops_operator::remediation::propose::model::prompt::redact_evidence;
    use aiops_operator::remediation::propose::model::schema::{answer_schema, incident_facts};
    use support::{crash_findings, pull_evidence};

    let proposer = smollm2_proposer();
    let mut evidence = pull_evidence("shop");
    // No env names and no candidate image: nothing the model could set, so
    // every schema-valid answer is a usable one, and it explains.
    evidence.containers = vec![ContainerTemplate {
        name: "app".into(),
        image: "postgres:16.4".into(),
        ..ContainerTemplate::default()
    }];
    evidence.logs = vec![LogTail {
        pod: "web-5d8f-abcde".into(),
        container: "app".into(),
        previous: true,
        lines: vec![
            "Error: Database is uninitialized and superuser password is not specified.".into(),
            "You must specify POSTGRES_PASSWORD to a non-empty value for the superuser.".into(),
        ],
    }];
    let findings = crash_findings();
    let facts = incident_facts(&redact_evidence(&evidence), &findings, &[], 2 << 30);
    assert!(facts.explain, "a crash asks the model for its reading");
    assert!(
        facts.change_fields().is_empty(),
        "{:?}",
        facts.change_fields()
    );
    assert!(
        answer_schema(&facts)["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("rootCause")))
    );

    let answer = proposer
        .propose(&Incident {
            evidence: &evidence,
            findings: &findings,
            cluster_images: &[],
        })
        .await
        .expect("a schema-valid answer from the real model");
    let shown = &answer.proposal.root_cause;
    assert!(
        shown.starts_with("Container app (image postgres:16.4): CrashLoopBackOff."),
        "the operator's words lead: {shown}"
    );
    let words = IncidentWords::for_proposal(&evidence, &facts, &answer.proposal);
    assert_eq!(
        words.unknown_mentions(shown),
        Vec::<String>::new(),
        "the shown cause: {shown}"
    );
    eprintln!(
        "real model's reading of a crash: {shown:?}; risks: {:?}",
        answer.proposal.risks
    );
}
