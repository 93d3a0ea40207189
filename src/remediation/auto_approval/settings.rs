//! The repair loop's live settings, from the `remediate.*` keys of the
//! operator's ConfigMap (the same one that holds the admission modes).
//!
//! | key                     | value                                         | default |
//! |-------------------------|-----------------------------------------------|---------|
//! | `remediate.paused`      | `true` or `false`                             | `false` |
//! | `remediate.autoApprove` | YAML list of rules (below)                    | empty: every fix waits for a person |
//! | `remediate.budget`      | YAML map of limits on auto-approved fixes     | see [`Budget`] |
//! | `remediate.policyViolations` | `off` or `propose`: the policy scan opens a Remediation per violating workload | `propose` when the admission `mode` is `Audit`, else `off` |
//!
//! A rule:
//!
//! ```yaml
//! - name: image-typos                 # DNS label; the approver is
//!                                     # system:aiops-operator:auto-approval/image-typos
//!   classes: [ImageRestore]           # every class of the proposal must be listed;
//!                                     # `PolicyFix:*` lists every policy fix
//!   namespaceSelector:                # a label selector; omitted: every namespace
//!     matchLabels: {team: web}
//!   minConfidence: 0.8                # default 0.8
//!   allowModel: false                 # default false: model proposals wait for a person
//! ```
//!
//! A ConfigMap with an invalid `remediate.*` value is refused as a whole and
//! the settings in force stay (a typo must neither switch auto-approval on
//! nor lift a pause). A missing ConfigMap means the defaults.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::policy::parse_duration;

/// ConfigMap key: `true` holds every apply, human-approved or not.
pub const KEY_PAUSED: &str = "remediate.paused";
/// ConfigMap key: the auto-approval rules.
pub const KEY_AUTO_APPROVE: &str = "remediate.autoApprove";
/// ConfigMap key: the budgets of auto-approved fixes.
pub const KEY_BUDGET: &str = "remediate.budget";
/// ConfigMap key: do the policy scan's violations become Remediations?
pub const KEY_POLICY_VIOLATIONS: &str = "remediate.policyViolations";

/// What the repair loop does with a running workload's policy violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationRepair {
    /// Report them only (PolicyReports).
    Off,
    /// Open a Remediation with a proposed fix for each violating workload.
    Propose,
}

/// The approver recorded for an auto-approval is this prefix and the rule's name.
pub const AUTO_APPROVER_PREFIX: &str = "system:aiops-operator:auto-approval/";

/// The approver name an auto-approval by `rule` records.
pub fn auto_approver(rule: &str) -> String {
    format!("{AUTO_APPROVER_PREFIX}{rule}")
}

/// What the repair loop reads from the ConfigMap.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemediateSettings {
    /// Every apply waits while true.
    pub paused: bool,
    /// In order: the first rule that matches a proposal decides.
    pub rules: Vec<AutoApprovalRule>,
    pub budget: Budget,
    /// `remediate.policyViolations`; `None`: the default for the admission mode.
    pub policy_violations: Option<ViolationRepair>,
    /// The `notify.*` keys: who is told about reviews and outcomes.
    pub notify: crate::remediation::notify::settings::NotifySettings,
}

impl RemediateSettings {
    /// Whether policy violations of running workloads become Remediations:
    /// as configured, else only when admission runs in Audit mode, where
    /// violating workloads are admitted and so are expected to exist.
    pub fn proposes_policy_fixes(
        &self,
        admission_mode: Option<crate::admission::modes::Mode>,
    ) -> bool {
        match self.policy_violations {
            Some(repair) => repair == ViolationRepair::Propose,
            None => admission_mode == Some(crate::admission::modes::Mode::Audit),
        }
    }

    /// The names of the configured rules: the only auto-approvers the
    /// approval webhook accepts from the operator.
    pub fn rule_names(&self) -> BTreeSet<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }
}

/// One auto-approval rule.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoApprovalRule {
    pub name: String,
    pub classes: Vec<String>,
    /// A Kubernetes label selector over the namespace's labels; `None`
    /// matches every namespace the operator repairs.
    pub namespace_selector: Option<Value>,
    pub min_confidence: f64,
    pub allow_model: bool,
}

