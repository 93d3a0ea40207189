//! The compiled form of Kyverno `ClusterPolicy`/`Policy` documents and the
//! parser that builds it from YAML/JSON. Anything the engine cannot honour
//! is rejected here, naming the policy, rule and construct, so no rule is
//! ever silently treated as passing.

use serde_json::{Map, Value};

use crate::FailureAction;
use crate::cel::{CelCheck, NamedExpression};
use crate::conditions::ConditionOperator;
use crate::error::PolicyError;
use crate::variables::Template;

fn templates(values: &[Value]) -> Vec<Template> {
    values.iter().cloned().map(Template::new).collect()
}

/// One condition: `key <operator> value` (both may hold variables).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub key: Template,
    pub operator: ConditionOperator,
    pub value: Template,
    pub message: Option<String>,
}

/// `preconditions` / `deny.conditions`: the `any`/`all` form or the legacy
/// plain list (all must hold).
#[derive(Debug, Clone, PartialEq)]
pub enum Conditions {
    Legacy(Vec<Condition>),
    AnyAll {
        any: Option<Vec<Condition>>,
        all: Option<Vec<Condition>>,
    },
}

/// The resource side of a match/exclude block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceDescription {
    pub kinds: Vec<KindSelector>,
    pub name: Option<String>,
    pub names: Vec<String>,
    pub namespaces: Vec<String>,
    pub annotations: Map<String, Value>,
    pub selector: Option<Value>,
    pub namespace_selector: Option<Value>,
    pub operations: Vec<String>,
    /// Admission-style `resourceRules` (a `ValidatingPolicy`'s
    /// `matchConstraints`); one must match when any are given.
    pub api_resources: Vec<ApiResourceRule>,
}

/// One `resourceRules` entry: API groups, versions, resources (plural,
/// optionally `/subresource`) and operations, `*` matching anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiResourceRule {
    pub groups: Vec<String>,
    pub versions: Vec<String>,
    pub resources: Vec<String>,
    pub operations: Vec<String>,
}

impl ResourceDescription {
    /// Field by field: rule selection asks this of every filter on every
    /// request, and comparing with a `default()` built and dropped each
    /// time cost more than the rest of the check.
    pub fn is_empty(&self) -> bool {
        let ResourceDescription {
            kinds,
            name,
            names,
            namespaces,
            annotations,
            selector,
            namespace_selector,
            operations,
            api_resources,
        } = self;
        kinds.is_empty()
            && name.is_none()
            && names.is_empty()
            && namespaces.is_empty()
            && annotations.is_empty()
            && selector.is_none()
            && namespace_selector.is_none()
            && operations.is_empty()
            && api_resources.is_empty()
    }
}

/// A `kinds` entry, split once at load into its group, version, kind and
/// subresource (matching runs for every rule on every request).
#[derive(Debug, Clone, PartialEq)]
pub struct KindSelector {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub subresource: String,
    /// Whether `kind`, `group` and `version` hold no wildcard character:
    /// then they are compared as they are, without scanning them again on
    /// every request.
    pub(crate) literal: [bool; 3],
}

impl KindSelector {
    pub fn parse(selector: &str) -> KindSelector {
        let (group, version, kind, subresource) = crate::matching::parse_kind_selector(selector);
        let literal = |text: &str| !crate::wildcard::contains_wildcard(text);
        KindSelector {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            subresource: subresource.to_string(),
            literal: [literal(kind), literal(group), literal(version)],
        }
    }
}

/// A subject of `subjects`: `User`, `Group` or `ServiceAccount`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

/// The requester side of a match/exclude block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFilter {
    pub roles: Vec<String>,
    pub cluster_roles: Vec<String>,
    pub subjects: Vec<Subject>,
}

impl UserFilter {
    pub fn is_empty(&self) -> bool {
        let UserFilter {
            roles,
            cluster_roles,
            subjects,
        } = self;
        roles.is_empty() && cluster_roles.is_empty() && subjects.is_empty()
    }
}

/// One entry of `any`/`all`, or the legacy top-level block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceFilter {
    pub resources: ResourceDescription,
    pub user: UserFilter,
}

/// A `match` or `exclude` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchBlock {
    pub any: Vec<ResourceFilter>,
    pub all: Vec<ResourceFilter>,
    pub legacy: ResourceFilter,
}

