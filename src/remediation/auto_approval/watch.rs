//! Keeps [`RemediateSettings`] in step with the operator's ConfigMap. Every
//! replica runs it: the approval webhook on each one must know which
//! auto-approval rules exist, and the leader's controller reads the pause
//! and budgets before each decision.
use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

use super::SettingsHandle;
use super::settings::{RemediateSettings, parse_settings};

/// Watches the ConfigMap `name` in `namespace` until the task is aborted;
/// API errors are retried with back-off while the settings in force stay.
pub fn spawn_settings_watch(
    client: kube::Client,
    namespace: String,
    name: String,
    settings: SettingsHandle,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
        let selector = format!("metadata.name={name}");
        let stream = watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut found_in_list = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => found_in_list = false,
                Ok(watcher::Event::InitApply(config_map) | watcher::Event::Apply(config_map)) => {
                    found_in_list = true;
                    take_settings(config_map.data.as_ref(), &settings, &name);
                }
                Ok(watcher::Event::InitDone) if !found_in_list => {
                    take_settings(None, &settings, &name)
                }
                Ok(watcher::Event::InitDone) => {}
                Ok(watcher::Event::Delete(_)) => take_settings(None, &settings, &name),
                Err(error) => {
                    tracing::warn!(%error, %namespace, config_map = %name,
                        "cannot watch the operator ConfigMap; keeping the repair settings in force");
                }
            }
        }
    })
}

/// Puts the ConfigMap's `remediate.*` settings in force, or refuses them all
/// and keeps the current ones when a value is invalid.
pub fn take_settings(
    data: Option<&BTreeMap<String, String>>,
    settings: &SettingsHandle,
    config_map: &str,
) {
    match parse_settings(data) {
        Ok(parsed) => {
            if *settings.current() != parsed {
                log_settings(&parsed, config_map);
                settings.replace(parsed);
            }
        }
        Err(errors) => {
            for error in &errors {
                tracing::warn!(%config_map, key = error.key, reason = %error.reason,
                    "refusing the repair settings; the ones in force stay");
            }
        }
    }
}

fn log_settings(settings: &RemediateSettings, config_map: &str) {
    let rules: Vec<&str> = settings.rules.iter().map(|r| r.name.as_str()).collect();
    tracing::info!(%config_map, paused = settings.paused, auto_approval_rules = ?rules,
        max_in_flight = settings.budget.max_in_flight, "repair settings updated");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::auto_approval::settings::KEY_PAUSED;

    #[test]
    fn an_invalid_value_keeps_the_settings_in_force() {
        let handle = SettingsHandle::new(RemediateSettings::default());
        let paused = BTreeMap::from([(KEY_PAUSED.to_string(), "true".to_string())]);
        take_settings(Some(&paused), &handle, "cm");
        assert!(handle.current().paused);
        // A typo must not lift the pause.
        let typo = BTreeMap::from([(KEY_PAUSED.to_string(), "flase".to_string())]);
        take_settings(Some(&typo), &handle, "cm");
        assert!(handle.current().paused);
        take_settings(None, &handle, "cm");
        assert!(!handle.current().paused);
    }
}
