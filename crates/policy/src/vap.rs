//! Translating CEL rules, and the pattern rules `pattern_cel` can express
//! exactly, into Kubernetes `ValidatingAdmissionPolicy` specs, so the API
//! server can evaluate them in-process with no webhook call.
//!
//! Only an exact translation is made: a rule whose every expression the API
//! server's CEL environment evaluates the same way, and whose match the
//! policy's `matchConstraints` can say exactly. Everything else stays with
//! the webhook and is listed with the reason. Rules that match the same
//! resources can be merged into one admission policy ([`merge`]): the API
//! server's cost grows with the number of policies that match a request
//! more than with their expressions.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::cel::{CelCheck, CelExpression, CelValidation};
use crate::matching::{is_cluster_scoped, plural_of_kind};
use crate::pattern_cel;
use crate::spec::{
    ApiResourceRule, Check, KindSelector, MatchBlock, ResourceFilter, Rule, RuleBody, Validation,
};
use crate::variables::Template;
use crate::{FailureAction, Policy, PolicySet};

/// One rule as an admission policy spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiServerRule {
    /// The policy's display name.
    pub policy: String,
    pub rule: String,
    /// The failure action the rule declares (the ConfigMap may override it).
    pub action: FailureAction,
    /// The `ValidatingAdmissionPolicy` `spec`: `matchConstraints`,
    /// `matchConditions`, `variables`, `validations`, `failurePolicy`.
    pub spec: Value,
}

/// A rule the API server cannot evaluate exactly, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotTranslated {
    pub policy: String,
    pub rule: String,
    pub reason: String,
}

/// The rules of a policy set split by where they can run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Translation {
    pub rules: Vec<ApiServerRule>,
    pub not_translated: Vec<NotTranslated>,
}

/// Built-in kinds by API group, for rules that name kinds rather than
/// resources.
pub(crate) const KIND_GROUPS: [(&str, &str); 22] = [
    ("Pod", ""),
    ("Service", ""),
    ("Namespace", ""),
    ("ConfigMap", ""),
    ("Secret", ""),
    ("ServiceAccount", ""),
    ("PersistentVolumeClaim", ""),
    ("PersistentVolume", ""),
    ("ReplicationController", ""),
    ("Node", ""),
    ("Deployment", "apps"),
    ("DaemonSet", "apps"),
    ("StatefulSet", "apps"),
    ("ReplicaSet", "apps"),
    ("Job", "batch"),
    ("CronJob", "batch"),
    ("Ingress", "networking.k8s.io"),
    ("NetworkPolicy", "networking.k8s.io"),
    ("Role", "rbac.authorization.k8s.io"),
    ("RoleBinding", "rbac.authorization.k8s.io"),
    ("PodDisruptionBudget", "policy"),
    ("HorizontalPodAutoscaler", "autoscaling"),
];

impl PolicySet {
    /// Splits the validate rules into those the API server can evaluate
    /// exactly and those only this engine can.
    pub fn api_server_translation(&self) -> Translation {
        let mut translation = Translation::default();
        for policy in &self.policies {
            for rule in &policy.rules {
                let RuleBody::Validate(validation) = &rule.body else {
                    continue;
                };
                let action = validation.failure_action.unwrap_or(policy.failure_action);
                match translate(policy, rule) {
                    Ok(spec) => translation.rules.push(ApiServerRule {
                        policy: policy.display_name(),
                        rule: rule.name.clone(),
                        action,
                        spec,
                    }),
                    Err(reason) => translation.not_translated.push(NotTranslated {
                        policy: policy.display_name(),
                        rule: rule.name.clone(),
                        reason,
                    }),
                }
            }
        }
        translation
    }
}

