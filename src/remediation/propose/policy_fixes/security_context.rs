//! Security-context policies: each offending field is reset to the value
//! the baseline accepts (privileged false, procMount Default, seccomp and
//! AppArmor RuntimeDefault, SELinux type container_t), and lists lose the
//! entries the baseline refuses (capabilities.add, sysctls). Lists are set
//! whole: the API server treats both as atomic, so server-side apply
//! replaces them. What apply cannot remove (SELinux user/role, an AppArmor
//! annotation) is a diagnosis.
use serde_json::{Value, json};

use super::{FixContext, RuleVerdict, container_change, pod_change};

/// Capabilities the baseline lets a container add.
pub const BASELINE_CAPABILITIES: [&str; 13] = [
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

/// Sysctls the baseline accepts.
pub const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_fin_timeout",
];

const SELINUX_TYPES: [&str; 3] = ["container_t", "container_init_t", "container_kvm_t"];

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// Resets one string field of each container's securityContext (and, when
/// `pod_level`, of the pod's) that `bad` judges offending, to `good`.
fn reset_field(
    ctx: &FixContext,
    field: &[&str],
    bad: impl Fn(&str) -> bool,
    good: &str,
    pod_level: bool,
) -> Vec<super::Change> {
    let pointer = format!("/securityContext/{}", field.join("/"));
    let dotted = format!("securityContext.{}", field.join("."));
    let nested = |value: Value| {
        field
            .iter()
            .rev()
            .fold(value, |inner, key| json!({ *key: inner }))
    };
    let mut changes = Vec::new();
    if pod_level && let Some(old) = text(ctx.spec, &pointer).filter(|v| bad(v)) {
        changes.push(pod_change(
            json!({"securityContext": nested(json!(good))}),
            format!("set {} from {old} to {good}", ctx.path(&dotted)),
        ));
    }
    for (list, name, container) in ctx.containers() {
        if let Some(old) = text(container, &pointer).filter(|v| bad(v)) {
            changes.push(container_change(
                list,
                name,
                json!({"securityContext": nested(json!(good))}),
                format!(
                    "set {} from {old} to {good}",
                    ctx.path(&format!("{list}[{name}].{dotted}"))
                ),
            ));
        }
    }
    changes
}

fn verdict(changes: Vec<super::Change>, risk: &str, confidence: f64) -> RuleVerdict {
    let risks = if changes.is_empty() {
        Vec::new()
    } else {
        vec![risk.to_string()]
    };
    RuleVerdict {
        changes,
        risks,
        confidence,
        ..RuleVerdict::default()
    }
}

pub fn unprivileged(ctx: &FixContext) -> RuleVerdict {
    let mut changes = Vec::new();
    for (list, name, container) in ctx.containers() {
        if container.pointer("/securityContext/privileged") == Some(&json!(true)) {
            changes.push(container_change(
                list,
                name,
                json!({"securityContext": {"privileged": false}}),
                format!(
                    "set {} to false",
                    ctx.path(&format!("{list}[{name}].securityContext.privileged"))
                ),
            ));
        }
    }
    verdict(
        changes,
        "a process that uses node devices or needs all capabilities stops working; add only the capability it needs instead",
        0.7,
    )
}

pub fn baseline_capabilities(ctx: &FixContext) -> RuleVerdict {
    let mut changes = Vec::new();
    for (list, name, container) in ctx.containers() {
        let Some(added) = container
            .pointer("/securityContext/capabilities/add")
            .and_then(Value::as_array)
        else {
            continue;
        };
        let (kept, dropped): (Vec<&Value>, Vec<&Value>) = added.iter().partition(|cap| {
            cap.as_str()
                .is_some_and(|c| BASELINE_CAPABILITIES.contains(&c))
        });
        if dropped.is_empty() {
            continue;
        }
        let dropped: Vec<String> = dropped
            .iter()
            .map(|c| c.as_str().unwrap_or("?").to_string())
            .collect();
        changes.push(container_change(
            list,
            name,
            json!({"securityContext": {"capabilities": {"add": kept}}}),
            format!(
                "remove {} from {}",
                dropped.join(", "),
                ctx.path(&format!("{list}[{name}].securityContext.capabilities.add"))
            ),
        ));
    }
    verdict(
        changes,
        "a process that uses a removed capability fails where it needs it (e.g. raw sockets without NET_RAW)",
        0.6,
    )
}

