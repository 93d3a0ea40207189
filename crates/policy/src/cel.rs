//! CEL checks: `validate.cel` rules of a `ClusterPolicy`/`Policy`, rule
//! `celPreconditions`, and the `matchConditions`/`variables`/`validations`
//! of a `ValidatingPolicy`.
//!
//! Expressions are compiled once at load with the `cel` crate (standard
//! library, optional types `.?`/`orValue`, and its strings and lists
//! extensions) and evaluated against the variables the Kubernetes
//! admission CEL environment defines: `object`, `oldObject`, `request`,
//! `namespaceObject` and `variables`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{CallExpr, Expr, operators};
use cel::common::types::{self, CelMap, CelMapKey, CelNull, CelOptional};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::parser::Macro;
use cel::{Context, Env, Program, Value as CelValue};
use serde_json::{Value, json};

use crate::{EvalInput, Operation};

/// One environment for every expression: compiling needs its macros and
/// evaluating needs its functions, and building it costs more than most
/// evaluations.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    // Both extensions are part of the Kubernetes CEL environment; a failure
    // here is a duplicate declaration, which only a crate bug could cause.
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(cel::extensions::lists);
    // The Kubernetes libraries (quantity, url, ip/cidr, format, regex,
    // lists); declared once here, so evaluations that use none of them
    // cost nothing more.
    let _ = env.add_extension(crate::cel_k8s::register);
    // `x.orValue(d)` on a value that is not optional is the value itself
    // in the policies Kyverno accepts (`a.b.orValue([])` after a `has`
    // check). The crate's own overload claims every receiver and fails on
    // a plain one, so calls are renamed at parse time to one that takes
    // both. Both declarations fail only on a duplicate, impossible here.
    let _ = env.add_macro(Macro::receiver(OR_VALUE, 1, |helper, target, args| {
        let Some(target) = target.take() else {
            return Ok(None);
        };
        // A receiver that is optional by construction keeps the standard
        // function, which the API server has too; only the others get the
        // tolerant one (and so mark the expression as engine-only).
        let func_name = if yields_optional(&target.expr) {
            OR_VALUE
        } else {
            OR_VALUE_OR_SELF
        };
        Ok(Some(helper.next_expr(Expr::Call(CallExpr {
            func_name: func_name.to_string(),
            target: Some(Box::new(target)),
            args: std::mem::take(args),
        }))))
    }));
    let _ = env.add_member_overload(
        OR_VALUE_OR_SELF,
        "or_value_or_self",
        types::DYN_TYPE,
        vec![types::DYN_TYPE],
        or_value_or_self,
    );
    Arc::new(env)
});

const OR_VALUE: &str = "orValue";
const OR_VALUE_OR_SELF: &str = "aiopsOrValueOrSelf";

/// Whether `expr` is an optional by its form: `a.?b`, `a[?b]`,
/// `optional.of(..)`/`optional.none()`/`optional.ofNonZeroValue(..)`, a
/// Kubernetes library function that returns one (`format.named(..)`,
/// `<format>.validate(..)`), or `x.or(..)` on one of those.
fn yields_optional(expr: &Expr) -> bool {
    let Expr::Call(call) = expr else {
        return false;
    };
    match call.func_name.as_str() {
        operators::OPT_SELECT | operators::OPT_INDEX => true,
        "optional.of" | "optional.none" | "optional.ofNonZeroValue" => true,
        "of" | "none" | "ofNonZeroValue" => call
            .target
            .as_ref()
            .is_some_and(|t| matches!(&t.expr, Expr::Ident(name) if name == "optional")),
        "or" => call
            .target
            .as_ref()
            .is_some_and(|t| yields_optional(&t.expr)),
        name => {
            let qualifier = call.target.as_ref().and_then(|t| match &t.expr {
                Expr::Ident(qualifier) => Some(qualifier.as_str()),
                _ => None,
            });
            crate::cel_k8s::yields_optional(name, qualifier)
        }
    }
}