impl AutoApprovalRule {
    /// Whether every part of a proposal's class (`A,B`) is listed here.
    pub fn allows_class(&self, class: &str) -> bool {
        !class.is_empty()
            && class.split(',').all(|part| {
                self.classes
                    .iter()
                    .any(|allowed| match allowed.strip_suffix('*') {
                        Some(prefix) => part.starts_with(prefix),
                        None => part == allowed,
                    })
            })
    }
}

/// Limits on what auto-approval may have in flight; people's approvals are
/// not counted and not limited.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// Auto-approved fixes applying or being verified, cluster-wide.
    pub max_in_flight: u32,
    /// The same, per namespace.
    pub max_in_flight_per_namespace: u32,
    /// No second auto-approved fix for one workload within this time of the first.
    pub hold_off: Duration,
    /// Of the workload's desired replicas, the fraction that must be ready
    /// before an auto-approved fix is applied (0 = no requirement).
    pub min_healthy_fraction: f64,
    /// After an auto-approved fix was rolled back, no auto-approval at all
    /// for this long.
    pub cool_down: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_in_flight: 1,
            max_in_flight_per_namespace: 1,
            hold_off: Duration::from_secs(30 * 60),
            min_healthy_fraction: 0.0,
            cool_down: Duration::from_secs(60 * 60),
        }
    }
}

