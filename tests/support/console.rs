//! People who use the console, as the tests make them: ServiceAccounts
//! bound to the shipped console roles (`manifests/console-rbac.yaml`), and
//! their tokens from the TokenRequest API, as `kubectl create token` gets
//! them.
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::sandbox::{Sandbox, repo_root};

/// The ServiceAccount that may only read cases (the reader role, cluster-wide).
pub const READER: &str = "reader";
/// The ServiceAccount that also may approve in the case's namespace.
pub const APPROVER: &str = "approver";

/// [`READER`] and [`APPROVER`] in `namespace`, bound to the shipped roles:
/// both read Remediations and Events everywhere (the console lists
/// cluster-wide), the approver also patches Remediations in `namespace`.
/// The cluster-wide binding is deleted on drop (the namespace takes the rest).
pub struct ConsoleUsers<'a> {
    sandbox: &'a Sandbox,
    namespace: String,
    read_binding: String,
}

impl<'a> ConsoleUsers<'a> {
    pub async fn grant(sandbox: &'a Sandbox, namespace: &str) -> ConsoleUsers<'a> {
        let roles = repo_root().join("manifests/console-rbac.yaml");
        let (ok, out) = sandbox.kubectl(&["apply", "-f", &roles.display().to_string()]);
        assert!(ok, "applying manifests/console-rbac.yaml: {out}");
        let accounts: Api<ServiceAccount> = Api::namespaced(sandbox.client.clone(), namespace);
        for name in [READER, APPROVER] {
            let account = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            accounts
                .create(&PostParams::default(), &account)
                .await
                .unwrap_or_else(|err| panic!("ServiceAccount {namespace}/{name}: {err}"));
        }
        let users = ConsoleUsers {
            sandbox,
            namespace: namespace.to_string(),
            read_binding: format!("{namespace}-console-read"),
        };
        let subject = |name: &str| format!("--serviceaccount={namespace}:{name}");
        let (ok, out) = sandbox.kubectl(&[
            "create",
            "clusterrolebinding",
            &users.read_binding,
            "--clusterrole=aiops-operator-console-reader",
            &subject(READER),
            &subject(APPROVER),
        ]);
        assert!(ok, "binding the console reader role: {out}");
        let (ok, out) = sandbox.kubectl(&[
            "-n",
            namespace,
            "create",
            "rolebinding",
            "console-approver",
            "--clusterrole=aiops-operator-console-approver",
            &subject(APPROVER),
        ]);
        assert!(ok, "binding the console approver role: {out}");
        users
    }

    /// `system:serviceaccount:<namespace>:<name>`, the name the API server
    /// (and so the approval record) gives the user.
    pub fn user_name(&self, name: &str) -> String {
        format!("system:serviceaccount:{}:{name}", self.namespace)
    }

    /// A one-hour token for the user `name` from the TokenRequest API.
    pub async fn token(&self, name: &str) -> String {
        service_account_token(&self.sandbox.client, &self.namespace, name).await
    }
}

impl Drop for ConsoleUsers<'_> {
    fn drop(&mut self) {
        let _ = self.sandbox.kubectl(&[
            "delete",
            "clusterrolebinding",
            &self.read_binding,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

/// A one-hour token for the ServiceAccount `namespace/name` from the
/// TokenRequest API.
pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }))
    .unwrap();
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|err| panic!("a token for {namespace}/{name}: {err}"))
        .status
        .map(|s| s.token)
        .unwrap_or_else(|| panic!("the TokenRequest for {namespace}/{name} has no token"))
}