/// `orValue` on an optional (its value, or the default when empty) and on
/// any other value (the value itself).
fn or_value_or_self<'b, 'v>(
    mut args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let count = args.len();
    let (Some(default), Some(receiver), None) = (args.pop(), args.pop(), args.pop()) else {
        return Err(cel::ExecutionError::invalid_argument_count(2, count));
    };
    Ok(match receiver {
        CowVal::Borrowed(value) => match value.downcast_ref::<CelOptional>() {
            None => CowVal::Borrowed(value),
            Some(optional) => optional.option().map_or(default, CowVal::Borrowed),
        },
        CowVal::Owned(value) => {
            if value.downcast_ref::<CelOptional>().is_none() {
                return Ok(CowVal::Owned(value));
            }
            let inner = value
                .downcast_ref::<CelOptional>()
                .and_then(|optional| optional.option())
                .map(|inner| inner.clone_as_boxed());
            inner.map_or(default, CowVal::Owned)
        }
    })
}

/// A compiled CEL expression with its source (for messages, equality and
/// the API-server translation).
#[derive(Clone)]
pub struct CelExpression {
    source: String,
    program: Arc<Program>,
}

impl CelExpression {
    /// Compiles `source`; the error is the parser's message.
    pub fn compile(source: &str) -> Result<CelExpression, String> {
        let program = ENV.compile(source).map_err(|e| e.to_string())?;
        Ok(CelExpression {
            source: source.to_string(),
            program: Arc::new(program),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the Kubernetes API server's CEL environment evaluates this
    /// expression the same way: false when it calls `orValue` on a value
    /// that is not an optional, which only this engine tolerates.
    pub fn runs_in_api_server(&self) -> bool {
        !self.program.references().has_function(OR_VALUE_OR_SELF)
    }

    fn evaluate(&self, context: &Context) -> Result<CelValue, String> {
        self.program.execute(context).map_err(|e| e.to_string())
    }
}

impl fmt::Debug for CelExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CelExpression({:?})", self.source)
    }
}

impl PartialEq for CelExpression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// A named expression (`variables`, `matchConditions`, `celPreconditions`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedExpression {
    pub name: String,
    pub expression: CelExpression,
}

/// One entry of `validations` / `validate.cel.expressions`.
#[derive(Debug, Clone, PartialEq)]
pub struct CelValidation {
    pub expression: CelExpression,
    pub message: Option<String>,
    pub message_expression: Option<CelExpression>,
}

/// A whole CEL check: conditions that must hold for it to apply, variables
/// bound in order, and validations that must all be true.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CelCheck {
    pub match_conditions: Vec<NamedExpression>,
    pub variables: Vec<NamedExpression>,
    pub validations: Vec<CelValidation>,
    /// `paramKind` + `paramRef`: the check is evaluated once per
    /// parameter resource, bound as `params`.
    pub params: Option<Box<ParamSource>>,
}

/// Where a `validate.cel` rule's parameter resources come from.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSource {
    /// `paramKind.apiVersion` and `paramKind.kind`.
    pub api_version: String,
    pub kind: String,
    /// `paramRef.name`, or else `paramRef.selector` (labels).
    pub name: Option<String>,
    pub selector: Option<Value>,
    /// `paramRef.namespace`; unset means the request's namespace for a
    /// namespaced kind.
    pub namespace: Option<String>,
    /// `paramRef.parameterNotFoundAction: Deny` (the default): no parameter
    /// resource is an error; `Allow`: the rule passes.
    pub deny_when_missing: bool,
}

/// What a CEL check decided.
#[derive(Debug, Clone, PartialEq)]
pub enum CelVerdict {
    Pass,
    /// A match condition was false: the check does not apply.
    NotMatched(String),
    Fail(String),
    Error(String),
}

/// Where a generated pod-controller rule finds the pod: the CEL twin of the
/// pattern wrapping in `autogen`.
pub fn rewrite_for_controller(source: &str, template_prefix: &str) -> String {
    let mut text = source.to_string();
    for object in ["oldObject", "object"] {
        for field in ["spec", "metadata"] {
            let from = format!("{object}.{field}");
            let placeholder = format!("\u{1}{object}\u{2}{field}");
            text = replace_identifier_path(&text, &from, &placeholder);
        }
    }
    for object in ["oldObject", "object"] {
        for field in ["spec", "metadata"] {
            let placeholder = format!("\u{1}{object}\u{2}{field}");
            text = text.replace(&placeholder, &format!("{object}.{template_prefix}.{field}"));
        }
    }
    text
}