/// A rule (or foreach) `context` entry: the name its value is stored under
/// and where the value comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextEntry {
    pub name: String,
    pub source: ContextSource,
}

/// Where a context entry's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextSource {
    Variable(ContextVariable),
    /// `configMap`: `name` and `namespace` may hold `{{ }}` variables; an
    /// empty namespace means `default` (a `Policy`'s own namespace).
    ConfigMap {
        name: String,
        namespace: String,
    },
    /// `apiCall` with a `urlPath` (GET against the API server).
    ApiCall(ApiCall),
}

impl ContextSource {
    /// True for the sources read from the cluster.
    pub fn reads_cluster(&self) -> bool {
        !matches!(self, ContextSource::Variable(_))
    }
}

/// A `variable` context entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextVariable {
    pub jmes_path: Option<String>,
    pub value: Option<Value>,
    pub default: Option<Value>,
}

/// An `apiCall` context entry (GET only).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    /// May hold `{{ }}` variables.
    pub url_path: String,
    /// Applied to the response; may hold `{{ }}` variables.
    pub jmes_path: Option<String>,
    /// Stored as is, without `jmesPath`, when the call fails.
    pub default: Option<Value>,
}

/// A `podSecurity` exclusion.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSecurityExclusion {
    pub control_name: String,
    pub images: Vec<String>,
    pub restricted_field: Option<String>,
    pub values: Vec<String>,
}

/// `validate.podSecurity`.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSecuritySpec {
    pub level: String,
    pub version: String,
    pub exclude: Vec<PodSecurityExclusion>,
}

/// What a validation (or one foreach level) checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Pattern(Template),
    AnyPattern(Vec<Template>),
    Deny(Conditions),
    Foreach(Vec<ForeachValidation>),
    PodSecurity(PodSecuritySpec),
    /// `validate.cel`, or a `ValidatingPolicy`'s validations.
    Cel(CelCheck),
}

/// One `validate.foreach` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeachValidation {
    pub list: String,
    pub context: Vec<ContextEntry>,
    pub preconditions: Option<Conditions>,
    pub element_scope: Option<bool>,
    pub check: Check,
}

/// `validationFailureActionOverrides` / `failureActionOverrides` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionOverride {
    pub action: FailureAction,
    pub namespaces: Vec<String>,
}

/// A `validate` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub message: Option<String>,
    pub failure_action: Option<FailureAction>,
    pub overrides: Vec<ActionOverride>,
    pub check: Check,
}

/// What a mutate rule (or one `foreach` level of it) does.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// `patchStrategicMerge`: an overlay with anchors.
    StrategicMerge(Template),
    /// `patchesJson6902`: RFC 6902 operations as YAML or JSON text. Kept as
    /// text because Kyverno substitutes `{{ }}` variables into the text
    /// before parsing it.
    Json6902(String),
    /// `foreach`: a mutation per element of a list.
    Foreach(Vec<ForeachMutation>),
}

/// The order a `mutate.foreach` walks its list in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeachOrder {
    Ascending,
    Descending,
}

/// One `mutate.foreach` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeachMutation {
    pub list: String,
    pub context: Vec<ContextEntry>,
    pub preconditions: Option<Conditions>,
    /// `None` when the policy does not say: the default depends on the
    /// mutation (see `mutate::walks_descending`).
    pub order: Option<ForeachOrder>,
    pub mutation: Mutation,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleBody {
    Validate(Validation),
    Mutate(Mutation),
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub match_block: MatchBlock,
    pub exclude: Option<MatchBlock>,
    pub preconditions: Option<Conditions>,
    /// `celPreconditions`: all must be true or the rule is skipped.
    pub cel_preconditions: Vec<NamedExpression>,
    pub context: Vec<ContextEntry>,
    pub body: RuleBody,
}

