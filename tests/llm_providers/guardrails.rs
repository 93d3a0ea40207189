//! Answers the schema lets through but the real guardrails refuse, and
//! hostile patches that never pass them, however they arrive.
use aiops_operator::llm::ProviderKind;
use aiops_operator::remediation::crd::{Action, GuardrailVerdict, Proposal};
use aiops_operator::remediation::guardrails::{AdmissionView, GuardrailLimits, guard_proposal};
use aiops_operator::remediation::propose::command::offline_workload;
use serde_json::{Value, json};

use crate::double::{Double, ollama_reply};
use crate::support::{baseline_policies, pull_evidence, pull_findings, web_workload};
use crate::{PullIncident, ask, config, good_answer, proposer, verdict};

#[tokio::test]
async fn a_latest_image_without_candidates_passes_the_schema_but_not_the_guardrails() {
    let double = Double::start().await;
    let mut config = config(ProviderKind::Ollama, &double.url, "m");
    config.cache_capacity = 0;
    let proposer = proposer(&config);
    // No image runs elsewhere in the cluster: nothing to offer as a candidate.
    let mut parts = PullIncident::of(pull_evidence("shop"));
    parts.images.clear();
    let incident = parts.incident();
    let evidence = &parts.evidence;

    let latest = good_answer().replace("nginx:1.25.5", "nginx:latest");
    double.push(ollama_reply(&latest));
    let model = proposer.propose(&incident).await.expect("schema-valid");
    let (allowed, violations) = verdict(evidence, Ok(model));
    assert!(!allowed);
    assert!(
        violations.iter().any(|v| v.contains("disallow-latest-tag")),
        "{violations:?}"
    );

    // Echoing the broken image back is a no-op, refused too.
    let echo = good_answer().replace("nginx:1.25.5", "ngnix:1.25.5");
    double.push(ollama_reply(&echo));
    let model = proposer.propose(&incident).await.expect("schema-valid");
    let (allowed, violations) = verdict(evidence, Ok(model));
    assert!(!allowed);
    assert!(
        violations.iter().any(|v| v.contains("no-op")),
        "{violations:?}"
    );
}

#[tokio::test]
async fn the_operators_own_namespace_is_refused_by_the_guardrails() {
    let double = Double::start().await;
    double.push(ollama_reply(&good_answer()));
    let proposer = proposer(&config(ProviderKind::Ollama, &double.url, "m"));
    let evidence = pull_evidence("aiops-system");
    let (allowed, violations) = verdict(&evidence, ask(&proposer, &evidence).await);
    assert!(!allowed);
    assert!(
        violations
            .iter()
            .any(|v| v.contains("operator's own namespace")),
        "{violations:?}"
    );
}

/// The real guardrails' verdict on a proposal for the incident's workload.
fn guard_in_shop(proposal: &Proposal, live: &Value) -> GuardrailVerdict {
    guard_proposal(
        "shop",
        &web_workload(),
        &pull_findings(),
        proposal,
        live,
        &AdmissionView::policies(&baseline_policies()),
        &GuardrailLimits::default(),
    )
}

#[test]
fn even_a_hostile_patch_past_the_schema_is_refused_by_the_real_guardrails() {
    // Defence in depth: were a raw model patch ever to reach the
    // guardrails, the baseline policies and the allowlist stop it.
    let evidence = pull_evidence("shop");
    let live = offline_workload(&evidence);
    let container = |extra: Value| {
        let mut c = json!({"name": "app", "image": "nginx:1.25.5"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"template": {"spec": {"containers": [c]}}}})
    };
    let mut host_path = container(json!({}));
    host_path["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "root", "hostPath": {"path": "/"}}]);
    let mut host_network = container(json!({}));
    host_network["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
    let mut kind = container(json!({}));
    kind["kind"] = json!("DaemonSet");
    let mut metadata = container(json!({}));
    metadata["metadata"]["labels"] = json!({"team": "attacker"});
    let cases = [
        (
            "privileged",
            container(json!({"securityContext": {"privileged": true}})),
            // A securityContext may change only in a policy fix.
            "securityContext) is not allowed for these findings",
        ),
        ("hostPath", host_path, "volumes"),
        ("hostNetwork", host_network, "hostNetwork"),
        (
            "latest",
            container(json!({"image": "nginx:latest"})),
            "disallow-latest-tag",
        ),
        ("kind", kind, "apiVersion/kind"),
        ("metadata", metadata, "metadata.labels"),
        (
            "500 KB",
            container(json!({"image": format!("nginx:{}", "1".repeat(500 * 1024))})),
            "bytes; the limit",
        ),
    ];
    for (name, patch, reason) in cases {
        let proposal = Proposal {
            summary: name.into(),
            actions: vec![Action {
                target: web_workload(),
                namespace: "shop".into(),
                patch,
                env_from_revision: Vec::new(),
            }],
            source: "openai:hostile".into(),
            ..Proposal::default()
        }
        .seal();
        let verdict = guard_in_shop(&proposal, &live);
        assert!(!verdict.allowed, "{name}");
        assert!(
            verdict.violations.iter().any(|v| v.contains(reason)),
            "{name}: {:?}",
            verdict.violations
        );
    }
    // Another namespace or workload, or the operator itself as target.
    for (namespace, name) in [
        ("kube-system", "web"),
        ("shop", "payments"),
        ("aiops-system", "aiops-operator"),
    ] {
        let mut target = web_workload();
        target.name = name.into();
        let proposal = Proposal {
            actions: vec![Action {
                target,
                namespace: namespace.into(),
                patch: container(json!({})),
                env_from_revision: Vec::new(),
            }],
            ..Proposal::default()
        }
        .seal();
        let verdict = guard_in_shop(&proposal, &live);
        assert!(!verdict.allowed, "{namespace}/{name}");
    }
}
