//! Kyverno's `ValidatingPolicy` (`policies.kyverno.io`): CEL validations
//! with the match vocabulary of a Kubernetes ValidatingAdmissionPolicy,
//! compiled into the engine's own [`Policy`] so one evaluator serves both
//! policy families.
//!
//! The policy becomes one rule named after the policy. A policy that
//! matches only Pods also gets pod-controller twins, as Kyverno generates
//! them: `autogen-<policy>` for Deployment, DaemonSet, StatefulSet,
//! ReplicaSet, Job and ReplicationController (pod paths under
//! `spec.template`) and `autogen-cronjobs-<policy>` for CronJob (under
//! `spec.jobTemplate.spec.template`).

use serde_json::{Map, Value};

use crate::cel::{CelCheck, rewrite_for_controller};
use crate::error::PolicyError;
use crate::spec::{
    ApiResourceRule, Check, MatchBlock, Parser, ResourceDescription, ResourceFilter, Rule,
    RuleBody, Validation,
};
use crate::{FailureAction, Policy};

/// (kind, API group, resource) of each pod controller.
const CONTROLLERS: [(&str, &str, &str); 6] = [
    ("Deployment", "apps", "deployments"),
    ("DaemonSet", "apps", "daemonsets"),
    ("StatefulSet", "apps", "statefulsets"),
    ("ReplicaSet", "apps", "replicasets"),
    ("Job", "batch", "jobs"),
    ("ReplicationController", "", "replicationcontrollers"),
];

/// Compiles a `ValidatingPolicy` or `NamespacedValidatingPolicy` document.
pub fn compile(
    document: &Value,
    name: &str,
    namespace: Option<String>,
) -> Result<Policy, PolicyError> {
    let p = Parser {
        policy: name,
        rule: "",
    };
    let spec = document
        .get("spec")
        .ok_or_else(|| p.invalid("policy has no spec"))
        .and_then(|spec| p.object(spec, "spec"))?;
    for key in spec.keys() {
        match key.as_str() {
            "validationActions"
            | "matchConstraints"
            | "matchConditions"
            | "variables"
            | "validations"
            | "auditAnnotations"
            | "failurePolicy"
            | "evaluation"
            | "autogen"
            | "webhookConfiguration" => {}
            other => return Err(p.unsupported(&format!("spec.{other}"))),
        }
    }
    let actions = p.strings(spec.get("validationActions"), "validationActions")?;
    // Deny blocks the request; Audit and Warn admit it and report.
    let failure_action = if actions.iter().any(|a| a.eq_ignore_ascii_case("Deny")) {
        FailureAction::Enforce
    } else {
        FailureAction::Audit
    };
    let constraints = spec
        .get("matchConstraints")
        .ok_or_else(|| p.invalid("spec.matchConstraints is required"))
        .and_then(|c| p.object(c, "matchConstraints"))?;
    let mut description = ResourceDescription::default();
    let mut exclude_description = ResourceDescription::default();
    for (key, entry) in constraints {
        match key.as_str() {
            "resourceRules" => description.api_resources = resource_rules(&p, entry, key)?,
            "excludeResourceRules" => {
                exclude_description.api_resources = resource_rules(&p, entry, key)?
            }
            "namespaceSelector" => description.namespace_selector = non_empty(entry),
            "objectSelector" => description.selector = non_empty(entry),
            "matchPolicy" => {}
            other => return Err(p.unsupported(&format!("matchConstraints.{other}"))),
        }
    }
    if description.api_resources.is_empty() {
        return Err(p.invalid("matchConstraints.resourceRules is empty"));
    }
    let mut check = CelCheck {
        match_conditions: match spec.get("matchConditions") {
            Some(value) => p.named_expressions(value, "matchConditions")?,
            None => Vec::new(),
        },
        variables: match spec.get("variables") {
            Some(value) => p.named_expressions(value, "variables")?,
            None => Vec::new(),
        },
        validations: match spec.get("validations") {
            Some(value) => p.cel_validations(value, "validations")?,
            None => Vec::new(),
        },
        // A ValidatingPolicy's parameters are not read: `paramKind` is
        // refused with the other unknown keys.
        params: None,
    };
    if check.validations.is_empty() {
        return Err(p.invalid("spec.validations is empty"));
    }
    let exclude = (!exclude_description.is_empty()).then(|| block(exclude_description));
    let mut rules = Vec::new();
    let controllers = autogen_controllers(&p, spec, &description)?;
    let pod_rule = |name: String, description: ResourceDescription, check: CelCheck| Rule {
        name,
        match_block: block(description),
        exclude: exclude.clone(),
        preconditions: None,
        cel_preconditions: Vec::new(),
        context: Vec::new(),
        body: RuleBody::Validate(Validation {
            message: None,
            failure_action: None,
            overrides: Vec::new(),
            check: Check::Cel(check),
        }),
    };
    if let Some((controllers, cronjobs)) = controllers {
        let operations = description.api_resources[0].operations.clone();
        if !controllers.is_empty() {
            let mut twin = description.clone();
            twin.api_resources = controllers
                .iter()
                .map(|(group, resource)| ApiResourceRule {
                    groups: vec![group.to_string()],
                    versions: vec!["v1".into()],
                    resources: vec![resource.to_string()],
                    operations: operations.clone(),
                })
                .collect();
            rules.push(pod_rule(
                format!("autogen-{name}"),
                twin,
                rewritten(&check, "spec.template")?,
            ));
        }
        if cronjobs {
            let mut twin = description.clone();
            twin.api_resources = vec![ApiResourceRule {
                groups: vec!["batch".into()],
                versions: vec!["v1".into()],
                resources: vec!["cronjobs".into()],
                operations,
            }];
            rules.push(pod_rule(
                format!("autogen-cronjobs-{name}"),
                twin,
                rewritten(&check, "spec.jobTemplate.spec.template")?,
            ));
        }
    }
    rules.insert(
        0,
        pod_rule(name.to_string(), description, std::mem::take(&mut check)),
    );
    let background = spec
        .get("evaluation")
        .and_then(|e| e.pointer("/background/enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    Ok(Policy {
        name: name.to_string(),
        namespace,
        failure_action,
        overrides: Vec::new(),
        apply_one: false,
        background,
        rules,
    })
}

