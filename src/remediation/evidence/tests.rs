//! Unit tests of evidence gathering, across its sections.
use super::*;
use crate::remediation::fixtures;
use k8s_openapi::api::batch::v1::Job;
use serde_json::json;

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("pod fixture")
}

fn event(value: Value) -> Event {
    serde_json::from_value(value).expect("event fixture")
}

fn template(value: Value) -> PodTemplateSpec {
    serde_json::from_value(value).expect("template fixture")
}

#[test]
fn container_summary_has_env_names_but_no_values() {
    let spec: PodSpec = serde_json::from_value(json!({
        "initContainers": [{"name": "migrate", "image": "app:1.0", "command": ["migrate", "--password", "pw-123"]}],
        "containers": [{
            "name": "app", "image": "app:1.0",
            "command": ["/bin/app"],
            "args": ["--db=postgres://app:Sup3rS3cret@db:5432/x", "--port", "8080"],
            "env": [
                {"name": "API_TOKEN", "value": "sk-live-PLANTED123456789"},
                {"name": "DB_PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
            ],
            "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "creds"}, "prefix": "X_"}],
            "resources": {"requests": {"memory": "64Mi", "cpu": "100m"}, "limits": {"memory": "128Mi"}},
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
            "livenessProbe": {"exec": {"command": ["check", "--token", "abcdef123"]}, "initialDelaySeconds": 10}
        }]
    }))
    .unwrap();
    let summary = summarize_containers(&spec);
    assert_eq!(summary.len(), 2);
    assert!(summary[0].init);
    assert_eq!(
        summary[0].command,
        vec!["migrate", "--password", "[REDACTED]"]
    );
    let app = &summary[1];
    assert_eq!(
        app.env_names,
        vec![
            "API_TOKEN",
            "DB_PASS",
            "envFrom:configMap/settings",
            "envFrom:secret/creds (prefix X_)"
        ]
    );
    assert_eq!(app.requests.get("memory").map(String::as_str), Some("64Mi"));
    assert_eq!(app.limits.get("memory").map(String::as_str), Some("128Mi"));
    assert_eq!(app.ports, vec![8080]);
    assert_eq!(app.args[0], "--db=postgres://app:[REDACTED]@db:5432/x");
    assert!(
        app.probes.contains(
            &"readiness: httpGet :8080/healthz every 5s, timeout 1s, 3 failures".to_string()
        ),
        "{:?}",
        app.probes
    );
    assert!(
        app.probes
            .iter()
            .any(|p| p.starts_with("liveness: exec check --token [REDACTED] every 10s, after 10s")),
        "{:?}",
        app.probes
    );
    let text = serde_json::to_string(&summary).unwrap();
    for secret in ["PLANTED123456789", "Sup3rS3cret", "pw-123", "abcdef123"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

#[test]
fn statuses_describe_failing_containers_with_last_state() {
    let p = pod(json!({
        "metadata": {"name": "cache-1"},
        "status": {
            "initContainerStatuses": [{"name": "init", "image": "busybox:1.36.1", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
            "containerStatuses": [
                {"name": "redis", "image": "redis:7.2.5", "imageID": "", "ready": false, "restartCount": 4,
                 "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container"}},
                 "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-01-01T00:00:00Z"}}},
                {"name": "sidecar", "image": "busybox:1.36.1", "imageID": "", "ready": true, "restartCount": 0,
                 "state": {"running": {}}}
            ]}
    }));
    let observed = observed_containers(&[&p]);
    assert_eq!(observed.len(), 1, "{observed:?}");
    let redis = &observed[0];
    assert_eq!(redis.pod, "cache-1");
    assert_eq!(
        redis.state,
        "waiting: CrashLoopBackOff: back-off 1m20s restarting failed container"
    );
    assert_eq!(
        redis.last_state,
        "terminated: OOMKilled (exit 137) at 2026-01-01T00:00:00Z"
    );
    assert_eq!(redis.restart_count, 4);
}

#[test]
fn events_match_by_uid_not_by_name_and_are_deduplicated() {
    let uids = BTreeSet::from([
        "pod-a".to_string(),
        "pod-b".to_string(),
        "deploy".to_string(),
    ]);
    let events = vec![
        event(
            json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "web-7d9f8c6b5-aaaaa", "uid": "pod-a"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container app in pod web-7d9f8c6b5-aaaaa",
            "count": 3, "lastTimestamp": "2026-01-01T00:01:00Z"}),
        ),
        event(
            json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Pod", "name": "web-7d9f8c6b5-bbbbb", "uid": "pod-b"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container app in pod web-7d9f8c6b5-bbbbb",
            "count": 2, "lastTimestamp": "2026-01-01T00:02:00Z"}),
        ),
        // Same name as a failing pod, but an earlier pod's uid: not ours.
        event(
            json!({"metadata": {"name": "e3"}, "involvedObject": {"kind": "Pod", "name": "web-7d9f8c6b5-aaaaa", "uid": "old-pod"},
            "type": "Warning", "reason": "FailedMount", "message": "namesake", "lastTimestamp": "2026-01-01T00:03:00Z"}),
        ),
        event(
            json!({"metadata": {"name": "e4"}, "involvedObject": {"kind": "Deployment", "name": "web", "uid": "deploy"},
            "type": "Normal", "reason": "ScalingReplicaSet", "message": "Scaled up replica set web-7d9f8c6b5 to 2 with token=abc123",
            "eventTime": "2026-01-01T00:00:30.000000Z"}),
        ),
    ];
    let names = vec![
        "web-7d9f8c6b5-aaaaa".to_string(),
        "web-7d9f8c6b5-bbbbb".to_string(),
    ];
    let summaries = summarize_events(events, &uids, &names);
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(summaries.iter().all(|s| s.message != "namesake"));
    let backoff = &summaries[0];
    assert_eq!(backoff.reason, "BackOff");
    assert_eq!(backoff.count, 5, "merged counts");
    assert_eq!(
        backoff.object, "Pod/web-7d9f8c6b5-bbbbb",
        "newest occurrence kept"
    );
    assert_eq!(summaries[1].object, "Deployment/web");
    assert_eq!(
        summaries[1].message,
        "Scaled up replica set web-7d9f8c6b5 to 2 with token=[REDACTED]"
    );
}