fn translate(policy: &Policy, rule: &Rule) -> Result<Value, String> {
    let RuleBody::Validate(validation) = &rule.body else {
        return Err("not a validate rule".into());
    };
    if policy.namespace.is_some() {
        return Err("a namespaced policy".into());
    }
    if let Check::Cel(check) = &validation.check
        && check.params.is_some()
    {
        return Err("parameter resources (paramKind/paramRef)".into());
    }
    if !policy.overrides.is_empty() || !validation.overrides.is_empty() {
        return Err("failure action overrides per namespace".into());
    }
    if rule.preconditions.is_some() || !rule.context.is_empty() {
        return Err("JMESPath preconditions or context".into());
    }
    let check = match &validation.check {
        Check::Cel(check) => check.clone(),
        Check::Pattern(pattern) => pattern_check(policy, rule, validation, &[pattern])?,
        Check::AnyPattern(patterns) => {
            let patterns: Vec<&Template> = patterns.iter().collect();
            pattern_check(policy, rule, validation, &patterns)?
        }
        Check::Deny(_) | Check::Foreach(_) | Check::PodSecurity(_) => {
            return Err(
                "not a CEL or pattern rule (deny, foreach and podSecurity stay in the webhook)"
                    .into(),
            );
        }
    };
    let expressions = check
        .match_conditions
        .iter()
        .chain(&check.variables)
        .chain(&rule.cel_preconditions)
        .map(|n| &n.expression)
        .chain(
            check
                .validations
                .iter()
                .flat_map(|v| std::iter::once(&v.expression).chain(v.message_expression.as_ref())),
        );
    if let Some(expression) = expressions
        .into_iter()
        .find(|e: &&CelExpression| !e.runs_in_api_server())
    {
        return Err(format!(
            "expression {:?} calls orValue on a value that is not optional",
            expression.source()
        ));
    }
    let mut constraints = match_constraints(&rule.match_block)?;
    if let Some(exclude) = &rule.exclude {
        let excluded = exclude_rules(exclude)?;
        constraints.insert("excludeResourceRules".into(), Value::Array(excluded));
    }
    constraints.insert("matchPolicy".into(), json!("Equivalent"));
    Ok(spec_json(&check, &rule.cel_preconditions, constraints))
}

/// A pattern or anyPattern rule as one CEL validation, when the
/// translation is exact.
fn pattern_check(
    policy: &Policy,
    rule: &Rule,
    validation: &Validation,
    patterns: &[&Template],
) -> Result<CelCheck, String> {
    if patterns.iter().any(|p| p.has_variables()) {
        return Err("a pattern with {{ }} variables".into());
    }
    if policy.apply_one {
        // A later rule runs only when an earlier one did not apply; each
        // admission policy runs on its own.
        return Err("a policy with applyRules: One".into());
    }
    let filters = filters_of(&rule.match_block)?;
    let mut kinds = Vec::new();
    for filter in &filters {
        let description = &filter.resources;
        let operations = description
            .operations
            .iter()
            .chain(description.api_resources.iter().flat_map(|r| &r.operations));
        if let Some(operation) = operations
            .map(|o| o.to_ascii_uppercase())
            .find(|o| o != "CREATE" && o != "UPDATE")
        {
            // On DELETE the API server binds no object, while the engine
            // validates the old one.
            return Err(format!("a pattern rule for {operation}"));
        }
        if description.api_resources.is_empty() {
            kinds.extend(&description.kinds);
        }
    }
    let pod_spec = if filters
        .iter()
        .any(|f| !f.resources.api_resources.is_empty())
    {
        None
    } else {
        pattern_cel::pod_spec_path(&kinds)
    };
    let values: Vec<&Value> = patterns.iter().map(|p| &***p).collect();
    let source = pattern_cel::pattern_validation(&values, pod_spec)?;
    let expression = pattern_cel::compile(&source)
        .map_err(|e| format!("the translated expression does not compile: {e}"))?;
    let message = validation
        .message
        .as_deref()
        .filter(|m| !m.contains("{{"))
        .map_or_else(
            || format!("validation error: rule {} failed", rule.name),
            str::to_string,
        );
    Ok(CelCheck {
        validations: vec![CelValidation {
            expression,
            message: Some(message),
            message_expression: None,
        }],
        ..CelCheck::default()
    })
}