fn non_empty(selector: &Value) -> Option<Value> {
    match selector {
        Value::Object(map) if map.values().any(|v| !v.is_null()) => Some(selector.clone()),
        _ => None,
    }
}

fn block(description: ResourceDescription) -> MatchBlock {
    MatchBlock {
        any: vec![ResourceFilter {
            resources: description,
            ..ResourceFilter::default()
        }],
        ..MatchBlock::default()
    }
}

fn resource_rules(
    p: &Parser<'_>,
    value: &Value,
    what: &str,
) -> Result<Vec<ApiResourceRule>, PolicyError> {
    let mut rules = Vec::new();
    for item in p.array(value, what)? {
        let map = p.object(item, what)?;
        for key in map.keys() {
            match key.as_str() {
                "apiGroups" | "apiVersions" | "resources" | "operations" | "scope" => {}
                "resourceNames" => return Err(p.unsupported(&format!("{what}.resourceNames"))),
                other => return Err(p.unsupported(&format!("{what}.{other}"))),
            }
        }
        rules.push(ApiResourceRule {
            groups: p.strings(map.get("apiGroups"), "apiGroups")?,
            versions: p.strings(map.get("apiVersions"), "apiVersions")?,
            resources: p.strings(map.get("resources"), "resources")?,
            operations: p.strings(map.get("operations"), "operations")?,
        });
    }
    Ok(rules)
}

/// The controllers to generate twins for, and whether CronJobs get one:
/// `None` unless the policy matches Pods alone.
#[allow(clippy::type_complexity)]
fn autogen_controllers(
    p: &Parser<'_>,
    spec: &Map<String, Value>,
    description: &ResourceDescription,
) -> Result<Option<(Vec<(&'static str, &'static str)>, bool)>, PolicyError> {
    let pods_only = description.api_resources.iter().all(|rule| {
        rule.groups.iter().all(|g| g.is_empty())
            && !rule.resources.is_empty()
            && rule.resources.iter().all(|r| r == "pods")
    });
    if !pods_only {
        return Ok(None);
    }
    let listed = spec
        .get("autogen")
        .and_then(|a| a.pointer("/podControllers/controllers"));
    let wanted: Option<Vec<String>> = match listed {
        Some(value) => Some(p.strings(Some(value), "autogen.podControllers.controllers")?),
        None => None,
    };
    let selected = |kind: &str, resource: &str| {
        wanted.as_ref().is_none_or(|list| {
            list.iter()
                .any(|c| c.eq_ignore_ascii_case(kind) || c.eq_ignore_ascii_case(resource))
        })
    };
    let controllers = CONTROLLERS
        .iter()
        .filter(|(kind, _, resource)| selected(kind, resource))
        .map(|(_, group, resource)| (*group, *resource))
        .collect();
    Ok(Some((controllers, selected("CronJob", "cronjobs"))))
}

fn rewritten(check: &CelCheck, prefix: &str) -> Result<CelCheck, PolicyError> {
    let mut out = check.clone();
    let recompile = |e: &crate::cel::CelExpression| {
        crate::cel::CelExpression::compile(&rewrite_for_controller(e.source(), prefix)).map_err(
            |reason| PolicyError::Invalid {
                policy: String::new(),
                rule: String::new(),
                reason: format!("generated controller expression does not compile: {reason}"),
            },
        )
    };
    for named in out
        .match_conditions
        .iter_mut()
        .chain(out.variables.iter_mut())
    {
        named.expression = recompile(&named.expression)?;
    }
    for validation in &mut out.validations {
        validation.expression = recompile(&validation.expression)?;
        if let Some(message) = &validation.message_expression {
            validation.message_expression = Some(recompile(message)?);
        }
    }
    Ok(out)
}