/// Replaces `from` where it starts an identifier path (not in the middle of
/// a longer name such as `myobject.spec`) and ends one (`object.specs`
/// stays).
fn replace_identifier_path(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = rest.find(from) {
        let before = rest[..index].chars().next_back();
        let after = rest[index + from.len()..].chars().next();
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let starts = before.is_none_or(|c| !ident(c));
        let ends = after.is_none_or(|c| !ident(c));
        out.push_str(&rest[..index]);
        if starts && ends {
            out.push_str(to);
        } else {
            out.push_str(from);
        }
        rest = &rest[index + from.len()..];
    }
    out.push_str(rest);
    out
}

/// The values an admission CEL expression sees, converted once per input
/// and lent to every check evaluated against it. Binding them as context
/// variables would convert the whole object again for every check.
pub struct CelBindings {
    object: Box<dyn Val>,
    old_object: Box<dyn Val>,
    request: Box<dyn Val>,
    namespace_object: Box<dyn Val>,
}

impl VariableResolver for CelBindings {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value = match variable {
            "object" => &self.object,
            "oldObject" => &self.old_object,
            "request" => &self.request,
            "namespaceObject" => &self.namespace_object,
            _ => return None,
        };
        Some(CowVal::Borrowed(value.as_ref()))
    }
}

impl CelBindings {
    pub fn for_input(input: &EvalInput<'_>) -> CelBindings {
        let convert = |value: &Value| -> Box<dyn Val> {
            cel::to_value(value)
                .ok()
                .and_then(|v| Box::<dyn Val>::try_from(v).ok())
                .unwrap_or_else(|| Box::new(CelNull))
        };
        let null = || -> Box<dyn Val> { Box::new(CelNull) };
        let (object, old_object) = match input.operation {
            Operation::Delete => (
                null(),
                convert(input.old_resource.unwrap_or(input.resource)),
            ),
            _ => (
                convert(input.resource),
                input.old_resource.map(convert).unwrap_or_else(null),
            ),
        };
        let request = match input.admission_info {
            Some(info @ Value::Object(_)) => convert(info),
            _ => convert(&synthesized_request(input)),
        };
        let kind = input
            .resource
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        // Cluster-scoped objects have no namespace object (null, as the
        // API server binds it); a namespaced one without a namespace is
        // created in `default`.
        let namespace = match input
            .resource
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            Some(namespace) if !namespace.is_empty() => namespace,
            _ if crate::matching::is_cluster_scoped(kind) => "",
            _ => "default",
        };
        let namespace_object = if namespace.is_empty() {
            null()
        } else {
            let labels = input.namespace_labels.cloned().unwrap_or_default();
            convert(&json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": labels},
            }))
        };
        CelBindings {
            object,
            old_object,
            request,
            namespace_object,
        }
    }

    fn context(&self) -> Context<'_, '_> {
        let mut context = Context::with_env(Arc::clone(&ENV));
        context.set_variable_resolver(self);
        context
    }
}

/// The input's bindings plus the `variables` evaluated so far and the
/// parameter resource (`params`, null without one).
struct Scope<'a> {
    bindings: &'a CelBindings,
    variables: CelMap<'static>,
    params: &'a dyn Val,
}

impl VariableResolver for Scope<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "variables" => Some(CowVal::Borrowed(&self.variables)),
            "params" => Some(CowVal::Borrowed(self.params)),
            other => self.bindings.resolve(other),
        }
    }
}

impl Scope<'_> {
    fn context(&self) -> Context<'_, '_> {
        let mut context = Context::with_env(Arc::clone(&ENV));
        context.set_variable_resolver(self);
        context
    }
}

/// The `request` of a bare resource (a CLI test or a background scan).
fn synthesized_request(input: &EvalInput<'_>) -> Value {
    let resource = input.resource;
    let text = |pointer: &str| resource.pointer(pointer).and_then(Value::as_str);
    let api_version = text("/apiVersion").unwrap_or("");
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    json!({
        "operation": input.operation.as_str(),
        "name": text("/metadata/name").unwrap_or(""),
        "namespace": text("/metadata/namespace").unwrap_or(""),
        "kind": {"group": group, "version": version, "kind": text("/kind").unwrap_or("")},
        "userInfo": {"username": input.user_info.username, "groups": input.user_info.groups},
        "dryRun": false,
    })
}

