//! Evaluates compiled validate rules against one input: match/exclude,
//! rule context, preconditions, then the rule's check (pattern,
//! anyPattern, deny, foreach, podSecurity), producing one outcome per rule
//! that applies.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::cel::{CelBindings, CelVerdict, ParamSource};
use crate::cluster_data::{Lookups, load_api_call, load_config_map};
use crate::conditions::ConditionOperator;
use crate::context::EvalContext;
use crate::error::EvalError;
use crate::images::pod_spec;
use crate::jmespath::Node;
use crate::matching::{MatchSubject, rule_applies};
use crate::pattern::{PatternOutcome, match_pattern};
use crate::pod_security;
use crate::spec::{
    ActionOverride, Check, Condition, Conditions, ContextEntry, ContextSource, ContextVariable,
    ForeachValidation, Rule, RuleBody, Validation,
};
use crate::variables::{self, Template};
use crate::wildcard;
use crate::{EvalInput, FailureAction, Operation, Policy, RuleOutcome, RuleStatus};

/// The result of one check, before it becomes a [`RuleOutcome`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Pass(String),
    Fail(String),
    Skip(String),
    Error(String),
}

impl Verdict {
    fn status(&self) -> RuleStatus {
        match self {
            Verdict::Pass(_) => RuleStatus::Pass,
            Verdict::Fail(_) => RuleStatus::Fail,
            Verdict::Skip(_) => RuleStatus::Skip,
            Verdict::Error(_) => RuleStatus::Error,
        }
    }

    fn into_message(self) -> String {
        match self {
            Verdict::Pass(m) | Verdict::Fail(m) | Verdict::Skip(m) | Verdict::Error(m) => m,
        }
    }
}

/// True when the rule selects the input (policy namespace, match, exclude).
/// `subject` is the input's [`MatchSubject`], built once for all rules.
pub(crate) fn rule_selects(policy: &Policy, rule: &Rule, subject: &MatchSubject) -> bool {
    if let Some(namespace) = &policy.namespace {
        let resource_namespace = subject
            .resource
            .get("metadata")
            .and_then(|metadata| metadata.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if namespace != resource_namespace {
            return false;
        }
    }
    rule_applies(&rule.match_block, rule.exclude.as_ref(), subject)
}

/// Builds the rule's context: the input document plus the `context`
/// entries, in order (each sees the ones before it).
pub(crate) fn rule_context<'a>(
    base: &EvalContext<'a>,
    entries: &[ContextEntry],
    lookups: &Lookups,
) -> Result<EvalContext<'a>, EvalError> {
    let mut ctx = base.clone();
    for entry in entries {
        let loaded = match &entry.source {
            ContextSource::Variable(variable) => Some(variable_value(&entry.name, variable, &ctx)?),
            // Test values stand in for the cluster (`kyverno test`).
            _ if lookups.supplies(&entry.name) => None,
            ContextSource::ConfigMap { name, namespace } => {
                load_config_map(&entry.name, name, namespace, &ctx, lookups)?
            }
            ContextSource::ApiCall(call) => load_api_call(&entry.name, call, &ctx, lookups)?,
        };
        if let Some(value) = loaded {
            ctx.set_path(&entry.name, value);
        }
    }
    Ok(ctx)
}

/// The value of a `variable` entry: its `value` (variables substituted),
/// narrowed by `jmesPath`, or the context queried with `jmesPath`;
/// `default` when that is null.
fn variable_value(
    name: &str,
    entry: &ContextVariable,
    ctx: &EvalContext,
) -> Result<Value, EvalError> {
    let mut value = match &entry.value {
        Some(raw) => variables::substitute(raw, ctx)?,
        None => Value::Null,
    };
    if let Some(expression) = &entry.jmes_path {
        let expression = match variables::substitute_string(expression, ctx, &[])? {
            Value::String(s) => s,
            other => other.to_string(),
        };
        value = if entry.value.is_some() {
            crate::jmespath::search(&expression, &value)
        } else {
            ctx.query(&expression)
        }
        .map_err(|e| EvalError::Other(format!("context variable {name}: {e}")))?;
    }
    if value.is_null()
        && let Some(default) = &entry.default
    {
        value = variables::substitute(default, ctx)?;
    }
    Ok(value)
}