#[test]
fn generated_pod_names_normalise_but_replica_set_names_do_not() {
    assert_eq!(
        normalize_message("Created pod: web-7d9f8c6b5-x2x7k", &[]),
        "Created pod: web-7d9f8c6b5-<pod>"
    );
    assert_eq!(
        normalize_message("Scaled up replica set web-7d9f8c6b5 to 3", &[]),
        "Scaled up replica set web-7d9f8c6b5 to 3"
    );
    assert_eq!(
        normalize_message(
            "store-0 failed in store-0_shop(0d6f3c8e-1c7e-4a7e-9d51-3f7a2b1c9e10)",
            &["store-0".to_string()]
        ),
        "<pod> failed in <pod>_shop(<uid>)"
    );
}

#[test]
fn events_are_capped_newest_first() {
    let uids = BTreeSet::from(["p".to_string()]);
    let events = (0..40)
        .map(|i| {
            event(json!({"metadata": {"name": format!("e{i}")}, "involvedObject": {"kind": "Pod", "name": "p", "uid": "p"},
                "type": "Warning", "reason": format!("R{i}"), "message": "m",
                "lastTimestamp": format!("2026-01-01T00:{i:02}:00Z")}))
        })
        .collect();
    let summaries = summarize_events(events, &uids, &[]);
    assert_eq!(summaries.len(), MAX_EVENTS);
    assert_eq!(summaries[0].reason, "R39");
    assert_eq!(summaries[MAX_EVENTS - 1].reason, "R25");
}

