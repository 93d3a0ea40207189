//! The run itself: the operator starts and leads, the healthy fleet rolls
//! out, steady state is measured, the incidents happen, and the figures
//! are put together into the report.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_operator::remediation::crd::{Phase, Remediation};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::flowcontrol::v1::FlowSchema;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use crate::fleet::{
    bench_deployment, bench_remediations, create_deployments, delete_namespaces, flow_schema,
    operator_detection_histogram, operator_requests, other_operators, wait_ready,
};
use crate::observe::{Shared, lock, observe_pod, observe_remediation, watch_raw};
use crate::support::{self, Sandbox, loadavg, memory_mib, phase};
use crate::{
    BROKEN_IMAGE, DISPATCHED, FLOW_SCHEMA, HEALTHY_IMAGE, LEASE, NS_LABEL, OPERATOR_NAME,
    OPERATOR_NAMESPACE, OPERATOR_SA, POD_LABEL, POD_LABEL_VALUE, Settings, log, webhook_label,
};

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile of sorted samples (with 20 samples, p99 is the maximum).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub async fn run(sandbox: &Sandbox, settings: &Settings, t0: Instant) -> Result<Value> {
    let client = &sandbox.client;
    let secs = |from: Instant, to: Instant| round3(to.duration_since(from).as_secs_f64());
    let mut load = serde_json::Map::new();
    load.insert("start".into(), loadavg());

    // Leftovers of an aborted run.
    delete_namespaces(client, Duration::from_secs(900)).await?;

    // Count the operator's requests by its identity.
    let schemas = Api::<FlowSchema>::all(client.clone());
    let _ = schemas.delete(FLOW_SCHEMA, &DeleteParams::default()).await;
    schemas
        .create(&PostParams::default(), &flow_schema()?)
        .await
        .context("creating the counting FlowSchema")?;

    for i in 0..settings.namespaces {
        support::create_namespace(client, &settings.namespace(i), &[(NS_LABEL, "true")]).await?;
    }

    log("starting the operator (release build) as bench-op");
    // The release binary of this build; `BENCH_DETECT_OPERATOR_BIN` measures
    // another one (e.g. a saved baseline) with the same harness.
    let bin = std::env::var("BENCH_DETECT_OPERATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_aiops-operator").to_string());
    let bin = bin.as_str();
    // `try_start_operator` applies these last: they replace its defaults.
    let operator = support::try_start_operator(
        OPERATOR_NAME,
        &[
            ("AIOPS_BIN", bin),
            ("AIOPS_WEBHOOK_NAMESPACE_LABEL", webhook_label(settings)),
        ],
    )?;
    let pid = operator
        .pid()
        .context("no pid file for the bench operator")?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let lease_deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let holder = leases
            .get_opt(LEASE)
            .await?
            .and_then(|l| l.spec?.holder_identity);
        if holder.as_deref() == Some(OPERATOR_NAME) {
            break;
        }
        if Instant::now() > lease_deadline {
            bail!("bench-op did not get the Lease in 90s (holder: {holder:?})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t_leader = Instant::now();
    log(format!(
        "bench-op (pid {}) leads; port {}",
        pid, operator.port
    ));

    // The bench's own watches.
    let observed: Shared = Arc::default();
    let pod_selector = format!("{POD_LABEL}={POD_LABEL_VALUE}");
    let pod_watch = tokio::spawn({
        let api = Api::<Pod>::all(client.clone());
        let observed = Arc::clone(&observed);
        async move {
            watch_raw(api, Some(&pod_selector), observed, |o, at, pod, _| {
                observe_pod(o, at, pod)
            })
            .await
        }
    });
    let rem_watch = tokio::spawn({
        let api = Api::<Remediation>::all(client.clone());
        let observed = Arc::clone(&observed);
        async move { watch_raw(api, None, observed, observe_remediation).await }
    });
    // Let both watches establish before anything happens.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let requests_start = operator_requests(client).await?;

    // Phase 1: the healthy fleet.
    log(format!(
        "creating {} healthy deployments x {} replicas",
        settings.healthy, settings.healthy_replicas
    ));
    let t_healthy = Instant::now();
    let healthy: Vec<(String, Deployment)> = (0..settings.healthy)
        .map(|i| {
            bench_deployment(
                &format!("healthy-{i:03}"),
                settings.healthy_replicas,
                HEALTHY_IMAGE,
            )
            .map(|d| (settings.namespace(i), d))
        })
        .collect::<Result<_>>()?;
    create_deployments(client, settings, healthy).await?;
    wait_ready(
        client,
        settings,
        "healthy-",
        settings.healthy,
        Duration::from_secs(1200),
    )
    .await?;
    let t_healthy_ready = Instant::now();
    let requests_healthy_ready = operator_requests(client).await?;
    let mem_after_healthy = memory_mib(pid);
    log(format!(
        "healthy fleet ready in {:.1}s; measuring {}s of steady state",
        secs(t_healthy, t_healthy_ready),
        settings.steady.as_secs()
    ));

    // Phase 2: steady state, healthy only.
    tokio::time::sleep(settings.steady).await;
    let t_steady_end = Instant::now();
    let requests_steady_end = operator_requests(client).await?;
    let steady_seconds = t_steady_end.duration_since(t_healthy_ready).as_secs_f64();
    let steady_rate = (requests_steady_end - requests_healthy_ready) / steady_seconds;
    load.insert("before_incidents".into(), loadavg());

    // Phase 3: the incidents.
    log(format!(
        "creating {} broken deployments x {} replicas (image {BROKEN_IMAGE})",
        settings.broken, settings.broken_replicas
    ));
    let t_incidents = Instant::now();
    let broken: Vec<(String, Deployment)> = (0..settings.broken)
        .map(|i| {
            bench_deployment(
                &format!("broken-{i:02}"),
                settings.broken_replicas,
                BROKEN_IMAGE,
            )
            .map(|d| (settings.namespace(i), d))
        })
        .collect::<Result<_>>()?;
    let broken_keys: BTreeSet<(String, String)> = broken
        .iter()
        .map(|(ns, d)| (ns.clone(), d.name_any()))
        .collect();
    create_deployments(client, settings, broken).await?;
    let t_created = Instant::now();

    let detect_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let detected = {
            let seen = lock(&observed);
            broken_keys
                .iter()
                .filter(|k| seen.added.contains_key(*k))
                .count()
        };
        if detected == broken_keys.len() {
            break;
        }
        if Instant::now() > detect_deadline {
            log(format!(
                "only {detected} of {} incidents detected after 180s",
                broken_keys.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t_all_detected = Instant::now();

    // Let the controller finish diagnosing (evidence, proposal, dry run),
    // then let findings settle, so the window holds the whole incident.
    let diagnose_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let all = bench_remediations(client).await?;
        if all.iter().all(|r| phase(r) != Phase::Diagnosing) {
            break;
        }
        if Instant::now() > diagnose_deadline {
            log("some Remediations still Diagnosing after 180s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t_diagnosed = Instant::now();
    tokio::time::sleep(settings.settle).await;
    let t_incidents_end = Instant::now();
    let requests_incidents_end = operator_requests(client).await?;
    load.insert("after_incidents".into(), loadavg());

    // Phase 4: steady state with the incidents open.
    tokio::time::sleep(settings.steady).await;
    let t_after_end = Instant::now();
    let requests_after_end = operator_requests(client).await?;
    let after_rate = (requests_after_end - requests_incidents_end)
        / t_after_end.duration_since(t_incidents_end).as_secs_f64();

    // Results.
    let memory_end = memory_mib(pid).context("the operator exited during the run")?;
    let histogram = operator_detection_histogram(&operator).await;
    let remediations = bench_remediations(client).await?;
    let pods_bench = Api::<Pod>::all(client.clone())
        .list_metadata(&ListParams::default().labels(&format!("{POD_LABEL}={POD_LABEL_VALUE}")))
        .await?
        .items
        .len();
    let pods_cluster = Api::<Pod>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    let nodes = Api::<Node>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    pod_watch.abort();
    rem_watch.abort();

    let seen = lock(&observed);
    let mut latencies = Vec::new();
    let mut from_backoff = Vec::new();
    let mut per_incident = BTreeMap::new();
    for key in &broken_keys {
        let failing = seen.first_failing.get(key);
        let added = seen.added.get(key).and_then(|v| v.first());
        if let (Some(failing), Some((added, name))) = (failing, added) {
            let latency = added.saturating_duration_since(*failing).as_secs_f64();
            latencies.push(latency);
            let backoff = seen
                .first_backoff
                .get(key)
                .map(|b| added.saturating_duration_since(*b).as_secs_f64());
            if let Some(b) = backoff {
                from_backoff.push(b);
            }
            per_incident.insert(
                format!("{}/{}", key.0, key.1),
                json!({
                    "remediation": name,
                    "first_failing_pod_at_s": secs(t0, *failing),
                    "added_at_s": secs(t0, *added),
                    "detection_s": round3(latency),
                    "detection_from_backoff_s": backoff.map(round3),
                }),
            );
        }
    }
    latencies.sort_by(f64::total_cmp);
    from_backoff.sort_by(f64::total_cmp);
    let duplicate_targets: Vec<String> = seen
        .added
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|((ns, name), v)| {
            format!(
                "{ns}/{name}: {:?}",
                v.iter().map(|(_, n)| n).collect::<Vec<_>>()
            )
        })
        .collect();
    let mut final_by_target: BTreeMap<String, usize> = BTreeMap::new();
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for r in &remediations {
        *final_by_target
            .entry(format!(
                "{}/{}",
                r.namespace().unwrap_or_default(),
                r.spec.target.uid
            ))
            .or_default() += 1;
        *phases.entry(format!("{:?}", phase(r))).or_default() += 1;
    }
    let duplicates = !duplicate_targets.is_empty() || final_by_target.values().any(|&n| n > 1);
    let false_positives = remediations
        .iter()
        .filter(|r| !r.spec.target.name.starts_with("broken-"))
        .count();

    let incident_window = t_incidents_end.duration_since(t_incidents).as_secs_f64();
    let incident_requests = requests_incidents_end - requests_steady_end;
    let incidents = settings.broken.max(1) as f64;
    let per_incident_requests =
        ((incident_requests - steady_rate * incident_window) / incidents).max(0.0);
    let p99 = percentile(&latencies, 99.0);
    let rss_peak = memory_end.0;

    Ok(json!({
        "benchmark": "bench-detect",
        "detection_p50_s": round3(percentile(&latencies, 50.0)),
        "detection_p99_s": round3(p99),
        "detection_max_s": round3(latencies.last().copied().unwrap_or(f64::NAN)),
        "detection_mean_s": round3(latencies.iter().sum::<f64>() / latencies.len().max(1) as f64),
        "detection_samples": latencies.len(),
        "detection_note": "per broken Deployment: the bench's pod watch first sees one of its pods in ErrImagePull/ImagePullBackOff -> the bench's Remediation watch sees its Remediation ADDED; one monotonic clock; nearest-rank percentiles (with 20 samples p99 is the maximum)",
        "detection_from_backoff_p50_s": round3(percentile(&from_backoff, 50.0)),
        "detection_from_backoff_p99_s": round3(percentile(&from_backoff, 99.0)),
        "operator_detection_histogram": histogram.map(|(sum, count)| json!({
            "sum_s": round3(sum), "count": count,
            "mean_s": round3(if count > 0.0 { sum / count } else { f64::NAN }),
            "note": "the operator's remediation_detection_seconds: first failing status it saw -> its create returned",
        })),
        "remediations": remediations.len(),
        "broken_deployments": settings.broken,
        "remediation_added_events": seen.added.values().map(Vec::len).sum::<usize>(),
        "remediations_first_seen_by_relist": seen.listed.len(),
        "duplicates": duplicates,
        "duplicate_targets": duplicate_targets,
        "false_positives": false_positives,
        "remediation_phases": phases,
        "rss_peak_mib": round3(rss_peak),
        "rss_end_mib": round3(memory_end.1),
        "rss_peak_after_healthy_fleet_mib": mem_after_healthy.map(|m| round3(m.0)),
        "api_requests_per_incident": round3(per_incident_requests),
        "api_requests": {
            "source": format!("{DISPATCHED}{{flow_schema=\"{FLOW_SCHEMA}\"}} from the API server's /metrics; the FlowSchema matches only system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"),
            "healthy_rollout": requests_healthy_ready - requests_start,
            "healthy_rollout_seconds": secs(t_healthy, t_healthy_ready),
            "healthy_steady": requests_steady_end - requests_healthy_ready,
            "healthy_steady_seconds": round3(steady_seconds),
            "healthy_steady_per_s": round3(steady_rate),
            "incident_window": incident_requests,
            "incident_window_seconds": round3(incident_window),
            "incident_window_minus_steady": round3(incident_requests - steady_rate * incident_window),
            "after_incidents_steady": requests_after_end - requests_incidents_end,
            "after_incidents_steady_per_s": round3(after_rate),
            "per_incident_formula": "(incident_window - healthy_steady_per_s * incident_window_seconds) / broken_deployments",
        },
        "targets": {
            "detection_p99_under_2s": p99 < 2.0,
            "rss_under_150mib": rss_peak < 150.0,
        },
        "per_incident": per_incident,
        "context": {
            "healthy_deployments": settings.healthy,
            "healthy_replicas": settings.healthy_replicas,
            "broken_deployments": settings.broken,
            "broken_replicas": settings.broken_replicas,
            "namespaces": settings.namespaces,
            "pods_bench": pods_bench,
            "pods_cluster": pods_cluster,
            "nodes": nodes,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "operator_binary": bin,
            "operator_webhooks": if settings.webhooks {
                format!("scoped to namespaces labelled {NS_LABEL}=true (the bench namespaces): every bench pod create/update goes through /validate, every Remediation write through /remediations")
            } else {
                "off (BENCH_DETECT_WEBHOOKS=0): the webhooks select no namespace".to_string()
            },
            "healthy_image": HEALTHY_IMAGE,
            "broken_image": BROKEN_IMAGE,
            "other_operator_replicas_at_end": other_operators(),
            "watch_events": {"pods": seen.pod_events, "remediations": seen.remediation_events, "relists": seen.relists},
        },
        "wall_seconds": {
            "operator_leader": secs(t0, t_leader),
            "healthy_rollout_to_ready": secs(t_healthy, t_healthy_ready),
            "broken_creates": secs(t_incidents, t_created),
            "incidents_to_all_detected": secs(t_incidents, t_all_detected),
            "incidents_to_all_diagnosed": secs(t_incidents, t_diagnosed),
        },
        "load_average": Value::Object(load),
        "timestamp": chrono::Utc::now().to_rfc3339(),
    }))
}
