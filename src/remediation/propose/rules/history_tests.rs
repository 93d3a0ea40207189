//! Unit tests of the rules that go back to an earlier revision of a
//! StatefulSet, DaemonSet or CronJob, and of secret-like env values restored
//! by reference, including the "no safe fix" cases.
use super::tests::{deployment, finding, patch_containers, revision_template};
use super::*;
use crate::remediation::crd::Revision;
use crate::remediation::fixtures::evidence;

fn statefulset(containers: Value) -> Value {
    let mut live = deployment(containers);
    live["kind"] = json!("StatefulSet");
    live
}

/// A StatefulSet's revision: a ControllerRevision, digested.
fn controller_revision(number: i64, container: Value, healthy: bool) -> RevisionTemplate {
    RevisionTemplate {
        source: format!("db-{number}abc"),
        source_kind: "ControllerRevision".into(),
        ..revision_template(number, container, healthy)
    }
}

const PLANTED_PASSWORD: &str = "PLANTED-pg-Passw0rd";

#[test]
fn a_removed_secret_env_var_is_restored_by_reference_never_by_value() {
    let live = statefulset(json!([{"name": "db", "image": "postgres:16.4",
        "env": [{"name": "POSTGRES_USER", "value": "app"}]}]));
    let history = vec![controller_revision(
        1,
        json!({"name": "db", "image": "postgres:16.4", "env": [
            {"name": "POSTGRES_USER", "value": "app"},
            {"name": "POSTGRES_PASSWORD", "value": PLANTED_PASSWORD}]}),
        true,
    )];
    let mut crash = finding("db", "CrashLoopBackOff");
    crash.exit_code = Some(1);
    let proposal = propose_from_rules(
        &live,
        &evidence("StatefulSet"),
        &[crash],
        &history,
        &RuleConfig::default(),
    );
    assert_eq!(proposal.actions.len(), 1, "{}", proposal.summary);
    let action = &proposal.actions[0];
    assert_eq!(
        patch_containers(&proposal),
        &json!([{"name": "db", "env": [{"name": "POSTGRES_USER", "value": "app"}]}]),
        "the plain variable is copied; the password is not"
    );
    let reference = &action.env_from_revision;
    assert_eq!(reference.len(), 1);
    assert_eq!(reference[0].name, "POSTGRES_PASSWORD");
    assert_eq!(reference[0].container, "db");
    assert_eq!(reference[0].revision.revision, 1);
    assert_eq!(reference[0].revision.kind, "ControllerRevision");
    assert_eq!(reference[0].revision.name, "db-1abc");
    assert_eq!(reference[0].revision.uid, "db-1-uid");
    assert_eq!(reference[0].revision.digest, "hmac-sha256:db-1");
    assert!(
        proposal
            .summary
            .contains("restore env POSTGRES_PASSWORD of container db from revision 1"),
        "{}",
        proposal.summary
    );
    assert!(
        proposal
            .risks
            .iter()
            .any(|r| r.contains("restored by reference")),
        "{:?}",
        proposal.risks
    );
    let whole = serde_json::to_string(&proposal).unwrap();
    assert!(!whole.contains(PLANTED_PASSWORD), "{whole}");

    // The approval hash covers the reference and the revision's digest.
    let mut other_digest = proposal.clone();
    other_digest.actions[0].env_from_revision[0].revision.digest = "hmac-sha256:other".into();
    assert_ne!(other_digest.content_hash(), proposal.hash);
    let mut other_revision = proposal.clone();
    other_revision.actions[0].env_from_revision[0].revision.uid = "another-uid".into();
    assert_ne!(other_revision.content_hash(), proposal.hash);
    let mut no_reference = proposal.clone();
    no_reference.actions[0].env_from_revision.clear();
    assert_ne!(no_reference.content_hash(), proposal.hash);
}

