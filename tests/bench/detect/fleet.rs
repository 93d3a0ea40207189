//! The bench's fleet and its surroundings: the counting FlowSchema, the
//! namespaces and Deployments, the operator's footprint, and the API
//! server's count of the operator's requests.
use std::time::{Duration, Instant};

use aiops_operator::remediation::crd::Remediation;
use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::flowcontrol::v1::FlowSchema;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::observe::is_bench_namespace;
use crate::support::{self, OperatorProcess, deployment_rolled_out, operators_dir};
use crate::{
    DISPATCHED, FLOW_SCHEMA, NS_LABEL, OPERATOR_NAME, OPERATOR_NAMESPACE, OPERATOR_SA, POD_LABEL,
    POD_LABEL_VALUE, Settings, log,
};

/// Local operator replicas other than ours that are alive: they would
/// contend for the Lease and share the ServiceAccount we count requests of.
pub fn other_operators() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dirs) = std::fs::read_dir(operators_dir()) else {
        return found;
    };
    for dir in dirs.flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if name == OPERATOR_NAME {
            continue;
        }
        if let Some(pid) = support::recorded_pid(&name)
            && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("aiops-operator"))
        {
            found.push(format!("{name} (pid {pid})"));
        }
    }
    found
}

/// The operator's requests so far, as the API server counted them.
pub async fn operator_requests(client: &Client) -> Result<f64> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .context("building the /metrics request")?;
    let text = client
        .request_text(request)
        .await
        .context("reading the API server's /metrics")?;
    let needle = format!("flow_schema=\"{FLOW_SCHEMA}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(DISPATCHED) && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

pub fn flow_schema() -> Result<FlowSchema> {
    serde_json::from_value(json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": FLOW_SCHEMA, "labels": {NS_LABEL: "true"}},
        "spec": {
            // Same priority level as the built-in `service-accounts` schema
            // (precedence 9000) that the operator's requests fall into
            // otherwise: only the bookkeeping changes, not the treatment.
            "priorityLevelConfiguration": {"name": "workload-low"},
            "matchingPrecedence": 1000,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{"kind": "ServiceAccount",
                    "serviceAccount": {"name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE}}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                    "clusterScope": true, "namespaces": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        },
    }))
    .context("FlowSchema manifest")
}

/// A bench Deployment: one container `web` running `image`, labelled (as
/// are its pods) for the bench's watches, and gone at once when deleted.
pub fn bench_deployment(name: &str, replicas: i32, image: &str) -> Result<Deployment> {
    let mut manifest = support::deployment(name, replicas, json!({"name": "web", "image": image}));
    manifest["metadata"]["labels"] = json!({POD_LABEL: POD_LABEL_VALUE});
    manifest["spec"]["template"]["metadata"]["labels"][POD_LABEL] = json!(POD_LABEL_VALUE);
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(0);
    serde_json::from_value(manifest).context("Deployment manifest")
}

/// Deletes every bench namespace and waits until they are gone.
pub async fn delete_namespaces(client: &Client, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let api = Api::<Namespace>::all(client.clone());
    let selector = ListParams::default().labels(&format!("{NS_LABEL}=true"));
    for ns in api.list(&selector).await?.items {
        let _ = api
            .delete(&ns.name_any(), &DeleteParams::background())
            .await;
    }
    loop {
        let left = api.list(&selector).await?.items.len();
        if left == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("{left} bench namespace(s) still terminating after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub async fn create_deployments(
    client: &Client,
    settings: &Settings,
    items: Vec<(String, Deployment)>,
) -> Result<()> {
    futures::stream::iter(items)
        .map(|(ns, d)| {
            let client = client.clone();
            async move {
                Api::<Deployment>::namespaced(client, &ns)
                    .create(&PostParams::default(), &d)
                    .await
                    .with_context(|| format!("creating deployment {ns}/{}", d.name_any()))
            }
        })
        .buffer_unordered(settings.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Waits until every bench Deployment named `prefix-*` is fully rolled out and Ready.
pub async fn wait_ready(
    client: &Client,
    settings: &Settings,
    prefix: &str,
    want: usize,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let (mut done, mut ready_pods) = (0usize, 0i64);
        for i in 0..settings.namespaces {
            let api = Api::<Deployment>::namespaced(client.clone(), &settings.namespace(i));
            let list = api
                .list(&ListParams::default().labels(&format!("{POD_LABEL}={POD_LABEL_VALUE}")))
                .await?;
            for d in list
                .items
                .iter()
                .filter(|d| d.name_any().starts_with(prefix))
            {
                let ready = d.status.as_ref().and_then(|s| s.ready_replicas);
                ready_pods += i64::from(ready.unwrap_or(0));
                if deployment_rolled_out(d) {
                    done += 1;
                }
            }
        }
        if done == want {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("only {done} of {want} {prefix} deployments ready after {timeout:?}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            log(format!(
                "{done}/{want} {prefix} deployments ready, {ready_pods} pods ready ({:.0}s)",
                started.elapsed().as_secs_f64()
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub async fn bench_remediations(client: &Client) -> Result<Vec<Remediation>> {
    Ok(Api::<Remediation>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| r.namespace().is_some_and(|ns| is_bench_namespace(&ns)))
        .collect())
}

/// The operator's own view of detection (its histogram), from its /metrics.
pub async fn operator_detection_histogram(operator: &OperatorProcess) -> Option<(f64, f64)> {
    let text = operator.try_metrics().await.ok()?;
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    Some((
        value("remediation_detection_seconds_sum")?,
        value("remediation_detection_seconds_count")?,
    ))
}
