//! `validate.podSecurity`: the Kubernetes Pod Security Standards (baseline
//! and restricted levels) checked natively against a pod spec, with
//! Kyverno-style exclusions by control name, image, field and value.

use serde_json::Value;

use crate::spec::{PodSecurityExclusion, PodSecuritySpec};
use crate::wildcard;

/// One finding: which control, which field, which container image (`None`
/// for pod-level fields) and which offending values.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub control: &'static str,
    pub field: String,
    pub image: Option<String>,
    pub values: Vec<String>,
}

const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];
const RESTRICTED_VOLUME_TYPES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// A container with the field prefix used in violation paths.
struct Container<'a> {
    prefix: &'static str,
    spec: &'a Value,
}

impl Container<'_> {
    fn image(&self) -> Option<String> {
        self.spec
            .get("image")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn security(&self, path: &str) -> Option<&Value> {
        self.spec.pointer(&format!("/securityContext{path}"))
    }

    fn violation(&self, control: &'static str, field: &str, values: Vec<String>) -> Violation {
        Violation {
            control,
            field: format!("{}.{field}", self.prefix),
            image: self.image(),
            values,
        }
    }
}

fn containers(spec: &Value) -> Vec<Container<'_>> {
    let mut all = Vec::new();
    for (list, prefix) in [
        ("containers", "spec.containers[*]"),
        ("initContainers", "spec.initContainers[*]"),
        ("ephemeralContainers", "spec.ephemeralContainers[*]"),
    ] {
        if let Some(Value::Array(items)) = spec.get(list) {
            all.extend(items.iter().map(|spec| Container { prefix, spec }));
        }
    }
    all
}

