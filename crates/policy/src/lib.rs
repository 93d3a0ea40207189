//! The policy engine: loads Kyverno-compatible `ClusterPolicy`/`Policy`
//! documents and evaluates them against admission requests or bare resources.
//!
//! This module is the single source of truth for "is this object allowed?",
//! used by the admission webhook and by the remediation guardrails alike.
//!
//! Public contract (other modules code against exactly this):
//! - [`PolicySet::load_dir`] / [`PolicySet::from_yaml`] load policies; an
//!   unsupported construct is a [`PolicyError::Unsupported`] naming the
//!   policy, the rule and the construct.
//! - [`PolicySet::validate`] evaluates every validate rule against one
//!   [`EvalInput`] and returns one [`RuleOutcome`] per (policy, rule) that
//!   matched or was skipped.
//! - [`PolicySet::mutate`] returns the RFC 6902 patch operations of the
//!   mutate rules that apply; [`PolicySet::mutate_resource`] returns the
//!   patched resource and one [`RuleOutcome`] per mutate rule.
//!
//! Layout: `load` parses documents into `spec` types (with `autogen` adding
//! pod-controller rules); `engine` evaluates validate rules using
//! `matching`, `pattern` (anchors), `conditions`, `variables`/`jmespath` and
//! `pod_security`; `cluster_data` loads `configMap`/`apiCall` context
//! entries through the caller's [`ClusterData`]; `mutate` evaluates mutate rules (`patchStrategicMerge`
//! through `strategic_merge`, `patchesJson6902` through `json6902`, and
//! `foreach` over either, nested); `conformance` runs Kyverno CLI test
//! suites (mutate rules before validate rules, `patchedResource` compared)
//! and `check` evaluates manifests offline. Mutating existing resources
//! (`mutate.targets`) is refused as unsupported.

mod autogen;
mod cel;
mod cel_k8s;
pub mod check;
mod cluster_data;
mod conditions;
pub mod conformance;
mod context;
mod duration;
mod engine;
mod error;
mod gofmt;
pub mod images;
mod jmespath;
mod json6902;
mod load;
mod matching;
mod mutate;
mod pattern;
mod pattern_cel;
mod pod_security;
pub mod quantity;
mod registration;
mod spec;
mod spec_cel;
mod spec_context;
mod spec_mutation;
mod strategic_merge;
mod text_cache;
mod validating_policy;
pub mod vap;
mod variables;
mod wildcard;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

pub use cel::ParamSource;
pub use cluster_data::{ClusterData, ClusterDataError, OfflineCluster};
/// Go-style durations (`90s`, `1h30m`) and label selectors, as the policies
/// spell them, for the operator's own settings too.
pub use duration::parse_duration;
pub use error::{EvalError, PolicyError};
pub use load::UnsupportedRule;
pub use matching::selector_matches;
pub use registration::{ResourceNeeds, ResourceRef};
use spec::{ActionOverride, Rule, RuleBody};

/// The request operation being evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// The admission API spelling (`CREATE`, `UPDATE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }

    /// Parses the admission API spelling, case-insensitively.
    pub fn parse(text: &str) -> Option<Operation> {
        match text.to_ascii_uppercase().as_str() {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }
}

/// Who is making the request (roles/clusterRoles when known).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub cluster_roles: Vec<String>,
}

/// What the engine evaluates. For offline/background checks, build it from
/// a bare resource with [`EvalInput::for_resource`].
#[derive(Debug, Clone)]
pub struct EvalInput<'a> {
    /// `request.object` (for DELETE: the old object).
    pub resource: &'a Value,
    pub old_resource: Option<&'a Value>,
    pub operation: Operation,
    pub user_info: UserInfo,
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// The full AdmissionRequest as JSON, exposed to JMESPath as `request`.
    pub admission_info: Option<&'a Value>,
    /// Extra context (kyverno-test `variables`/`values`); dotted names nest.
    /// A `configMap`/`apiCall` context entry whose name is given here takes
    /// this value and is not looked up.
    pub variables: &'a BTreeMap<String, Value>,
    /// Extra context of single rules, by rule name (a values file's
    /// `policies[].rules[].values`), added on top of `variables`.
    pub rule_variables: &'a BTreeMap<String, BTreeMap<String, Value>>,
    /// Where `configMap` and `apiCall` context entries are read; `None`: no
    /// cluster, and a rule with such an entry is an `error`.
    pub cluster_data: Option<&'a dyn ClusterData>,
}

