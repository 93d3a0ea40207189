//! Live repairs from a workload's own history in the sandbox (real
//! controllers, kwok nodes), end to end through a local operator:
//!
//! - a StatefulSet that ran healthy loses a literal `POSTGRES_PASSWORD` in
//!   a rollout; the operator proposes to restore it *by reference* to the
//!   ControllerRevision that had it, the value appears nowhere in the
//!   Remediation, its Events or the operator's log, and after approval the
//!   StatefulSet has it back and runs;
//! - a CronJob whose job image was mistyped after a Job succeeded gets the
//!   image of that Job back, verified by its next scheduled run;
//! - a reference whose revision is gone, replaced or changed fails closed
//!   (read directly against the API server, as the apply reads it).
mod support;

use std::sync::OnceLock;
use std::time::Duration;

use aiops_operator::remediation::approval::ApprovalKey;
use aiops_operator::remediation::crd::{Action, EnvFromRevision, Phase, RevisionRef, WorkloadRef};
use aiops_operator::remediation::evidence::fetch_workload;
use aiops_operator::remediation::revision_refs::{resolve_actions, resolve_restore, snapshot_env};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{
    OperatorProcess, Sandbox, create, remediations, wait_remediation, wait_statefulset_rolled_out,
    wait_until,
};

const STEP: Duration = Duration::from_secs(120);
/// A CronJob runs at most once a minute: a step waits for the next run.
const CRON_STEP: Duration = Duration::from_secs(150);

/// One operator for this test binary, started on first use.
fn operator() -> &'static OperatorProcess {
    static OPERATOR: OnceLock<OperatorProcess> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        support::stop_all_operators();
        support::start_operator(
            "op-history",
            &[(
                "AIOPS_OPERATOR_ARGS",
                "--verify-timeout-seconds 90 --resolve-after-seconds 15",
            )],
        )
    })
}

/// A value no other test plants, so finding it anywhere is this test's leak.
fn planted_secret() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("PLANTED-pg-{nanos:x}-Zq9")
}

fn statefulset(secret: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db",
                 "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "postgres", "image": "postgres:16.4",
                                  "env": [{"name": "POSTGRES_USER", "value": "app"},
                                          {"name": "POSTGRES_PASSWORD", "value": secret}]}]}}}})
}

/// Creates the StatefulSet, lets it run healthy past the operator's
/// "seen Ready" threshold, then rolls out the template without the password.
async fn healthy_then_password_removed(client: &Client, ns: &str, secret: &str) {
    create::<StatefulSet>(client, ns, statefulset(secret)).await;
    wait_statefulset_rolled_out(client, ns, "db").await;
    // A revision counts as healthy once its pod was Ready this long
    // (`evidence::MIN_READY`, 10 s), with a margin.
    tokio::time::sleep(Duration::from_secs(13)).await;
    let drop_password = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "postgres", "env": [{"name": "POSTGRES_PASSWORD", "$patch": "delete"}]}]}}}});
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Strategic(&drop_password),
        )
        .await
        .expect("roll out the template without the password");
}

