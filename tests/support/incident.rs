//! The incident the model tests reason about, without a cluster: the
//! Deployment `web` with a misspelled image repository (`ngnix:1.25.5`)
//! that no earlier revision ran, so the rules have no fix of their own.
use aiops_operator::policy::PolicySet;
use aiops_operator::remediation::crd::{ContainerTemplate, Evidence, Finding, WorkloadRef};

use super::sandbox::repo_root;

/// The shipped baseline policies (`policies/`).
pub fn baseline_policies() -> PolicySet {
    PolicySet::load_dir(&repo_root().join("policies")).expect("baseline policies load")
}

/// The broken workload.
pub fn web_workload() -> WorkloadRef {
    WorkloadRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        uid: "uid-web".into(),
    }
}

/// Its evidence in `namespace`: one container `app` running the
/// misspelled image, no history, no logs.
pub fn pull_evidence(namespace: &str) -> Evidence {
    Evidence {
        workload: web_workload(),
        namespace: namespace.into(),
        containers: vec![ContainerTemplate {
            name: "app".into(),
            image: "ngnix:1.25.5".into(),
            ..ContainerTemplate::default()
        }],
        ..Evidence::default()
    }
}

/// What the detector found: two pods of `app` cannot pull the image.
pub fn pull_findings() -> Vec<Finding> {
    vec![Finding {
        container: "app".into(),
        reason: "ImagePullBackOff".into(),
        message: "Back-off pulling image \"ngnix:1.25.5\"".into(),
        pods: 2,
        image: Some("ngnix:1.25.5".into()),
        ..Finding::default()
    }]
}

/// The same container crash-looping instead: a finding whose change
/// classes send every part of the evidence to the model (env names,
/// command and args, the log), for tests of what reaches it.
pub fn crash_findings() -> Vec<Finding> {
    vec![Finding {
        container: "app".into(),
        reason: "CrashLoopBackOff".into(),
        message: "back-off restarting failed container app".into(),
        pods: 2,
        exit_code: Some(1),
        ..Finding::default()
    }]
}

/// A model's answer that fits the schema of an incident the model
/// explains (a crash, [`crash_findings`]): no change, and a cause.
pub fn no_change_answer() -> String {
    serde_json::json!({
        "changes": [],
        "confidence": 0.3,
        "rootCause": "The container exits at start; the log shows why."
    })
    .to_string()
}
