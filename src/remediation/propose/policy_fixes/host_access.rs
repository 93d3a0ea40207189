//! Host access: a workload given the node's PID or IPC namespace rarely
//! depends on it, and turning it off is the fix. Host networking, host
//! paths, host ports and Windows host processes change what the workload
//! is (where it listens, what it reads, what it runs as): the proposal
//! names the exact fields and leaves the change to a person.
use serde_json::{Value, json};

use super::{FixContext, RuleVerdict, pod_change};

pub fn host_namespaces(ctx: &FixContext) -> RuleVerdict {
    let mut result = RuleVerdict {
        confidence: 0.6,
        ..RuleVerdict::default()
    };
    for field in ["hostPID", "hostIPC"] {
        if ctx.spec.get(field) == Some(&json!(true)) {
            result.changes.push(pod_change(
                json!({ field: false }),
                format!("set {} to false", ctx.path(field)),
            ));
        }
    }
    if !result.changes.is_empty() {
        result.risks.push(
            "a process that inspects or signals other processes of the node, or shares memory with them, stops seeing them"
                .into(),
        );
    }
    if ctx.spec.get("hostNetwork") == Some(&json!(true)) {
        result.needs_human.push(format!(
            "{} is true: the pod listens on the node's addresses; turning it off changes its address and ports, so expose it through a Service and set it to false in the manifest",
            ctx.path("hostNetwork")
        ));
    }
    result
}

pub fn host_path(ctx: &FixContext) -> RuleVerdict {
    let volumes: Vec<String> = ctx
        .spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("hostPath").is_some())
        .map(|v| {
            let name = v.get("name").and_then(Value::as_str).unwrap_or("?");
            let path = v
                .pointer("/hostPath/path")
                .and_then(Value::as_str)
                .unwrap_or("?");
            format!(
                "{} (node path {path})",
                ctx.path(&format!("volumes[{name}].hostPath"))
            )
        })
        .collect();
    diagnosis(
        volumes,
        "the data lives on the node: replace each with emptyDir, a configMap/secret or a PersistentVolumeClaim in the manifest",
    )
}

pub fn host_ports(ctx: &FixContext) -> RuleVerdict {
    let mut ports = Vec::new();
    for (list, name, container) in ctx.containers() {
        for port in container
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let host = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if host != 0 && !(5000..=6000).contains(&host) {
                let container_port = port
                    .get("containerPort")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                ports.push(format!(
                    "{} = {host}",
                    ctx.path(&format!("{list}[{name}].ports[{container_port}].hostPort"))
                ));
            }
        }
    }
    diagnosis(
        ports,
        "clients reach the pod on the node's port: publish it through a Service, then remove hostPort in the manifest",
    )
}

pub fn host_process(ctx: &FixContext) -> RuleVerdict {
    let mut fields = Vec::new();
    let pointer = "/securityContext/windowsOptions/hostProcess";
    if ctx.spec.pointer(pointer) == Some(&json!(true)) {
        fields.push(ctx.path("securityContext.windowsOptions.hostProcess"));
    }
    for (list, name, container) in ctx.containers() {
        if container.pointer(pointer) == Some(&json!(true)) {
            fields.push(ctx.path(&format!(
                "{list}[{name}].securityContext.windowsOptions.hostProcess"
            )));
        }
    }
    diagnosis(
        fields,
        "a HostProcess container is a node agent by design (and needs hostNetwork); running it as an ordinary container is a different workload",
    )
}

/// No change: each offending field, and why a person decides.
fn diagnosis(fields: Vec<String>, why: &str) -> RuleVerdict {
    RuleVerdict {
        needs_human: if fields.is_empty() {
            Vec::new()
        } else {
            vec![format!("{}: {why}", fields.join(", "))]
        },
        ..RuleVerdict::default()
    }
}
