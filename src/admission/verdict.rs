//! Turns the policy engine's rule outcomes into an admission verdict under the
//! modes in force: which violations deny the request, which only warn, and
//! which are recorded for audit. Pure: no I/O, no clock.
use std::fmt::Write as _;

use crate::admission::modes::{Mode, ModeConfig};
use crate::policy::{RuleOutcome, RuleStatus};

/// One failed (or errored) rule, with the mode that applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub policy: String,
    pub rule: String,
    pub message: String,
    pub mode: Mode,
    /// The engine could not evaluate the rule (status `Error`), as opposed
    /// to evaluating it and finding the object non-compliant.
    pub errored: bool,
}

impl Violation {
    /// `policy/rule: message`, the form used in denials and warnings.
    pub fn describe(&self) -> String {
        let message = self.message.trim();
        let message = if message.is_empty() {
            "validation failed"
        } else {
            message
        };
        if self.errored {
            format!(
                "{}/{}: rule could not be evaluated: {message}",
                self.policy, self.rule
            )
        } else {
            format!("{}/{}: {message}", self.policy, self.rule)
        }
    }
}

/// The verdict for one request: every violation, in the engine's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// Keeps failed and errored rules. An errored rule counts as a violation
    /// so that an Enforce policy fails closed rather than silently passing.
    pub fn assess(outcomes: &[RuleOutcome], modes: &ModeConfig) -> Verdict {
        let violations = outcomes
            .iter()
            .filter(|o| matches!(o.status, RuleStatus::Fail | RuleStatus::Error))
            .map(|o| Violation {
                policy: o.policy.clone(),
                rule: o.rule.clone(),
                message: o.message.clone(),
                mode: modes.mode_for(&o.policy, &o.action),
                errored: matches!(o.status, RuleStatus::Error),
            })
            .collect();
        Verdict { violations }
    }

    /// True when at least one violation is enforced.
    pub fn is_denied(&self) -> bool {
        self.in_mode(Mode::Enforce).next().is_some()
    }

    /// Violations that apply in `mode`.
    pub fn in_mode(&self, mode: Mode) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |v| v.mode == mode)
    }

    /// True when an enforced violation denies the request.
    pub fn denies(&self) -> bool {
        self.in_mode(Mode::Enforce).next().is_some()
    }

    /// The denial text for the API client, listing every enforced
    /// violation; `None` when nothing is enforced. `subject` names the
    /// object, e.g. `Pod default/web`.
    pub fn deny_message(&self, subject: &str) -> Option<String> {
        let enforced: Vec<&Violation> = self.in_mode(Mode::Enforce).collect();
        if enforced.is_empty() {
            return None;
        }
        let count = enforced.len();
        let plural = if count == 1 { "" } else { "s" };
        let mut message = format!("{subject} violates {count} policy rule{plural}:");
        for violation in enforced {
            // Writing to a String cannot fail.
            let _ = write!(message, "\n- {}", violation.describe());
        }
        Some(message)
    }

    /// Admission warnings for every violation that is not enforced; the
    /// client sees them even when another violation denies the request.
    pub fn warnings(&self) -> Vec<String> {
        self.violations
            .iter()
            .filter(|v| v.mode != Mode::Enforce)
            .map(|v| format!("[{}] {}", v.mode, v.describe()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::FailureAction;

    fn outcome(policy: &str, rule: &str, status: RuleStatus, action: FailureAction) -> RuleOutcome {
        RuleOutcome {
            policy: policy.into(),
            rule: rule.into(),
            status,
            message: format!("fix {policy}"),
            action,
        }
    }

    fn sample() -> Vec<RuleOutcome> {
        vec![
            outcome(
                "disallow-privileged-containers",
                "no-privileged-containers",
                RuleStatus::Fail,
                FailureAction::Audit,
            ),
            outcome(
                "disallow-host-path",
                "no-host-path-volumes",
                RuleStatus::Pass,
                FailureAction::Audit,
            ),
            outcome(
                "disallow-latest-tag",
                "require-image-tag",
                RuleStatus::Fail,
                FailureAction::Enforce,
            ),
            outcome(
                "disallow-latest-tag",
                "validate-image-tag",
                RuleStatus::Fail,
                FailureAction::Enforce,
            ),
            outcome(
                "restrict-seccomp",
                "no-unconfined-seccomp",
                RuleStatus::Skip,
                FailureAction::Audit,
            ),
        ]
    }

    #[test]
    fn passes_and_skips_are_not_violations() {
        let verdict = Verdict::assess(&sample(), &ModeConfig::defaults("ops"));
        assert_eq!(verdict.violations.len(), 3);
    }

    #[test]
    fn policy_actions_apply_without_overrides() {
        let verdict = Verdict::assess(&sample(), &ModeConfig::defaults("ops"));
        assert!(verdict.is_denied());
        let message = verdict.deny_message("Pod default/web").unwrap_or_default();
        assert!(
            message.starts_with("Pod default/web violates 2 policy rules:"),
            "{message}"
        );
        assert!(
            message.contains("\n- disallow-latest-tag/require-image-tag: fix disallow-latest-tag")
        );
        assert!(
            message.contains("\n- disallow-latest-tag/validate-image-tag: fix disallow-latest-tag")
        );
        assert!(
            !message.contains("privileged"),
            "audit violations are not in the denial"
        );
        assert_eq!(
            verdict.warnings(),
            vec!["[Audit] disallow-privileged-containers/no-privileged-containers: fix disallow-privileged-containers".to_string()]
        );
    }

    #[test]
    fn global_enforce_lists_every_violation() {
        let modes = ModeConfig::with_mode("ops", Mode::Enforce);
        let verdict = Verdict::assess(&sample(), &modes);
        let message = verdict.deny_message("Pod default/web").unwrap_or_default();
        assert!(message.contains("violates 3 policy rules"), "{message}");
        for rule in [
            "no-privileged-containers",
            "require-image-tag",
            "validate-image-tag",
        ] {
            assert!(message.contains(rule), "{rule} missing from {message}");
        }
        assert!(verdict.warnings().is_empty());
    }

    #[test]
    fn warn_and_audit_admit_with_warnings() {
        for mode in [Mode::Warn, Mode::Audit] {
            let verdict = Verdict::assess(&sample(), &ModeConfig::with_mode("ops", mode));
            assert!(!verdict.is_denied());
            assert_eq!(verdict.deny_message("Pod x/y"), None);
            let warnings = verdict.warnings();
            assert_eq!(warnings.len(), 3);
            assert!(
                warnings
                    .iter()
                    .all(|w| w.starts_with(&format!("[{mode}] ")))
            );
        }
    }

    #[test]
    fn per_policy_override_beats_global_mode() {
        let mut modes = ModeConfig::with_mode("ops", Mode::Audit);
        modes
            .policy_modes
            .insert("disallow-privileged-containers".into(), Mode::Enforce);
        let verdict = Verdict::assess(&sample(), &modes);
        let message = verdict.deny_message("Pod a/b").unwrap_or_default();
        assert!(message.contains("violates 1 policy rule:"), "{message}");
        assert!(message.contains("disallow-privileged-containers/no-privileged-containers"));
        assert_eq!(verdict.in_mode(Mode::Audit).count(), 2);
    }

    #[test]
    fn errored_rules_fail_closed_when_enforced() {
        let outcomes = vec![RuleOutcome {
            message: "jmespath: unknown function".into(),
            ..outcome("p", "r", RuleStatus::Error, FailureAction::Enforce)
        }];
        let verdict = Verdict::assess(&outcomes, &ModeConfig::defaults("ops"));
        let message = verdict.deny_message("Pod a/b").unwrap_or_default();
        assert!(message.contains("p/r: rule could not be evaluated: jmespath: unknown function"));
    }
}