pub(crate) static NO_VARIABLES: BTreeMap<String, Value> = BTreeMap::new();
static NO_RULE_VARIABLES: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();

impl<'a> EvalInput<'a> {
    /// A CREATE of `resource` by an unknown user.
    pub fn for_resource(resource: &'a Value) -> EvalInput<'a> {
        EvalInput {
            resource,
            old_resource: None,
            operation: Operation::Create,
            user_info: UserInfo::default(),
            namespace_labels: None,
            admission_info: None,
            variables: &NO_VARIABLES,
            rule_variables: &NO_RULE_VARIABLES,
            cluster_data: None,
        }
    }

    /// The same input, with `configMap`/`apiCall` entries read from
    /// `cluster`.
    pub fn with_cluster_data(mut self, cluster: &'a dyn ClusterData) -> EvalInput<'a> {
        self.cluster_data = Some(cluster);
        self
    }
}

/// The verdict of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleStatus {
    Pass,
    Fail,
    Skip,
    Error,
}

impl RuleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleStatus::Pass => "pass",
            RuleStatus::Fail => "fail",
            RuleStatus::Skip => "skip",
            RuleStatus::Error => "error",
        }
    }
}

/// What happens to a violating request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FailureAction {
    Audit,
    Enforce,
}

/// The outcome of one (policy, rule) for one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleOutcome {
    /// Policy name (namespaced `Policy`: `ns/name`).
    pub policy: String,
    /// Rule name; generated rules are `autogen-<rule>` / `autogen-cronjob-<rule>`.
    pub rule: String,
    pub status: RuleStatus,
    /// With `{{ }}` variables substituted; for `Error`, the error text.
    pub message: String,
    pub action: FailureAction,
}

/// One compiled policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    name: String,
    namespace: Option<String>,
    failure_action: FailureAction,
    overrides: Vec<ActionOverride>,
    apply_one: bool,
    background: bool,
    /// The policy's own rules followed by generated pod-controller rules.
    rules: Vec<Rule>,
}