fn spec_json(
    check: &CelCheck,
    preconditions: &[crate::cel::NamedExpression],
    constraints: serde_json::Map<String, Value>,
) -> Value {
    let named = |n: &crate::cel::NamedExpression| json!({"name": n.name, "expression": n.expression.source()});
    let match_conditions: Vec<Value> = check
        .match_conditions
        .iter()
        .chain(preconditions)
        .map(named)
        .collect();
    let variables: Vec<Value> = check.variables.iter().map(named).collect();
    let validations: Vec<Value> = check
        .validations
        .iter()
        .map(|v| {
            let mut out = json!({"expression": v.expression.source()});
            if let Some(message) = &v.message {
                // The API server refuses a message with line breaks.
                out["message"] = json!(one_line(message));
            }
            if let Some(expression) = &v.message_expression {
                out["messageExpression"] = json!(expression.source());
            }
            out
        })
        .collect();
    let mut spec = json!({
        // A runtime error denies, as an `error` outcome does in Enforce.
        "failurePolicy": "Fail",
        "matchConstraints": Value::Object(constraints),
        "validations": validations,
    });
    if !match_conditions.is_empty() {
        spec["matchConditions"] = Value::Array(match_conditions);
    }
    if !variables.is_empty() {
        spec["variables"] = Value::Array(variables);
    }
    spec
}

/// Joins the lines of a message with single spaces.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `matchConstraints` for a match block: resource rules, and the one
/// namespace/object selector a single filter may carry.
fn match_constraints(block: &MatchBlock) -> Result<serde_json::Map<String, Value>, String> {
    let filters = filters_of(block)?;
    let mut resource_rules = Vec::new();
    for filter in &filters {
        resource_rules.extend(resource_rules_of(filter)?);
    }
    let mut constraints = serde_json::Map::new();
    constraints.insert("resourceRules".into(), Value::Array(resource_rules));
    let selectors = filters
        .iter()
        .any(|f| f.resources.selector.is_some() || f.resources.namespace_selector.is_some());
    if selectors {
        let [filter] = filters.as_slice() else {
            return Err("selectors on more than one match filter".into());
        };
        if let Some(selector) = &filter.resources.namespace_selector {
            constraints.insert("namespaceSelector".into(), selector.clone());
        }
        if let Some(selector) = &filter.resources.selector {
            constraints.insert("objectSelector".into(), selector.clone());
        }
    }
    Ok(constraints)
}

fn exclude_rules(block: &MatchBlock) -> Result<Vec<Value>, String> {
    let filters = filters_of(block)?;
    let mut rules = Vec::new();
    for filter in filters {
        if filter.resources.selector.is_some() || filter.resources.namespace_selector.is_some() {
            return Err("an exclude block with selectors".into());
        }
        rules.extend(resource_rules_of(filter)?);
    }
    Ok(rules)
}

/// The filters of a match block when they are alternatives (`any`, or the
/// single legacy block); `all` with several filters is an intersection the
/// API server's rules cannot state.
fn filters_of(block: &MatchBlock) -> Result<Vec<&ResourceFilter>, String> {
    let legacy_used = !block.legacy.resources.is_empty() || !block.legacy.user.is_empty();
    match (block.any.is_empty(), block.all.len(), legacy_used) {
        (false, 0, false) => Ok(block.any.iter().collect()),
        (true, 1, false) => Ok(block.all.iter().collect()),
        (true, 0, true) => Ok(vec![&block.legacy]),
        _ => Err("a match block combining any, all or the legacy form".into()),
    }
}

fn resource_rules_of(filter: &ResourceFilter) -> Result<Vec<Value>, String> {
    let description = &filter.resources;
    if !filter.user.is_empty() {
        return Err("matching on users, groups or roles".into());
    }
    if description.name.is_some()
        || !description.names.is_empty()
        || !description.namespaces.is_empty()
        || !description.annotations.is_empty()
    {
        return Err("matching on names, namespaces or annotations".into());
    }
    let operations: Vec<String> = if description.operations.is_empty() {
        // What the webhook is registered for; DELETE and CONNECT carry no
        // object to validate.
        vec!["CREATE".into(), "UPDATE".into()]
    } else {
        description
            .operations
            .iter()
            .map(|o| o.to_ascii_uppercase())
            .collect()
    };
    let mut rules = Vec::new();
    for rule in &description.api_resources {
        rules.push(resource_rule(rule, &operations));
    }
    for kind in &description.kinds {
        rules.push(kind_rule(kind, &operations)?);
    }
    if rules.is_empty() {
        return Err("a match filter with no kinds or resources".into());
    }
    Ok(rules)
}