#[test]
fn crash_log_source_prefers_the_previous_instance() {
    let status = |value: Value| -> ContainerStatus { serde_json::from_value(value).unwrap() };
    let base =
        json!({"name": "c", "image": "i:1", "imageID": "", "ready": false, "restartCount": 1});
    let mut looping = base.clone();
    looping["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
    looping["lastState"] = json!({"terminated": {"exitCode": 1}});
    assert_eq!(crash_log_source(&status(looping)), Some(true));
    let mut job_failed = base.clone();
    job_failed["restartCount"] = json!(0);
    job_failed["state"] = json!({"terminated": {"exitCode": 2}});
    assert_eq!(crash_log_source(&status(job_failed)), Some(false));
    let mut pulling = base;
    pulling["restartCount"] = json!(0);
    pulling["state"] = json!({"waiting": {"reason": "ImagePullBackOff"}});
    assert_eq!(crash_log_source(&status(pulling)), None);
}

#[test]
fn log_lines_keep_the_tail_redacted() {
    let text: String = (0..80)
        .map(|i| format!("line {i}\n"))
        .chain([
            "\n".to_string(),
            "connecting password=hunter2\n".to_string(),
        ])
        .collect();
    let lines = log_lines(&text);
    assert_eq!(lines.len(), 50);
    assert_eq!(lines[0], "line 31");
    assert_eq!(lines[49], "connecting password=[REDACTED]");
}

#[test]
fn template_changes_name_fields_not_values() {
    let old = normalized_template(&template(json!({
        "metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
        "spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "old-secret"}]},
                                {"name": "gone", "image": "x:1"}]}
    })));
    let current = normalized_template(&template(json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "app:2", "env": [{"name": "A", "value": "new-secret"}],
                                 "args": ["--fast"]}],
                 "serviceAccountName": "web"}
    })));
    let changed = template_changes(&old, &current);
    assert_eq!(
        changed,
        vec![
            "containers[app].args",
            "containers[app].env",
            "containers[app].image",
            "containers[gone]",
            "serviceAccountName",
        ]
    );
    assert!(template_changes(&current, &current).is_empty());
}

#[test]
fn controller_revision_templates_and_health() {
    let cr: ControllerRevision = serde_json::from_value(json!({
        "metadata": {"name": "store-5d8f7c9b6"},
        "revision": 2,
        "data": {"spec": {"template": {"$patch": "replace",
            "metadata": {"labels": {"app": "store"}},
            "spec": {"containers": [{"name": "redis", "image": "redis:7.2.5"}]}}}}
    }))
    .unwrap();
    let current = normalized_template(&template(json!({
        "metadata": {"labels": {"app": "store"}},
        "spec": {"containers": [{"name": "redis", "image": "redis:7.4.0"}]}
    })));
    // DaemonSet pods carry only the hash; StatefulSet pods the full name.
    for serving in ["5d8f7c9b6", "store-5d8f7c9b6"] {
        let revision = controller_revision(
            &cr,
            &current,
            &BTreeSet::from([serving.to_string()]),
            &ReadyRevisions::default(),
        )
        .unwrap();
        assert!(revision.healthy);
        assert_eq!(revision.changed, vec!["containers[redis].image"]);
        assert_eq!(
            revision.summary().images.get("redis").map(String::as_str),
            Some("redis:7.2.5")
        );
    }
    let unseen =
        controller_revision(&cr, &current, &BTreeSet::new(), &ReadyRevisions::default()).unwrap();
    assert!(!unseen.healthy);
}

#[test]
fn replicaset_health_comes_from_ready_replicas() {
    let rs = |ready: i32| -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "annotations": {DEPLOYMENT_REVISION: "1"}},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25.5"}]}}},
            "status": {"replicas": ready, "readyReplicas": ready}
        }))
        .unwrap()
    };
    let current = normalized_template(&template(json!({
        "spec": {"containers": [{"name": "nginx", "image": "nginx:does-not-exist"}]}
    })));
    let serving = replicaset_revision(&rs(3), &current, &ReadyRevisions::default()).unwrap();
    assert_eq!(serving.revision, 1);
    assert!(serving.healthy);
    assert!(
        !replicaset_revision(&rs(0), &current, &ReadyRevisions::default())
            .unwrap()
            .healthy
    );
    let debug = format!("{serving:?}");
    assert!(
        !debug.contains("nginx:1.25.5"),
        "Debug leaves the template out: {debug}"
    );
}

#[test]
fn management_markers_and_tools() {
    let markers = management_markers(&json!({
        "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "shop", "app": "web",
                   "kustomize.toolkit.fluxcd.io/name": "apps"},
        "annotations": {"meta.helm.sh/release-name": "shop", "deployment.kubernetes.io/revision": "3",
                        "kubectl.kubernetes.io/last-applied-configuration": "{\"env\":\"secret\"}"}
    }));
    assert_eq!(
        markers.keys().map(String::as_str).collect::<Vec<_>>(),
        vec![
            "app.kubernetes.io/managed-by",
            "kustomize.toolkit.fluxcd.io/name",
            "meta.helm.sh/release-name"
        ],
        "instance only counts next to Argo CD; last-applied never included"
    );
    assert_eq!(
        management_tools(&markers),
        vec![ManagedBy::Helm, ManagedBy::Flux]
    );

    let argo = management_markers(&json!({
        "labels": {"app.kubernetes.io/instance": "shop"},
        "annotations": {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:shop/web"}
    }));
    assert_eq!(
        argo.get("app.kubernetes.io/instance").map(String::as_str),
        Some("shop")
    );
    assert_eq!(management_tools(&argo), vec![ManagedBy::ArgoCd]);
    assert!(management_markers(&json!({"labels": {"app": "web"}})).is_empty());
}