impl Policy {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Some` for a namespaced `Policy`.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Names of all rules, including generated ones.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// The policy-level `validationFailureAction`.
    pub fn failure_action(&self) -> FailureAction {
        self.failure_action
    }

    /// Whether any rule (generated ones included) is a mutate rule.
    pub fn has_mutate_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| matches!(rule.body, RuleBody::Mutate(_)))
    }

    /// Whether the policy asks for background scanning.
    pub fn background(&self) -> bool {
        self.background
    }

    /// `ns/name` for namespaced policies, `name` otherwise.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A set of compiled policies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    policies: Vec<Policy>,
}

impl PolicySet {
    /// Loads every `*.yaml`/`*.yml` under `dir` (recursively), multi-document
    /// aware; non-policy documents are skipped.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
        load::load_dir(dir)
    }

    /// Loads policies from one YAML string (multi-document); `source` names
    /// it in errors.
    pub fn from_yaml(yaml: &str, source: &str) -> Result<PolicySet, PolicyError> {
        load::from_yaml(yaml, source)
    }

    /// Like [`PolicySet::load_dir`], but rules and policies with an
    /// unsupported construct are left out and listed, not fatal.
    pub fn load_dir_skipping_unsupported(
        dir: &Path,
    ) -> Result<(PolicySet, Vec<UnsupportedRule>), PolicyError> {
        load::load_dir_skipping_unsupported(dir)
    }

    /// Like [`PolicySet::from_yaml`], but rules and policies with an
    /// unsupported construct are left out and listed, not fatal.
    pub fn from_yaml_skipping_unsupported(
        yaml: &str,
        source: &str,
    ) -> Result<(PolicySet, Vec<UnsupportedRule>), PolicyError> {
        load::from_yaml_skipping_unsupported(yaml, source)
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.iter()
    }

    pub fn merge(&mut self, other: PolicySet) {
        self.policies.extend(other.policies);
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// True when some rule has a `configMap` or `apiCall` context entry.
    pub fn reads_cluster(&self) -> bool {
        self.policies
            .iter()
            .any(|policy| policy.rules.iter().any(Rule::reads_cluster))
    }

    /// Evaluates all validate rules (including auto-generated pod-controller
    /// rules): [`PolicySet::select`] then [`SelectedRules::validate`].
    pub fn validate(&self, input: &EvalInput<'_>) -> Vec<RuleOutcome> {
        self.select(input).validate(input)
    }

    /// The validate rules of every policy that select `input` (match and
    /// exclude blocks, a namespaced policy's namespace); nothing is
    /// evaluated yet.
    pub fn select(&self, input: &EvalInput<'_>) -> SelectedRules<'_> {
        self.select_where(input, |_| true)
    }

    /// Evaluates the validate rules of the policies named `name` (bare or
    /// `ns/name`).
    pub fn validate_policy(&self, name: &str, input: &EvalInput<'_>) -> Vec<RuleOutcome> {
        self.select_where(input, |p| p.name == name || p.display_name() == name)
            .validate(input)
    }

    fn select_where(
        &self,
        input: &EvalInput<'_>,
        wanted: impl Fn(&Policy) -> bool,
    ) -> SelectedRules<'_> {
        let subject = matching::MatchSubject::from_input(input);
        let mut rules = Vec::new();
        for policy in self.policies.iter().filter(|p| wanted(p)) {
            engine::select_rules(policy, &subject, &mut rules);
        }
        SelectedRules { rules }
    }

    /// Applies the mutate rules that select `input`; returns JSON Patch (RFC
    /// 6902) operations against `input.resource`. A rule that cannot be
    /// evaluated is an error: the caller decides whether to admit the
    /// object unchanged.
    pub fn mutate(
        &self,
        input: &EvalInput<'_>,
    ) -> Result<Vec<json_patch::PatchOperation>, PolicyError> {
        let outcome = self.mutate_resource(input);
        if let Some(failed) = outcome
            .rules
            .iter()
            .find(|rule| rule.status == RuleStatus::Error)
        {
            return Err(PolicyError::Mutation {
                policy: failed.policy.clone(),
                rule: failed.rule.clone(),
                reason: failed.message.clone(),
            });
        }
        Ok(json_patch::diff(input.resource, &outcome.resource).0)
    }

    /// Applies every mutate rule that selects `input`, policy by policy and
    /// rule by rule, each on the resource the ones before it produced (as
    /// Kyverno does): the patched resource and one outcome per rule.
    pub fn mutate_resource(&self, input: &EvalInput<'_>) -> MutationOutcome {
        self.mutate_where(input, |_| true)
    }

    /// [`PolicySet::mutate_resource`] for the policies named `name` (bare
    /// or `ns/name`) only.
    pub fn mutate_policy(&self, name: &str, input: &EvalInput<'_>) -> MutationOutcome {
        self.mutate_where(input, |p| p.name == name || p.display_name() == name)
    }

    fn mutate_where(
        &self,
        input: &EvalInput<'_>,
        wanted: impl Fn(&Policy) -> bool,
    ) -> MutationOutcome {
        let mut current = input.resource.clone();
        let mut rules = Vec::new();
        for policy in self.policies.iter().filter(|p| wanted(p)) {
            for rule in &policy.rules {
                let RuleBody::Mutate(mutation) = &rule.body else {
                    continue;
                };
                // Matching and `request.object` both see the resource as
                // the rules before this one left it.
                let step = EvalInput {
                    resource: &current,
                    ..input.clone()
                };
                if !engine::rule_selects(policy, rule, &matching::MatchSubject::from_input(&step)) {
                    continue;
                }
                let verdict = mutate::mutate_rule(policy, rule, mutation, &step);
                let (status, message, patched) = match verdict {
                    mutate::MutateVerdict::Patched(patched) => {
                        (RuleStatus::Pass, mutated_message(&patched), Some(patched))
                    }
                    mutate::MutateVerdict::Skipped(reason) => (RuleStatus::Skip, reason, None),
                    mutate::MutateVerdict::Failed(reason) => (RuleStatus::Error, reason, None),
                };
                rules.push(RuleOutcome {
                    policy: policy.display_name(),
                    rule: rule.name.clone(),
                    status,
                    message,
                    action: policy.failure_action,
                });
                if let Some(patched) = patched {
                    current = patched;
                    // `applyRules: One` stops the policy at its first rule
                    // that applied.
                    if policy.apply_one {
                        break;
                    }
                }
            }
        }
        MutationOutcome {
            resource: current,
            rules,
        }
    }
}

/// Kyverno's message for a mutate rule that applied.
fn mutated_message(resource: &Value) -> String {
    let field = |pointer: &str| {
        resource
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let (kind, name, namespace) = (
        field("/kind"),
        field("/metadata/name"),
        field("/metadata/namespace"),
    );
    if namespace.is_empty() {
        format!("mutated {kind}/{name}")
    } else {
        format!("mutated {kind}/{name} in namespace {namespace}")
    }
}

/// What the mutate rules did to one input.
#[derive(Debug, Clone, PartialEq)]
pub struct MutationOutcome {
    /// The resource after every rule that applied.
    pub resource: Value,
    /// One outcome per mutate rule that selected the input, in order:
    /// `pass` (it changed the resource), `skip` (preconditions, anchors, or
    /// nothing to change) or `error` (the resource is left as it was).
    pub rules: Vec<RuleOutcome>,
}

/// The validate rules that select one input, in policy order: the match
/// step of [`PolicySet::validate`], kept apart from evaluation so a caller
/// can see what each step costs.
#[derive(Debug, Clone)]
pub struct SelectedRules<'p> {
    rules: Vec<engine::SelectedRule<'p>>,
}

impl SelectedRules<'_> {
    /// Evaluates the selected rules: one [`RuleOutcome`] per rule that
    /// matched or was skipped.
    pub fn validate(&self, input: &EvalInput<'_>) -> Vec<RuleOutcome> {
        engine::evaluate_rules(&self.rules, input)
    }

    /// True when a selected rule has a `configMap` or `apiCall` context
    /// entry: evaluating it reads [`EvalInput::cluster_data`].
    pub fn reads_cluster(&self) -> bool {
        self.rules.iter().any(engine::SelectedRule::reads_cluster)
    }

    /// Keeps the rules for which `keep(policy display name, rule name)`
    /// holds: the webhook drops the rules the API server already enforces.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.rules.retain(|selected| {
            let policy = selected.policy;
            let rule = selected.rule.name.as_str();
            match &policy.namespace {
                None => keep(&policy.name, rule),
                Some(_) => keep(&policy.display_name(), rule),
            }
        });
    }

    /// How many rules were selected.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const POLICY: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: require-labels
spec:
  validationFailureAction: enforce
  rules:
  - name: check-team
    match:
      any:
      - resources:
          kinds: [Pod]
    validate:
      message: "pod {{ request.object.metadata.name }} needs a team label"
      pattern:
        metadata:
          labels:
            team: "?*"
  - name: add-default
    match:
      any:
      - resources:
          kinds: [Pod]
    mutate:
      patchStrategicMerge:
        metadata:
          labels:
            +(owner): platform
"#;

    #[test]
    fn validates_with_autogen_and_messages() {
        let set = PolicySet::from_yaml(POLICY, "inline").unwrap();
        let policy = set.policies().next().unwrap();
        assert_eq!(policy.failure_action(), FailureAction::Enforce);
        let names: Vec<&str> = policy.rule_names().collect();
        assert!(names.contains(&"autogen-check-team"));
        assert!(names.contains(&"autogen-cronjob-check-team"));

        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {}});
        let outcomes = set.validate(&EvalInput::for_resource(&pod));
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].status, RuleStatus::Fail);
        assert!(outcomes[0].message.contains("pod web needs a team label"));
        assert_eq!(outcomes[0].action, FailureAction::Enforce);

        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"metadata": {"labels": {"team": "a"}}, "spec": {}}}});
        let outcomes = set.validate(&EvalInput::for_resource(&deployment));
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].rule, "autogen-check-team");
        assert_eq!(outcomes[0].status, RuleStatus::Pass);
    }

    #[test]
    fn mutate_returns_json_patch() {
        let set = PolicySet::from_yaml(POLICY, "inline").unwrap();
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {}}});
        let ops = set.mutate(&EvalInput::for_resource(&pod)).unwrap();
        assert_eq!(ops.len(), 1);
        let text = serde_json::to_string(&ops).unwrap();
        assert!(text.contains("/metadata/labels/owner"));
        let serialized = serde_json::to_value(RuleStatus::Skip).unwrap();
        assert_eq!(serialized, json!("skip"));
        assert_eq!(
            serde_json::to_value(FailureAction::Audit).unwrap(),
            json!("Audit")
        );
    }

    #[test]
    fn unsupported_constructs_fail_loading() {
        let yaml = POLICY.replace(
            "    mutate:\n      patchStrategicMerge:",
            "    generate:\n      data:",
        );
        match PolicySet::from_yaml(&yaml, "inline") {
            Err(PolicyError::Unsupported {
                policy,
                rule,
                construct,
            }) => {
                assert_eq!(policy, "require-labels");
                assert_eq!(rule, "add-default");
                assert_eq!(construct, "generate");
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
}
