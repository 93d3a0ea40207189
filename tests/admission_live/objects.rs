//! Objects sent through the sandbox API server, and what it answers.
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::support::{VALIDATING_WEBHOOK_NAME, gvk_of};

pub fn privileged_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "app",
            "image": "nginx:1.25.5",
            "securityContext": {"privileged": true},
        }]},
    })
}

pub fn pod_with_image(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]},
    })
}

/// Whether an API error text is our webhook denying the request and naming `policy`.
pub fn is_denial_by(text: &str, policy: &str) -> bool {
    text.contains(&format!(
        "admission webhook \"{VALIDATING_WEBHOOK_NAME}\" denied the request"
    )) && text.contains(&format!("{policy}/"))
}

/// Why the API server refused to create an object.
#[derive(Debug)]
pub struct Refusal {
    /// HTTP status; 422 is the API server's own validation, which runs
    /// before validating admission webhooks.
    code: u16,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl Refusal {
    pub fn is_denial_by(&self, policy: &str) -> bool {
        is_denial_by(&self.message, policy)
    }

    /// Refused by the API server's own object validation, so no admission
    /// webhook was ever asked.
    pub fn is_invalid_object(&self) -> bool {
        self.code == 422 && !self.message.contains("admission webhook")
    }
}

/// Creates any namespaced object from its manifest in `namespace`
/// (ignoring the namespace the manifest names). `dry_run` asks the API
/// server to run the whole admission chain but persist nothing.
pub async fn create_object(
    client: &kube::Client,
    namespace: &str,
    manifest: &Value,
    dry_run: bool,
) -> Result<(), Refusal> {
    let mut manifest = manifest.clone();
    manifest["metadata"]["namespace"] = json!(namespace);
    let resource = ApiResource::from_gvk(&gvk_of(&manifest));
    let object: DynamicObject = serde_json::from_value(manifest).map_err(|e| Refusal {
        code: 0,
        message: format!("not an object: {e}"),
    })?;
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        .create(&params, &object)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(status) => Refusal {
                code: status.code,
                message: status.message,
            },
            other => Refusal {
                code: 0,
                message: other.to_string(),
            },
        })
}
