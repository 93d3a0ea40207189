//! Unit tests of env values restored by reference: filling patches and
//! scrubbing what leaves a step. Reading revisions from the cluster (and
//! failing closed when one is gone, replaced or changed) is tested live, in
//! `tests/remediation_history.rs`.
use super::*;
use crate::remediation::crd::RevisionRef;
use crate::remediation::fixtures::workload;

const SECRET: &str = "PLANTED-pg-Passw0rd";

fn key() -> ApprovalKey {
    ApprovalKey::new(b"unit-test-key".to_vec())
}

/// The template revision 1 of StatefulSet shop/web holds, normalised the
/// way the evidence code normalises it.
fn revision_one() -> Value {
    let template: k8s_openapi::api::core::v1::PodTemplateSpec = serde_json::from_value(json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "db", "image": "postgres:16.4", "env": [
            {"name": "POSTGRES_USER", "value": "app"},
            {"name": "POSTGRES_PASSWORD", "value": SECRET},
            {"name": "PGDATA", "value": "/data"}]}]}
    }))
    .unwrap();
    serde_json::to_value(template).unwrap()
}

fn reference(name: &str) -> EnvFromRevision {
    EnvFromRevision {
        container: "db".into(),
        init: false,
        name: name.into(),
        revision: RevisionRef {
            revision: 1,
            api_version: "apps/v1".into(),
            kind: "ControllerRevision".into(),
            name: "web-1abc".into(),
            uid: "cr-uid".into(),
            digest: key().revision_digest(&revision_one()),
        },
    }
}

fn sts_patch(env: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"template": {"spec": {"containers": [{"name": "db", "env": env}]}}}})
}

fn action(env: Value, references: Vec<EnvFromRevision>) -> Action {
    Action {
        target: workload("StatefulSet"),
        namespace: "shop".into(),
        patch: sts_patch(env),
        env_from_revision: references,
    }
}

#[test]
fn a_referenced_variable_is_filled_in_where_its_revision_lists_it() {
    let templates = BTreeMap::from([("cr-uid".to_string(), revision_one())]);
    let mut secrets = Secrets::default();
    let patch = fill_env(
        &sts_patch(json!([{"name": "POSTGRES_USER", "value": "app"}, {"name": "PGDATA", "value": "/data"}])),
        "StatefulSet",
        &[reference("POSTGRES_PASSWORD")],
        &templates,
        &mut secrets,
    )
    .unwrap();
    assert_eq!(
        patch.pointer("/spec/template/spec/containers/0/env"),
        Some(&json!([
            {"name": "POSTGRES_USER", "value": "app"},
            {"name": "POSTGRES_PASSWORD", "value": SECRET},
            {"name": "PGDATA", "value": "/data"}
        ])),
        "in the revision's order"
    );
    assert_eq!(
        secrets.scrub(&format!("x {SECRET} y")),
        format!("x {MASK} y")
    );
    assert!(!format!("{secrets:?}").contains(SECRET));

    // A patch without the container, or without any env list, gets them.
    let mut secrets = Secrets::default();
    let bare = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "web"}});
    let patch = fill_env(
        &bare,
        "CronJob",
        &[reference("POSTGRES_PASSWORD")],
        &templates,
        &mut secrets,
    )
    .unwrap();
    assert_eq!(
        patch.pointer("/spec/jobTemplate/spec/template/spec/containers"),
        Some(&json!([{"name": "db", "env": [{"name": "POSTGRES_PASSWORD", "value": SECRET}]}]))
    );
}

#[test]
fn a_variable_its_revision_does_not_have_fails_without_naming_values() {
    let templates = BTreeMap::from([("cr-uid".to_string(), revision_one())]);
    let error = fill_env(
        &sts_patch(json!([])),
        "StatefulSet",
        &[reference("API_TOKEN")],
        &templates,
        &mut Secrets::default(),
    )
    .expect_err("not in the revision");
    assert!(!error.is_transient());
    assert_eq!(
        error.to_string(),
        "env API_TOKEN of container db is not in ControllerRevision web-1abc (revision 1)"
    );
}

#[test]
fn the_diff_shows_where_a_referenced_value_comes_from_never_the_value() {
    let mut secrets = Secrets::default();
    secrets.add(SECRET);
    let actions = vec![action(json!([]), vec![reference("POSTGRES_PASSWORD")])];
    let mut diff = vec![
        FieldChange {
            path: "spec.template.spec.containers[db].env[POSTGRES_PASSWORD].value".into(),
            from: None,
            to: Some(SECRET.into()),
        },
        FieldChange {
            path: "spec.template.spec.containers[db].env[OTHER].value".into(),
            from: Some(format!("prefix-{SECRET}")),
            to: Some("plain".into()),
        },
    ];
    secrets.scrub_diff("StatefulSet", &actions, &mut diff);
    assert_eq!(diff[0].from, None);
    assert_eq!(
        diff[0].to.as_deref(),
        Some("[REDACTED] (from revision 1, ControllerRevision web-1abc)")
    );
    assert_eq!(diff[1].from.as_deref(), Some("prefix-[REDACTED]"));
    assert_eq!(diff[1].to.as_deref(), Some("plain"));
    let mut verdict = GuardrailVerdict {
        allowed: false,
        violations: vec![format!("policy p/r: value {SECRET} is not allowed")],
    };
    secrets.scrub_verdict(&mut verdict);
    assert!(!verdict.violations[0].contains(SECRET));
}

#[test]
fn any_secret_like_env_value_in_a_diff_is_masked() {
    // A plain revert of DATABASE_URL replaces a literal that carries a
    // password: the diff shows neither that value nor any other secret.
    let mut diff = vec![
        FieldChange {
            path: "spec.template.spec.containers[app].env[DATABASE_URL].value".into(),
            from: Some("postgres://app:PLANTED-pw@db/x".into()),
            to: Some("postgres://db/x".into()),
        },
        FieldChange {
            path: "spec.template.spec.containers[app].env[API_TOKEN].value".into(),
            from: None,
            to: Some("PLANTED-token".into()),
        },
        FieldChange {
            path: "spec.template.spec.containers[app].env[LOG_LEVEL].value".into(),
            from: Some("info".into()),
            to: Some("debug".into()),
        },
    ];
    Secrets::default().scrub_diff("Deployment", &[], &mut diff);
    assert_eq!(diff[0].from.as_deref(), Some(MASK));
    assert_eq!(diff[0].to.as_deref(), Some("postgres://db/x"));
    assert_eq!(diff[1].to.as_deref(), Some(MASK));
    assert_eq!(diff[2].from.as_deref(), Some("info"));
    assert_eq!(diff[2].to.as_deref(), Some("debug"));
}

#[test]
fn a_restore_patch_gives_up_secret_like_literals_to_be_kept_by_reference() {
    let mut restore = sts_patch(json!([
        {"name": "POSTGRES_USER", "value": "app"},
        {"name": "DATABASE_URL", "value": "postgres://app:PLANTED-pw@db/x"},
        {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
    ]));
    let taken = take_secret_env(&mut restore, "StatefulSet");
    assert_eq!(
        taken,
        vec![(false, "db".to_string(), "DATABASE_URL".to_string())]
    );
    assert_eq!(
        restore.pointer("/spec/template/spec/containers/0/env"),
        Some(&json!([
            {"name": "POSTGRES_USER", "value": "app"},
            {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
        ]))
    );
}
