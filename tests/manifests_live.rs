//! `kubectl apply -k manifests/` is accepted by a real API server
//! (server-side dry run: every object validated, nothing persisted).
mod support;

use support::Sandbox;

#[tokio::test]
async fn the_whole_operator_installs_with_kubectl_apply_k() {
    let sandbox = Sandbox::connect().await;
    // CRDs and the namespace must exist for a server-side dry run of the rest.
    for file in ["crd.yaml", "policyreport-crd.yaml"] {
        let path = support::repo_root().join("manifests").join(file);
        let (ok, out) = sandbox.kubectl(&["apply", "-f", path.to_str().unwrap()]);
        assert!(ok, "{file}: {out}");
    }
    let (ok, out) = sandbox.kubectl(&["create", "namespace", "aiops-system"]);
    assert!(ok || out.contains("AlreadyExists"), "{out}");
    let dir = support::repo_root().join("manifests");
    let (ok, out) = sandbox.kubectl(&["apply", "-k", dir.to_str().unwrap(), "--dry-run=server"]);
    assert!(ok, "kubectl apply -k manifests/ --dry-run=server:\n{out}");
    for expected in [
        "deployment.apps/aiops-operator",
        "customresourcedefinition.apiextensions.k8s.io/remediations.aiops-operator.dev",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/aiops-operator-validating",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/aiops-operator-approval",
        "clusterrole.rbac.authorization.k8s.io/aiops-operator-remediation",
    ] {
        assert!(out.contains(expected), "missing {expected} in:\n{out}");
    }
}
