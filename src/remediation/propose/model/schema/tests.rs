//! Tests of the per-incident schema, its facts and the completion cap.
use super::*;
use crate::llm::provider::LlmError;
use crate::llm::validate::validate_answer;
use crate::remediation::fixtures;

/// An app container running `image` beside a sidecar; revision 3 ran
/// the app healthily on nginx:1.25.4.
fn evidence(image: &str) -> Evidence {
    fixtures::evidence("Deployment")
        .with_container("app", image)
        .with_memory_limit("64Mi")
        .with_env_names(&["LOG_LEVEL", "envFrom:secret/db"])
        .with_container("sidecar", "envoyproxy/envoy:v1.30.1")
        .with_healthy_revision(3, &[("app", "nginx:1.25.4")])
}

fn finding(reason: &str) -> Finding {
    Finding {
        container: "app".into(),
        reason: reason.into(),
        pods: 2,
        ..Finding::default()
    }
}

#[test]
fn image_candidates_come_from_history_and_near_miss_repositories() {
    let cluster = [
        "nginx:1.25.5",
        "docker.io/library/nginx:1.27.0",
        "nginx:latest",
        "nginx",
        "redis:7.2.5",
        "ngnix:1.25",
        "evil.example.com/nginx:1.0",
    ]
    .map(String::from);
    let facts = incident_facts(
        &evidence("ngnix:1.25"),
        &[finding("ImagePullBackOff")],
        &cluster,
        2048 * MIB,
    );
    assert_eq!(
        facts.image_candidates["app"],
        vec![
            "nginx:1.25.4",
            "nginx:1.25.5",
            "docker.io/library/nginx:1.27.0"
        ]
    );
    let schema = answer_schema(&facts);
    // One variant per container, each with only its own candidates.
    let variants = schema["properties"]["changes"]["items"]["anyOf"]
        .as_array()
        .expect("per-container variants");
    assert_eq!(variants.len(), 2);
    let app = &variants[0]["properties"];
    assert_eq!(app["container"]["enum"], json!(["app"]));
    assert_eq!(
        app["image"]["enum"],
        json!([
            "nginx:1.25.4",
            "nginx:1.25.5",
            "docker.io/library/nginx:1.27.0",
            null
        ])
    );
    let sidecar = &variants[1]["properties"];
    assert_eq!(sidecar["container"]["enum"], json!(["sidecar"]));
    assert_eq!(sidecar["image"], json!({"type": "null"}));
    // Image pull failures allow no memory, env or command changes.
    let fields = app.as_object().unwrap();
    assert_eq!(
        fields.keys().collect::<Vec<_>>(),
        vec!["container", "image"]
    );
    // A candidate of one container is refused for another.
    let answer = |container: &str| {
        json!({"confidence": 0.5,
            "changes": [{"container": container, "image": "nginx:1.25.5"}]})
        .to_string()
    };
    assert!(validate_answer(&schema, &answer("app")).is_ok());
    assert!(matches!(
        validate_answer(&schema, &answer("sidecar")),
        Err(LlmError::SchemaViolation { .. })
    ));
}

#[test]
fn without_candidates_the_image_is_a_tagged_reference() {
    let facts = incident_facts(
        &Evidence {
            history: Vec::new(),
            ..evidence("acme/unknown:1.0")
        },
        &[finding("ErrImagePull")],
        &[],
        2048 * MIB,
    );
    assert!(facts.image_candidates.is_empty());
    let schema = answer_schema(&facts);
    let image = &schema["properties"]["changes"]["items"]["properties"]["image"];
    assert!(image.get("enum").is_none());
    assert!(image["pattern"].is_string());
}