impl CelCheck {
    /// Evaluates the check: match conditions, then variables in order,
    /// then each validation until one is false.
    pub fn evaluate(&self, bindings: &CelBindings) -> CelVerdict {
        self.evaluate_with(bindings, &CelNull)
    }

    /// [`CelCheck::evaluate`] with `params` bound to one parameter resource.
    pub fn evaluate_with_params(&self, bindings: &CelBindings, params: &Value) -> CelVerdict {
        match cel::to_value(params)
            .ok()
            .and_then(|v| Box::<dyn Val>::try_from(v).ok())
        {
            Some(params) => self.evaluate_with(bindings, params.as_ref()),
            None => CelVerdict::Error("the parameter resource is not a CEL value".into()),
        }
    }

    fn evaluate_with(&self, bindings: &CelBindings, params: &dyn Val) -> CelVerdict {
        let mut scope = Scope {
            bindings,
            variables: CelMap::from(HashMap::new()),
            params,
        };
        let conditions = scope.context();
        for condition in &self.match_conditions {
            match condition.expression.evaluate(&conditions) {
                Ok(CelValue::Bool(true)) => {}
                Ok(CelValue::Bool(false)) => {
                    return CelVerdict::NotMatched(format!(
                        "match condition {} not met",
                        condition.name
                    ));
                }
                Ok(other) => {
                    return CelVerdict::Error(format!(
                        "match condition {} is not a bool: {other:?}",
                        condition.name
                    ));
                }
                Err(e) => {
                    return CelVerdict::Error(format!("match condition {}: {e}", condition.name));
                }
            }
        }
        drop(conditions);
        // Each variable sees those before it; one that fails is left out,
        // so only an expression that reads it fails (CEL variables are
        // evaluated lazily in the API server). Values are converted once
        // and moved, never copied, from one scope to the next.
        for variable in &self.variables {
            let value = {
                let context = scope.context();
                variable.expression.evaluate(&context)
            };
            if let Ok(value) = value
                && let Ok(value) = Box::<dyn Val>::try_from(value)
            {
                let mut entries = scope.variables.into_inner();
                entries.insert(CelMapKey::from(variable.name.clone()), value);
                scope.variables = CelMap::from(entries);
            }
        }
        let context = scope.context();
        for validation in &self.validations {
            match validation.expression.evaluate(&context) {
                Ok(CelValue::Bool(true)) => {}
                Ok(CelValue::Bool(false)) => {
                    return CelVerdict::Fail(failure_message(validation, &context));
                }
                Ok(other) => {
                    return CelVerdict::Error(format!(
                        "expression {:?} did not evaluate to a bool: {other:?}",
                        validation.expression.source
                    ));
                }
                Err(e) => {
                    return CelVerdict::Error(format!(
                        "expression {:?}: {e}",
                        validation.expression.source
                    ));
                }
            }
        }
        CelVerdict::Pass
    }
}

/// `messageExpression` when it yields a non-empty string, else `message`,
/// else the API server's default text.
fn failure_message(validation: &CelValidation, context: &Context) -> String {
    if let Some(expression) = &validation.message_expression
        && let Ok(CelValue::String(text)) = expression.evaluate(context)
        && !text.trim().is_empty()
    {
        return text.to_string();
    }
    match &validation.message {
        Some(message) if !message.trim().is_empty() => message.clone(),
        _ => format!("failed expression: {}", validation.expression.source),
    }
}