fn pod_violation(control: &'static str, field: &str, values: Vec<String>) -> Violation {
    Violation {
        control,
        field: field.to_string(),
        image: None,
        values,
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

fn is_true(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool) == Some(true)
}

/// Checks a pod (metadata + spec) against the given level.
pub fn evaluate(spec: &PodSecuritySpec, metadata: &Value, pod_spec: &Value) -> Vec<Violation> {
    let mut violations = Vec::new();
    if spec.level == "privileged" {
        return violations;
    }
    baseline(metadata, pod_spec, &mut violations);
    if spec.level == "restricted" {
        restricted(pod_spec, &mut violations);
    }
    violations.retain(|v| !spec.exclude.iter().any(|e| exclusion_covers(e, v)));
    violations
}

fn exclusion_covers(exclusion: &PodSecurityExclusion, violation: &Violation) -> bool {
    if !exclusion
        .control_name
        .eq_ignore_ascii_case(violation.control)
    {
        return false;
    }
    let scope_ok = match (&violation.image, exclusion.images.is_empty()) {
        (None, true) => true,
        (Some(image), false) => exclusion.images.iter().any(|p| wildcard::matches(p, image)),
        _ => false,
    };
    if !scope_ok {
        return false;
    }
    if let Some(field) = &exclusion.restricted_field {
        if !wildcard::matches(field, &violation.field) {
            return false;
        }
        if !exclusion.values.is_empty()
            && !violation.values.iter().all(|v| {
                exclusion
                    .values
                    .iter()
                    .any(|allowed| wildcard::matches(allowed, v))
            })
        {
            return false;
        }
    }
    true
}

fn baseline(metadata: &Value, spec: &Value, out: &mut Vec<Violation>) {
    let all = containers(spec);

    // HostProcess
    if is_true(spec.pointer("/securityContext/windowsOptions/hostProcess")) {
        out.push(pod_violation(
            "HostProcess",
            "spec.securityContext.windowsOptions.hostProcess",
            vec!["true".into()],
        ));
    }
    for c in &all {
        if is_true(c.security("/windowsOptions/hostProcess")) {
            out.push(c.violation(
                "HostProcess",
                "securityContext.windowsOptions.hostProcess",
                vec!["true".into()],
            ));
        }
    }

    // Host Namespaces
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if is_true(spec.get(field)) {
            out.push(pod_violation(
                "Host Namespaces",
                &format!("spec.{field}"),
                vec!["true".into()],
            ));
        }
    }

    // Privileged Containers
    for c in &all {
        if is_true(c.security("/privileged")) {
            out.push(c.violation(
                "Privileged Containers",
                "securityContext.privileged",
                vec!["true".into()],
            ));
        }
    }

    // Capabilities (baseline)
    for c in &all {
        if let Some(Value::Array(added)) = c.security("/capabilities/add") {
            let bad: Vec<String> = added
                .iter()
                .map(text)
                .filter(|cap| !BASELINE_CAPABILITIES.contains(&cap.as_str()))
                .collect();
            if !bad.is_empty() {
                out.push(c.violation("Capabilities", "securityContext.capabilities.add", bad));
            }
        }
    }

    // HostPath Volumes
    if let Some(Value::Array(volumes)) = spec.get("volumes") {
        let host_paths: Vec<String> = volumes
            .iter()
            .filter(|v| v.get("hostPath").is_some())
            .map(|v| v.get("name").map(text).unwrap_or_default())
            .collect();
        if !host_paths.is_empty() {
            out.push(pod_violation(
                "HostPath Volumes",
                "spec.volumes[*].hostPath",
                host_paths,
            ));
        }
    }

    // Host Ports
    for c in &all {
        if let Some(Value::Array(ports)) = c.spec.get("ports") {
            let bad: Vec<String> = ports
                .iter()
                .filter_map(|p| p.get("hostPort"))
                .filter(|port| port.as_f64().is_some_and(|n| n != 0.0))
                .map(text)
                .collect();
            if !bad.is_empty() {
                out.push(c.violation("Host Ports", "ports[*].hostPort", bad));
            }
        }
    }

    // AppArmor
    if let Some(annotations) = metadata.get("annotations").and_then(Value::as_object) {
        for (key, value) in annotations {
            if !key.starts_with("container.apparmor.security.beta.kubernetes.io/") {
                continue;
            }
            let profile = text(value);
            if profile != "runtime/default" && !profile.starts_with("localhost/") {
                out.push(pod_violation(
                    "AppArmor",
                    &format!("metadata.annotations[{key}]"),
                    vec![profile],
                ));
            }
        }
    }
    let apparmor_ok = |t: &Value| matches!(t.as_str(), Some("RuntimeDefault") | Some("Localhost"));
    if let Some(kind) = spec.pointer("/securityContext/appArmorProfile/type")
        && !apparmor_ok(kind)
    {
        out.push(pod_violation(
            "AppArmor",
            "spec.securityContext.appArmorProfile.type",
            vec![text(kind)],
        ));
    }
    for c in &all {
        if let Some(kind) = c.security("/appArmorProfile/type")
            && !apparmor_ok(kind)
        {
            out.push(c.violation(
                "AppArmor",
                "securityContext.appArmorProfile.type",
                vec![text(kind)],
            ));
        }
    }

    // SELinux
    let selinux_problems = |options: &Value| -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(kind) = options.get("type")
            && !SELINUX_TYPES.contains(&text(kind).as_str())
        {
            problems.push(("type".to_string(), text(kind)));
        }
        for field in ["user", "role"] {
            if let Some(value) = options.get(field)
                && !text(value).is_empty()
            {
                problems.push((field.to_string(), text(value)));
            }
        }
        problems
    };
    if let Some(options) = spec.pointer("/securityContext/seLinuxOptions") {
        for (field, value) in selinux_problems(options) {
            out.push(pod_violation(
                "SELinux",
                &format!("spec.securityContext.seLinuxOptions.{field}"),
                vec![value],
            ));
        }
    }
    for c in &all {
        if let Some(options) = c.security("/seLinuxOptions") {
            for (field, value) in selinux_problems(options) {
                out.push(c.violation(
                    "SELinux",
                    &format!("securityContext.seLinuxOptions.{field}"),
                    vec![value],
                ));
            }
        }
    }

    // /proc Mount Type
    for c in &all {
        if let Some(mount) = c.security("/procMount")
            && mount.as_str() != Some("Default")
        {
            out.push(c.violation(
                "/proc Mount Type",
                "securityContext.procMount",
                vec![text(mount)],
            ));
        }
    }

    // Seccomp (baseline): Unconfined is never allowed.
    if spec
        .pointer("/securityContext/seccompProfile/type")
        .and_then(Value::as_str)
        == Some("Unconfined")
    {
        out.push(pod_violation(
            "Seccomp",
            "spec.securityContext.seccompProfile.type",
            vec!["Unconfined".into()],
        ));
    }
    for c in &all {
        if c.security("/seccompProfile/type").and_then(Value::as_str) == Some("Unconfined") {
            out.push(c.violation(
                "Seccomp",
                "securityContext.seccompProfile.type",
                vec!["Unconfined".into()],
            ));
        }
    }

    // Sysctls
    if let Some(Value::Array(sysctls)) = spec.pointer("/securityContext/sysctls") {
        let bad: Vec<String> = sysctls
            .iter()
            .map(|s| s.get("name").map(text).unwrap_or_default())
            .filter(|name| !SAFE_SYSCTLS.contains(&name.as_str()))
            .collect();
        if !bad.is_empty() {
            out.push(pod_violation(
                "Sysctls",
                "spec.securityContext.sysctls[*].name",
                bad,
            ));
        }
    }
}