#[test]
fn memory_bounds_start_above_the_oom_limit_and_stop_at_the_cap() {
    let facts = incident_facts(
        &evidence("nginx:1.25.5"),
        &[finding("OOMKilled")],
        &[],
        2048 * MIB,
    );
    assert_eq!(
        facts.memory,
        Some(MemoryBounds {
            min_mib: 65,
            max_mib: 2048
        })
    );
    // The model chooses from two, four and eight times the killed limit.
    assert_eq!(facts.memory_choices, [128, 256, 512]);
    let schema = answer_schema(&facts);
    let change = &schema["properties"]["changes"]["items"];
    assert_eq!(
        change["properties"]["memoryLimitMiB"]["enum"],
        json!([128, 256, 512, null])
    );
    assert!(change["properties"].get("image").is_none());

    let ok = json!({"confidence": 0.7,
        "changes": [{"container": "app", "memoryLimitMiB": 128}]});
    assert!(validate_answer(&schema, &ok.to_string()).is_ok());
    for refused in ["4096", "64", "100"] {
        let answer = ok.to_string().replace("128", refused);
        assert!(
            matches!(
                validate_answer(&schema, &answer),
                Err(LlmError::SchemaViolation { .. })
            ),
            "{refused}"
        );
    }
    // Near the cap the choices stop at it; without a killed limit
    // (none was set) the model writes a value within the bounds.
    let near_cap = incident_facts(
        &evidence("nginx:1.25.5"),
        &[finding("OOMKilled")],
        &[],
        300 * MIB,
    );
    assert_eq!(near_cap.memory_choices, [128, 256, 300]);
    let mut no_limit = evidence("nginx:1.25.5");
    no_limit.containers[0].limits.clear();
    let unbounded = incident_facts(&no_limit, &[finding("OOMKilled")], &[], 2048 * MIB);
    assert!(unbounded.memory_choices.is_empty());
    let change = &answer_schema(&unbounded)["properties"]["changes"]["items"];
    assert_eq!(change["properties"]["memoryLimitMiB"]["minimum"], 16);
    assert_eq!(change["properties"]["memoryLimitMiB"]["maximum"], 2048);
    // A crash with another exit code is offered no memory, and an
    // image only as a candidate (here revision 3's).
    let crash = incident_facts(
        &evidence("nginx:1.25.5"),
        &[finding("CrashLoopBackOff")],
        &[],
        2048 * MIB,
    );
    assert_eq!(crash.memory, None);
    assert_eq!(crash.change_fields(), ["image", "env"]);
    let no_history = fixtures::evidence("Deployment")
        .with_container("app", "nginx:1.25.5")
        .with_memory_limit("64Mi")
        .with_env_names(&["LOG_LEVEL"]);
    let crash = incident_facts(&no_history, &[finding("CrashLoopBackOff")], &[], 2048 * MIB);
    assert_eq!(crash.change_fields(), ["env"]);

    // A limit already at the cap leaves nothing to raise.
    let capped = incident_facts(
        &evidence("nginx:1.25.5"),
        &[finding("OOMKilled")],
        &[],
        64 * MIB,
    );
    assert_eq!(capped.memory, None);
    assert_eq!(
        answer_schema(&capped)["properties"]["changes"]["maxItems"],
        0
    );
}

#[test]
fn env_names_come_from_the_template() {
    let facts = incident_facts(
        &evidence("nginx:1.25.5"),
        &[finding("CreateContainerConfigError")],
        &[],
        2048 * MIB,
    );
    assert_eq!(facts.env_names, vec!["LOG_LEVEL"]);
    let schema = answer_schema(&facts);
    let env = &schema["properties"]["changes"]["items"]["properties"]["env"];
    assert_eq!(
        env["items"]["properties"]["name"]["enum"],
        json!(["LOG_LEVEL"])
    );
}

#[test]
fn every_object_is_closed_and_every_property_required() {
    let facts = incident_facts(
        &evidence("nginx:1.25.5"),
        &[finding("CrashLoopBackOff")],
        &[],
        2048 * MIB,
    );
    fn check(schema: &Value) {
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            assert_eq!(schema["additionalProperties"], false, "{schema}");
            let required: BTreeSet<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(required, properties.keys().map(String::as_str).collect());
            properties.values().for_each(check);
        }
        if let Some(items) = schema.get("items") {
            check(items);
        }
        for variant in schema["anyOf"].as_array().into_iter().flatten() {
            check(variant);
        }
    }
    check(&answer_schema(&facts));
}

#[test]
fn answers_outside_the_schema_are_refused_with_the_reason() {
    let facts = incident_facts(
        &evidence("ngnix:1.25"),
        &[finding("ImagePullBackOff")],
        &[],
        2048 * MIB,
    );
    let schema = answer_schema(&facts);
    let err = validate_answer(&schema, "Sure! Here is the fix: {").unwrap_err();
    assert!(matches!(err, LlmError::InvalidJson { .. }), "{err}");
    let hostile = json!({"confidence": 1,
        "changes": [{"container": "app", "image": "nginx:1.25.4", "securityContext": {"privileged": true}}]});
    let err = validate_answer(&schema, &hostile.to_string()).unwrap_err();
    assert!(err.to_string().contains("securityContext"), "{err}");
}

