//! JMESPath for `{{ }}` variables: the maintained `jmespath` crate's
//! runtime with the built-in functions plus Kyverno's custom functions
//! registered on it (strings, regex, arithmetic, time, encoding, objects).

mod arithmetic;
mod encoding;
mod native;
mod objects;
mod strings;
mod time;

pub use native::{Deferred, Node};

use std::rc::Rc;
use std::sync::LazyLock;

use crate::text_cache::TextCache;
use jmespath::functions::{ArgumentType, CustomFunction, Signature};
use jmespath::{ErrorReason, Expression, JmespathError, Rcvar, Runtime, Variable};
use serde_json::Value;

/// Errors from compiling or evaluating a JMESPath expression.
#[derive(Debug, thiserror::Error)]
#[error("JMESPath query {expression:?} failed: {message}")]
pub struct QueryError {
    pub expression: String,
    pub message: String,
}

/// The shared runtime with built-in and Kyverno functions.
static KYVERNO_RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    let mut runtime = Runtime::new();
    runtime.register_builtin_functions();
    strings::register(&mut runtime);
    arithmetic::register(&mut runtime);
    time::register(&mut runtime);
    encoding::register(&mut runtime);
    objects::register(&mut runtime);
    runtime
});

/// Most distinct expressions kept compiled per thread; expressions built
/// from substituted values could otherwise grow the cache without bound.
const CACHE_LIMIT: usize = 4096;

thread_local! {
    /// Compiled expressions by source text: policies query the same few
    /// expressions for every request, and parsing dominates small queries.
    static COMPILED: TextCache<Rc<Expression<'static>>> = TextCache::new(CACHE_LIMIT);
}

/// Deepest bracket nesting an expression may have. The parser and the
/// interpreter recurse once per level and once per operator, so a
/// pathological expression (from a policy, or built from substituted
/// values) would otherwise overflow a worker thread's stack and take the
/// whole process down. Real policies stay far below both limits.
const MAX_NESTING: usize = 64;
/// Most operators (`.`, `|`, `[`, `(`, `{`, `,`, `&`) an expression may have.
const MAX_OPERATORS: usize = 512;

/// Refuses an expression too deep or too long to parse and evaluate within
/// a thread's stack. Counts characters inside literals too: conservative,
/// and cheap enough to run before every compile.
fn check_size(expression: &str) -> Result<(), String> {
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    for byte in expression.bytes() {
        match byte {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                operators += 1;
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'.' | b'|' | b',' | b'&' => operators += 1,
            _ => {}
        }
    }
    if deepest > MAX_NESTING {
        return Err(format!(
            "the expression nests {deepest} levels deep; at most {MAX_NESTING} are allowed"
        ));
    }
    if operators > MAX_OPERATORS {
        return Err(format!(
            "the expression has {operators} operators; at most {MAX_OPERATORS} are allowed"
        ));
    }
    Ok(())
}

/// Compiles `expression` once per thread (errors are not cached).
/// The size check runs on a miss only: a cached expression passed it.
fn compiled(expression: &str) -> Result<Rc<Expression<'static>>, String> {
    let runtime: &'static Runtime = &KYVERNO_RUNTIME;
    COMPILED.with(|cache| {
        cache.get_or_derive(expression, |expression| {
            check_size(expression)?;
            runtime
                .compile(expression)
                .map(Rc::new)
                .map_err(|e: JmespathError| e.to_string())
        })
    })
}

/// Converts a JSON document into the runtime's representation, once, so it
/// can be queried many times.
///
/// Written out rather than the crate's `TryFrom<&Value>`, which converts
/// every nested value through serde's data model (its direct path needs a
/// nightly feature); that made this conversion the largest single cost of
/// evaluating the baseline policies.
pub fn to_variable(data: &Value) -> Rcvar {
    Rcvar::new(variable_of(data))
}

fn variable_of(data: &Value) -> Variable {
    match data {
        Value::Null => Variable::Null,
        Value::Bool(b) => Variable::Bool(*b),
        Value::Number(n) => Variable::Number(n.clone()),
        Value::String(s) => Variable::String(s.clone()),
        Value::Array(items) => Variable::Array(items.iter().map(to_variable).collect()),
        // serde_json's map iterates in key order, so the BTreeMap is built
        // in bulk rather than by one insertion per key.
        Value::Object(map) => Variable::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), to_variable(value)))
                .collect(),
        ),
    }
}

/// The JSON form of a runtime value (the inverse of [`to_variable`]). An
/// expression reference has no JSON form; it is rendered as text, as the
/// crate's own serialization does.
pub fn to_json(data: &Variable) -> Value {
    match data {
        Variable::Null => Value::Null,
        Variable::Bool(b) => Value::Bool(*b),
        Variable::Number(n) => Value::Number(n.clone()),
        Variable::String(s) => Value::String(s.clone()),
        Variable::Array(items) => Value::Array(items.iter().map(|item| to_json(item)).collect()),
        Variable::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), to_json(value)))
                .collect(),
        ),
        Variable::Expref(ast) => Value::String(format!("<expression: {ast:?}>")),
    }
}