impl Rule {
    /// True when the rule (or one of its foreach levels) has a context
    /// entry read from the cluster (`configMap`, `apiCall`), or is a CEL
    /// check with parameter resources.
    pub fn reads_cluster(&self) -> bool {
        fn entries(context: &[ContextEntry]) -> bool {
            context.iter().any(|entry| entry.source.reads_cluster())
        }
        fn in_check(check: &Check) -> bool {
            match check {
                Check::Foreach(list) => list
                    .iter()
                    .any(|foreach| entries(&foreach.context) || in_check(&foreach.check)),
                Check::Cel(check) => check.params.is_some(),
                _ => false,
            }
        }
        fn in_mutation(mutation: &Mutation) -> bool {
            match mutation {
                Mutation::Foreach(list) => list
                    .iter()
                    .any(|foreach| entries(&foreach.context) || in_mutation(&foreach.mutation)),
                _ => false,
            }
        }
        entries(&self.context)
            || match &self.body {
                RuleBody::Validate(validation) => in_check(&validation.check),
                RuleBody::Mutate(mutation) => in_mutation(mutation),
            }
    }
}

/// Parses one rule from its raw JSON form.
pub fn parse_rule(policy: &str, raw: &Value) -> Result<Rule, PolicyError> {
    let name = raw
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let p = Parser {
        policy,
        rule: &name,
    };
    let map = p.object(raw, "rule")?;
    for key in map.keys() {
        match key.as_str() {
            "name"
            | "match"
            | "exclude"
            | "preconditions"
            | "celPreconditions"
            | "context"
            | "validate"
            | "mutate"
            | "skipBackgroundRequests"
            | "reportProperties" => {}
            other => return Err(p.unsupported(other)),
        }
    }
    if name.is_empty() {
        return Err(p.invalid("rule has no name"));
    }
    let match_block = match map.get("match") {
        Some(value) => p.match_block(value, "match")?,
        None => return Err(p.invalid("rule has no match block")),
    };
    let exclude = map
        .get("exclude")
        .map(|value| p.match_block(value, "exclude"))
        .transpose()?;
    let preconditions = map
        .get("preconditions")
        .map(|value| p.conditions(value, "preconditions"))
        .transpose()?;
    let cel_preconditions = match map.get("celPreconditions") {
        Some(value) => p.named_expressions(value, "celPreconditions")?,
        None => Vec::new(),
    };
    let context = p.context(map.get("context"), "context")?;
    let body = match (map.get("validate"), map.get("mutate")) {
        (Some(validate), None) => RuleBody::Validate(p.validation(validate)?),
        (None, Some(mutate)) => RuleBody::Mutate(p.mutation(mutate)?),
        (Some(_), Some(_)) => return Err(p.invalid("rule has both validate and mutate")),
        (None, None) => return Err(p.invalid("rule has neither validate nor mutate")),
    };
    Ok(Rule {
        name,
        match_block,
        exclude,
        preconditions,
        cel_preconditions,
        context,
        body,
    })
}

/// Parses a failure action (`Audit`/`Enforce`, any case; legacy `audit`).
pub fn parse_failure_action(text: &str) -> Option<FailureAction> {
    match text.to_ascii_lowercase().as_str() {
        "audit" => Some(FailureAction::Audit),
        "enforce" => Some(FailureAction::Enforce),
        _ => None,
    }
}

/// Parses `validationFailureActionOverrides`-style lists.
pub fn parse_overrides(
    policy: &str,
    rule: &str,
    raw: Option<&Value>,
) -> Result<Vec<ActionOverride>, PolicyError> {
    let p = Parser { policy, rule };
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut overrides = Vec::new();
    for entry in p.array(raw, "failureActionOverrides")? {
        let action = entry
            .get("action")
            .and_then(Value::as_str)
            .and_then(parse_failure_action)
            .ok_or_else(|| p.invalid("failure action override needs action Audit or Enforce"))?;
        let namespaces = p.strings(entry.get("namespaces"), "namespaces")?;
        overrides.push(ActionOverride { action, namespaces });
    }
    Ok(overrides)
}

pub(crate) struct Parser<'a> {
    pub(crate) policy: &'a str,
    pub(crate) rule: &'a str,
}

