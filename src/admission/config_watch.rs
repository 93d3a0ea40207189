//! Keeps the admission modes in step with the operator's ConfigMap, using a
//! kube-runtime watcher on that one object. A change applies to the next
//! request; a missing or deleted ConfigMap means the documented defaults
//! (see [`crate::admission::modes`]). A ConfigMap with an invalid value is
//! refused as a whole: the last good modes stay ([`crate::admission::refusals`]).
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

use crate::admission::metrics::Metrics;
use crate::admission::modes::parse_config_map;
use crate::admission::refusals::{ConfigSource, RefusalReporter};
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
    refusals: RefusalReporter,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<ConfigMap> = Api::namespaced(client, &source.namespace);
        let selector = format!("metadata.name={}", source.name);
        let stream = watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        // Whether the current (re)list found the ConfigMap.
        let mut found_in_list = false;
        let apply_config =
            |config_map: Option<ConfigMap>| apply(&source, config_map, &modes, &metrics, &refusals);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => found_in_list = false,
                Ok(watcher::Event::InitApply(config_map) | watcher::Event::Apply(config_map)) => {
                    found_in_list = true;
                    apply_config(Some(config_map)).await;
                }
                Ok(watcher::Event::InitDone) if !found_in_list => apply_config(None).await,
                Ok(watcher::Event::InitDone) => {}
                Ok(watcher::Event::Delete(_)) => apply_config(None).await,
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

/// Puts the ConfigMap's modes in force, or refuses them and keeps the
/// current ones when a value is invalid.
pub async fn apply(
    source: &ConfigMapSource,
    config_map: Option<ConfigMap>,
    modes: &ModeHandle,
    metrics: &Metrics,
    refusals: &RefusalReporter,
) {
    let data = config_map.as_ref().and_then(|cm| cm.data.as_ref());
    let (config, issues) = parse_config_map(data, &source.operator_namespace);
    if config_map.is_none() {
        tracing::info!(
            namespace = %source.namespace,
            config_map = %source.name,
            "admission ConfigMap not found; using the default modes"
        );
    }
    let (refusing, ignored): (Vec<_>, Vec<_>) =
        issues.iter().partition(|issue| issue.refuses_update());
    for issue in &ignored {
        tracing::warn!(
            config_map = %source.name,
            key = %issue.key,
            reason = %issue.reason,
            "ignoring an unknown admission setting"
        );
    }
    if !refusing.is_empty() {
        let reason = refusing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let object = config_map.as_ref().map(|cm| ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: cm.metadata.name.clone(),
            namespace: cm.metadata.namespace.clone(),
            uid: cm.metadata.uid.clone(),
            ..ObjectReference::default()
        });
        refusals
            .refused(
                ConfigSource::ConfigMap,
                format!("ConfigMap {}/{}: {reason}", source.namespace, source.name),
                object,
            )
            .await;
        return;
    }
    refusals.accepted(ConfigSource::ConfigMap);
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
    metrics.config_update(if ignored.is_empty() {
        "applied"
    } else {
        "applied_with_issues"
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::modes::{Mode, ModeConfig};
    use crate::admission::refusals::ConfigRefusals;
    use kube::runtime::events::Reporter;
    use std::collections::BTreeMap;

    fn config_map(pairs: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ConfigMap::default()
        }
    }

    #[tokio::test]
    async fn an_invalid_value_keeps_the_last_good_modes() {
        let source = ConfigMapSource {
            namespace: "aiops-system".into(),
            name: "aiops-operator-config".into(),
            operator_namespace: "aiops-system".into(),
        };
        let modes = ModeHandle::new(ModeConfig::defaults("aiops-system"));
        let metrics = Arc::new(Metrics::new());
        let refusals = ConfigRefusals::default();
        let reporter = RefusalReporter::new(
            refusals.clone(),
            Arc::clone(&metrics),
            None,
            Reporter::from("test"),
        );
        let apply_data = |pairs: &[(&str, &str)]| {
            let cm = config_map(pairs);
            let (source, modes, metrics, reporter) = (&source, &modes, &metrics, &reporter);
            async move { apply(source, Some(cm), modes, metrics, reporter).await }
        };

        apply_data(&[("mode", "Enforce"), ("exemptUsers", "[ci-bot]")]).await;
        assert_eq!(modes.current().mode, Some(Mode::Enforce));
        assert!(refusals.list().is_empty());

        // A typo in one value: nothing of this version applies, not even
        // the valid key beside it.
        apply_data(&[("mode", "Enforced"), ("exemptUsers", "[someone-else]")]).await;
        assert_eq!(modes.current().mode, Some(Mode::Enforce));
        assert!(modes.current().exempt_users.contains("ci-bot"));
        let listed = refusals.list();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(listed[0].1.contains("\"mode\""), "{listed:?}");

        // An unknown key alone is reported, not refused.
        apply_data(&[("mode", "Audit"), ("colour", "blue")]).await;
        assert_eq!(modes.current().mode, Some(Mode::Audit));
        assert!(refusals.list().is_empty());
        let text = metrics.encode().unwrap_or_default();
        assert!(
            text.contains("aiops_admission_config_updates_total{result=\"configmap_refused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("aiops_admission_config_refused{source=\"configmap\"} 0"),
            "{text}"
        );
    }
}
