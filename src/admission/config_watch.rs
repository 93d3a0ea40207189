//! Keeps the admission modes in step with the operator's ConfigMap, using a
//! kube-runtime watcher on that one object. A change applies to the next
//! request; a missing, deleted or unreadable ConfigMap means the documented
//! defaults (see [`crate::admission::modes`]).
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

use crate::admission::metrics::Metrics;
use crate::admission::modes::parse_config_map;
use crate::admission::state::ModeHandle;

/// Where the admission modes come from.
#[derive(Debug, Clone)]
pub struct ConfigMapSource {
    pub namespace: String,
    pub name: String,
    /// Always exempt, whatever the ConfigMap says.
    pub operator_namespace: String,
}

/// Watches the ConfigMap until the task is aborted. The watcher retries with
/// backoff on API errors; meanwhile the last applied configuration stays.
pub fn spawn_config_watch(
    client: kube::Client,
    source: ConfigMapSource,
    modes: ModeHandle,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<ConfigMap> = Api::namespaced(client, &source.namespace);
        let selector = format!("metadata.name={}", source.name);
        let stream = watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        // Whether the current (re)list found the ConfigMap.
        let mut found_in_list = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => found_in_list = false,
                Ok(watcher::Event::InitApply(config_map) | watcher::Event::Apply(config_map)) => {
                    found_in_list = true;
                    apply(&source, Some(&config_map), &modes, &metrics);
                }
                Ok(watcher::Event::InitDone) if !found_in_list => {
                    apply(&source, None, &modes, &metrics);
                }
                Ok(watcher::Event::InitDone) => {}
                Ok(watcher::Event::Delete(_)) => apply(&source, None, &modes, &metrics),
                Err(error) => {
                    metrics.config_update("watch_error");
                    tracing::warn!(
                        %error,
                        namespace = %source.namespace,
                        config_map = %source.name,
                        "cannot watch the admission ConfigMap; keeping the current modes"
                    );
                }
            }
        }
    })
}

fn apply(
    source: &ConfigMapSource,
    config_map: Option<&ConfigMap>,
    modes: &ModeHandle,
    metrics: &Metrics,
) {
    let data = config_map.and_then(|cm| cm.data.as_ref());
    let (config, issues) = parse_config_map(data, &source.operator_namespace);
    if config_map.is_none() {
        tracing::info!(
            namespace = %source.namespace,
            config_map = %source.name,
            "admission ConfigMap not found; using the default modes"
        );
    }
    for issue in &issues {
        tracing::warn!(
            config_map = %source.name,
            key = %issue.key,
            reason = %issue.reason,
            "ignoring an invalid admission setting; its default applies"
        );
    }
    if *modes.current() == config {
        return;
    }
    tracing::info!(
        mode = config.mode.map(|m| m.as_str()).unwrap_or("Policy"),
        policy_overrides = config.policy_modes.len(),
        exempt_namespaces = ?config.exempt_namespaces,
        "admission modes updated"
    );
    modes.replace(config);
    metrics.config_update(if issues.is_empty() {
        "applied"
    } else {
        "applied_with_issues"
    });
}
