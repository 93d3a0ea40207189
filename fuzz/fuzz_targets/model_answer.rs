//! Any text as a model's answer, for two incidents (a misspelled image
//! with candidates, a decision only; and an out-of-memory crash loop with
//! env and memory to change and a cause to explain): checked against the
//! incident's schema, read as a fix and turned into a proposal, as every
//! provider does with a server's reply. Also read as a fix without the schema check, so the reader holds
//! on its own. A panic or a hang is a finding; errors are the expected
//! answer to garbage.
#![no_main]

use std::sync::OnceLock;

use aiops_operator::llm::validate::validate_answer;
use aiops_operator::remediation::crd::{Evidence, Finding};
use aiops_operator::remediation::propose::model::answer::{fix_to_proposal, parse_fix};
use aiops_operator::remediation::propose::model::schema::{
    IncidentFacts, answer_schema, incident_facts,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

struct Incident {
    evidence: Evidence,
    facts: IncidentFacts,
    schema: Value,
}

fn incident(evidence: Value, findings: Value, cluster_images: &[&str]) -> Incident {
    let evidence: Evidence =
        serde_json::from_value(evidence).unwrap_or_else(|e| panic!("evidence: {e}"));
    let findings: Vec<Finding> =
        serde_json::from_value(findings).unwrap_or_else(|e| panic!("findings: {e}"));
    let images: Vec<String> = cluster_images.iter().map(|s| s.to_string()).collect();
    let facts = incident_facts(&evidence, &findings, &images, 4 << 30);
    let schema = answer_schema(&facts);
    Incident {
        evidence,
        facts,
        schema,
    }
}

fn incidents() -> &'static [Incident] {
    static INCIDENTS: OnceLock<Vec<Incident>> = OnceLock::new();
    INCIDENTS.get_or_init(|| {
        let workload = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u1"});
        vec![
            incident(
                json!({"workload": workload, "namespace": "shop",
                       "containers": [{"name": "app", "image": "ngnix:1.25.5"}]}),
                json!([{"container": "app", "reason": "ImagePullBackOff", "pods": 2,
                        "image": "ngnix:1.25.5"}]),
                &["nginx:1.25.5", "nginx:1.25.4", "registry.local/web:2"],
            ),
            incident(
                json!({"workload": workload, "namespace": "shop",
                       "containers": [{"name": "app", "image": "api:2.1",
                                       "limits": {"memory": "64Mi"}, "requests": {"memory": "32Mi"},
                                       "envNames": ["DB_URL", "MODE"],
                                       "command": ["/api"], "args": ["--port", "8080"]}],
                       "history": [{"revision": 3, "images": {"app": "api:2.0"},
                                    "changed": ["containers[app].args"], "healthy": true}]}),
                json!([{"container": "app", "reason": "OOMKilled", "pods": 3, "exitCode": 137},
                       {"container": "app", "reason": "CrashLoopBackOff", "pods": 3, "exitCode": 1}]),
                &[],
            ),
        ]
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    for incident in incidents() {
        if let Ok(answer) = validate_answer(&incident.schema, text) {
            if let Ok(fix) = parse_fix(&answer) {
                let _ = fix_to_proposal(&fix, &incident.evidence, &incident.facts, "fuzz");
            }
        }
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            if let Ok(fix) = parse_fix(&value) {
                let _ = fix_to_proposal(&fix, &incident.evidence, &incident.facts, "fuzz");
            }
        }
    }
});