fn resource_rule(rule: &ApiResourceRule, operations: &[String]) -> Value {
    let operations = if rule.operations.is_empty() {
        operations.to_vec()
    } else {
        rule.operations.clone()
    };
    json!({
        "apiGroups": rule.groups,
        "apiVersions": rule.versions,
        "resources": rule.resources,
        "operations": operations,
    })
}

fn kind_rule(kind: &KindSelector, operations: &[String]) -> Result<Value, String> {
    if kind.kind.contains('*') || kind.kind.contains('?') {
        return Err(format!("a wildcard kind {:?}", kind.kind));
    }
    let group = if kind.group.is_empty() || kind.group == "*" {
        KIND_GROUPS
            .iter()
            .find(|(k, _)| *k == kind.kind)
            .map(|(_, group)| *group)
            .ok_or_else(|| format!("kind {:?} has no known API group", kind.kind))?
    } else {
        kind.group.as_str()
    };
    let version = if kind.version.is_empty() {
        "*"
    } else {
        kind.version.as_str()
    };
    let mut resource = plural_of_kind(&kind.kind);
    if !kind.subresource.is_empty() {
        resource = format!("{resource}/{}", kind.subresource);
    }
    let mut rule = json!({
        "apiGroups": [group],
        "apiVersions": [version],
        "resources": [resource],
        "operations": operations,
    });
    if is_cluster_scoped(&kind.kind) {
        rule["scope"] = json!("Cluster");
    }
    Ok(rule)
}

/// Rules merged into one admission policy: the API server evaluates one
/// policy per match instead of one per rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergedPolicy {
    /// (policy, rule) of each member, in order.
    pub members: Vec<(String, String)>,
    pub spec: Value,
}

