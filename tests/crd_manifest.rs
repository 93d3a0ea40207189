//! The Remediation CRD in `manifests/crd.yaml` is generated from the Rust
//! types; this fails when the two drift apart (regenerate with `make crd`).
use std::path::PathBuf;

#[test]
fn manifests_crd_matches_the_rust_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests/crd.yaml");
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let generated = aiops_operator::remediation::crd_yaml().expect("CRD renders");
    assert!(
        on_disk == generated,
        "manifests/crd.yaml is stale: run `make crd` to regenerate it from src/remediation/crd.rs"
    );
}

#[test]
fn crd_names_and_columns_are_as_documented() {
    use kube::CustomResourceExt;
    let crd = aiops_operator::remediation::crd::Remediation::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("remediations.aiops-operator.dev")
    );
    assert_eq!(crd.spec.names.short_names, Some(vec!["rem".to_string()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Target", "Reason", "Class", "Phase", "Approved", "Age"]
    );
}

#[test]
fn approved_is_always_serialized() {
    use aiops_operator::remediation::crd::{RemediationSpec, WorkloadRef};
    let spec = RemediationSpec {
        target: WorkloadRef::default(),
        approved: false,
        rejected: false,
        approval: None,
    };
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["approved"], serde_json::json!(false));
}

/// `manifests/policies-configmap.yaml` carries `policies/*.yaml` for the
/// in-cluster Deployment; regenerate with `make manifests`.
#[test]
fn manifests_policies_configmap_matches_policies_dir() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("policies"))
        .expect("policies/ exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "the 12 baseline policies: {files:?}");
    let mut data = serde_yaml::Mapping::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        data.insert(name.into(), std::fs::read_to_string(file).unwrap().into());
    }
    let configmap = serde_yaml::to_string(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "aiops-operator-policies", "namespace": "aiops-system"},
    }))
    .unwrap();
    let generated = format!(
        "# Generated from policies/*.yaml by `make manifests`; do not edit.\n{configmap}{}",
        serde_yaml::to_string(&serde_yaml::Value::Mapping(
            [("data".into(), serde_yaml::Value::Mapping(data))]
                .into_iter()
                .collect()
        ))
        .unwrap()
    );
    let path = root.join("manifests/policies-configmap.yaml");
    if std::env::var_os("AIOPS_UPDATE_MANIFESTS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "manifests/policies-configmap.yaml is stale: run `make manifests`"
    );
}
