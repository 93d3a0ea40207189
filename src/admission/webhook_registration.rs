//! The validating webhook's registration follows what it still judges:
//! when every rule that can match a resource runs in the API server (as an
//! admission policy), that resource is taken out of the webhook's `rules`,
//! so the API server makes no webhook call for it at all; when such a rule
//! comes back to the webhook, the resource is put back first.
//!
//! The installer (chart or manifests) writes the full registration. What
//! the operator takes out is kept in an annotation on the same object
//! ([`SET_ASIDE_ANNOTATION`]), so a restart, or a move back to
//! `--admission-backend webhook`, can restore it, and an installer that
//! writes the full rules again (an upgrade) loses nothing: the next sync
//! narrows again. Only webhooks whose path is `/validate` are touched;
//! each entry is split into one entry per resource before narrowing.
//!
//! Every change is a JSON patch guarded by the object's `resourceVersion`,
//! so a concurrent writer (the CA bundle publisher, an upgrade) makes it
//! fail and retry rather than overwrite.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration,
};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::policy::ResourceNeeds;

/// Where the rules taken out are kept: a JSON object from webhook name to
/// the list of single-resource rules set aside.
pub const SET_ASIDE_ANNOTATION: &str = "aiops-operator.dev/set-aside-rules";

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Already as wanted.
    Unchanged,
    /// Patched: the API server follows within about a second.
    Changed,
    /// No such ValidatingWebhookConfiguration (a local run, or not
    /// installed yet).
    Missing,
}

/// Why an update failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("reading ValidatingWebhookConfiguration {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching ValidatingWebhookConfiguration {name}: {source}")]
    Patch {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("encoding the rules of {name}: {source}")]
    Encode {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Registers the `/validate` webhooks of configuration `name` for the
/// resources in `needs` (and restores everything for
/// [`ResourceNeeds::Any`]).
pub async fn update(
    client: &kube::Client,
    name: &str,
    needs: &ResourceNeeds,
) -> Result<Registration, RegistrationError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let Some(configuration) =
        api.get_opt(name)
            .await
            .map_err(|source| RegistrationError::Read {
                name: name.to_string(),
                source,
            })?
    else {
        return Ok(Registration::Missing);
    };
    let encode = |source| RegistrationError::Encode {
        name: name.to_string(),
        source,
    };
    let Some(patch) = patch_for(&configuration, needs).map_err(encode)? else {
        return Ok(Registration::Unchanged);
    };
    // kube's `Patch::Json` takes json-patch 4 (the engine's is 5).
    let patch: kube_json_patch::Patch = serde_json::from_value(patch).map_err(encode)?;
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|source| RegistrationError::Patch {
            name: name.to_string(),
            source,
        })?;
    let registered: Vec<String> = configuration
        .webhooks
        .iter()
        .flatten()
        .filter(|webhook| is_validate(webhook))
        .map(|webhook| webhook.name.clone())
        .collect();
    tracing::info!(configuration = name, webhooks = ?registered, ?needs, "webhook registration updated");
    Ok(Registration::Changed)
}

fn is_validate(webhook: &ValidatingWebhook) -> bool {
    let config = &webhook.client_config;
    let service_path = config.service.as_ref().and_then(|s| s.path.as_deref());
    let url_path = config
        .url
        .as_deref()
        .and_then(|url| url.split_once("://"))
        .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]));
    service_path.or(url_path) == Some("/validate")
}