#[test]
fn an_unchanged_secret_is_left_out_and_a_changed_one_is_referenced() {
    // The bad rollout changed the user and the token; the password stayed.
    let live = deployment(json!([{"name": "db", "image": "app:1", "env": [
        {"name": "DB_USER", "value": "wrong"},
        {"name": "DB_PASSWORD", "value": PLANTED_PASSWORD},
        {"name": "API_TOKEN", "value": "PLANTED-new-token"}]}]));
    let history = vec![revision_template(
        4,
        json!({"name": "db", "image": "app:1", "env": [
            {"name": "DB_USER", "value": "app"},
            {"name": "DB_PASSWORD", "value": PLANTED_PASSWORD},
            {"name": "API_TOKEN", "value": "PLANTED-old-token"}]}),
        true,
    )];
    let proposal = propose_from_rules(
        &live,
        &evidence("Deployment"),
        &[finding("db", "CrashLoopBackOff")],
        &history,
        &RuleConfig::default(),
    );
    assert_eq!(
        patch_containers(&proposal),
        &json!([{"name": "db", "env": [{"name": "DB_USER", "value": "app"}]}])
    );
    let names: Vec<&str> = proposal.actions[0]
        .env_from_revision
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["API_TOKEN"],
        "the unchanged password is not touched"
    );
    assert!(
        !serde_json::to_string(&proposal)
            .unwrap()
            .contains("PLANTED")
    );
}

#[test]
fn a_secret_without_a_digest_to_pin_it_needs_a_human() {
    let live = statefulset(json!([{"name": "db", "image": "postgres:16.4"}]));
    let mut undigested = controller_revision(
        1,
        json!({"name": "db", "image": "postgres:16.4",
               "env": [{"name": "POSTGRES_PASSWORD", "value": PLANTED_PASSWORD}]}),
        true,
    );
    undigested.digest.clear();
    let proposal = propose_from_rules(
        &live,
        &evidence("StatefulSet"),
        &[finding("db", "CrashLoopBackOff")],
        &[undigested],
        &RuleConfig::default(),
    );
    assert!(proposal.actions.is_empty());
    assert!(
        proposal.summary.contains("only be restored by reference"),
        "{}",
        proposal.summary
    );
    assert!(
        !serde_json::to_string(&proposal)
            .unwrap()
            .contains("PLANTED")
    );
}

#[test]
fn revisions_that_do_not_explain_the_crash_leave_it_to_a_human() {
    let live = statefulset(json!([{"name": "db", "image": "postgres:16.4"}]));
    // The newest healthy revision has what the current one has; an older
    // one had the password, but the crash did not start with its removal.
    let history = vec![
        controller_revision(3, json!({"name": "db", "image": "postgres:16.4"}), true),
        controller_revision(
            1,
            json!({"name": "db", "image": "postgres:16.4",
                   "env": [{"name": "POSTGRES_PASSWORD", "value": PLANTED_PASSWORD}]}),
            true,
        ),
    ];
    let proposal = propose_from_rules(
        &live,
        &evidence("StatefulSet"),
        &[finding("db", "CrashLoopBackOff")],
        &history,
        &RuleConfig::default(),
    );
    assert!(proposal.actions.is_empty());
    assert!(
        proposal
            .summary
            .contains("revision 3 (the last healthy one) has the same"),
        "{}",
        proposal.summary
    );
    // And no revision seen healthy at all.
    let unseen: Vec<RevisionTemplate> = history
        .into_iter()
        .map(|r| RevisionTemplate {
            healthy: false,
            ..r
        })
        .collect();
    let proposal = propose_from_rules(
        &live,
        &evidence("StatefulSet"),
        &[finding("db", "CrashLoopBackOff")],
        &unseen,
        &RuleConfig::default(),
    );
    assert!(proposal.actions.is_empty());
    assert!(
        proposal
            .summary
            .contains("no earlier revision is known to have run healthily"),
        "{}",
        proposal.summary
    );
}

