//! Helm, Argo CD and Flux management markers: a sync would revert a live
//! patch, so proposals say so.
use super::*;

/// Labels and annotations that show who else manages the workload: a live
/// patch to a GitOps- or Helm-managed object is reverted by the next sync.
pub fn management_markers(metadata: &Value) -> BTreeMap<String, String> {
    let mut markers = BTreeMap::new();
    let entries = ["labels", "annotations"]
        .iter()
        .filter_map(|field| metadata.get(*field)?.as_object())
        .flatten();
    let mut instance = None;
    let mut argo = false;
    for (key, value) in entries {
        let value = value.as_str().unwrap_or_default();
        let is_marker = key == "app.kubernetes.io/managed-by"
            || key == "helm.sh/chart"
            || key.starts_with("meta.helm.sh/")
            || key.starts_with("argocd.argoproj.io/")
            || key.starts_with("kustomize.toolkit.fluxcd.io/")
            || key.starts_with("helm.toolkit.fluxcd.io/");
        argo |= key.starts_with("argocd.argoproj.io/");
        if key == "app.kubernetes.io/instance" {
            instance = Some(value.to_string());
        }
        if is_marker {
            markers.insert(key.clone(), truncate(&redact(value), MAX_MARKER_BYTES));
        }
    }
    // Argo CD tracks by this label too, but Helm charts set it as well: it
    // only says "Argo CD" next to an Argo CD marker.
    if let Some(instance) = instance.filter(|_| argo) {
        markers.insert(
            "app.kubernetes.io/instance".into(),
            truncate(&redact(&instance), MAX_MARKER_BYTES),
        );
    }
    markers
}

/// The tools that manage a workload, from [`management_markers`].
pub fn management_tools(markers: &BTreeMap<String, String>) -> Vec<ManagedBy> {
    let mut tools = BTreeSet::new();
    for (key, value) in markers {
        if (key == "app.kubernetes.io/managed-by" && value.eq_ignore_ascii_case("helm"))
            || key.starts_with("meta.helm.sh/")
            || key == "helm.sh/chart"
        {
            tools.insert(ManagedBy::Helm);
        }
        if key.starts_with("argocd.argoproj.io/") {
            tools.insert(ManagedBy::ArgoCd);
        }
        if key.starts_with("kustomize.toolkit.fluxcd.io/")
            || key.starts_with("helm.toolkit.fluxcd.io/")
        {
            tools.insert(ManagedBy::Flux);
        }
    }
    tools.into_iter().collect()
}

// ---------------------------------------------------------------- size bound