fn restricted(spec: &Value, out: &mut Vec<Violation>) {
    let all = containers(spec);
    let windows = spec.pointer("/os/name").and_then(Value::as_str) == Some("windows");

    // Volume Types
    if let Some(Value::Array(volumes)) = spec.get("volumes") {
        let mut bad = Vec::new();
        for volume in volumes {
            if let Some(map) = volume.as_object() {
                for key in map.keys() {
                    if key != "name" && !RESTRICTED_VOLUME_TYPES.contains(&key.as_str()) {
                        bad.push(key.clone());
                    }
                }
            }
        }
        if !bad.is_empty() {
            out.push(pod_violation("Volume Types", "spec.volumes[*]", bad));
        }
    }

    // Privilege Escalation
    if !windows {
        for c in &all {
            if c.security("/allowPrivilegeEscalation")
                .and_then(Value::as_bool)
                != Some(false)
            {
                let value = c
                    .security("/allowPrivilegeEscalation")
                    .map(text)
                    .unwrap_or_else(|| "undefined".into());
                out.push(c.violation(
                    "Privilege Escalation",
                    "securityContext.allowPrivilegeEscalation",
                    vec![value],
                ));
            }
        }
    }

    // Running as Non-root
    let pod_non_root = spec
        .pointer("/securityContext/runAsNonRoot")
        .and_then(Value::as_bool);
    if pod_non_root == Some(false) {
        out.push(pod_violation(
            "Running as Non-root",
            "spec.securityContext.runAsNonRoot",
            vec!["false".into()],
        ));
    }
    for c in &all {
        match c.security("/runAsNonRoot").and_then(Value::as_bool) {
            Some(true) => {}
            Some(false) => out.push(c.violation(
                "Running as Non-root",
                "securityContext.runAsNonRoot",
                vec!["false".into()],
            )),
            None if pod_non_root != Some(true) => {
                out.push(c.violation(
                    "Running as Non-root",
                    "securityContext.runAsNonRoot",
                    vec!["undefined".into()],
                ));
            }
            None => {}
        }
    }

    // Running as Non-root user
    let is_root = |v: Option<&Value>| v.and_then(Value::as_f64) == Some(0.0);
    if is_root(spec.pointer("/securityContext/runAsUser")) {
        out.push(pod_violation(
            "Running as Non-root user",
            "spec.securityContext.runAsUser",
            vec!["0".into()],
        ));
    }
    for c in &all {
        if is_root(c.security("/runAsUser")) {
            out.push(c.violation(
                "Running as Non-root user",
                "securityContext.runAsUser",
                vec!["0".into()],
            ));
        }
    }

    if windows {
        return;
    }

    // Seccomp (restricted): RuntimeDefault or Localhost, set on the pod or
    // on every container.
    let valid = |t: Option<&str>| matches!(t, Some("RuntimeDefault") | Some("Localhost"));
    let pod_type = spec
        .pointer("/securityContext/seccompProfile/type")
        .and_then(Value::as_str);
    if pod_type.is_some() && !valid(pod_type) {
        out.push(pod_violation(
            "Seccomp",
            "spec.securityContext.seccompProfile.type",
            vec![pod_type.unwrap_or_default().to_string()],
        ));
    }
    for c in &all {
        let container_type = c.security("/seccompProfile/type").and_then(Value::as_str);
        let ok = match container_type {
            Some(_) => valid(container_type),
            None => valid(pod_type),
        };
        if !ok {
            out.push(c.violation(
                "Seccomp",
                "securityContext.seccompProfile.type",
                vec![container_type.unwrap_or("undefined").to_string()],
            ));
        }
    }

    // Capabilities (restricted): drop ALL, add at most NET_BIND_SERVICE.
    for c in &all {
        let drops_all = matches!(c.security("/capabilities/drop"), Some(Value::Array(d)) if d.iter().any(|v| v.as_str() == Some("ALL")));
        if !drops_all {
            out.push(c.violation(
                "Capabilities",
                "securityContext.capabilities.drop",
                vec!["ALL not dropped".into()],
            ));
        }
        if let Some(Value::Array(added)) = c.security("/capabilities/add") {
            let bad: Vec<String> = added
                .iter()
                .map(text)
                .filter(|cap| cap != "NET_BIND_SERVICE")
                .collect();
            if !bad.is_empty() {
                out.push(c.violation("Capabilities", "securityContext.capabilities.add", bad));
            }
        }
    }
}

