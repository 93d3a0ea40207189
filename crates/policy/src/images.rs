//! Container image references split the way Kyverno's `images` variable
//! exposes them: registry, path, name, tag and digest, with Docker Hub
//! defaults (`nginx` → `docker.io/library/nginx:latest`).

use serde_json::{Map, Value, json};

/// The parts of one image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    pub registry: String,
    pub path: String,
    pub name: String,
    pub tag: String,
    pub digest: String,
}

impl ImageReference {
    /// Parses `[registry/]path[:tag][@digest]`.
    pub fn parse(image: &str) -> ImageReference {
        let (without_digest, digest) = match image.split_once('@') {
            Some((head, digest)) => (head, digest.to_string()),
            None => (image, String::new()),
        };
        // A tag is the part after the last ':' that follows the last '/'.
        let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match without_digest[last_slash..].rfind(':') {
            Some(colon) => {
                let at = last_slash + colon;
                (&without_digest[..at], without_digest[at + 1..].to_string())
            }
            None => (without_digest, String::new()),
        };
        let (registry, path) = match repository.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), repository.to_string()),
        };
        let path = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let name = path.rsplit('/').next().unwrap_or(&path).to_string();
        let tag = if tag.is_empty() && digest.is_empty() {
            "latest".to_string()
        } else {
            tag
        };
        ImageReference {
            registry,
            path,
            name,
            tag,
            digest,
        }
    }

    /// The JSON object Kyverno exposes for one container's image.
    pub fn to_json(&self) -> Value {
        let mut reference = format!("{}/{}", self.registry, self.path);
        let reference_with_tag = format!("{reference}:{}", self.tag);
        if !self.tag.is_empty() {
            reference = reference_with_tag.clone();
        }
        if !self.digest.is_empty() {
            reference = format!("{reference}@{}", self.digest);
        }
        json!({
            "registry": self.registry,
            "path": self.path,
            "name": self.name,
            "tag": self.tag,
            "digest": self.digest,
            "reference": reference,
            "referenceWithTag": reference_with_tag,
        })
    }
}

/// The pod spec of a Pod or pod controller, if the kind has one.
pub fn pod_spec(resource: &Value) -> Option<&Value> {
    let spec = resource.get("spec")?;
    match resource.get("kind").and_then(Value::as_str)? {
        "Pod" => Some(spec),
        "CronJob" => spec.pointer("/jobTemplate/spec/template/spec"),
        "Deployment"
        | "DaemonSet"
        | "StatefulSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => spec.pointer("/template/spec"),
        _ => None,
    }
}

/// Builds the `images` context variable: container list name → container
/// name → image parts.
pub fn images_variable(resource: &Value) -> Value {
    let Some(spec) = pod_spec(resource) else {
        return Value::Object(Map::new());
    };
    let mut images = Map::new();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(Value::Array(containers)) = spec.get(list) else {
            continue;
        };
        let mut by_name = Map::new();
        for container in containers {
            let (Some(name), Some(image)) = (
                container.get("name").and_then(Value::as_str),
                container.get("image").and_then(Value::as_str),
            ) else {
                continue;
            };
            by_name.insert(name.to_string(), ImageReference::parse(image).to_json());
        }
        if !by_name.is_empty() {
            images.insert(list.to_string(), Value::Object(by_name));
        }
    }
    Value::Object(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_short_names() {
        let image = ImageReference::parse("nginx");
        assert_eq!(image.registry, "docker.io");
        assert_eq!(image.path, "library/nginx");
        assert_eq!(image.name, "nginx");
        assert_eq!(image.tag, "latest");
    }

    #[test]
    fn parses_registry_port_tag_and_digest() {
        let image = ImageReference::parse("localhost:5000/team/app:1.2@sha256:abc");
        assert_eq!(image.registry, "localhost:5000");
        assert_eq!(image.path, "team/app");
        assert_eq!(image.name, "app");
        assert_eq!(image.tag, "1.2");
        assert_eq!(image.digest, "sha256:abc");
        let image = ImageReference::parse("ghcr.io/kyverno/test-nginx:latest");
        assert_eq!(image.registry, "ghcr.io");
        assert_eq!(image.path, "kyverno/test-nginx");
    }

    #[test]
    fn builds_images_variable_for_controllers() {
        let deployment = json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "containers": [{"name": "web", "image": "nginx:1.25"}],
            "initContainers": [{"name": "init", "image": "busybox"}]}}}});
        let images = images_variable(&deployment);
        assert_eq!(images["containers"]["web"]["tag"], json!("1.25"));
        assert_eq!(images["initContainers"]["init"]["name"], json!("busybox"));
    }
}