/// Why a `remediate.*` value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SettingsError {
    pub key: &'static str,
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        key,
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleText {
    name: String,
    classes: Vec<String>,
    #[serde(default)]
    namespace_selector: Option<Value>,
    #[serde(default)]
    min_confidence: Option<f64>,
    #[serde(default)]
    allow_model: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BudgetText {
    max_in_flight: Option<u32>,
    max_in_flight_per_namespace: Option<u32>,
    hold_off: Option<String>,
    min_healthy_fraction: Option<f64>,
    cool_down: Option<String>,
}

/// Parses the `remediate.*` keys of a ConfigMap's data (other keys are
/// someone else's). Every problem is reported, not only the first.
pub fn parse_settings(
    data: Option<&BTreeMap<String, String>>,
) -> Result<RemediateSettings, Vec<SettingsError>> {
    let empty = BTreeMap::new();
    let data = data.unwrap_or(&empty);
    let mut errors = Vec::new();
    let mut settings = RemediateSettings::default();
    if let Some(text) = data.get(KEY_PAUSED) {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => settings.paused = true,
            "false" | "" => settings.paused = false,
            other => errors.push(invalid(
                KEY_PAUSED,
                format!("{other:?} is not true or false"),
            )),
        }
    }
    if let Some(text) = data.get(KEY_AUTO_APPROVE) {
        match parse_rules(text) {
            Ok(rules) => settings.rules = rules,
            Err(error) => errors.push(error),
        }
    }
    if let Some(text) = data.get(KEY_BUDGET) {
        match parse_budget(text) {
            Ok(budget) => settings.budget = budget,
            Err(error) => errors.push(error),
        }
    }
    if let Some(text) = data.get(KEY_POLICY_VIOLATIONS) {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => settings.policy_violations = Some(ViolationRepair::Off),
            "propose" => settings.policy_violations = Some(ViolationRepair::Propose),
            // Empty, as the shipped ConfigMap has it: the default for the mode.
            "" => settings.policy_violations = None,
            other => errors.push(invalid(
                KEY_POLICY_VIOLATIONS,
                format!("{other:?} is not off or propose"),
            )),
        }
    }
    match crate::remediation::notify::settings::parse_notify(data) {
        Ok(notify) => settings.notify = notify,
        Err((key, reason)) => errors.push(invalid(key, reason)),
    }
    for key in data.keys() {
        let known = [
            KEY_PAUSED,
            KEY_AUTO_APPROVE,
            KEY_BUDGET,
            KEY_POLICY_VIOLATIONS,
        ];
        if key.starts_with("remediate.") && !known.contains(&key.as_str()) {
            errors.push(SettingsError {
                key: "remediate.*",
                reason: format!("unknown key {key}"),
            });
        }
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

fn parse_rules(text: &str) -> Result<Vec<AutoApprovalRule>, SettingsError> {
    let parsed: Option<Vec<RuleText>> = serde_yaml::from_str(text)
        .map_err(|e| invalid(KEY_AUTO_APPROVE, format!("not a YAML list of rules: {e}")))?;
    let mut seen = BTreeSet::new();
    let mut rules = Vec::new();
    for rule in parsed.unwrap_or_default() {
        let name = rule.name.trim().to_string();
        let label = name.len() <= 63
            && !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !label {
            return Err(invalid(
                KEY_AUTO_APPROVE,
                format!("rule name {name:?} is not a DNS label (a-z, 0-9, -; at most 63)"),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(invalid(
                KEY_AUTO_APPROVE,
                format!("rule {name} is named twice"),
            ));
        }
        if rule.classes.is_empty() || rule.classes.iter().any(|c| c.trim().is_empty()) {
            return Err(invalid(
                KEY_AUTO_APPROVE,
                format!("rule {name}: classes must list at least one class"),
            ));
        }
        let min_confidence = rule.min_confidence.unwrap_or(0.8);
        if !(0.0..=1.0).contains(&min_confidence) {
            return Err(invalid(
                KEY_AUTO_APPROVE,
                format!("rule {name}: minConfidence {min_confidence} is not within 0..1"),
            ));
        }
        if let Some(selector) = &rule.namespace_selector {
            let allowed = ["matchLabels", "matchExpressions"];
            let shape_ok = selector
                .as_object()
                .is_some_and(|o| o.keys().all(|k| allowed.contains(&k.as_str())));
            if !shape_ok {
                return Err(invalid(
                    KEY_AUTO_APPROVE,
                    format!(
                        "rule {name}: namespaceSelector has only matchLabels and matchExpressions"
                    ),
                ));
            }
        }
        rules.push(AutoApprovalRule {
            name,
            classes: rule.classes.iter().map(|c| c.trim().to_string()).collect(),
            namespace_selector: rule.namespace_selector,
            min_confidence,
            allow_model: rule.allow_model,
        });
    }
    Ok(rules)
}

fn parse_budget(text: &str) -> Result<Budget, SettingsError> {
    let parsed: Option<BudgetText> = serde_yaml::from_str(text)
        .map_err(|e| invalid(KEY_BUDGET, format!("not a YAML map of limits: {e}")))?;
    let parsed = parsed.unwrap_or_default();
    let defaults = Budget::default();
    let duration = |field: &str, text: Option<String>, default: Duration| match text {
        None => Ok(default),
        Some(text) => match parse_duration(text.trim()) {
            Some(seconds) if seconds >= 0.0 => Ok(Duration::from_secs_f64(seconds)),
            _ => Err(invalid(
                KEY_BUDGET,
                format!("{field}: {text:?} is not a duration like 90s or 30m"),
            )),
        },
    };
    let min_healthy_fraction = parsed
        .min_healthy_fraction
        .unwrap_or(defaults.min_healthy_fraction);
    if !(0.0..=1.0).contains(&min_healthy_fraction) {
        return Err(invalid(
            KEY_BUDGET,
            format!("minHealthyFraction {min_healthy_fraction} is not within 0..1"),
        ));
    }
    Ok(Budget {
        max_in_flight: parsed.max_in_flight.unwrap_or(defaults.max_in_flight),
        max_in_flight_per_namespace: parsed
            .max_in_flight_per_namespace
            .unwrap_or(defaults.max_in_flight_per_namespace),
        hold_off: duration("holdOff", parsed.hold_off, defaults.hold_off)?,
        min_healthy_fraction,
        cool_down: duration("coolDown", parsed.cool_down, defaults.cool_down)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn policy_violations_default_to_propose_in_audit_mode_only() {
        use crate::admission::modes::Mode;
        let read = |pairs: &[(&str, &str)]| parse_settings(Some(&data(pairs)));
        let unset = read(&[]).expect("no keys are valid");
        assert!(unset.proposes_policy_fixes(Some(Mode::Audit)));
        assert!(!unset.proposes_policy_fixes(Some(Mode::Enforce)));
        assert!(!unset.proposes_policy_fixes(None));
        let on = read(&[(KEY_POLICY_VIOLATIONS, "Propose")]).expect("propose is valid");
        assert!(on.proposes_policy_fixes(Some(Mode::Enforce)));
        let empty = read(&[(KEY_POLICY_VIOLATIONS, "")]).expect("empty is the default");
        assert!(empty.proposes_policy_fixes(Some(Mode::Audit)));
        let off = read(&[(KEY_POLICY_VIOLATIONS, " off ")]).expect("off is valid");
        assert!(!off.proposes_policy_fixes(Some(Mode::Audit)));
    }

    #[test]
    fn a_bad_policy_violations_value_is_refused_with_the_key_named() {
        let errors = parse_settings(Some(&data(&[(KEY_POLICY_VIOLATIONS, "apply")])))
            .expect_err("apply is not a value");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, KEY_POLICY_VIOLATIONS);
        assert!(errors[0].reason.contains("off or propose"), "{errors:?}");
    }

    #[test]
    fn no_keys_mean_no_pause_no_rules_and_the_default_budget() {
        let settings = parse_settings(Some(&data(&[("mode", "Audit")]))).unwrap();
        assert_eq!(settings, RemediateSettings::default());
        assert_eq!(settings.budget.max_in_flight, 1);
        assert_eq!(parse_settings(None).unwrap(), RemediateSettings::default());
    }

    #[test]
    fn rules_budget_and_pause_are_read() {
        let settings = parse_settings(Some(&data(&[
            (KEY_PAUSED, "True"),
            (
                KEY_AUTO_APPROVE,
                "- name: image-typos\n  classes: [ImageRestore]\n  namespaceSelector:\n    matchLabels: {team: web}\n- name: policy\n  classes: ['PolicyFix:*']\n  minConfidence: 0.5\n  allowModel: true\n",
            ),
            (
                KEY_BUDGET,
                "maxInFlight: 3\nholdOff: 10m\ncoolDown: 1h30m\nminHealthyFraction: 0.5",
            ),
        ])))
        .unwrap();
        assert!(settings.paused);
        assert_eq!(settings.rules.len(), 2);
        assert_eq!(settings.rules[0].min_confidence, 0.8);
        assert!(!settings.rules[0].allow_model);
        assert!(settings.rules[1].allow_model);
        assert_eq!(settings.budget.max_in_flight, 3);
        assert_eq!(settings.budget.max_in_flight_per_namespace, 1);
        assert_eq!(settings.budget.hold_off, Duration::from_secs(600));
        assert_eq!(settings.budget.cool_down, Duration::from_secs(5400));
        assert_eq!(settings.budget.min_healthy_fraction, 0.5);
        assert_eq!(
            settings.rule_names().into_iter().collect::<Vec<_>>(),
            ["image-typos", "policy"]
        );
    }

    #[test]
    fn a_rule_allows_a_proposal_only_when_it_lists_every_class() {
        let rule = AutoApprovalRule {
            name: "r".into(),
            classes: vec!["ImageRestore".into(), "PolicyFix:*".into()],
            namespace_selector: None,
            min_confidence: 0.8,
            allow_model: false,
        };
        assert!(rule.allows_class("ImageRestore"));
        assert!(rule.allows_class("ImageRestore,PolicyFix:disallow-latest-tag"));
        assert!(!rule.allows_class("ImageRestore,MemoryRaise"));
        assert!(!rule.allows_class(""));
        assert!(!rule.allows_class("Image"));
    }

    #[test]
    fn every_bad_value_is_reported_and_nothing_is_taken() {
        let errors = parse_settings(Some(&data(&[
            (KEY_PAUSED, "yes please"),
            (
                KEY_AUTO_APPROVE,
                "- name: Bad_Name\n  classes: [ImageRestore]",
            ),
            (KEY_BUDGET, "holdOff: soon"),
            ("remediate.pasued", "true"),
        ])))
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 4, "{text:?}");
        assert!(text[0].contains("not true or false"), "{text:?}");
        assert!(text[1].contains("not a DNS label"), "{text:?}");
        assert!(text[2].contains("holdOff"), "{text:?}");
        assert!(text[3].contains("remediate.pasued"), "{text:?}");
    }

    #[test]
    fn rules_are_refused_for_unknown_fields_twice_named_or_empty_classes() {
        for (text, needle) in [
            (
                "- name: a\n  classes: [ImageRestore]\n  approve: all",
                "approve",
            ),
            (
                "- name: a\n  classes: [ImageRestore]\n- name: a\n  classes: [MemoryRaise]",
                "named twice",
            ),
            ("- name: a\n  classes: []", "at least one class"),
            (
                "- name: a\n  classes: [X]\n  minConfidence: 2",
                "within 0..1",
            ),
            (
                "- name: a\n  classes: [X]\n  namespaceSelector: {team: web}",
                "matchLabels",
            ),
        ] {
            let errors = parse_settings(Some(&data(&[(KEY_AUTO_APPROVE, text)]))).unwrap_err();
            assert!(errors[0].reason.contains(needle), "{text}: {errors:?}");
        }
    }
}