pub fn default_proc_mount(ctx: &FixContext) -> RuleVerdict {
    let changes = reset_field(ctx, &["procMount"], |v| v != "Default", "Default", false);
    verdict(
        changes,
        "a process that reads masked /proc paths sees them masked again",
        0.8,
    )
}

pub fn runtime_default_seccomp(ctx: &FixContext) -> RuleVerdict {
    let changes = reset_field(
        ctx,
        &["seccompProfile", "type"],
        |v| v != "RuntimeDefault" && v != "Localhost",
        "RuntimeDefault",
        true,
    );
    verdict(
        changes,
        "a process making system calls the runtime's default profile blocks gets EPERM",
        0.7,
    )
}

pub fn confined_apparmor(ctx: &FixContext) -> RuleVerdict {
    let changes = reset_field(
        ctx,
        &["appArmorProfile", "type"],
        |v| v != "RuntimeDefault" && v != "Localhost",
        "RuntimeDefault",
        true,
    );
    let mut result = verdict(
        changes,
        "a process doing what the runtime's default AppArmor profile denies is refused",
        0.7,
    );
    result.needs_human.extend(unconfined_annotations(ctx));
    result
}

/// AppArmor annotations with a profile the baseline refuses: an
/// annotation set by another manager cannot be removed by this fix's
/// apply, so a person edits the manifest.
fn unconfined_annotations(ctx: &FixContext) -> Vec<String> {
    let Some(annotations) = ctx
        .template_metadata
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    annotations
        .iter()
        .filter(|(key, _)| key.starts_with("container.apparmor.security.beta.kubernetes.io/"))
        .filter_map(|(key, value)| {
            let profile = value.as_str().unwrap_or_default();
            let ok = profile == "runtime/default" || profile.starts_with("localhost/");
            (!ok).then(|| {
                format!("the pod template annotation {key} is {profile:?}; set it to runtime/default or remove it in the manifest")
            })
        })
        .collect()
}

pub fn standard_selinux(ctx: &FixContext) -> RuleVerdict {
    let changes = reset_field(
        ctx,
        &["seLinuxOptions", "type"],
        |v| !v.is_empty() && !SELINUX_TYPES.contains(&v),
        "container_t",
        true,
    );
    let mut result = verdict(
        changes,
        "a process relying on the custom SELinux type's permissions is confined as a container again",
        0.6,
    );
    // user and role must be absent; a fix can only set fields, not remove
    // what another manager set.
    let mut places = vec![("securityContext".to_string(), ctx.spec)];
    places.extend(
        ctx.containers()
            .map(|(list, name, c)| (format!("{list}[{name}].securityContext"), c)),
    );
    for (at, value) in places {
        let options = value.pointer("/securityContext/seLinuxOptions");
        for field in ["user", "role"] {
            if options.and_then(|o| o.get(field)).is_some() {
                result.needs_human.push(format!(
                    "{} is set; remove it in the manifest (a fix cannot remove a field another manager owns)",
                    ctx.path(&format!("{at}.seLinuxOptions.{field}"))
                ));
            }
        }
    }
    result
}

pub fn safe_sysctls(ctx: &FixContext) -> RuleVerdict {
    let Some(sysctls) = ctx
        .spec
        .pointer("/securityContext/sysctls")
        .and_then(Value::as_array)
    else {
        return RuleVerdict::default();
    };
    let (kept, dropped): (Vec<&Value>, Vec<&Value>) = sysctls.iter().partition(|s| {
        s.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| SAFE_SYSCTLS.contains(&n))
    });
    if dropped.is_empty() {
        return RuleVerdict::default();
    }
    let names: Vec<&str> = dropped
        .iter()
        .map(|s| s.get("name").and_then(Value::as_str).unwrap_or("?"))
        .collect();
    let change = pod_change(
        json!({"securityContext": {"sysctls": kept}}),
        format!(
            "remove {} from {}",
            names.join(", "),
            ctx.path("securityContext.sysctls")
        ),
    );
    verdict(
        vec![change],
        "the kernel keeps its default for the removed sysctls; a workload tuned by them may behave differently",
        0.6,
    )
}