#[test]
fn template_pointer_per_kind() {
    assert_eq!(pod_template_pointer("Deployment"), "/spec/template");
    assert_eq!(
        pod_template_pointer("CronJob"),
        "/spec/jobTemplate/spec/template"
    );
    assert_eq!(pod_template_pointer("Pod"), "");
}

fn huge_evidence() -> Evidence {
    let long = |tag: &str, i: usize| format!("{tag} {i} {}", "x".repeat(380));
    Evidence {
        containers: (0..40)
            .map(|i| ContainerTemplate {
                name: format!("c{i}"),
                image: format!("app:{i}"),
                env_names: (0..60).map(|e| format!("VARIABLE_{e}")).collect(),
                args: (0..24).map(|a| long("arg", a)).collect(),
                probes: vec![long("probe", i)],
                ..ContainerTemplate::default()
            })
            .collect(),
        statuses: (0..200)
            .map(|i| ObservedContainer {
                pod: format!("web-{i}"),
                container: format!("c{}", i % 3),
                state: long("waiting", i),
                image: "app:1".into(),
                ..ObservedContainer::default()
            })
            .collect(),
        events: (0..500)
            .map(|i| EventSummary {
                type_: "Warning".into(),
                reason: format!("R{i}"),
                message: long("event", i),
                object: "Pod/web".into(),
                count: 1,
                last_seen: None,
            })
            .collect(),
        logs: (0..20)
            .map(|i| LogTail {
                pod: format!("web-{i}"),
                container: "c0".into(),
                previous: true,
                lines: (0..200).map(|l| long("log", l)).collect(),
            })
            .collect(),
        history: (0..100)
            .map(|i| Revision {
                revision: 100 - i,
                source: String::new(),
                images: BTreeMap::from([("c0".into(), format!("app:{i}"))]),
                changed: vec!["containers[c0].image".into()],
                healthy: i % 2 == 0,
            })
            .collect(),
        management: BTreeMap::from([("app.kubernetes.io/managed-by".into(), "Helm".into())]),
        ..fixtures::evidence("Deployment")
    }
}

#[test]
fn huge_evidence_is_bounded_and_marked_truncated() {
    let mut evidence = huge_evidence();
    bound_evidence(&mut evidence, MAX_EVIDENCE_BYTES);
    let size = serde_json::to_vec(&evidence).unwrap().len();
    assert!(size <= MAX_EVIDENCE_BYTES, "{size} bytes");
    assert!(evidence.truncated);
    assert_eq!(evidence.workload.name, "web", "identity is never dropped");
}

#[test]
fn the_bound_drops_old_events_and_log_lines_first() {
    let mut evidence = huge_evidence();
    evidence.containers.truncate(1);
    evidence.containers[0].args.clear();
    evidence.statuses.truncate(3);
    evidence.history.truncate(3);
    evidence.logs.truncate(1);
    evidence.logs[0].lines.truncate(12);
    evidence.events.truncate(30);
    bound_evidence(&mut evidence, MAX_EVIDENCE_BYTES);
    let size = serde_json::to_vec(&evidence).unwrap().len();
    assert!(size <= MAX_EVIDENCE_BYTES, "{size} bytes");
    assert!(evidence.truncated);
    // Dropping old events was enough: newest kept, the rest untouched.
    assert!(
        (5..30).contains(&evidence.events.len()),
        "{}",
        evidence.events.len()
    );
    assert_eq!(evidence.events[0].reason, "R0", "the newest event is kept");
    assert_eq!(evidence.logs[0].lines.len(), 12);
    assert_eq!(evidence.statuses.len(), 3);
    assert_eq!(evidence.history.len(), 3);
    assert_eq!(evidence.logs.len(), 1);
    assert_eq!(evidence.containers[0].env_names.len(), 60);
    let last = evidence.logs[0].lines.last().unwrap();
    assert!(
        last.starts_with("log 11 "),
        "the newest log line is kept: {last}"
    );
}