/// The JSON patch that registers `configuration`'s `/validate` webhooks
/// for `needs`, or `None` when nothing changes.
fn patch_for(
    configuration: &ValidatingWebhookConfiguration,
    needs: &ResourceNeeds,
) -> Result<Option<Value>, serde_json::Error> {
    let annotations = configuration.metadata.annotations.as_ref();
    let set_aside_before: BTreeMap<String, Vec<RuleWithOperations>> = annotations
        .and_then(|a| a.get(SET_ASIDE_ANNOTATION))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let mut set_aside_after = BTreeMap::new();
    let mut operations = Vec::new();
    for (index, webhook) in configuration.webhooks.iter().flatten().enumerate() {
        if !is_validate(webhook) {
            continue;
        }
        let live = webhook.rules.clone().unwrap_or_default();
        let before = set_aside_before
            .get(&webhook.name)
            .cloned()
            .unwrap_or_default();
        let (kept, aside) = narrow(&live, &before, needs);
        if !same_entries(&split(&live), &kept) {
            operations.push(json!({
                "op": "add",
                "path": format!("/webhooks/{index}/rules"),
                "value": serde_json::to_value(&kept)?,
            }));
        }
        if !aside.is_empty() {
            set_aside_after.insert(webhook.name.clone(), aside);
        }
    }
    let had_annotation = annotations.is_some_and(|a| a.contains_key(SET_ASIDE_ANNOTATION));
    let annotation_path = format!(
        "/metadata/annotations/{}",
        SET_ASIDE_ANNOTATION.replace('/', "~1")
    );
    if set_aside_after != set_aside_before || (had_annotation && set_aside_after.is_empty()) {
        if set_aside_after.is_empty() {
            if had_annotation {
                operations.push(json!({"op": "remove", "path": annotation_path}));
            }
        } else {
            let text = serde_json::to_string(&set_aside_after)?;
            if annotations.is_none() {
                operations.push(json!({
                    "op": "add",
                    "path": "/metadata/annotations",
                    "value": {SET_ASIDE_ANNOTATION: text},
                }));
            } else {
                operations.push(json!({"op": "add", "path": annotation_path, "value": text}));
            }
        }
    }
    if operations.is_empty() {
        return Ok(None);
    }
    // Fails the whole patch if anyone wrote the object since it was read.
    let version = configuration
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    operations.insert(
        0,
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": version}),
    );
    Ok(Some(Value::Array(operations)))
}

/// Splits `live` and `set_aside` into single-resource entries and divides
/// them into those `needs` covers (kept registered) and the rest.
pub fn narrow(
    live: &[RuleWithOperations],
    set_aside: &[RuleWithOperations],
    needs: &ResourceNeeds,
) -> (Vec<RuleWithOperations>, Vec<RuleWithOperations>) {
    let mut all = split(live);
    for rule in split(set_aside) {
        if !all.contains(&rule) {
            all.push(rule);
        }
    }
    all.into_iter().partition(|rule| covered(rule, needs))
}

fn covered(rule: &RuleWithOperations, needs: &ResourceNeeds) -> bool {
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    let resources = rule.resources.as_deref().unwrap_or_default();
    resources
        .iter()
        .any(|resource| groups.iter().any(|group| needs.covers(group, resource)))
}

/// One entry per resource, the other fields copied; duplicates dropped.
fn split(rules: &[RuleWithOperations]) -> Vec<RuleWithOperations> {
    let mut out: Vec<RuleWithOperations> = Vec::new();
    for rule in rules {
        for resource in rule.resources.iter().flatten() {
            let single = RuleWithOperations {
                resources: Some(vec![resource.clone()]),
                ..rule.clone()
            };
            if !out.contains(&single) {
                out.push(single);
            }
        }
    }
    out
}