/// Evaluates `expression` against `data`.
pub fn search(expression: &str, data: &Value) -> Result<Value, QueryError> {
    query(expression, &Node::Json(data)).map(|result| result.to_json())
}

/// Evaluates `expression` against `root`, in place (see [`native`]).
pub fn query<'a>(expression: &str, root: &Node<'a>) -> Result<Node<'a>, QueryError> {
    let error = |message: String| QueryError {
        expression: expression.to_string(),
        message,
    };
    let compiled = compiled(expression).map_err(error)?;
    let mut context = jmespath::Context::new(compiled.as_str(), &KYVERNO_RUNTIME);
    native::interpret(root, compiled.as_ast(), &mut context).map_err(|e| error(e.to_string()))
}

/// Checks that an expression parses, for load-time validation.
pub fn compile_check(expression: &str) -> Result<(), QueryError> {
    check_size(expression).map_err(|message| QueryError {
        expression: expression.to_string(),
        message,
    })?;
    KYVERNO_RUNTIME
        .compile(expression)
        .map(|_| ())
        .map_err(|e| QueryError {
            expression: expression.to_string(),
            message: e.to_string(),
        })
}

/// A custom function body: JSON arguments in, JSON result or message out.
type FunctionBody = fn(&[Value]) -> Result<Value, String>;

/// Registers a Kyverno function with a checked signature.
fn register_function(
    runtime: &mut Runtime,
    name: &'static str,
    inputs: Vec<ArgumentType>,
    variadic: Option<ArgumentType>,
    body: FunctionBody,
) {
    let function = CustomFunction::new(
        Signature::new(inputs, variadic),
        Box::new(move |args: &[Rcvar], ctx: &mut jmespath::Context<'_>| {
            let fail = |message: String| {
                JmespathError::from_ctx(ctx, ErrorReason::Parse(format!("{name}(): {message}")))
            };
            let values: Vec<Value> = args.iter().map(|arg| to_json(arg)).collect();
            let result = body(&values).map_err(fail)?;
            Ok(to_variable(&result))
        }),
    );
    runtime.register_function(name, Box::new(function));
}

/// Argument helpers shared by the function families.
fn arg_str(args: &[Value], index: usize) -> Result<&str, String> {
    args.get(index)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("argument {index} must be a string"))
}

fn arg_f64(args: &[Value], index: usize) -> Result<f64, String> {
    args.get(index)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("argument {index} must be a number"))
}

/// A JSON number, integral when possible so it prints without `.0`.
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