#[test]
fn only_a_crash_a_probe_or_a_fix_nobody_can_express_asks_the_model_for_words() {
    let facts = |reason: &str, cap_mib: u64| {
        incident_facts(
            &evidence("nginx:1.25.5"),
            &[finding(reason)],
            &["nginx:1.25.4".to_string()],
            cap_mib * MIB,
        )
    };
    let keys = |facts: &IncidentFacts| {
        let schema = answer_schema(facts);
        let required: Vec<String> = serde_json::from_value(schema["required"].clone())
            .expect("required is a list of names");
        required
    };
    for decision in ["ImagePullBackOff", "OOMKilled"] {
        let facts = facts(decision, 2048);
        assert!(!facts.explain, "{decision}");
        assert_eq!(keys(&facts), ["changes", "confidence"], "{decision}");
    }
    for explained in ["CrashLoopBackOff", "NotReady", "CreateContainerConfigError"] {
        let facts = facts(explained, 2048);
        assert!(facts.explain, "{explained}");
        assert_eq!(keys(&facts), ["changes", "confidence", "rootCause"]);
    }
    // An OOM kill at the memory cap: nothing to set, so a person needs
    // the model's reading.
    assert!(facts("OOMKilled", 64).explain);
}

#[test]
fn references_parse_and_typos_are_near() {
    assert!(similar_repository(
        "docker.io/library/nginx",
        "docker.io/library/ngnix"
    ));
    assert!(!similar_repository(
        "docker.io/library/nginx",
        "docker.io/library/redis"
    ));
    assert!(!similar_repository(
        "docker.io/library/nginx",
        "evil.example.com/nginx"
    ));
    assert_eq!(
        repository_of("localhost:5000/app:1.0"),
        Some(("localhost:5000/app".to_string(), false))
    );
    assert_eq!(
        repository_of("nginx@sha256:abc"),
        Some(("docker.io/library/nginx".to_string(), false))
    );
    assert_eq!(
        repository_of("Nginx"),
        Some(("docker.io/library/nginx".to_string(), true))
    );
    assert_eq!(repository_of("nginx:latest").map(|r| r.1), Some(true));
    assert_eq!(repository_of(" "), None);
}

#[test]
fn the_completion_cap_fits_the_longest_answer_the_schema_accepts() {
    let facts = incident_facts(
        &evidence("ngnix:1.25"),
        &[finding("ImagePullBackOff")],
        &["nginx:1.25.5".to_string()],
        2048 * MIB,
    );
    let schema = answer_schema(&facts);
    let bound = answer_char_bound(&schema).expect("every field is bounded");
    // The longest answer: every list full.
    let answer = json!({
        "confidence": 0.7,
        "changes": [
            {"container": "app", "image": "nginx:1.25.5"},
            {"container": "sidecar", "image": null},
        ],
    })
    .to_string();
    validate_answer(&schema, &answer).expect("the longest answer is schema-valid");
    assert!(answer.len() <= bound, "{} > {bound}", answer.len());
    let cap = answer_token_cap(&schema).expect("a cap");
    assert!(cap <= 200, "a decision needs few tokens: {cap}");
    // Pretty-printed, at one token per line and per element, it fits.
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&answer).expect("JSON"))
            .expect("prints");
    let tokens = pretty.lines().count() + pretty.split([',', ':']).count();
    assert!(cap as usize >= tokens, "{cap} < {tokens}:\n{pretty}");
    // An explanation adds its bound and no more.
    let explained = incident_facts(
        &evidence("postgres:16.4"),
        &[finding("CrashLoopBackOff")],
        &[],
        2048 * MIB,
    );
    let with_words = answer_schema(&explained);
    let long = json!({
        "confidence": 0.7,
        "changes": [],
        "rootCause": "x".repeat(MAX_ROOT_CAUSE),
    })
    .to_string();
    validate_answer(&with_words, &long).expect("the longest explanation is schema-valid");
    let bound = answer_char_bound(&with_words).expect("every field is bounded");
    assert!(long.len() <= bound, "{} > {bound}", long.len());
    // A free-form string has no bound, so neither has the answer.
    assert_eq!(answer_char_bound(&json!({"type": "string"})), None);
}