fn env_value(sts: &StatefulSet, name: &str) -> Option<String> {
    sts.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

async fn events_text(client: &Client, ns: &str) -> String {
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list events");
    serde_json::to_string(&events.items).expect("events serialize")
}

#[tokio::test]
async fn a_statefulsets_removed_password_comes_back_by_reference_and_is_never_copied() {
    let sandbox = Sandbox::connect().await;
    let op = operator();
    let ns = sandbox.e2e_namespace("hist-sts").await;
    let client = &sandbox.client;
    let secret = planted_secret();
    healthy_then_password_removed(client, &ns.name, &secret).await;

    let proposed = wait_remediation(client, &ns.name, &[Phase::Proposed], STEP).await;
    let status = proposed.status.as_ref().expect("status");
    assert_eq!(status.reason, "CrashLoopBackOff", "{status:?}");
    let proposal = status.proposal.as_ref().expect("a proposal");
    assert!(
        proposal
            .summary
            .contains("restore env POSTGRES_PASSWORD of container postgres from revision 1"),
        "{}\noperator log:\n{}",
        proposal.summary,
        op.log_tail(40)
    );
    let references = &proposal.actions[0].env_from_revision;
    assert_eq!(references.len(), 1, "{references:?}");
    assert_eq!(references[0].revision.kind, "ControllerRevision");
    assert_eq!(references[0].revision.revision, 1);
    assert!(status.guardrail.as_ref().is_some_and(|g| g.allowed));
    let dry = status.dry_run.as_ref().expect("a dry run");
    assert_eq!(dry.result, "Succeeded", "{dry:?}");
    assert!(
        dry.diff.iter().any(|c| c
            .path
            .contains("containers[postgres].env[POSTGRES_PASSWORD]")),
        "the dry run saw the value come back: {:?}",
        dry.diff
    );
    let shown = serde_json::to_string(&proposed).expect("serializes");
    assert!(
        !shown.contains(&secret),
        "the proposed Remediation leaks: {shown}"
    );

    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "kubectl patch approves: {out}");
    wait_remediation(client, &ns.name, &[Phase::Applied, Phase::Verified], STEP).await;
    // As the proposal's risk says: a StatefulSet does not replace a pod
    // stuck on the broken revision; deleting it re-creates it from the fix.
    let _ = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .delete("db-0", &Default::default())
        .await;
    let verified = wait_remediation(client, &ns.name, &[Phase::Verified], STEP).await;
    let sts = wait_statefulset_rolled_out(client, &ns.name, "db").await;
    assert_eq!(
        env_value(&sts, "POSTGRES_PASSWORD").as_deref(),
        Some(secret.as_str()),
        "the value is back in the StatefulSet"
    );
    assert_eq!(remediations(client, &ns.name).await.len(), 1);

    // Nowhere else: not in the Remediation (status, snapshot), not in an
    // Event, not in the operator's log.
    let record = serde_json::to_string(&verified).expect("serializes");
    assert!(!record.contains(&secret), "the Remediation leaks: {record}");
    let snapshot = verified.status.as_ref().and_then(|s| s.snapshot.as_ref());
    assert!(snapshot.is_some(), "a snapshot was taken");
    let events = events_text(client, &ns.name).await;
    assert!(!events.contains(&secret), "an Event leaks: {events}");
    assert!(!op.log().contains(&secret), "the operator's log leaks");
}

fn cronjob() -> Value {
    json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report"},
        "spec": {"schedule": "* * * * *", "successfulJobsHistoryLimit": 3,
                 "failedJobsHistoryLimit": 1,
                 "jobTemplate": {"spec": {"backoffLimit": 0, "template": {
                     "metadata": {"labels": {"app": "report"}},
                     "spec": {"restartPolicy": "Never",
                              "containers": [{"name": "report", "image": "busybox:1.36.1"}]}}}}}})
}