fn same_entries(a: &[RuleWithOperations], b: &[RuleWithOperations]) -> bool {
    a.len() == b.len() && a.iter().all(|rule| b.contains(rule))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::policy::ResourceRef;

    fn rule(group: &str, resources: &[&str]) -> RuleWithOperations {
        RuleWithOperations {
            api_groups: Some(vec![group.into()]),
            api_versions: Some(vec!["v1".into()]),
            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
            resources: Some(resources.iter().map(|r| r.to_string()).collect()),
            scope: Some("Namespaced".into()),
        }
    }

    fn only(resources: &[(&str, &str)]) -> ResourceNeeds {
        ResourceNeeds::Only(
            resources
                .iter()
                .map(|(group, resource)| ResourceRef {
                    group: group.to_string(),
                    resource: resource.to_string(),
                })
                .collect::<BTreeSet<_>>(),
        )
    }

    fn configuration(
        rules: Vec<RuleWithOperations>,
        annotation: Option<String>,
    ) -> ValidatingWebhookConfiguration {
        serde_json::from_value(json!({
            "metadata": {
                "name": "aiops-operator-validating",
                "resourceVersion": "42",
                "annotations": annotation.map(|text| json!({SET_ASIDE_ANNOTATION: text})),
            },
            "webhooks": [
                {"name": "validate.aiops-operator.dev", "admissionReviewVersions": ["v1"],
                 "sideEffects": "None", "clientConfig": {"url": "https://127.0.0.1:8443/validate"},
                 "rules": rules},
                {"name": "other.example", "admissionReviewVersions": ["v1"],
                 "sideEffects": "None", "clientConfig": {"url": "https://127.0.0.1:8443/approvals"},
                 "rules": [rule("aiops.dev", &["remediations"])]},
            ],
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Applies `patch` as the API server would.
    fn patched(
        configuration: &ValidatingWebhookConfiguration,
        patch: Value,
    ) -> ValidatingWebhookConfiguration {
        let mut document = serde_json::to_value(configuration).unwrap_or_else(|e| panic!("{e}"));
        let patch: json_patch::Patch =
            serde_json::from_value(patch).unwrap_or_else(|e| panic!("{e}"));
        json_patch::patch(&mut document, &patch).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_value(document).unwrap_or_else(|e| panic!("{e}"))
    }

    fn resources(configuration: &ValidatingWebhookConfiguration, webhook: usize) -> Vec<String> {
        let webhooks = configuration.webhooks.as_deref().unwrap_or_default();
        webhooks[webhook]
            .rules
            .iter()
            .flatten()
            .flat_map(|rule| rule.resources.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn narrows_to_the_needed_resources_and_restores_from_the_annotation() {
        let full = configuration(
            vec![
                rule("", &["pods", "pods/ephemeralcontainers"]),
                rule("apps", &["deployments", "statefulsets"]),
            ],
            None,
        );
        // Everything needed: nothing to do.
        assert_eq!(patch_for(&full, &ResourceNeeds::Any).unwrap(), None);

        let patch = patch_for(&full, &only(&[("", "pods")]))
            .unwrap()
            .expect("a patch");
        assert_eq!(
            patch[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"})
        );
        let narrowed = patched(&full, patch);
        assert_eq!(resources(&narrowed, 0), ["pods"]);
        // The other webhook is not touched.
        assert_eq!(resources(&narrowed, 1), ["remediations"]);
        // Stable: asking again changes nothing.
        assert_eq!(patch_for(&narrowed, &only(&[("", "pods")])).unwrap(), None);

        // Nothing needed: no rules at all, so no calls.
        let empty = patched(
            &narrowed,
            patch_for(&narrowed, &only(&[])).unwrap().expect("a patch"),
        );
        assert!(resources(&empty, 0).is_empty());

        // Back to everything: the set-aside rules return and the annotation goes.
        let restored = patched(
            &empty,
            patch_for(&empty, &ResourceNeeds::Any)
                .unwrap()
                .expect("a patch"),
        );
        let mut back = resources(&restored, 0);
        back.sort();
        assert_eq!(
            back,
            [
                "deployments",
                "pods",
                "pods/ephemeralcontainers",
                "statefulsets"
            ]
        );
        let annotations = restored.metadata.annotations.unwrap_or_default();
        assert!(
            !annotations.contains_key(SET_ASIDE_ANNOTATION),
            "{annotations:?}"
        );
    }

    #[test]
    fn an_installer_rewrite_is_narrowed_again_without_losing_rules() {
        let set_aside =
            json!({"validate.aiops-operator.dev": [rule("apps", &["deployments"])]}).to_string();
        // An upgrade wrote the full rules again; the annotation survived.
        let rewritten = configuration(
            vec![rule("", &["pods"]), rule("apps", &["deployments"])],
            Some(set_aside),
        );
        let narrowed = patched(
            &rewritten,
            patch_for(&rewritten, &only(&[("", "pods")]))
                .unwrap()
                .expect("a patch"),
        );
        assert_eq!(resources(&narrowed, 0), ["pods"]);
        let (kept, aside) = narrow(
            &[],
            &[rule("apps", &["deployments"])],
            &only(&[("*", "deployments")]),
        );
        assert_eq!((kept.len(), aside.len()), (1, 0));
    }
}