#[test]
fn a_daemonset_reverts_from_its_controller_revision_too() {
    let mut live = deployment(json!([{"name": "agent", "image": "agent:2",
        "args": ["--broken"]}]));
    live["kind"] = json!("DaemonSet");
    let history = vec![RevisionTemplate {
        changed: vec!["containers[agent].args".into()],
        ..controller_revision(
            5,
            json!({"name": "agent", "image": "agent:2", "args": ["--ok"],
                   "env": [{"name": "AGENT_KEY", "value": PLANTED_PASSWORD}]}),
            true,
        )
    }];
    let proposal = propose_from_rules(
        &live,
        &evidence("DaemonSet"),
        &[finding("agent", "CrashLoopBackOff")],
        &history,
        &RuleConfig::default(),
    );
    let patch = &proposal.actions[0].patch;
    assert_eq!(patch["kind"], "DaemonSet");
    assert_eq!(
        patch.pointer("/spec/template/spec/containers/0/args"),
        Some(&json!(["--ok"]))
    );
    assert_eq!(proposal.actions[0].env_from_revision[0].name, "AGENT_KEY");
    assert!(
        !serde_json::to_string(&proposal)
            .unwrap()
            .contains("PLANTED")
    );
}

fn cronjob(image: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "web", "namespace": "shop", "uid": "web-uid"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "report", "image": image}]}}}}}})
}

fn job_revision(created: i64, name: &str, image: &str, succeeded: bool) -> Revision {
    Revision {
        revision: created,
        source: name.into(),
        images: BTreeMap::from([("report".to_string(), image.to_string())]),
        changed: vec!["containers[report].image".into()],
        healthy: succeeded,
    }
}

#[test]
fn a_cronjob_image_comes_back_from_the_newest_job_that_succeeded() {
    let live = cronjob("busybox:1.36.1-typo");
    let mut ev = evidence("CronJob");
    ev.history = vec![
        job_revision(1_700_000_300, "web-28333338", "busybox:1.36.0", false),
        job_revision(1_700_000_200, "web-28333336", "busybox:1.36.1", true),
        job_revision(1_700_000_100, "web-28333335", "busybox:1.35.0", true),
    ];
    let mut pull = finding("report", "ImagePullBackOff");
    pull.image = Some("busybox:1.36.1-typo".into());
    let proposal = propose_from_rules(&live, &ev, &[pull], &[], &RuleConfig::default());
    assert_eq!(
        proposal.actions[0].patch,
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
                   {"name": "report", "image": "busybox:1.36.1"}]}}}}}}),
        "the newest Job that succeeded, not the failed one or an older one"
    );
    assert!(
        proposal
            .summary
            .contains("restore image busybox:1.36.1 (from Job web-28333336, the newest that succeeded with it)"),
        "{}",
        proposal.summary
    );
    assert!(
        proposal.root_cause.contains("Job web-28333336"),
        "{}",
        proposal.root_cause
    );
    assert!(
        proposal
            .risks
            .iter()
            .any(|r| r.contains("next scheduled Job")),
        "{:?}",
        proposal.risks
    );
}

#[test]
fn a_cronjob_without_a_succeeded_job_or_with_leftover_jobs_needs_a_human() {
    let live = cronjob("busybox:1.36.1-typo");
    let mut ev = evidence("CronJob");
    ev.history = vec![job_revision(
        1_700_000_300,
        "web-28333338",
        "busybox:1.36.0",
        false,
    )];
    let proposal = propose_from_rules(
        &live,
        &ev,
        &[finding("report", "ImagePullBackOff")],
        &[],
        &RuleConfig::default(),
    );
    assert!(proposal.actions.is_empty());
    assert!(
        proposal
            .summary
            .contains("no earlier Job of the CronJob succeeded with another image"),
        "{}",
        proposal.summary
    );

    // The template is already fixed; the failing pods belong to a Job
    // started before: restoring an image would change the wrong thing.
    let fixed = cronjob("busybox:1.36.1");
    ev.history = vec![job_revision(
        1_700_000_100,
        "web-28333335",
        "busybox:1.35.0",
        true,
    )];
    let mut leftover = finding("report", "ImagePullBackOff");
    leftover.image = Some("busybox:1.36.1-typo".into());
    let proposal = propose_from_rules(&fixed, &ev, &[leftover], &[], &RuleConfig::default());
    assert!(proposal.actions.is_empty());
    assert!(
        proposal.summary.contains("delete those Jobs"),
        "{}",
        proposal.summary
    );
}