fn job_image(cron: &CronJob) -> Option<String> {
    cron.spec
        .as_ref()?
        .job_template
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

#[tokio::test]
async fn a_cronjobs_mistyped_image_comes_back_from_the_job_that_succeeded() {
    let sandbox = Sandbox::connect().await;
    let op = operator();
    let ns = sandbox.e2e_namespace("hist-cron").await;
    let client = &sandbox.client;
    let cron = create::<CronJob>(client, &ns.name, cronjob()).await;
    let cron_uid = cron.uid().expect("uid");
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let succeeded = wait_until(CRON_STEP, "a scheduled Job that succeeded", || {
        succeeded_job(&jobs, |job| {
            job.owner_references().iter().any(|o| o.uid == cron_uid)
        })
    })
    .await;

    let typo = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
        {"name": "report", "image": "busybox:1.36.1-typo"}]}}}}}});
    let crons: Api<CronJob> = Api::namespaced(client.clone(), &ns.name);
    crons
        .patch("report", &PatchParams::default(), &Patch::Strategic(&typo))
        .await
        .expect("mistype the image");

    let proposed = wait_remediation(client, &ns.name, &[Phase::Proposed], CRON_STEP).await;
    assert_eq!(proposed.spec.target.kind, "CronJob");
    let status = proposed.status.as_ref().expect("status");
    let proposal = status.proposal.as_ref().expect("a proposal");
    assert!(
        proposal.summary.contains(&format!(
            "restore image busybox:1.36.1 (from Job {}",
            succeeded.name_any()
        )),
        "{}\noperator log:\n{}",
        proposal.summary,
        op.log_tail(40)
    );
    assert_eq!(
        proposal.actions[0]
            .patch
            .pointer("/spec/jobTemplate/spec/template/spec/containers/0/image"),
        Some(&json!("busybox:1.36.1"))
    );
    assert_eq!(
        status.dry_run.as_ref().map(|d| d.result.as_str()),
        Some("Succeeded")
    );
    let (ok, out) = sandbox.approve(&ns.name, &proposed.name_any());
    assert!(ok, "kubectl patch approves: {out}");

    // Verified by the next scheduled run, which uses the fixed template.
    let verified = wait_remediation(
        client,
        &ns.name,
        &[Phase::Verified, Phase::RolledBack, Phase::Failed],
        CRON_STEP,
    )
    .await;
    let status = verified.status.expect("status");
    assert_eq!(status.phase, Phase::Verified, "{}", status.message);
    assert!(status.message.contains("Job run"), "{}", status.message);
    let cron = crons.get("report").await.expect("the cronjob");
    assert_eq!(job_image(&cron).as_deref(), Some("busybox:1.36.1"));
    let applied_at = status.applied_at.expect("applied").0;
    // Verification accepts a Job of the fixed template whose pod runs
    // Ready; that Job then completes.
    wait_until(
        CRON_STEP,
        "a Job created after the fix that succeeded",
        || {
            succeeded_job(&jobs, |job| {
                job.creation_timestamp()
                    .is_some_and(|created| created.0 >= applied_at)
            })
        },
    )
    .await;
}

/// The first Job that `keep` selects and that succeeded, if any yet.
async fn succeeded_job(jobs: &Api<Job>, keep: impl Fn(&Job) -> bool) -> Option<Job> {
    jobs.list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find(|job| keep(job) && job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0)
}

/// The reference an apply would follow to revision 1 of StatefulSet `db`.
async fn reference_to_revision_one(
    client: &Client,
    ns: &str,
    sts: &StatefulSet,
    key: &ApprovalKey,
) -> (ControllerRevision, EnvFromRevision) {
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let sts_uid = sts.uid().expect("uid");
    let first = revisions
        .list(&ListParams::default())
        .await
        .expect("list revisions")
        .items
        .into_iter()
        .find(|cr| cr.revision == 1 && cr.owner_references().iter().any(|o| o.uid == sts_uid))
        .expect("revision 1");
    // The template as the evidence code normalises it, digested.
    let mut template = first.data.as_ref().expect("data").0["spec"]["template"].clone();
    template.as_object_mut().expect("object").remove("$patch");
    let mut template: k8s_openapi::api::core::v1::PodTemplateSpec =
        serde_json::from_value(template).expect("a pod template");
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove("controller-revision-hash");
    }
    let digest = key.revision_digest(&serde_json::to_value(template).expect("json"));
    let reference = EnvFromRevision {
        container: "postgres".into(),
        init: false,
        name: "POSTGRES_PASSWORD".into(),
        revision: RevisionRef {
            revision: 1,
            api_version: "apps/v1".into(),
            kind: "ControllerRevision".into(),
            name: first.name_any(),
            uid: first.uid().expect("uid"),
            digest,
        },
    };
    (first, reference)
}

