//! Any text as a policy file, loaded as the webhook loads `policies/`
//! and, when it loads, evaluated (validate and mutate) against a pod, a
//! Deployment and a Namespace; and any text as the admission ConfigMap's
//! data. A panic or a hang is a finding; a load error is the expected
//! answer to garbage.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use aiops_operator::admission::modes::parse_config_map;
use aiops_policy::{EvalInput, PolicySet};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn resources() -> &'static [Value] {
    static RESOURCES: OnceLock<Vec<Value>> = OnceLock::new();
    RESOURCES.get_or_init(|| {
        let pod_spec = json!({
            "hostNetwork": true,
            "securityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]},
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{
                "name": "app", "image": "nginx:latest",
                "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN"]}},
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "resources": {"limits": {"memory": "64Mi", "cpu": "1"}},
            }],
            "volumes": [{"name": "host", "hostPath": {"path": "/var/run"}}],
        });
        vec![
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "p", "namespace": "shop", "labels": {"app": "web"},
                                "annotations": {"a": "b"}},
                   "spec": pod_spec}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "d", "namespace": "shop"},
                   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}}}),
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "shop", "labels": {"team": "a"}}}),
        ]
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(set) = PolicySet::from_yaml(text, "fuzz.yaml") {
        for resource in resources() {
            let input = EvalInput::for_resource(resource);
            let _ = set.select(&input).validate(&input);
            let _ = set.mutate(&input);
        }
    }
    if let Ok(data) = serde_yaml::from_str::<BTreeMap<String, String>>(text) {
        let _ = parse_config_map(Some(&data), "aiops-system");
    }
});