/// Human-readable summary of violations for rule messages.
pub fn describe(violations: &[Violation]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for v in violations {
        // Baseline and restricted variants of a control can flag the same field.
        let line = format!("{} ({}={})", v.control, v.field, v.values.join(","));
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn level(level: &str) -> PodSecuritySpec {
        PodSecuritySpec {
            level: level.into(),
            version: "latest".into(),
            exclude: vec![],
        }
    }

    fn restricted_ok_container() -> Value {
        json!({"name": "c", "image": "nginx", "securityContext": {
            "allowPrivilegeEscalation": false, "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"}, "capabilities": {"drop": ["ALL"]}}})
    }

    #[test]
    fn baseline_flags_host_namespaces_and_privileged() {
        let spec = json!({"hostIPC": true, "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]});
        let found = evaluate(&level("baseline"), &json!({}), &spec);
        let controls: Vec<&str> = found.iter().map(|v| v.control).collect();
        assert!(controls.contains(&"Host Namespaces"));
        assert!(controls.contains(&"Privileged Containers"));
        assert!(
            evaluate(
                &level("baseline"),
                &json!({}),
                &json!({"containers": [{"name": "c", "image": "x"}]})
            )
            .is_empty()
        );
    }

    #[test]
    fn restricted_requires_hardening() {
        let good = json!({"containers": [restricted_ok_container()]});
        assert!(evaluate(&level("restricted"), &json!({}), &good).is_empty());
        let bare = json!({"containers": [{"name": "c", "image": "x"}]});
        let controls: Vec<&str> = evaluate(&level("restricted"), &json!({}), &bare)
            .iter()
            .map(|v| v.control)
            .collect();
        for expected in [
            "Privilege Escalation",
            "Running as Non-root",
            "Seccomp",
            "Capabilities",
        ] {
            assert!(controls.contains(&expected), "{expected}");
        }
    }

    #[test]
    fn exclusions_by_control_and_image() {
        let mut container = restricted_ok_container();
        container["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"]);
        container["image"] = json!("ghcr.io/kyverno/test-nginx:latest");
        let spec = json!({"containers": [container]});
        let mut policy = level("restricted");
        assert!(!evaluate(&policy, &json!({}), &spec).is_empty());
        policy.exclude.push(PodSecurityExclusion {
            control_name: "Capabilities".into(),
            images: vec!["ghcr.io/kyverno/test-nginx*".into()],
            restricted_field: None,
            values: vec![],
        });
        assert!(evaluate(&policy, &json!({}), &spec).is_empty());
    }

    #[test]
    fn pod_level_exclusion_needs_no_images() {
        let mut container = restricted_ok_container();
        container["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("seccompProfile");
        let spec = json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [container]});
        let mut policy = level("restricted");
        policy.exclude.push(PodSecurityExclusion {
            control_name: "Seccomp".into(),
            images: vec![],
            restricted_field: None,
            values: vec![],
        });
        // The container-level finding remains until images are exempted too.
        assert_eq!(evaluate(&policy, &json!({}), &spec).len(), 1);
        policy.exclude.push(PodSecurityExclusion {
            control_name: "Seccomp".into(),
            images: vec!["*".into()],
            restricted_field: None,
            values: vec![],
        });
        assert!(evaluate(&policy, &json!({}), &spec).is_empty());
    }
}
