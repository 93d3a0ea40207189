//! The project's baseline policies (`policies/`) against Kyverno's live-test
//! fixtures (`../shared/conformance/kyverno/.../.chainsaw-test/`), through
//! the webhook's own decision path: every "bad" object must be denied naming
//! the policy under test, every "good" one admitted.
//!
//! As in the live test, only the policy under test enforces (global mode
//! Audit plus a per-policy Enforce override): the fixtures of one policy may
//! legitimately break another (e.g. host-process fixtures use hostNetwork).
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aiops_operator::admission::admit;
use aiops_operator::admission::audit_writer::AuditSink;
use aiops_operator::admission::metrics::Metrics;
use aiops_operator::admission::modes::{Mode, ModeConfig};
use aiops_operator::admission::policy_files::load_policies;
use aiops_operator::admission::review::parse_review;
use aiops_operator::admission::state::{AppState, ModeHandle, PolicyHandle};
use aiops_operator::policy::PolicySet;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use support::{create_review, read_yaml_documents, repo_root};

const BASELINE: [&str; 11] = [
    "disallow-capabilities",
    "disallow-host-namespaces",
    "disallow-host-path",
    "disallow-host-ports",
    "disallow-host-process",
    "disallow-privileged-containers",
    "disallow-proc-mount",
    "disallow-selinux",
    "restrict-apparmor-profiles",
    "restrict-seccomp",
    "restrict-sysctls",
];

fn conformance_dir() -> PathBuf {
    repo_root().join("../shared/conformance/kyverno")
}

/// The webhook's state with `policies` in force as `modes` say, and no
/// audit writer.
fn state_with(policies: PolicySet, modes: ModeConfig) -> AppState {
    let metrics = Arc::new(Metrics::new());
    AppState::new(
        PolicyHandle::new(policies),
        ModeHandle::new(modes),
        Arc::clone(&metrics),
        AuditSink::disabled(metrics),
    )
}

/// The shipped policies with only `policy` enforcing, the rest in Audit.
fn state_enforcing(policy: &str) -> Result<AppState> {
    let policies = load_policies(&repo_root().join("policies"), &[])?;
    let mut modes = ModeConfig::with_mode("aiops-system", Mode::Audit);
    modes.policy_modes.insert(policy.to_string(), Mode::Enforce);
    Ok(state_with(policies, modes))
}

fn assert_no_wrong_verdicts(wrong: &[String]) {
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A CREATE review of `object` in namespace `team-a`, as the API server sends it.
fn review_of(object: &Value) -> Value {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    create_review(object, "team-a", &format!("uid-{name}"))
}

/// Runs every document of `file` through `/validate`; returns one line per
/// document whose verdict is not the expected one.
fn check_file(
    state: &AppState,
    policy: &str,
    file: &Path,
    expect_denied: bool,
) -> Result<Vec<String>> {
    let mut wrong = Vec::new();
    for object in read_yaml_documents(file)? {
        let body = review_of(&object).to_string();
        let request = parse_review(body.as_bytes())?;
        let admission = admit::validate(state, &request, &mut state.metrics.stage_clock(true));
        let response = admission.response;
        let message = &response.result.message;
        let name = format!(
            "{} {}",
            object["kind"].as_str().unwrap_or_default(),
            object["metadata"]["name"].as_str().unwrap_or_default()
        );
        let names_policy = message.contains(&format!("- {policy}/"));
        match (expect_denied, response.allowed) {
            (true, true) => wrong.push(format!("{name}: admitted, expected a denial by {policy}")),
            (true, false) if !names_policy => {
                wrong.push(format!("{name}: denied without naming {policy}: {message}"))
            }
            (false, false) => wrong.push(format!("{name}: denied: {message}")),
            _ => {}
        }
    }
    Ok(wrong)
}

fn check_policy(policy: &str, fixtures: &Path, bad: &[&str], good: &[&str]) -> Result<Vec<String>> {
    let state = state_enforcing(policy)?;
    let mut wrong = Vec::new();
    for (files, expect_denied) in [(bad, true), (good, false)] {
        for file in files {
            let path = fixtures.join(file);
            wrong.extend(
                check_file(&state, policy, &path, expect_denied)?
                    .into_iter()
                    .map(|w| format!("{policy} ({file}): {w}")),
            );
        }
    }
    Ok(wrong)
}

/// The conformance data lives in `../shared` beside the checkout; without
/// it these tests would prove nothing, so they fail and say where to put it.
fn require_dir(dir: &std::path::Path) {
    assert!(
        dir.is_dir(),
        "{} is missing: the conformance suites must sit in ../shared/conformance \
         beside this checkout",
        dir.display()
    );
}

#[test]
fn baseline_policies_give_the_fixture_verdicts() -> Result<()> {
    let root = conformance_dir().join("pod-security/baseline");
    require_dir(&root);
    let mut wrong = Vec::new();
    // Kyverno's alternate host-port suite (ports 5000-6000 allowed) is
    // covered by our one host-ports policy as well.
    let suites = BASELINE
        .iter()
        .map(|p| (*p, *p))
        .chain([("disallow-host-ports-range", "disallow-host-ports")]);
    for (suite, policy) in suites {
        let fixtures = root.join(suite).join(".chainsaw-test");
        wrong.extend(check_policy(
            policy,
            &fixtures,
            &["pod-bad.yaml", "podcontroller-bad.yaml"],
            &["pod-good.yaml", "podcontroller-good.yaml"],
        )?);
    }
    assert_no_wrong_verdicts(&wrong);
    Ok(())
}

#[test]
fn latest_tag_policy_gives_the_fixture_verdicts() -> Result<()> {
    let fixtures = conformance_dir().join("best-practices/disallow-latest-tag/.chainsaw-test");
    require_dir(&fixtures);
    let wrong = check_policy(
        "disallow-latest-tag",
        &fixtures,
        &[
            "bad-pod-latest-fail-first.yaml",
            "bad-pod-latest-success-first.yaml",
            "bad-pod-no-tag.yaml",
        ],
        &["good-pod.yaml"],
    )?;
    assert_no_wrong_verdicts(&wrong);
    Ok(())
}

#[test]
fn a_registry_port_is_not_a_tag() -> Result<()> {
    let state = state_enforcing("disallow-latest-tag")?;
    let pod = |image: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                "containers": [{"name": "app", "image": image}]
            }
        })
    };
    for (image, allowed) in [
        ("registry.example:5000/team/app", false),
        ("registry.example:5000/team/app:latest", false),
        ("nginx", false),
        ("nginx:latest", false),
        ("registry.example:5000/team/app:1.4.2", true),
        ("nginx:1.27", true),
        (
            "nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31",
            true,
        ),
    ] {
        let body = review_of(&pod(image)).to_string();
        let response = admit::validate(
            &state,
            &parse_review(body.as_bytes())?,
            &mut state.metrics.stage_clock(true),
        )
        .response;
        assert_eq!(
            response.allowed, allowed,
            "{image}: {}",
            response.result.message
        );
        if !allowed {
            assert!(
                response.result.message.contains("- disallow-latest-tag/"),
                "{image}"
            );
        }
    }
    Ok(())
}