impl Parser<'_> {
    pub(crate) fn unsupported(&self, construct: &str) -> PolicyError {
        PolicyError::Unsupported {
            policy: self.policy.to_string(),
            rule: self.rule.to_string(),
            construct: construct.to_string(),
        }
    }

    pub(crate) fn invalid(&self, reason: &str) -> PolicyError {
        PolicyError::Invalid {
            policy: self.policy.to_string(),
            rule: self.rule.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn object<'v>(
        &self,
        value: &'v Value,
        what: &str,
    ) -> Result<&'v Map<String, Value>, PolicyError> {
        value
            .as_object()
            .ok_or_else(|| self.invalid(&format!("{what} must be a map")))
    }

    pub(crate) fn array<'v>(
        &self,
        value: &'v Value,
        what: &str,
    ) -> Result<&'v Vec<Value>, PolicyError> {
        value
            .as_array()
            .ok_or_else(|| self.invalid(&format!("{what} must be a list")))
    }

    pub(crate) fn strings(
        &self,
        value: Option<&Value>,
        what: &str,
    ) -> Result<Vec<String>, PolicyError> {
        match value {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.invalid(&format!("{what} must be a list of strings")))
                })
                .collect(),
            Some(_) => Err(self.invalid(&format!("{what} must be a list of strings"))),
        }
    }

    pub(crate) fn match_block(&self, value: &Value, what: &str) -> Result<MatchBlock, PolicyError> {
        let map = self.object(value, what)?;
        let mut block = MatchBlock::default();
        let mut legacy_user = Map::new();
        for (key, entry) in map {
            match key.as_str() {
                "any" => {
                    for item in self.array(entry, &format!("{what}.any"))? {
                        block
                            .any
                            .push(self.resource_filter(item, &format!("{what}.any"))?);
                    }
                }
                "all" => {
                    for item in self.array(entry, &format!("{what}.all"))? {
                        block
                            .all
                            .push(self.resource_filter(item, &format!("{what}.all"))?);
                    }
                }
                "resources" => {
                    block.legacy.resources =
                        self.resource_description(entry, &format!("{what}.resources"))?;
                }
                "subjects" | "roles" | "clusterRoles" => {
                    legacy_user.insert(key.clone(), entry.clone());
                }
                other => return Err(self.unsupported(&format!("{what}.{other}"))),
            }
        }
        block.legacy.user = self.user_filter(&legacy_user, what)?;
        Ok(block)
    }

    pub(crate) fn resource_filter(
        &self,
        value: &Value,
        what: &str,
    ) -> Result<ResourceFilter, PolicyError> {
        let map = self.object(value, what)?;
        let mut filter = ResourceFilter::default();
        let mut user = Map::new();
        for (key, entry) in map {
            match key.as_str() {
                "resources" => {
                    filter.resources =
                        self.resource_description(entry, &format!("{what}.resources"))?;
                }
                "subjects" | "roles" | "clusterRoles" => {
                    user.insert(key.clone(), entry.clone());
                }
                other => return Err(self.unsupported(&format!("{what}.{other}"))),
            }
        }
        filter.user = self.user_filter(&user, what)?;
        Ok(filter)
    }

    pub(crate) fn user_filter(
        &self,
        map: &Map<String, Value>,
        what: &str,
    ) -> Result<UserFilter, PolicyError> {
        let mut filter = UserFilter {
            roles: self.strings(map.get("roles"), &format!("{what}.roles"))?,
            cluster_roles: self
                .strings(map.get("clusterRoles"), &format!("{what}.clusterRoles"))?,
            subjects: Vec::new(),
        };
        if let Some(subjects) = map.get("subjects") {
            for subject in self.array(subjects, &format!("{what}.subjects"))? {
                let field = |name: &str| {
                    subject
                        .get(name)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                filter.subjects.push(Subject {
                    kind: field("kind").ok_or_else(|| self.invalid("subject needs a kind"))?,
                    name: field("name").ok_or_else(|| self.invalid("subject needs a name"))?,
                    namespace: field("namespace"),
                });
            }
        }
        Ok(filter)
    }

    pub(crate) fn resource_description(
        &self,
        value: &Value,
        what: &str,
    ) -> Result<ResourceDescription, PolicyError> {
        let map = self.object(value, what)?;
        let mut description = ResourceDescription::default();
        for (key, entry) in map {
            match key.as_str() {
                "kinds" => {
                    description.kinds = self
                        .strings(Some(entry), "kinds")?
                        .iter()
                        .map(|kind| KindSelector::parse(kind))
                        .collect();
                }
                "name" => description.name = entry.as_str().map(str::to_string),
                "names" => description.names = self.strings(Some(entry), "names")?,
                "namespaces" => description.namespaces = self.strings(Some(entry), "namespaces")?,
                "operations" => description.operations = self.strings(Some(entry), "operations")?,
                "annotations" => {
                    description.annotations = self.object(entry, "annotations")?.clone();
                }
                "selector" => description.selector = Some(self.selector(entry, "selector")?),
                "namespaceSelector" => {
                    description.namespace_selector =
                        Some(self.selector(entry, "namespaceSelector")?);
                }
                other => return Err(self.unsupported(&format!("{what}.{other}"))),
            }
        }
        Ok(description)
    }

    pub(crate) fn selector(&self, value: &Value, what: &str) -> Result<Value, PolicyError> {
        let map = self.object(value, what)?;
        for key in map.keys() {
            if key != "matchLabels" && key != "matchExpressions" {
                return Err(self.unsupported(&format!("{what}.{key}")));
            }
        }
        Ok(value.clone())
    }

    pub(crate) fn conditions(&self, value: &Value, what: &str) -> Result<Conditions, PolicyError> {
        match value {
            Value::Array(items) => Ok(Conditions::Legacy(self.condition_list(items, what)?)),
            Value::Object(map) => {
                for key in map.keys() {
                    if key != "any" && key != "all" {
                        return Err(self.unsupported(&format!("{what}.{key}")));
                    }
                }
                let list = |key: &str| -> Result<Option<Vec<Condition>>, PolicyError> {
                    match map.get(key) {
                        None | Some(Value::Null) => Ok(None),
                        Some(v) => Ok(Some(self.condition_list(self.array(v, key)?, what)?)),
                    }
                };
                Ok(Conditions::AnyAll {
                    any: list("any")?,
                    all: list("all")?,
                })
            }
            Value::Null => Ok(Conditions::AnyAll {
                any: None,
                all: None,
            }),
            _ => Err(self.invalid(&format!("{what} must be a list or a map"))),
        }
    }

    pub(crate) fn condition_list(
        &self,
        items: &[Value],
        what: &str,
    ) -> Result<Vec<Condition>, PolicyError> {
        items
            .iter()
            .map(|item| {
                let map = self.object(item, what)?;
                let operator_name = map
                    .get("operator")
                    .and_then(Value::as_str)
                    .ok_or_else(|| self.invalid("condition needs an operator"))?;
                let operator = ConditionOperator::parse(operator_name).ok_or_else(|| {
                    self.invalid(&format!("unknown condition operator {operator_name:?}"))
                })?;
                Ok(Condition {
                    key: Template::new(map.get("key").cloned().unwrap_or(Value::Null)),
                    operator,
                    value: Template::new(map.get("value").cloned().unwrap_or(Value::Null)),
                    message: map
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
            })
            .collect()
    }

    pub(crate) fn validation(&self, value: &Value) -> Result<Validation, PolicyError> {
        let map = self.object(value, "validate")?;
        let mut checks = Vec::new();
        for (key, entry) in map {
            match key.as_str() {
                "message"
                | "failureAction"
                | "failureActionOverrides"
                | "allowExistingViolations" => {}
                "pattern" => checks.push(Check::Pattern(Template::new(entry.clone()))),
                "anyPattern" => checks.push(Check::AnyPattern(templates(
                    self.array(entry, "anyPattern")?,
                ))),
                "deny" => checks.push(Check::Deny(self.deny(entry)?)),
                "foreach" => checks.push(Check::Foreach(
                    self.foreach_list(entry, "validate.foreach")?,
                )),
                "podSecurity" => checks.push(Check::PodSecurity(self.pod_security(entry)?)),
                "cel" => checks.push(Check::Cel(self.cel(entry)?)),
                other => return Err(self.unsupported(&format!("validate.{other}"))),
            }
        }
        let check =
            match checks.len() {
                1 => checks.remove(0),
                0 => {
                    return Err(self.invalid(
                        "validate needs one of pattern, anyPattern, deny, foreach, podSecurity",
                    ));
                }
                _ => return Err(self.invalid(
                    "validate has more than one of pattern, anyPattern, deny, foreach, podSecurity",
                )),
            };
        let failure_action = match map.get("failureAction").and_then(Value::as_str) {
            Some(text) => Some(
                parse_failure_action(text)
                    .ok_or_else(|| self.invalid(&format!("unknown failureAction {text:?}")))?,
            ),
            None => None,
        };
        Ok(Validation {
            message: map
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string),
            failure_action,
            overrides: parse_overrides(self.policy, self.rule, map.get("failureActionOverrides"))?,
            check,
        })
    }

    pub(crate) fn deny(&self, value: &Value) -> Result<Conditions, PolicyError> {
        let map = self.object(value, "deny")?;
        for key in map.keys() {
            if key != "conditions" {
                return Err(self.unsupported(&format!("deny.{key}")));
            }
        }
        match map.get("conditions") {
            Some(conditions) => self.conditions(conditions, "deny.conditions"),
            None => Ok(Conditions::AnyAll {
                any: None,
                all: None,
            }),
        }
    }

    pub(crate) fn foreach_list(
        &self,
        value: &Value,
        what: &str,
    ) -> Result<Vec<ForeachValidation>, PolicyError> {
        let mut list = Vec::new();
        for entry in self.array(value, what)? {
            let map = self.object(entry, what)?;
            let mut checks = Vec::new();
            for (key, item) in map {
                match key.as_str() {
                    "list" | "context" | "preconditions" | "elementScope" => {}
                    "pattern" => checks.push(Check::Pattern(Template::new(item.clone()))),
                    "anyPattern" => checks.push(Check::AnyPattern(templates(
                        self.array(item, "anyPattern")?,
                    ))),
                    "deny" => checks.push(Check::Deny(self.deny(item)?)),
                    "foreach" => checks.push(Check::Foreach(
                        self.foreach_list(item, &format!("{what}.foreach"))?,
                    )),
                    other => return Err(self.unsupported(&format!("{what}.{other}"))),
                }
            }
            let check = match checks.len() {
                1 => checks.remove(0),
                _ => {
                    return Err(self.invalid(
                        "foreach needs exactly one of pattern, anyPattern, deny, foreach",
                    ));
                }
            };
            let list_expression = map
                .get("list")
                .and_then(Value::as_str)
                .ok_or_else(|| self.invalid("foreach needs a list"))?
                .to_string();
            crate::jmespath::compile_check(&list_expression)
                .map_err(|e| self.invalid(&e.to_string()))?;
            list.push(ForeachValidation {
                list: list_expression,
                context: self.context(map.get("context"), &format!("{what}.context"))?,
                preconditions: map
                    .get("preconditions")
                    .map(|v| self.conditions(v, "foreach.preconditions"))
                    .transpose()?,
                element_scope: map.get("elementScope").and_then(Value::as_bool),
                check,
            });
        }
        Ok(list)
    }

    pub(crate) fn pod_security(&self, value: &Value) -> Result<PodSecuritySpec, PolicyError> {
        let map = self.object(value, "podSecurity")?;
        for key in map.keys() {
            if !matches!(key.as_str(), "level" | "version" | "exclude") {
                return Err(self.unsupported(&format!("podSecurity.{key}")));
            }
        }
        let level = map
            .get("level")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if !matches!(level.as_str(), "privileged" | "baseline" | "restricted") {
            return Err(self.invalid(&format!(
                "podSecurity.level {level:?} is not baseline, restricted or privileged"
            )));
        }
        let version = map
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("latest")
            .to_string();
        let valid_version = version == "latest"
            || version.strip_prefix("v1.").is_some_and(|minor| {
                !minor.is_empty() && minor.chars().all(|c| c.is_ascii_digit())
            });
        if !valid_version {
            return Err(self.invalid(&format!(
                "podSecurity.version {version:?} is not latest or v1.N"
            )));
        }
        let mut exclude = Vec::new();
        if let Some(entries) = map.get("exclude") {
            for entry in self.array(entries, "podSecurity.exclude")? {
                let entry_map = self.object(entry, "podSecurity.exclude")?;
                exclude.push(PodSecurityExclusion {
                    control_name: entry_map
                        .get("controlName")
                        .and_then(Value::as_str)
                        .ok_or_else(|| self.invalid("podSecurity.exclude needs controlName"))?
                        .to_string(),
                    images: self.strings(entry_map.get("images"), "images")?,
                    restricted_field: entry_map
                        .get("restrictedField")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    values: self.strings(entry_map.get("values"), "values")?,
                });
            }
        }
        Ok(PodSecuritySpec {
            level,
            version,
            exclude,
        })
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