/// The test values a rule adds to the input's (`policies[].rules[].values`
/// of a values file).
pub(crate) fn rule_values<'i>(input: &EvalInput<'i>, rule: &Rule) -> &'i BTreeMap<String, Value> {
    input
        .rule_variables
        .get(&rule.name)
        .unwrap_or(&crate::NO_VARIABLES)
}

/// The context of `rule` before its entries: the input's, plus the rule's
/// own test values.
pub(crate) fn with_rule_values<'c, 'a>(
    base: &'c EvalContext<'a>,
    values: &BTreeMap<String, Value>,
) -> Cow<'c, EvalContext<'a>> {
    if values.is_empty() {
        return Cow::Borrowed(base);
    }
    let mut ctx = base.clone();
    for (name, value) in values {
        ctx.set_path(name, value.clone());
    }
    Cow::Owned(ctx)
}

/// The lookups of `rule` of `policy` for `input`.
pub(crate) fn lookups<'i>(input: &EvalInput<'i>, policy: &'i Policy, rule: &Rule) -> Lookups<'i> {
    Lookups {
        cluster: input.cluster_data,
        policy_namespace: policy.namespace.as_deref(),
        supplied: [input.variables, rule_values(input, rule)],
    }
}

/// Evaluates `preconditions`/`deny` conditions: `Ok(true)` when they hold.
pub(crate) fn conditions_hold(
    conditions: &Conditions,
    ctx: &EvalContext,
) -> Result<bool, EvalError> {
    match conditions {
        Conditions::Legacy(list) => {
            for condition in list {
                if !condition_holds(condition, ctx)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Conditions::AnyAll { any, all } => {
            if let Some(any) = any {
                let mut any_holds = false;
                for condition in any {
                    if condition_holds(condition, ctx)? {
                        any_holds = true;
                        break;
                    }
                }
                if !any_holds {
                    return Ok(false);
                }
            }
            if let Some(all) = all {
                for condition in all {
                    if !condition_holds(condition, ctx)? {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        }
    }
}

fn condition_holds(condition: &Condition, ctx: &EvalContext) -> Result<bool, EvalError> {
    let key = variables::substitute_cow(&condition.key, ctx)?;
    let value = variables::substitute_cow(&condition.value, ctx)?;
    Ok(ConditionOperator::evaluate(
        condition.operator,
        &key,
        &value,
    ))
}

/// A validate rule that selects the input, with the policy it belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SelectedRule<'p> {
    pub(crate) policy: &'p Policy,
    pub(crate) rule: &'p Rule,
    validation: &'p Validation,
}

impl SelectedRule<'_> {
    pub(crate) fn reads_cluster(&self) -> bool {
        self.rule.reads_cluster()
    }
}

/// The match step: appends the validate rules of `policy` that select
/// `subject`, in the policy's order.
pub(crate) fn select_rules<'p>(
    policy: &'p Policy,
    subject: &MatchSubject,
    selected: &mut Vec<SelectedRule<'p>>,
) {
    for rule in &policy.rules {
        let RuleBody::Validate(validation) = &rule.body else {
            continue;
        };
        if rule_selects(policy, rule, subject) {
            selected.push(SelectedRule {
                policy,
                rule,
                validation,
            });
        }
    }
}

/// The evaluate step: one outcome per selected rule, in order. The input's
/// context is built on first use and shared by all rules. A policy with
/// `applyRules: One` stops at its first rule that applied (not skipped).
pub(crate) fn evaluate_rules(selected: &[SelectedRule], input: &EvalInput<'_>) -> Vec<RuleOutcome> {
    let base = OnceCell::new();
    let cel = OnceCell::new();
    let mut outcomes = Vec::with_capacity(selected.len());
    let mut finished: Option<&Policy> = None;
    for &SelectedRule {
        policy,
        rule,
        validation,
    } in selected
    {
        if finished.is_some_and(|done| std::ptr::eq(done, policy)) {
            continue;
        }
        let base = base.get_or_init(|| EvalContext::for_input(input));
        let verdict = evaluate_rule(policy, rule, validation, base, &cel, input);
        let applied = !matches!(verdict, Verdict::Skip(_));
        outcomes.push(RuleOutcome {
            policy: policy.display_name(),
            rule: rule.name.clone(),
            status: verdict.status(),
            message: verdict.into_message(),
            action: failure_action(policy, validation, input.resource),
        });
        if policy.apply_one && applied {
            finished = Some(policy);
        }
    }
    outcomes
}

fn failure_action(policy: &Policy, validation: &Validation, resource: &Value) -> FailureAction {
    // Namespace overrides are rare; without them the resource's namespace
    // (two map lookups per outcome) is not needed.
    if validation.overrides.is_empty() && policy.overrides.is_empty() {
        return validation.failure_action.unwrap_or(policy.failure_action);
    }
    let namespace = resource
        .get("metadata")
        .and_then(|metadata| metadata.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let from_overrides = |overrides: &[ActionOverride]| {
        overrides
            .iter()
            .find(|o| o.namespaces.iter().any(|n| wildcard::matches(n, namespace)))
            .map(|o| o.action)
    };
    from_overrides(&validation.overrides)
        .or(validation.failure_action)
        .or_else(|| from_overrides(&policy.overrides))
        .unwrap_or(policy.failure_action)
}

/// The parameter resources of a CEL rule, read through the input's
/// cluster access; a missing one is an empty list, other failures errors.
fn parameter_resources(source: &ParamSource, input: &EvalInput<'_>) -> Result<Vec<Value>, String> {
    let Some(cluster) = input.cluster_data else {
        return Err(format!(
            "parameter resources ({} {}) need a cluster to read them from",
            source.api_version, source.kind
        ));
    };
    // The request names the namespace; a created object may not yet.
    let namespace = input
        .admission_info
        .and_then(|request| request.get("namespace"))
        .or_else(|| input.resource.pointer("/metadata/namespace"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match cluster.params(source, namespace) {
        Ok(params) => Ok(params),
        Err(crate::ClusterDataError::NotFound { .. }) => Ok(Vec::new()),
        Err(error) => Err(format!("failed to read parameter resources: {error}")),
    }
}

fn evaluate_rule(
    policy: &Policy,
    rule: &Rule,
    validation: &Validation,
    base: &EvalContext,
    cel: &OnceCell<CelBindings>,
    input: &EvalInput<'_>,
) -> Verdict {
    let cel = || cel.get_or_init(|| CelBindings::for_input(input));
    if !rule.cel_preconditions.is_empty() {
        match crate::cel::preconditions_hold(&rule.cel_preconditions, cel()) {
            Ok(true) => {}
            Ok(false) => return Verdict::Skip("cel preconditions not met".to_string()),
            Err(e) => return Verdict::Error(format!("failed to evaluate cel preconditions: {e}")),
        }
    }
    if let Check::Cel(check) = &validation.check {
        let verdict = match &check.params {
            None => check.evaluate(cel()),
            Some(source) => match parameter_resources(source, input) {
                Ok(params) if params.is_empty() && source.deny_when_missing => {
                    CelVerdict::Error(format!(
                        "no parameter resource {} {} found",
                        source.api_version, source.kind
                    ))
                }
                // Once per parameter resource; the first that does not pass decides.
                Ok(params) => params
                    .iter()
                    .map(|params| check.evaluate_with_params(cel(), params))
                    .find(|verdict| *verdict != CelVerdict::Pass)
                    .unwrap_or(CelVerdict::Pass),
                Err(message) => CelVerdict::Error(message),
            },
        };
        return match verdict {
            CelVerdict::Pass => passed(&rule.name),
            CelVerdict::NotMatched(reason) => Verdict::Skip(reason),
            CelVerdict::Fail(message) => Verdict::Fail(message),
            CelVerdict::Error(message) => Verdict::Error(message),
        };
    }
    let lookups = lookups(input, policy, rule);
    let base = with_rule_values(base, rule_values(input, rule));
    let ctx = match rule_context(&base, &rule.context, &lookups) {
        Ok(ctx) => ctx,
        Err(e) => return Verdict::Error(format!("failed to load context: {e}")),
    };
    if let Some(preconditions) = &rule.preconditions {
        match conditions_hold(preconditions, &ctx) {
            Ok(true) => {}
            Ok(false) => return Verdict::Skip("preconditions not met".to_string()),
            Err(e) => return Verdict::Error(format!("failed to evaluate preconditions: {e}")),
        }
    }
    let checker = Checker {
        rule,
        message: validation.message.as_deref(),
        lookups: &lookups,
    };
    let verdict = checker.check(&validation.check, &ctx, input.resource, None, 0);
    // On UPDATE an unchanged violation is not re-reported (Kyverno compares
    // the old object's result for pattern checks).
    if input.operation == Operation::Update
        && matches!(verdict, Verdict::Fail(_))
        && matches!(validation.check, Check::Pattern(_) | Check::AnyPattern(_))
        && let Some(old) = input.old_resource
    {
        let old_verdict = checker.check(&validation.check, &ctx, old, None, 0);
        if matches!(old_verdict, Verdict::Fail(_)) {
            return Verdict::Skip(
                "skipping modified resource as validation results have not changed".to_string(),
            );
        }
    }
    verdict
}

/// The verdict of a rule that passed. Built for every rule and every
/// foreach element on every request: one concatenation, without the
/// formatting machinery.
fn passed(rule: &str) -> Verdict {
    Verdict::Pass(["validation rule '", rule, "' passed."].concat())
}

struct Checker<'a> {
    rule: &'a Rule,
    message: Option<&'a str>,
    /// For the context entries of foreach levels.
    lookups: &'a Lookups<'a>,
}

impl Checker<'_> {
    /// Runs one check. `element` is the foreach element the pattern applies
    /// to when the foreach is element-scoped.
    fn check(
        &self,
        check: &Check,
        ctx: &EvalContext,
        resource: &Value,
        element: Option<&Value>,
        nesting: usize,
    ) -> Verdict {
        let target = element.unwrap_or(resource);
        match check {
            Check::Pattern(pattern) => {
                let pattern = match variables::substitute_cow(pattern, ctx) {
                    Ok(p) => p,
                    Err(e) => return Verdict::Error(format!("variable substitution failed: {e}")),
                };
                match match_pattern(target, &pattern) {
                    PatternOutcome::Pass => passed(&self.rule.name),
                    PatternOutcome::Skip(reason) => Verdict::Skip(reason),
                    PatternOutcome::Fail { path, .. } => {
                        Verdict::Fail(self.failure_message(ctx, &format!("failed at path {path}")))
                    }
                    PatternOutcome::Error(reason) => Verdict::Error(
                        self.failure_message(ctx, &format!("execution error: {reason}")),
                    ),
                }
            }
            Check::AnyPattern(patterns) => self.check_any_pattern(patterns, ctx, target),
            Check::Deny(conditions) => match conditions_hold(conditions, ctx) {
                Ok(true) => Verdict::Fail(self.message_text(ctx)),
                Ok(false) => passed(&self.rule.name),
                Err(e) => Verdict::Error(format!("failed to check deny conditions: {e}")),
            },
            Check::Foreach(list) => self.check_foreach(list, ctx, resource, nesting),
            Check::PodSecurity(spec) => self.check_pod_security(spec, resource),
            // CEL checks are whole-rule checks, evaluated before any
            // JMESPath context is built; the parser never nests them.
            Check::Cel(_) => Verdict::Error("a CEL check cannot be nested".to_string()),
        }
    }

    fn message_text(&self, ctx: &EvalContext) -> String {
        let Some(message) = self.message else {
            return format!("validation error: rule {} failed", self.rule.name);
        };
        match variables::substitute_string(message, ctx, &[]) {
            Ok(Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(_) => message.to_string(),
        }
    }

    fn failure_message(&self, ctx: &EvalContext, detail: &str) -> String {
        match self.message {
            Some(_) => {
                let mut text = self.message_text(ctx);
                if !text.ends_with('.') {
                    text.push('.');
                }
                format!("validation error: {text} rule {} {detail}", self.rule.name)
            }
            None => format!("validation error: rule {} {detail}", self.rule.name),
        }
    }

    fn check_any_pattern(
        &self,
        patterns: &[Template],
        ctx: &EvalContext,
        target: &Value,
    ) -> Verdict {
        let mut failures = Vec::new();
        let mut skips = Vec::new();
        for (index, pattern) in patterns.iter().enumerate() {
            let pattern = match variables::substitute_cow(pattern, ctx) {
                Ok(p) => p,
                Err(e) => return Verdict::Error(format!("variable substitution failed: {e}")),
            };
            match match_pattern(target, &pattern) {
                PatternOutcome::Pass => {
                    return Verdict::Pass(format!(
                        "validation rule '{}' anyPattern[{index}] passed.",
                        self.rule.name
                    ));
                }
                PatternOutcome::Skip(reason) => skips.push(format!(
                    "rule {}[{index}] skipped: {reason}",
                    self.rule.name
                )),
                PatternOutcome::Fail { path, .. } => {
                    failures.push(format!(
                        "rule {}[{index}] failed at path {path}",
                        self.rule.name
                    ));
                }
                PatternOutcome::Error(reason) => {
                    failures.push(format!("rule {}[{index}] failed: {reason}", self.rule.name));
                }
            }
        }
        if failures.is_empty() && !skips.is_empty() {
            return Verdict::Skip(skips.join(" "));
        }
        let base = self.message_text(ctx);
        let separator = if base.ends_with('.') { " " } else { ". " };
        Verdict::Fail(format!(
            "validation error: {base}{separator}{}",
            failures.join(" ")
        ))
    }

    fn check_foreach(
        &self,
        list: &[ForeachValidation],
        ctx: &EvalContext,
        resource: &Value,
        nesting: usize,
    ) -> Verdict {
        let mut applied = 0;
        for foreach in list {
            // A list that cannot be evaluated contributes nothing, as in Kyverno.
            // Elements taken from the request stay borrowed: each becomes
            // `element` without a copy.
            let Ok(elements) = ctx.query_node(&foreach.list) else {
                continue;
            };
            let elements = elements.items().unwrap_or_else(|| vec![elements]);
            let count = elements.len();
            for (index, element) in elements.iter().enumerate() {
                if element.is_null() {
                    continue;
                }
                let verdict = self.check_element(foreach, ctx, resource, element, index, nesting);
                match verdict {
                    Verdict::Pass(_) => applied += 1,
                    Verdict::Skip(_) => {}
                    // An error on a non-final element does not decide the rule.
                    Verdict::Error(_) if index + 1 < count => {}
                    Verdict::Error(message) => {
                        return Verdict::Error(format!("validation failure: {message}"));
                    }
                    Verdict::Fail(message) => {
                        return Verdict::Fail(format!("validation failure: {message}"));
                    }
                }
            }
        }
        if applied == 0 {
            return Verdict::Skip("rule skipped".to_string());
        }
        passed(&self.rule.name)
    }

    fn check_element(
        &self,
        foreach: &ForeachValidation,
        ctx: &EvalContext,
        resource: &Value,
        element: &Node<'_>,
        index: usize,
        nesting: usize,
    ) -> Verdict {
        let element_ctx = ctx.with_element_node(element.clone(), index, nesting);
        let scoped = match foreach.element_scope {
            Some(true) if !element.is_object() => {
                return Verdict::Error("elementScope=true needs map elements".to_string());
            }
            Some(explicit) => explicit,
            None => element.is_object(),
        };
        let element_ctx = match rule_context(&element_ctx, &foreach.context, self.lookups) {
            Ok(c) => c,
            Err(e) => return Verdict::Error(format!("failed to load context: {e}")),
        };
        if let Some(preconditions) = &foreach.preconditions {
            match conditions_hold(preconditions, &element_ctx) {
                Ok(true) => {}
                Ok(false) => return Verdict::Skip("preconditions not met".to_string()),
                Err(e) => return Verdict::Error(format!("failed to evaluate preconditions: {e}")),
            }
        }
        // Only pattern checks read the element as JSON; borrowed when it
        // came from the request.
        let target = (scoped && matches!(foreach.check, Check::Pattern(_) | Check::AnyPattern(_)))
            .then(|| match element.as_borrowed_json() {
                Some(json) => Cow::Borrowed(json),
                None => Cow::Owned(element.to_json()),
            });
        self.check(
            &foreach.check,
            &element_ctx,
            resource,
            target.as_deref(),
            nesting + 1,
        )
    }

    fn check_pod_security(&self, spec: &crate::spec::PodSecuritySpec, resource: &Value) -> Verdict {
        let Some(pod) = pod_spec(resource) else {
            return Verdict::Error(
                "podSecurity applies only to Pods and pod controllers".to_string(),
            );
        };
        let kind = resource.get("kind").and_then(Value::as_str).unwrap_or("");
        let metadata = match kind {
            "Pod" => resource.get("metadata"),
            "CronJob" => resource.pointer("/spec/jobTemplate/spec/template/metadata"),
            _ => resource.pointer("/spec/template/metadata"),
        }
        .cloned()
        .unwrap_or(Value::Null);
        let violations = pod_security::evaluate(spec, &metadata, pod);
        if violations.is_empty() {
            Verdict::Pass(format!("Validation rule '{}' passed.", self.rule.name))
        } else {
            Verdict::Fail(format!(
                "Validation rule '{}' failed. It violates PodSecurity \"{}:{}\": {}",
                self.rule.name,
                spec.level,
                spec.version,
                pod_security::describe(&violations)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use crate::{
        EvalInput, FailureAction, Operation, PolicySet, RuleOutcome, RuleStatus, UserInfo,
    };

    fn policy(rules: &str) -> PolicySet {
        let yaml = format!(
            "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata:\n  name: p\n  annotations:\n    pod-policies.kyverno.io/autogen-controllers: none\nspec:\n  validationFailureAction: Audit\n  rules:\n{rules}"
        );
        PolicySet::from_yaml(&yaml, "test").unwrap()
    }

    fn pod(containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "prod"}, "spec": {"containers": containers}})
    }

    fn run(set: &PolicySet, resource: &Value) -> Vec<RuleOutcome> {
        set.validate(&EvalInput::for_resource(resource))
    }

    const MATCH_POD: &str = "    match:\n      any:\n      - resources:\n          kinds: [Pod]\n";

    #[test]
    fn foreach_deny_uses_element_variables() {
        let set = policy(&format!(
            "  - name: no-latest\n{MATCH_POD}    validate:\n      message: \"{{{{ element.name }}}} uses latest\"\n      foreach:\n      - list: request.object.spec.containers\n        deny:\n          conditions:\n            any:\n            - key: \"{{{{ element.image }}}}\"\n              operator: Equals\n              value: \"*:latest\"\n"
        ));
        let bad = run(
            &set,
            &pod(json!([{"name": "ok", "image": "a:1"}, {"name": "bad", "image": "a:latest"}])),
        );
        assert_eq!(bad[0].status, RuleStatus::Fail);
        assert!(
            bad[0].message.contains("bad uses latest"),
            "{}",
            bad[0].message
        );
        let good = run(&set, &pod(json!([{"name": "ok", "image": "a:1"}])));
        assert_eq!(good[0].status, RuleStatus::Pass);
        let empty = run(&set, &pod(json!([])));
        assert_eq!(empty[0].status, RuleStatus::Skip);
    }

    #[test]
    fn foreach_pattern_is_element_scoped_and_nested_foreach_works() {
        let set = policy(&format!(
            "  - name: ports\n{MATCH_POD}    validate:\n      foreach:\n      - list: request.object.spec.containers\n        foreach:\n        - list: element.ports\n          pattern:\n            containerPort: \"<1024\"\n"
        ));
        let low = run(
            &set,
            &pod(json!([{"name": "a", "image": "x", "ports": [{"containerPort": 80}]}])),
        );
        assert_eq!(low[0].status, RuleStatus::Pass);
        let high = run(
            &set,
            &pod(json!([{"name": "a", "image": "x", "ports": [{"containerPort": 8080}]}])),
        );
        assert_eq!(high[0].status, RuleStatus::Fail);
    }

    #[test]
    fn preconditions_skip_and_context_variables_resolve() {
        let set = policy(&format!(
            "  - name: prod-only\n{MATCH_POD}    context:\n    - name: ns\n      variable:\n        jmesPath: request.object.metadata.namespace\n        default: none\n    preconditions:\n      all:\n      - key: \"{{{{ ns }}}}\"\n        operator: Equals\n        value: prod\n    validate:\n      deny:\n        conditions:\n          any:\n          - key: \"{{{{ images.containers.*.tag }}}}\"\n            operator: AnyIn\n            value: [latest]\n"
        ));
        let prod_latest = run(&set, &pod(json!([{"name": "a", "image": "nginx"}])));
        assert_eq!(prod_latest[0].status, RuleStatus::Fail);
        let mut elsewhere = pod(json!([{"name": "a", "image": "nginx"}]));
        elsewhere["metadata"]["namespace"] = json!("dev");
        assert_eq!(run(&set, &elsewhere)[0].status, RuleStatus::Skip);
    }

    #[test]
    fn any_pattern_passes_when_one_pattern_matches() {
        let set = policy(&format!(
            "  - name: either\n{MATCH_POD}    validate:\n      anyPattern:\n      - metadata:\n          labels:\n            app: \"?*\"\n      - metadata:\n          labels:\n            team: \"?*\"\n"
        ));
        let mut labelled = pod(json!([]));
        labelled["metadata"]["labels"] = json!({"team": "x"});
        assert_eq!(run(&set, &labelled)[0].status, RuleStatus::Pass);
        assert_eq!(run(&set, &pod(json!([])))[0].status, RuleStatus::Fail);
    }

    #[test]
    fn rule_failure_action_and_overrides() {
        let set = policy(&format!(
            "  - name: deny-all\n{MATCH_POD}    validate:\n      failureAction: Enforce\n      failureActionOverrides:\n      - action: Audit\n        namespaces: [dev]\n      deny: {{}}\n"
        ));
        let outcome = &run(&set, &pod(json!([])))[0];
        assert_eq!(outcome.status, RuleStatus::Fail);
        assert_eq!(outcome.action, FailureAction::Enforce);
        let mut dev = pod(json!([]));
        dev["metadata"]["namespace"] = json!("dev");
        assert_eq!(run(&set, &dev)[0].action, FailureAction::Audit);
    }

    #[test]
    fn unchanged_violation_on_update_is_skipped() {
        let set = policy(&format!(
            "  - name: label\n{MATCH_POD}    validate:\n      pattern:\n        metadata:\n          labels:\n            app: \"?*\"\n"
        ));
        let new = pod(json!([]));
        let old = pod(json!([]));
        let variables = BTreeMap::new();
        let input = EvalInput {
            resource: &new,
            old_resource: Some(&old),
            operation: Operation::Update,
            user_info: UserInfo::default(),
            namespace_labels: None,
            admission_info: None,
            variables: &variables,
            rule_variables: &BTreeMap::new(),
            cluster_data: None,
        };
        assert_eq!(set.validate(&input)[0].status, RuleStatus::Skip);
    }

    #[test]
    fn pod_security_rule_reports_controls() {
        let set = policy(&format!(
            "  - name: pss\n{MATCH_POD}    validate:\n      podSecurity:\n        level: baseline\n        version: latest\n"
        ));
        let mut privileged =
            pod(json!([{"name": "a", "image": "x", "securityContext": {"privileged": true}}]));
        let outcome = &run(&set, &privileged)[0];
        assert_eq!(outcome.status, RuleStatus::Fail);
        assert!(outcome.message.contains("Privileged Containers"));
        privileged["spec"]["containers"][0]["securityContext"]["privileged"] = json!(false);
        assert_eq!(run(&set, &privileged)[0].status, RuleStatus::Pass);
    }

    #[test]
    fn non_matching_resources_produce_no_outcome() {
        let set = policy(&format!(
            "  - name: r\n{MATCH_POD}    validate:\n      deny: {{}}\n"
        ));
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
        assert!(run(&set, &service).is_empty());
    }
}