#[test]
fn small_evidence_is_untouched() {
    let mut evidence = huge_evidence();
    evidence.containers.truncate(1);
    evidence.containers[0].args.truncate(2);
    evidence.statuses.truncate(2);
    evidence.events.truncate(3);
    evidence.logs.truncate(1);
    evidence.logs[0].lines.truncate(5);
    evidence.history.truncate(2);
    let before = evidence.clone();
    bound_evidence(&mut evidence, MAX_EVIDENCE_BYTES);
    assert_eq!(evidence, before);
    assert!(!evidence.truncated);
}

#[test]
fn the_bound_holds_for_tiny_limits_too() {
    for max in [400, 1000, 4000] {
        let mut evidence = huge_evidence();
        bound_evidence(&mut evidence, max);
        let size = serde_json::to_vec(&evidence).unwrap().len();
        assert!(size <= max, "{size} > {max}");
    }
}

/// A pod of `owner` (controller uid) with a revision label, Ready since `since`.
fn ready_pod(owner: &str, label: (&str, &str), since: &str, ready: &str) -> Pod {
    pod(json!({
        "metadata": {"name": "p", "labels": {label.0: label.1},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                         "name": "db", "uid": owner, "controller": true}]},
        "status": {"conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since}]}
    }))
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

#[test]
fn revisions_count_as_seen_ready_only_after_some_time_ready() {
    let seen = ReadyRevisions::default();
    let since = "2026-01-01T00:00:00Z";
    let pod = ready_pod(
        "sts-uid",
        ("controller-revision-hash", "db-7c9d"),
        since,
        "True",
    );
    // Ready a moment ago: a container that crashes right after starting
    // is Ready for a moment too.
    seen.observe(&pod, at("2026-01-01T00:00:03Z"));
    assert!(!seen.seen("sts-uid", |h| h == "db-7c9d"));
    seen.observe(&pod, at("2026-01-01T00:00:30Z"));
    assert!(seen.seen("sts-uid", |h| h == "db-7c9d"));
    assert!(!seen.seen("other-uid", |_| true), "by the pod's controller");
    // Not Ready, or no revision label: nothing is recorded.
    let other = ReadyRevisions::default();
    other.observe(
        &ready_pod(
            "sts-uid",
            ("controller-revision-hash", "db-1"),
            since,
            "False",
        ),
        at("2026-01-01T01:00:00Z"),
    );
    other.observe(
        &ready_pod("sts-uid", ("app", "db"), since, "True"),
        at("2026-01-01T01:00:00Z"),
    );
    assert!(other.is_empty());
}

#[test]
fn a_replaced_revision_the_operator_saw_ready_is_healthy() {
    // A one-replica StatefulSet (pods carry the revision's name) and a
    // one-node DaemonSet (pods carry the hash): the old revision's only pod
    // is gone, so no Ready pod carries it now.
    let current = normalized_template(&template(json!({
        "spec": {"containers": [{"name": "db", "image": "postgres:16.4"}]}
    })));
    for (owner_kind, label) in [("StatefulSet", "db-5d8f7c9b6"), ("DaemonSet", "5d8f7c9b6")] {
        let cr: ControllerRevision = serde_json::from_value(json!({
            "metadata": {"name": "db-5d8f7c9b6", "uid": "cr-uid",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind,
                             "name": "db", "uid": "owner-uid", "controller": true}]},
            "revision": 1,
            "data": {"spec": {"template": {"$patch": "replace",
                "spec": {"containers": [{"name": "db", "image": "postgres:16.4",
                    "env": [{"name": "POSTGRES_PASSWORD", "value": "x"}]}]}}}}
        }))
        .unwrap();
        let unseen = ReadyRevisions::default();
        let revision = controller_revision(&cr, &current, &BTreeSet::new(), &unseen).unwrap();
        assert!(!revision.healthy, "{owner_kind}: nobody saw it");
        assert_eq!(revision.source_kind, "ControllerRevision");
        assert_eq!(revision.source_uid, "cr-uid");
        assert_eq!(revision.changed, vec!["containers[db].env"]);

        let seen = ReadyRevisions::default();
        seen.observe(
            &ready_pod(
                "owner-uid",
                ("controller-revision-hash", label),
                "2026-01-01T00:00:00Z",
                "True",
            ),
            at("2026-01-01T00:05:00Z"),
        );
        let revision = controller_revision(&cr, &current, &BTreeSet::new(), &seen).unwrap();
        assert!(revision.healthy, "{owner_kind}: seen Ready by the operator");
        // Another workload's sighting does not count.
        let elsewhere = ReadyRevisions::default();
        elsewhere.observe(
            &ready_pod(
                "another-uid",
                ("controller-revision-hash", label),
                "2026-01-01T00:00:00Z",
                "True",
            ),
            at("2026-01-01T00:05:00Z"),
        );
        assert!(
            !controller_revision(&cr, &current, &BTreeSet::new(), &elsewhere)
                .unwrap()
                .healthy
        );
    }
}

