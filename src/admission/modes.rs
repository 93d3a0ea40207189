//! Admission modes: what the webhook does with a violation (Enforce, Audit,
//! Warn) and who is exempt from evaluation, as configured by the operator's
//! ConfigMap (default `aiops-operator-config` in the operator's namespace).
//!
//! ConfigMap `data` keys (all optional; each string value is YAML):
//!
//! | key                | value                                             | default |
//! |--------------------|---------------------------------------------------|---------|
//! | `mode`             | `Enforce`, `Audit`, `Warn` or `Policy`            | `Policy`: each policy's own `validationFailureAction` |
//! | `policyModes`      | map of policy name to `Enforce`/`Audit`/`Warn`    | empty   |
//! | `exemptNamespaces` | list (YAML list or comma separated)               | `kube-system`, `kube-node-lease` |
//! | `exemptUsers`      | list of usernames                                 | empty   |
//! | `exemptGroups`     | list of group names                               | empty   |
//!
//! Precedence for one violated rule: `policyModes[policy]`, else `mode`, else
//! the rule's own failure action. The operator's own namespace is always
//! exempt, whatever `exemptNamespaces` says, so a bad configuration can never
//! stop the operator from restarting itself.
//!
//! [`parse_config_map`] reports each problem as a [`ConfigIssue`]. The
//! watcher ([`crate::admission::config_watch`]) refuses a ConfigMap with an
//! invalid value as a whole and keeps the last good modes (a typo in `mode`
//! must not quietly turn Enforce back into each policy's default); an
//! unknown key is logged and ignored. A missing ConfigMap gives
//! [`ModeConfig::defaults`].
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::policy::FailureAction;

/// Name of the ConfigMap the operator reads its admission modes from.
pub const DEFAULT_CONFIG_MAP: &str = "aiops-operator-config";
/// Namespace the operator runs in unless told otherwise.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "aiops-system";
/// Namespaces exempt by default besides the operator's own.
pub const DEFAULT_EXEMPT_NAMESPACES: [&str; 2] = ["kube-system", "kube-node-lease"];

/// ConfigMap data key for the global mode.
pub const KEY_MODE: &str = "mode";
/// ConfigMap data key for per-policy modes.
pub const KEY_POLICY_MODES: &str = "policyModes";
/// ConfigMap data key for exempt namespaces.
pub const KEY_EXEMPT_NAMESPACES: &str = "exemptNamespaces";
/// ConfigMap data key for exempt usernames.
pub const KEY_EXEMPT_USERS: &str = "exemptUsers";
/// ConfigMap data key for exempt groups.
pub const KEY_EXEMPT_GROUPS: &str = "exemptGroups";

/// What the webhook does with a violated rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Mode {
    /// Deny the request, listing every violation.
    Enforce,
    /// Admit, return a warning, and record an Event and a PolicyReport result.
    Audit,
    /// Admit and return a warning; write nothing.
    Warn,
}

impl Mode {
    /// The spelling used in the ConfigMap, metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "Enforce",
            Mode::Audit => "Audit",
            Mode::Warn => "Warn",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode string that is not `Enforce`, `Audit` or `Warn`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?} (expected Enforce, Audit or Warn)")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    /// Case-insensitive, because a ConfigMap is typed by hand.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "enforce" => Ok(Mode::Enforce),
            "audit" => Ok(Mode::Audit),
            "warn" => Ok(Mode::Warn),
            _ => Err(UnknownMode(s.to_string())),
        }
    }
}

impl From<&FailureAction> for Mode {
    fn from(action: &FailureAction) -> Self {
        match action {
            FailureAction::Enforce => Mode::Enforce,
            FailureAction::Audit => Mode::Audit,
        }
    }
}

/// Why a request is not evaluated at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exemption {
    Namespace(String),
    User(String),
    Group(String),
}

impl Exemption {
    /// Short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Exemption::Namespace(_) => "namespace",
            Exemption::User(_) => "user",
            Exemption::Group(_) => "group",
        }
    }
}