#[tokio::test]
async fn a_reference_whose_revision_is_gone_replaced_or_changed_fails_closed() {
    let sandbox = Sandbox::connect().await;
    let ns = sandbox.namespace("hist-ref").await;
    let client = &sandbox.client;
    let secret = planted_secret();
    let sts = create::<StatefulSet>(client, &ns.name, statefulset(&secret)).await;
    wait_statefulset_rolled_out(client, &ns.name, "db").await;
    let key = ApprovalKey::new(b"live-test-key".to_vec());
    let (first, reference) = reference_to_revision_one(client, &ns.name, &sts, &key).await;
    let target = WorkloadRef {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: "db".into(),
        uid: sts.uid().expect("uid"),
    };
    let action = |reference: EnvFromRevision| Action {
        target: target.clone(),
        namespace: ns.name.clone(),
        patch: json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                      "metadata": {"name": "db", "namespace": ns.name},
                      "spec": {"template": {"spec": {"containers": [{"name": "postgres", "env": []}]}}}}),
        env_from_revision: vec![reference],
    };

    // Intact: the value is read into the patch, and only there.
    let (resolved, _) = resolve_actions(
        client,
        &key,
        &ns.name,
        &target,
        &[action(reference.clone())],
    )
    .await
    .expect("an intact reference resolves");
    assert_eq!(
        resolved[0]
            .patch
            .pointer("/spec/template/spec/containers/0/env/0/value"),
        Some(&json!(secret))
    );

    // The rollback snapshot of a fix that replaces a literal value keeps
    // it by reference to the revision holding the current template, and
    // the rollback reads it back from there.
    let live = fetch_workload(client, &ns.name, &target)
        .await
        .expect("live workload");
    let mut restore = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns.name},
        "spec": {"template": {"spec": {"containers": [{"name": "postgres"}]}}}});
    let kept = snapshot_env(
        client,
        &key,
        &ns.name,
        &target,
        &live,
        &[action(reference.clone())],
        &mut restore,
    )
    .await
    .expect("the prior value is kept");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].revision.kind, "ControllerRevision");
    assert!(
        !serde_json::to_string(&(&kept, &restore))
            .unwrap()
            .contains(&secret)
    );
    let (restored, _) = resolve_restore(client, &key, &ns.name, &target, &restore, &kept)
        .await
        .expect("the rollback reads it back");
    assert_eq!(
        restored.pointer("/spec/template/spec/containers/0/env/0"),
        Some(&json!({"name": "POSTGRES_PASSWORD", "value": secret}))
    );

    // Another digest: the revision is not the one the proposal was made from.
    let mut changed = reference.clone();
    changed.revision.digest = key.revision_digest(&json!({"spec": {}}));
    let error = resolve_actions(client, &key, &ns.name, &target, &[action(changed)])
        .await
        .expect_err("changed");
    assert!(!error.is_transient());
    assert!(
        error.to_string().contains("changed since the proposal"),
        "{error}"
    );

    // Another uid: a namesake.
    let mut replaced = reference.clone();
    replaced.revision.uid = "not-the-same-object".into();
    let error = resolve_actions(client, &key, &ns.name, &target, &[action(replaced)])
        .await
        .expect_err("replaced");
    assert!(error.to_string().contains("was replaced"), "{error}");

    // Another workload's revision, even with the right uid and digest.
    let mut foreign_target = target.clone();
    foreign_target.uid = "another-workload".into();
    let error = resolve_actions(
        client,
        &key,
        &ns.name,
        &foreign_target,
        &[action(reference.clone())],
    )
    .await
    .expect_err("not this workload's");
    assert!(
        error
            .to_string()
            .contains("not a revision of this workload"),
        "{error}"
    );

    // Gone: deleted (or dropped past revisionHistoryLimit). Revision 1 is
    // first made a past one, so the controller does not make it again.
    let next = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "postgres", "env": [{"name": "LOG_LEVEL", "value": "debug"}]}]}}}});
    Api::<StatefulSet>::namespaced(client.clone(), &ns.name)
        .patch("db", &PatchParams::default(), &Patch::Strategic(&next))
        .await
        .expect("roll out revision 2");
    wait_statefulset_rolled_out(client, &ns.name, "db").await;
    Api::<ControllerRevision>::namespaced(client.clone(), &ns.name)
        .delete(&first.name_any(), &Default::default())
        .await
        .expect("delete revision 1");
    let error = resolve_actions(
        client,
        &key,
        &ns.name,
        &target,
        &[action(reference.clone())],
    )
    .await
    .expect_err("gone");
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains(
            "env POSTGRES_PASSWORD of container postgres cannot be restored from revision 1"
        ) && text.contains("no longer exists"),
        "{text}"
    );
    assert!(!text.contains(&secret), "{text}");
}