/// A string or number argument rendered as text.
fn arg_text(args: &[Value], index: usize) -> Result<String, String> {
    match args.get(index) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(format!("argument {index} must be a string or number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expr: &str, data: Value) -> Value {
        search(expr, &data).unwrap()
    }

    #[test]
    fn expressions_too_deep_or_too_long_are_refused_before_parsing() {
        let deep = format!("{}a{}", "(".repeat(65), ")".repeat(65));
        let error = search(&deep, &json!({"a": 1})).expect_err("65 levels");
        assert!(error.message.contains("65 levels"), "{}", error.message);
        assert!(compile_check(&deep).is_err());
        let long = format!("a{}", ".b".repeat(600));
        let error = search(&long, &json!({})).expect_err("600 operators");
        assert!(error.message.contains("600 operators"), "{}", error.message);
        let fine = format!("{}a{}", "(".repeat(64), ")".repeat(64));
        assert_eq!(search(&fine, &json!({"a": 1})).ok(), Some(json!(1)));
    }

    #[test]
    fn conversion_round_trips_and_matches_the_crate() {
        let document = json!({"s": "x", "n": 1, "neg": -2, "f": 1.5, "big": 18446744073709551615u64,
            "b": true, "z": null, "a": [1, "two", {"k": []}], "o": {"b": {}, "a": [null]}});
        let ours = to_variable(&document);
        let crates = match Variable::try_from(&document) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(*ours, crates);
        assert_eq!(to_json(&ours), document);
    }

    #[test]
    fn builtin_features_work() {
        let data =
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": null}});
        assert_eq!(
            eval("spec.[initContainers, containers][].name", data.clone()),
            json!(["a", "b"])
        );
        assert_eq!(
            eval("spec.missing || 'DEFAULT'", data.clone()),
            json!("DEFAULT")
        );
        assert_eq!(eval("spec.containers[].name | length(@)", data), json!(2));
    }

    #[test]
    fn kyverno_string_functions() {
        assert_eq!(eval("to_upper('abc')", json!({})), json!("ABC"));
        assert_eq!(eval("to_lower('ABC')", json!({})), json!("abc"));
        assert_eq!(eval("split('a,b', ',')", json!({})), json!(["a", "b"]));
        assert_eq!(eval("truncate('abcdef', `3`)", json!({})), json!("abc"));
        assert_eq!(eval("equal_fold('Go', 'GO')", json!({})), json!(true));
        assert_eq!(eval("compare('a', 'b')", json!({})), json!(-1));
        assert_eq!(
            eval("replace_all('aXbX', 'X', '-')", json!({})),
            json!("a-b-")
        );
        assert_eq!(
            eval("replace('aXbX', 'X', '-', `1`)", json!({})),
            json!("a-bX")
        );
        assert_eq!(eval("trim('--a--', '-')", json!({})), json!("a"));
        assert_eq!(eval("trim_prefix('v1.2', 'v')", json!({})), json!("1.2"));
        assert_eq!(
            eval("pattern_match('nginx:*', 'nginx:1')", json!({})),
            json!(true)
        );
        assert_eq!(
            eval("regex_match('^[a-z]+$', 'abc')", json!({})),
            json!(true)
        );
        assert_eq!(
            eval("regex_replace_all('([a-z])-', 'a-b-', '${1}_')", json!({})),
            json!("a_b_")
        );
        assert_eq!(
            eval("regex_replace_all_literal('[0-9]', 'a1b2', 'X')", json!({})),
            json!("aXbX")
        );
    }

    #[test]
    fn kyverno_arithmetic_functions() {
        assert_eq!(eval("add(`1`, `2`)", json!({})), json!(3));
        assert_eq!(eval("add('1Gi', '1Gi')", json!({})), json!("2Gi"));
        assert_eq!(eval("subtract('2h', '30m')", json!({})), json!("1h30m0s"));
        assert_eq!(eval("multiply('500m', `2`)", json!({})), json!("1"));
        assert_eq!(eval("divide('2Gi', '1Gi')", json!({})), json!(2));
        assert_eq!(eval("modulo(`7`, `3`)", json!({})), json!(1));
        assert_eq!(eval("round(`2.567`, `2`)", json!({})), json!(2.57));
        assert_eq!(eval("sum([`1`, `2`, `3`])", json!({})), json!(6));
        assert!(search("divide(`1`, `0`)", &json!({})).is_err());
    }

    #[test]
    fn kyverno_encoding_and_objects() {
        assert_eq!(eval("base64_encode('hi')", json!({})), json!("aGk="));
        assert_eq!(eval("base64_decode('aGk=')", json!({})), json!("hi"));
        assert_eq!(eval("parse_json('{\"a\": 1}').a", json!({})), json!(1));
        assert_eq!(eval("parse_yaml('a: [1, 2]').a[1]", json!({})), json!(2));
        assert_eq!(
            eval("items(`{\"b\": 2, \"a\": 1}`, 'k', 'v')", json!({})),
            json!([{"k": "a", "v": 1}, {"k": "b", "v": 2}])
        );
        assert_eq!(
            eval("object_from_lists(['a', 'b'], [`1`])", json!({})),
            json!({"a": 1, "b": null})
        );
        assert_eq!(eval("lookup(`{\"a\": 1}`, 'a')", json!({})), json!(1));
        assert_eq!(eval("lookup([`5`, `6`], `1`)", json!({})), json!(6));
        assert_eq!(
            eval("path_canonicalize('/a/../b//c/')", json!({})),
            json!("/b/c")
        );
        assert_eq!(
            eval(
                "label_match(`{\"app\": \"x\"}`, `{\"app\": \"x\", \"t\": \"y\"}`)",
                json!({})
            ),
            json!(true)
        );
        assert_eq!(
            eval("semver_compare('1.2.3', '>1.0.0 <2.0.0')", json!({})),
            json!(true)
        );
        assert_eq!(
            eval(
                "semver_compare('2.2.3', '>1.0.0 <2.0.0 || 3.0.0')",
                json!({})
            ),
            json!(false)
        );
    }

    #[test]
    fn kyverno_time_functions() {
        assert_eq!(
            eval("time_add('2021-01-01T00:00:00Z', '1h')", json!({})),
            json!("2021-01-01T01:00:00Z")
        );
        assert_eq!(
            eval(
                "time_after('2021-01-02T00:00:00Z', '2021-01-01T00:00:00Z')",
                json!({})
            ),
            json!(true)
        );
        assert_eq!(
            eval(
                "time_before('2021-01-02T00:00:00Z', '2021-01-01T00:00:00Z')",
                json!({})
            ),
            json!(false)
        );
        assert_eq!(
            eval(
                "time_between('2021-01-02T00:00:00Z', '2021-01-01T00:00:00Z', '2021-01-03T00:00:00Z')",
                json!({})
            ),
            json!(true)
        );
        assert_eq!(
            eval(
                "time_diff('2021-01-01T00:00:00Z', '2021-01-01T01:30:00Z')",
                json!({})
            ),
            json!("1h30m0s")
        );
        assert_eq!(
            eval("time_to_cron('2021-02-03T04:05:00Z')", json!({})),
            json!("5 4 3 2 3")
        );
        assert_eq!(
            eval("time_truncate('2021-01-01T10:37:12Z', '1h')", json!({})),
            json!("2021-01-01T10:00:00Z")
        );
        assert_eq!(
            eval("time_parse('2006-01-02', '2021-03-04')", json!({})),
            json!("2021-03-04T00:00:00Z")
        );
        assert_eq!(
            eval("time_utc('2021-01-01T02:00:00+02:00')", json!({})),
            json!("2021-01-01T00:00:00Z")
        );
        assert!(eval("time_now_utc()", json!({})).is_string());
    }
}