/// The admission modes in force; replaced as a whole when the ConfigMap
/// changes, so one request always sees one consistent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeConfig {
    /// Global override; `None` means each policy's own failure action.
    pub mode: Option<Mode>,
    /// Per-policy overrides, keyed by policy name (`ns/name` for a namespaced Policy).
    pub policy_modes: BTreeMap<String, Mode>,
    pub exempt_namespaces: BTreeSet<String>,
    pub exempt_users: BTreeSet<String>,
    pub exempt_groups: BTreeSet<String>,
}

impl ModeConfig {
    /// The documented defaults: policies decide their own mode; kube-system,
    /// kube-node-lease and the operator's namespace are exempt.
    pub fn defaults(operator_namespace: &str) -> Self {
        let mut exempt_namespaces: BTreeSet<String> = DEFAULT_EXEMPT_NAMESPACES
            .iter()
            .map(|ns| (*ns).to_string())
            .collect();
        exempt_namespaces.insert(operator_namespace.to_string());
        ModeConfig {
            mode: None,
            policy_modes: BTreeMap::new(),
            exempt_namespaces,
            exempt_users: BTreeSet::new(),
            exempt_groups: BTreeSet::new(),
        }
    }

    /// Defaults with every policy forced into `mode`; handy for tests and
    /// for running without a cluster.
    pub fn with_mode(operator_namespace: &str, mode: Mode) -> Self {
        ModeConfig {
            mode: Some(mode),
            ..ModeConfig::defaults(operator_namespace)
        }
    }

    /// The mode that applies to a violation of `policy` whose rule says `action`.
    pub fn mode_for(&self, policy: &str, action: &FailureAction) -> Mode {
        self.policy_modes
            .get(policy)
            .copied()
            .or(self.mode)
            .unwrap_or_else(|| Mode::from(action))
    }

    /// Whether a request from this namespace/user/groups skips evaluation.
    pub fn exemption(
        &self,
        namespace: Option<&str>,
        username: Option<&str>,
        groups: &[String],
    ) -> Option<Exemption> {
        if let Some(ns) = namespace.filter(|ns| self.exempt_namespaces.contains(*ns)) {
            return Some(Exemption::Namespace(ns.to_string()));
        }
        if let Some(user) = username.filter(|u| self.exempt_users.contains(*u)) {
            return Some(Exemption::User(user.to_string()));
        }
        groups
            .iter()
            .find(|g| self.exempt_groups.contains(*g))
            .map(|g| Exemption::Group(g.clone()))
    }
}

/// One problem found while reading the ConfigMap; in the returned
/// configuration the key it concerns has its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub reason: String,
}

impl ConfigIssue {
    /// An invalid value of a known key: the ConfigMap as a whole must not
    /// replace the modes in force. An unknown key (perhaps one a newer
    /// version reads) is only reported.
    pub fn refuses_update(&self) -> bool {
        [
            KEY_MODE,
            KEY_POLICY_MODES,
            KEY_EXEMPT_NAMESPACES,
            KEY_EXEMPT_USERS,
            KEY_EXEMPT_GROUPS,
        ]
        .contains(&self.key.as_str())
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {:?}: {}", self.key, self.reason)
    }
}

