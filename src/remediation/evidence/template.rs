//! The owner's pod template per container, summarized: image, resources, env
//! var names (never values), command and args (redacted), probes, ports.
use super::*;

/// The pod template per container: what is configured, never env values.
pub fn summarize_containers(spec: &PodSpec) -> Vec<ContainerTemplate> {
    spec.init_containers
        .iter()
        .flatten()
        .map(|c| (c, true))
        .chain(spec.containers.iter().map(|c| (c, false)))
        .map(|(container, init)| summarize_container(container, init))
        .collect()
}

pub(super) fn summarize_container(container: &Container, init: bool) -> ContainerTemplate {
    let resources = container.resources.as_ref();
    let quantities = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        map.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut env_names: Vec<String> = container
        .env
        .iter()
        .flatten()
        .map(|var| var.name.clone())
        .collect();
    // Sources are named, their contents never read.
    for source in container.env_from.iter().flatten() {
        let prefix = source
            .prefix
            .as_deref()
            .map(|p| format!(" (prefix {p})"))
            .unwrap_or_default();
        if let Some(name) = source.config_map_ref.as_ref().map(|r| &r.name) {
            env_names.push(format!("envFrom:configMap/{name}{prefix}"));
        }
        if let Some(name) = source.secret_ref.as_ref().map(|r| &r.name) {
            env_names.push(format!("envFrom:secret/{name}{prefix}"));
        }
    }
    env_names.truncate(MAX_ENV_NAMES);
    let probes = [
        ("liveness", &container.liveness_probe),
        ("readiness", &container.readiness_probe),
        ("startup", &container.startup_probe),
    ]
    .into_iter()
    .filter_map(|(kind, probe)| Some(summarize_probe(kind, probe.as_ref()?)))
    .collect();
    ContainerTemplate {
        name: container.name.clone(),
        init,
        image: container.image.clone().unwrap_or_default(),
        requests: quantities(resources.and_then(|r| r.requests.as_ref())),
        limits: quantities(resources.and_then(|r| r.limits.as_ref())),
        env_names,
        command: bounded_args(container.command.as_deref()),
        args: bounded_args(container.args.as_deref()),
        probes,
        ports: container
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect(),
    }
}

pub(super) fn bounded_args(args: Option<&[String]>) -> Vec<String> {
    let args = args.unwrap_or_default();
    let mut out: Vec<String> = redact_args(&args[..args.len().min(MAX_ARGS)])
        .into_iter()
        .map(|a| truncate(&a, MAX_ARG_BYTES))
        .collect();
    if args.len() > MAX_ARGS {
        out.push(format!("… {} more", args.len() - MAX_ARGS));
    }
    out
}

/// "readiness: httpGet :8080/healthz every 10s, timeout 1s, 3 failures".
pub(super) fn summarize_probe(kind: &str, probe: &Probe) -> String {
    let port = |p: &IntOrString| match p {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    let action = if let Some(http) = &probe.http_get {
        format!(
            "httpGet {}:{}{}",
            http.scheme
                .as_deref()
                .map(|s| s.to_lowercase() + "://")
                .unwrap_or_default(),
            port(&http.port),
            http.path.as_deref().unwrap_or("/")
        )
    } else if let Some(tcp) = &probe.tcp_socket {
        format!("tcpSocket :{}", port(&tcp.port))
    } else if let Some(grpc) = &probe.grpc {
        format!("grpc :{}", grpc.port)
    } else if let Some(exec) = &probe.exec {
        let command = redact_args(exec.command.as_deref().unwrap_or_default()).join(" ");
        format!("exec {}", truncate(&command, MAX_ARG_BYTES))
    } else {
        "no action".to_string()
    };
    let mut timing = vec![format!("every {}s", probe.period_seconds.unwrap_or(10))];
    if let Some(delay) = probe.initial_delay_seconds.filter(|d| *d > 0) {
        timing.push(format!("after {delay}s"));
    }
    timing.push(format!("timeout {}s", probe.timeout_seconds.unwrap_or(1)));
    timing.push(format!("{} failures", probe.failure_threshold.unwrap_or(3)));
    format!("{kind}: {action} {}", timing.join(", "))
}

// ---------------------------------------------------------------- statuses