/// Whether all `celPreconditions` hold: `Ok(false)` skips the rule.
pub fn preconditions_hold(
    preconditions: &[NamedExpression],
    bindings: &CelBindings,
) -> Result<bool, String> {
    let context = bindings.context();
    for condition in preconditions {
        match condition.expression.evaluate(&context) {
            Ok(CelValue::Bool(true)) => {}
            Ok(CelValue::Bool(false)) => return Ok(false),
            Ok(other) => {
                return Err(format!(
                    "precondition {} is not a bool: {other:?}",
                    condition.name
                ));
            }
            Err(e) => return Err(format!("precondition {}: {e}", condition.name)),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(validation: &str) -> CelCheck {
        CelCheck {
            validations: vec![CelValidation {
                expression: CelExpression::compile(validation).unwrap(),
                message: Some("nope".into()),
                message_expression: None,
            }],
            ..CelCheck::default()
        }
    }

    #[test]
    fn optional_fields_and_verdicts() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team"},
            "spec": {"containers": [{"name": "a", "image": "nginx"}]}});
        let bindings = CelBindings::for_input(&EvalInput::for_resource(&pod));
        let no_privileged =
            check("object.spec.containers.all(c, !c.?securityContext.?privileged.orValue(false))");
        assert_eq!(no_privileged.evaluate(&bindings), CelVerdict::Pass);
        assert_eq!(
            check("object.spec.containers.all(c, c.image.contains(':'))").evaluate(&bindings),
            CelVerdict::Fail("nope".into())
        );
        assert!(matches!(
            check("object.spec.nothere == 1").evaluate(&bindings),
            CelVerdict::Error(_)
        ));
        assert_eq!(
            check("namespaceObject.metadata.name == 'team' && request.operation == 'CREATE'")
                .evaluate(&bindings),
            CelVerdict::Pass
        );
        assert!(CelExpression::compile("object.(").is_err());
    }

    #[test]
    fn or_value_takes_optionals_and_plain_values() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}]}});
        let bindings = CelBindings::for_input(&EvalInput::for_resource(&pod));
        let optional = "object.spec.containers.all(c, c.?securityContext.?capabilities.?drop.orValue([]).size() == 0)";
        let plain = "object.spec.containers.all(c, c.securityContext.capabilities.add.orValue([]).size() == 1)";
        let or_chain = "object.spec.?nothing.or(optional.of(3)).orValue(0) == 3";
        for source in [optional, plain, or_chain] {
            assert_eq!(
                check(source).evaluate(&bindings),
                CelVerdict::Pass,
                "{source}"
            );
        }
        assert!(
            CelExpression::compile(optional)
                .unwrap()
                .runs_in_api_server()
        );
        assert!(
            CelExpression::compile(or_chain)
                .unwrap()
                .runs_in_api_server()
        );
        assert!(!CelExpression::compile(plain).unwrap().runs_in_api_server());
    }

    #[test]
    fn or_value_on_a_kubernetes_library_optional_stays_api_server_cel() {
        for source in [
            "format.dns1123Label().validate(object.metadata.name).orValue([]).size() == 0",
            "format.named('uuid').orValue(format.uri()).validate('x').hasValue()",
            "quantity('1Gi').isGreaterThan(quantity('1G')) && url('/a').getHost() == ''",
        ] {
            assert!(
                CelExpression::compile(source).unwrap().runs_in_api_server(),
                "{source}"
            );
        }
        // A plain value still gets the tolerant rewrite.
        assert!(
            !CelExpression::compile("quantity('1').sign().orValue(0) == 1")
                .unwrap()
                .runs_in_api_server()
        );
    }

    #[test]
    fn variables_see_earlier_ones_and_messages_can_be_expressions() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        let bindings = CelBindings::for_input(&EvalInput::for_resource(&pod));
        let compiled = |s: &str| CelExpression::compile(s).unwrap();
        let check = CelCheck {
            params: None,
            match_conditions: vec![],
            variables: vec![
                NamedExpression {
                    name: "names".into(),
                    expression: compiled("object.spec.containers.map(c, c.name)"),
                },
                NamedExpression {
                    name: "count".into(),
                    expression: compiled("size(variables.names)"),
                },
            ],
            validations: vec![CelValidation {
                expression: compiled("variables.count > 1"),
                message: None,
                message_expression: Some(compiled("'only ' + variables.names.join(', ')")),
            }],
        };
        assert_eq!(check.evaluate(&bindings), CelVerdict::Fail("only a".into()));
    }

    #[test]
    fn controller_rewrite_moves_pod_paths_under_the_template() {
        assert_eq!(
            rewrite_for_controller(
                "has(object.spec.containers) && oldObject.metadata.name != namespaceObject.metadata.name",
                "spec.template"
            ),
            "has(object.spec.template.spec.containers) && oldObject.spec.template.metadata.name != namespaceObject.metadata.name"
        );
        assert_eq!(
            rewrite_for_controller("myobject.spec.x", "spec.template"),
            "myobject.spec.x"
        );
    }
}