fn issue(key: &str, reason: impl Into<String>) -> ConfigIssue {
    ConfigIssue {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Reads the ConfigMap's `data` (`None` when the ConfigMap does not exist)
/// into a [`ModeConfig`]. Never fails: every problem becomes a
/// [`ConfigIssue`] and the affected key keeps its default.
pub fn parse_config_map(
    data: Option<&BTreeMap<String, String>>,
    operator_namespace: &str,
) -> (ModeConfig, Vec<ConfigIssue>) {
    let mut config = ModeConfig::defaults(operator_namespace);
    let mut issues = Vec::new();
    let Some(data) = data else {
        return (config, issues);
    };

    for (key, value) in data {
        match key.as_str() {
            KEY_MODE => match parse_global_mode(value) {
                Ok(mode) => config.mode = mode,
                Err(reason) => issues.push(issue(key, reason)),
            },
            KEY_POLICY_MODES => match parse_policy_modes(value) {
                Ok((modes, bad)) => {
                    config.policy_modes = modes;
                    issues.extend(bad.into_iter().map(|reason| issue(key, reason)));
                }
                Err(reason) => issues.push(issue(key, reason)),
            },
            KEY_EXEMPT_NAMESPACES => match parse_list(value) {
                Ok(list) => {
                    config.exempt_namespaces = list.into_iter().collect();
                    // Never lock the operator out of its own namespace.
                    config
                        .exempt_namespaces
                        .insert(operator_namespace.to_string());
                }
                Err(reason) => issues.push(issue(key, reason)),
            },
            KEY_EXEMPT_USERS => match parse_list(value) {
                Ok(list) => config.exempt_users = list.into_iter().collect(),
                Err(reason) => issues.push(issue(key, reason)),
            },
            KEY_EXEMPT_GROUPS => match parse_list(value) {
                Ok(list) => config.exempt_groups = list.into_iter().collect(),
                Err(reason) => issues.push(issue(key, reason)),
            },
            // The repair loop's model, repair and notification settings
            // share this ConfigMap.
            _ if ["llm.", "remediate.", "notify."]
                .iter()
                .any(|prefix| key.starts_with(prefix)) => {}
            _ => issues.push(issue(key, "unknown key ignored")),
        }
    }
    (config, issues)
}

/// `Policy` (or an empty value) means "no global override".
fn parse_global_mode(value: &str) -> Result<Option<Mode>, String> {
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("policy") {
        return Ok(None);
    }
    value
        .parse::<Mode>()
        .map(Some)
        .map_err(|e| format!("{e}, or Policy"))
}

/// Returns the valid entries and one message per invalid entry.
fn parse_policy_modes(value: &str) -> Result<(BTreeMap<String, Mode>, Vec<String>), String> {
    if value.trim().is_empty() {
        return Ok((BTreeMap::new(), Vec::new()));
    }
    let map: BTreeMap<String, String> = serde_yaml::from_str(value)
        .map_err(|e| format!("expected a YAML map of policy name to mode: {e}"))?;
    let mut modes = BTreeMap::new();
    let mut bad = Vec::new();
    for (policy, mode) in map {
        match mode.parse::<Mode>() {
            Ok(mode) => {
                modes.insert(policy, mode);
            }
            Err(e) => bad.push(format!("policy {policy:?}: {e}; entry ignored")),
        }
    }
    Ok((modes, bad))
}

/// Accepts a YAML list (`[a, b]` or block style) or a plain string split on
/// commas and whitespace, since both are natural to type into a ConfigMap.
fn parse_list(value: &str) -> Result<Vec<String>, String> {
    let parsed: serde_yaml::Value =
        serde_yaml::from_str(value).map_err(|e| format!("not valid YAML: {e}"))?;
    let items: Vec<String> = match parsed {
        serde_yaml::Value::Null => Vec::new(),
        serde_yaml::Value::String(s) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(str::to_string)
            .collect(),
        serde_yaml::Value::Sequence(seq) => seq
            .into_iter()
            .map(|item| match item {
                serde_yaml::Value::String(s) => Ok(s),
                other => Err(format!("list entries must be strings, found {other:?}")),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("expected a list, found {other:?}")),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn missing_config_map_gives_documented_defaults() {
        let (config, issues) = parse_config_map(None, "aiops-system");
        assert!(issues.is_empty());
        assert_eq!(config.mode, None);
        assert!(config.policy_modes.is_empty());
        assert_eq!(
            config.exempt_namespaces,
            set(&["kube-system", "kube-node-lease", "aiops-system"])
        );
        assert!(config.exempt_users.is_empty());
        assert!(config.exempt_groups.is_empty());
    }

    #[test]
    fn full_config_map_is_read() {
        let cm = data(&[
            ("mode", "warn"),
            (
                "policyModes",
                "disallow-latest-tag: Enforce\nrestrict-seccomp: audit\n",
            ),
            ("exemptNamespaces", "- monitoring\n- istio-system\n"),
            ("exemptUsers", "[\"system:admin\", alice]"),
            ("exemptGroups", "system:masters, ops"),
        ]);
        let (config, issues) = parse_config_map(Some(&cm), "aiops-system");
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(config.mode, Some(Mode::Warn));
        assert_eq!(
            config.policy_modes.get("disallow-latest-tag"),
            Some(&Mode::Enforce)
        );
        assert_eq!(
            config.policy_modes.get("restrict-seccomp"),
            Some(&Mode::Audit)
        );
        // The list replaces the defaults, but the operator namespace stays.
        assert_eq!(
            config.exempt_namespaces,
            set(&["monitoring", "istio-system", "aiops-system"])
        );
        assert_eq!(config.exempt_users, set(&["system:admin", "alice"]));
        assert_eq!(config.exempt_groups, set(&["system:masters", "ops"]));
    }

    #[test]
    fn invalid_keys_fall_back_one_by_one() {
        let cm = data(&[
            ("mode", "Enforec"),
            ("policyModes", "a: Enforce\nb: sometimes\n"),
            ("exemptNamespaces", "{not: a list}"),
            ("exemptUsers", "bob"),
            ("colour", "blue"),
        ]);
        let (config, issues) = parse_config_map(Some(&cm), "ops");
        assert_eq!(config.mode, None, "a bad mode keeps the default");
        assert_eq!(config.policy_modes.len(), 1, "the valid entry survives");
        assert_eq!(config.policy_modes.get("a"), Some(&Mode::Enforce));
        assert_eq!(
            config.exempt_namespaces,
            set(&["kube-system", "kube-node-lease", "ops"])
        );
        assert_eq!(config.exempt_users, set(&["bob"]));
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["colour", "exemptNamespaces", "mode", "policyModes"]
        );
    }

    #[test]
    fn policy_mode_and_empty_values_mean_no_override() {
        for value in ["Policy", "", "  "] {
            let (config, issues) = parse_config_map(Some(&data(&[("mode", value)])), "x");
            assert!(issues.is_empty());
            assert_eq!(config.mode, None);
        }
        let (config, _) = parse_config_map(Some(&data(&[("exemptNamespaces", "")])), "x");
        assert_eq!(config.exempt_namespaces, set(&["x"]));
    }

    #[test]
    fn policy_modes_that_are_not_a_map_are_ignored() {
        let (config, issues) = parse_config_map(Some(&data(&[("policyModes", "- a\n- b")])), "x");
        assert!(config.policy_modes.is_empty());
        assert_eq!(issues.len(), 1);
        assert!(issues[0].reason.contains("YAML map"), "{}", issues[0]);
    }

    #[test]
    fn mode_resolution_prefers_policy_then_global_then_rule() {
        let mut config = ModeConfig::defaults("aiops-system");
        assert_eq!(config.mode_for("p", &FailureAction::Audit), Mode::Audit);
        assert_eq!(config.mode_for("p", &FailureAction::Enforce), Mode::Enforce);

        config.mode = Some(Mode::Warn);
        assert_eq!(config.mode_for("p", &FailureAction::Enforce), Mode::Warn);

        config.policy_modes.insert("p".into(), Mode::Enforce);
        assert_eq!(config.mode_for("p", &FailureAction::Audit), Mode::Enforce);
        assert_eq!(config.mode_for("q", &FailureAction::Audit), Mode::Warn);
    }

    #[test]
    fn exemptions_by_namespace_user_and_group() {
        let mut config = ModeConfig::defaults("aiops-system");
        config.exempt_users.insert("alice".into());
        config.exempt_groups.insert("ops".into());
        assert_eq!(
            config.exemption(Some("kube-system"), None, &[]),
            Some(Exemption::Namespace("kube-system".into()))
        );
        assert_eq!(
            config.exemption(Some("aiops-system"), None, &[]),
            Some(Exemption::Namespace("aiops-system".into()))
        );
        assert_eq!(
            config.exemption(Some("default"), Some("alice"), &[]),
            Some(Exemption::User("alice".into()))
        );
        assert_eq!(
            config.exemption(Some("default"), Some("bob"), &["ops".into()]),
            Some(Exemption::Group("ops".into()))
        );
        assert_eq!(
            config.exemption(Some("default"), Some("bob"), &["dev".into()]),
            None
        );
        assert_eq!(config.exemption(None, None, &[]), None);
    }

    #[test]
    fn mode_parsing_is_case_insensitive() {
        assert_eq!("ENFORCE".parse::<Mode>(), Ok(Mode::Enforce));
        assert_eq!(" audit ".parse::<Mode>(), Ok(Mode::Audit));
        assert!("block".parse::<Mode>().is_err());
    }
}