#[test]
fn all_policies_enforced_together_still_admit_plain_good_pods() -> Result<()> {
    // The baseline fixtures whose good pods break no other policy: with the
    // defaults of a real install (every policy enforcing) they pass as well.
    let root = conformance_dir().join("pod-security/baseline");
    require_dir(&root);
    let policies = load_policies(&repo_root().join("policies"), &[])?;
    let state = state_with(
        policies,
        ModeConfig::with_mode("aiops-system", Mode::Enforce),
    );
    let mut wrong = Vec::new();
    // Known cross-policy conflicts of the fixtures themselves:
    // disallow-proc-mount's good pods use the untagged image
    // `dummyimagename` (denied by disallow-latest-tag) and
    // disallow-host-process's good pods set hostNetwork (denied by
    // disallow-host-namespaces).
    for policy in BASELINE
        .iter()
        .filter(|p| !matches!(**p, "disallow-proc-mount" | "disallow-host-process"))
    {
        let fixtures = root.join(policy).join(".chainsaw-test");
        for file in ["pod-good.yaml", "podcontroller-good.yaml"] {
            wrong.extend(check_file(&state, policy, &fixtures.join(file), false)?);
        }
    }
    assert_no_wrong_verdicts(&wrong);
    Ok(())
}

#[test]
fn example_mutate_policy_adds_a_default_seccomp_profile_only_when_missing() -> Result<()> {
    let root = repo_root().join("policies");
    let example = root.join("examples/add-default-seccomp.yaml");
    // Off by default: the baseline set alone never patches.
    let baseline = load_policies(&root, &[])?;
    let with_example = load_policies(&root, &[example])?;
    let state_for = |policies| state_with(policies, ModeConfig::defaults("aiops-system"));
    let (baseline, with_example) = (state_for(baseline), state_for(with_example));

    let bare = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "app", "image": "app:1.0"}]}
    });
    let chosen = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chosen"},
        "spec": {
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
            "containers": [{"name": "app", "image": "app:1.0"}]
        }
    });
    let patch_of = |state: &AppState, object: &Value| -> Result<Option<Value>> {
        let body = review_of(object).to_string();
        let request = parse_review(body.as_bytes())?;
        let response =
            admit::mutate(state, &request, &mut state.metrics.stage_clock(false)).response;
        assert!(response.allowed);
        Ok(match response.patch {
            Some(bytes) => Some(serde_json::from_slice(&bytes)?),
            None => None,
        })
    };

    assert_eq!(patch_of(&baseline, &bare)?, None);
    let patch = patch_of(&with_example, &bare)?.context("expected a patch")?;
    let mut patched = bare.clone();
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    json_patch::patch(&mut patched, &patch)?;
    assert_eq!(
        patched["spec"]["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{patched}"
    );
    // A profile the pod chose itself is left alone.
    let untouched = patch_of(&with_example, &chosen)?;
    assert!(
        untouched
            .as_ref()
            .is_none_or(|p| p.as_array().is_some_and(Vec::is_empty)),
        "{untouched:?}"
    );
    Ok(())
}