/// Merges rules with the same `matchConstraints` and `matchConditions`
/// into one spec: variables are renamed per member (`m<i>_<name>`) so they
/// cannot collide, and validations are concatenated (all must hold, as
/// each rule's did).
pub fn merge(rules: &[&ApiServerRule]) -> Vec<MergedPolicy> {
    let mut groups: BTreeMap<String, Vec<&ApiServerRule>> = BTreeMap::new();
    for rule in rules {
        let key = json!([rule.spec["matchConstraints"], rule.spec["matchConditions"]]).to_string();
        groups.entry(key).or_default().push(rule);
    }
    groups
        .into_values()
        .map(|members| {
            let mut spec = members[0].spec.clone();
            if members.len() > 1 {
                let mut variables = Vec::new();
                let mut validations = Vec::new();
                for (index, member) in members.iter().enumerate() {
                    let names: Vec<String> = member.spec["variables"]
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(|v| v["name"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    let rename = |source: &str| rename_variables(source, &names, index);
                    for variable in member.spec["variables"].as_array().into_iter().flatten() {
                        variables.push(json!({
                            "name": format!("m{index}_{}", variable["name"].as_str().unwrap_or("")),
                            "expression": rename(variable["expression"].as_str().unwrap_or("")),
                        }));
                    }
                    for validation in member.spec["validations"].as_array().into_iter().flatten() {
                        let mut validation = validation.clone();
                        for key in ["expression", "messageExpression"] {
                            if let Some(source) = validation[key].as_str() {
                                validation[key] = json!(rename(source));
                            }
                        }
                        validations.push(validation);
                    }
                }
                if variables.is_empty() {
                    if let Some(map) = spec.as_object_mut() {
                        map.remove("variables");
                    }
                } else {
                    spec["variables"] = Value::Array(variables);
                }
                spec["validations"] = Value::Array(validations);
            }
            MergedPolicy {
                members: members
                    .iter()
                    .map(|m| (m.policy.clone(), m.rule.clone()))
                    .collect(),
                spec,
            }
        })
        .collect()
}

/// `variables.<name>` → `variables.m<index>_<name>` for the given names.
fn rename_variables(source: &str, names: &[String], index: usize) -> String {
    let mut out = source.to_string();
    for name in names {
        let from = format!("variables.{name}");
        let to = format!("variables.m{index}_{name}");
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(&from) {
            let after = rest[at + from.len()..].chars().next();
            result.push_str(&rest[..at]);
            if after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                result.push_str(&from);
            } else {
                result.push_str(&to);
            }
            rest = &rest[at + from.len()..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VPOL: &str = r#"
apiVersion: policies.kyverno.io/v1alpha1
kind: ValidatingPolicy
metadata: {name: no-privileged}
spec:
  validationActions: [Deny]
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}
  variables:
  - {name: all, expression: "object.spec.containers + object.spec.?initContainers.orValue([])"}
  validations:
  - expression: "variables.all.all(c, !c.?securityContext.?privileged.orValue(false))"
    message: |
      Privileged containers
      are not allowed.
---
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: mixed}
spec:
  rules:
  - name: cel-services
    match: {any: [{resources: {kinds: [Service], operations: [CREATE]}}]}
    validate:
      cel:
        expressions:
        - expression: "object.spec.type != 'NodePort'"
  - name: tolerant
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      cel:
        expressions:
        - expression: "object.spec.containers.orValue([]).size() > 0"
  - name: pattern
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      pattern: {spec: {containers: [{image: "!*:latest"}]}}
  - name: conditional
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      pattern: {spec: {containers: [{(name): "web", image: "!*:latest"}]}}
"#;

    #[test]
    fn translates_exact_cel_rules_and_lists_the_rest() {
        let set = PolicySet::from_yaml(VPOL, "inline").unwrap();
        let translation = set.api_server_translation();
        let translated: Vec<(&str, &str)> = translation
            .rules
            .iter()
            .map(|r| (r.policy.as_str(), r.rule.as_str()))
            .collect();
        assert_eq!(
            translated,
            [
                ("no-privileged", "no-privileged"),
                ("no-privileged", "autogen-no-privileged"),
                ("no-privileged", "autogen-cronjobs-no-privileged"),
                ("mixed", "cel-services"),
                ("mixed", "pattern"),
                ("mixed", "autogen-pattern"),
                ("mixed", "autogen-cronjob-pattern"),
            ]
        );
        let pod_rule = &translation.rules[0];
        assert_eq!(pod_rule.action, FailureAction::Enforce);
        assert_eq!(
            pod_rule.spec["validations"][0]["message"],
            json!("Privileged containers are not allowed.")
        );
        let deployments = &translation.rules[1].spec;
        assert!(
            deployments["variables"][0]["expression"]
                .as_str()
                .unwrap()
                .starts_with("object.spec.template.spec.containers")
        );
        let service = &translation.rules[3].spec["matchConstraints"]["resourceRules"][0];
        assert_eq!(service["resources"], json!(["services"]));
        assert_eq!(service["apiGroups"], json!([""]));
        assert_eq!(service["operations"], json!(["CREATE"]));
        let reasons: Vec<(&str, &str)> = translation
            .not_translated
            .iter()
            .filter(|n| !n.rule.starts_with("autogen-"))
            .map(|n| (n.rule.as_str(), n.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].1.contains("orValue"), "{reasons:?}");
        assert!(reasons[1].1.contains("can skip the rule"), "{reasons:?}");
        let pattern = &translation.rules[4].spec["validations"][0]["expression"];
        assert!(
            pattern
                .as_str()
                .unwrap()
                .contains(r#"!(x0.image.endsWith(":latest"))"#),
            "{pattern}"
        );
        let cronjobs = &translation.rules[6].spec["validations"][0]["expression"];
        assert!(
            cronjobs
                .as_str()
                .unwrap()
                .contains("object.spec.jobTemplate.spec.template.spec.containers.all("),
            "{cronjobs}"
        );
    }

    #[test]
    fn merging_renames_variables_per_member() {
        let set = PolicySet::from_yaml(VPOL, "inline").unwrap();
        let translation = set.api_server_translation();
        let pod = translation.rules[0].clone();
        let mut twin = pod.clone();
        twin.rule = "twin".into();
        let merged = merge(&[&pod, &twin, &translation.rules[3]]);
        assert_eq!(merged.len(), 2);
        let both = merged.iter().find(|m| m.members.len() == 2).unwrap();
        let names: Vec<&str> = both.spec["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["m0_all", "m1_all"]);
        assert!(
            both.spec["validations"][1]["expression"]
                .as_str()
                .unwrap()
                .starts_with("variables.m1_all.all(")
        );
    }
}
