//! Publishes the webhook's CA certificate into the operator's own
//! Validating/MutatingWebhookConfigurations (`clientConfig.caBundle`), so
//! the API server trusts the serving certificate without a manual step.
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// Why the CA bundle could not be published.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("reading {kind} {name}: {source}")]
    Get {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching caBundle of {kind} {name}: {source}")]
    Patch {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("encoding the CA bundle: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Sets `caBundle` on every webhook of the named configurations.
pub async fn publish_ca_bundle(
    client: &kube::Client,
    ca_pem: &[u8],
    validating: &[String],
    mutating: &[String],
) -> Result<(), CaBundleError> {
    // ByteString serialises as base64, the wire form of caBundle.
    let bundle =
        serde_json::to_value(ByteString(ca_pem.to_vec())).map_err(CaBundleError::Encode)?;
    publish_to::<ValidatingWebhookConfiguration>(client, validating, &bundle, |config| {
        config
            .webhooks
            .iter()
            .flatten()
            .map(|w| w.name.clone())
            .collect()
    })
    .await?;
    publish_to::<MutatingWebhookConfiguration>(client, mutating, &bundle, |config| {
        config
            .webhooks
            .iter()
            .flatten()
            .map(|w| w.name.clone())
            .collect()
    })
    .await
}

/// Sets `caBundle` on every webhook of the named configurations of kind `K`;
/// `webhook_names` lists a configuration's webhooks (the two kinds keep
/// them in lists of different types).
async fn publish_to<K>(
    client: &kube::Client,
    names: &[String],
    bundle: &serde_json::Value,
    webhook_names: impl Fn(&K) -> Vec<String>,
) -> Result<(), CaBundleError>
where
    K: k8s_openapi::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let kind = K::KIND;
    for name in names {
        let config = api.get(name).await.map_err(|source| CaBundleError::Get {
            kind,
            name: name.clone(),
            source,
        })?;
        patch_bundle(&api, kind, name, &webhook_names(&config), bundle).await?;
    }
    Ok(())
}

/// A strategic-merge patch keyed by webhook name touches only `caBundle`
/// and leaves every other field as the manifests set it.
async fn patch_bundle<K>(
    api: &Api<K>,
    kind: &'static str,
    name: &str,
    webhooks: &[String],
    bundle: &serde_json::Value,
) -> Result<(), CaBundleError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = ca_bundle_patch(webhooks, bundle);
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|source| CaBundleError::Patch {
            kind,
            name: name.to_string(),
            source,
        })?;
    tracing::info!(
        kind,
        name,
        webhooks = webhooks.len(),
        "published the CA bundle"
    );
    Ok(())
}

fn ca_bundle_patch(webhooks: &[String], bundle: &serde_json::Value) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = webhooks
        .iter()
        .map(|name| json!({"name": name, "clientConfig": {"caBundle": bundle}}))
        .collect();
    json!({ "webhooks": entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_sets_base64_bundle_per_webhook() {
        let bundle = serde_json::to_value(ByteString(b"PEM".to_vec())).unwrap_or_default();
        let patch = ca_bundle_patch(&["a.example.io".into(), "b.example.io".into()], &bundle);
        assert_eq!(patch["webhooks"][0]["name"], "a.example.io");
        assert_eq!(patch["webhooks"][1]["clientConfig"]["caBundle"], "UEVN");
    }
}