#[test]
fn a_cronjobs_jobs_are_its_revisions_and_the_succeeded_ones_healthy() {
    let job = |succeeded: i32, image: &str| -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "nightly-29000000", "uid": "job-uid",
                         "creationTimestamp": "2026-01-01T03:00:00Z"},
            "spec": {"template": {
                "metadata": {"labels": {"app": "nightly",
                    "batch.kubernetes.io/controller-uid": "job-uid",
                    "batch.kubernetes.io/job-name": "nightly-29000000",
                    "controller-uid": "job-uid", "job-name": "nightly-29000000"}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "report", "image": image}]}}},
            "status": {"succeeded": succeeded}
        }))
        .unwrap()
    };
    let current = normalized_template(&template(json!({
        "metadata": {"labels": {"app": "nightly"}},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "report", "image": "busybox:1.36.1-typo"}]}
    })));
    let done = job_revision(&job(1, "busybox:1.36.1"), &current).unwrap();
    assert!(done.healthy);
    assert_eq!(done.revision, at("2026-01-01T03:00:00Z").as_second());
    assert_eq!(
        (
            done.source.as_str(),
            done.source_kind.as_str(),
            done.source_api_version.as_str()
        ),
        ("nightly-29000000", "Job", "batch/v1")
    );
    assert_eq!(
        done.changed,
        vec!["containers[report].image"],
        "the labels the Job controller adds are not a change"
    );
    assert!(
        !job_revision(&job(0, "busybox:1.36.1"), &current)
            .unwrap()
            .healthy
    );
    let same = job_revision(&job(0, "busybox:1.36.1-typo"), &current).unwrap();
    assert!(same.changed.is_empty(), "a Job of the current template");
}

#[test]
fn a_referenced_revision_must_be_the_same_object_of_the_same_workload_unchanged() {
    let key = ApprovalKey::new(b"test-key".to_vec());
    let template = json!({"spec": {"containers": [{"name": "db",
        "env": [{"name": "POSTGRES_PASSWORD", "value": "x"}]}]}});
    let metadata =
        |uid: &str, owner: &str| -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            serde_json::from_value(json!({"name": "db-1abc", "uid": uid,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                                 "uid": owner, "controller": true}]}))
            .unwrap()
        };
    let reference = crate::remediation::crd::RevisionRef {
        revision: 1,
        api_version: "apps/v1".into(),
        kind: "ControllerRevision".into(),
        name: "db-1abc".into(),
        uid: "cr-uid".into(),
        digest: key.revision_digest(&template),
    };
    let ok = check_revision(
        &metadata("cr-uid", "sts-uid"),
        Some(template.clone()),
        "sts-uid",
        &reference,
        &key,
    );
    assert_eq!(ok.unwrap(), template);
    let replaced = check_revision(
        &metadata("new-uid", "sts-uid"),
        Some(template.clone()),
        "sts-uid",
        &reference,
        &key,
    );
    assert!(
        matches!(replaced, Err(RevisionLookupError::Replaced { .. })),
        "{replaced:?}"
    );
    let foreign = check_revision(
        &metadata("cr-uid", "other"),
        Some(template.clone()),
        "sts-uid",
        &reference,
        &key,
    );
    assert!(
        matches!(foreign, Err(RevisionLookupError::NotOwned { .. })),
        "{foreign:?}"
    );
    let mut edited = template.clone();
    edited["spec"]["containers"][0]["env"][0]["value"] = json!("y");
    let changed = check_revision(
        &metadata("cr-uid", "sts-uid"),
        Some(edited),
        "sts-uid",
        &reference,
        &key,
    );
    let error = changed.expect_err("a different template");
    assert!(matches!(error, RevisionLookupError::Changed { .. }));
    assert!(!error.is_transient());
    assert!(!error.to_string().contains("\"y\""), "{error}");
    // Another key gives another digest: a digest cannot be recomputed
    // (or a guess tested) without the operator's key.
    assert_ne!(
        ApprovalKey::new(b"other".to_vec()).revision_digest(&template),
        reference.digest
    );
}
