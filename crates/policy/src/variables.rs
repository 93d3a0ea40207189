//! `{{ … }}` variable substitution in policy documents. A string that is
//! exactly one variable becomes the query's JSON value; variables embedded in
//! longer strings are rendered as text. Inner variables resolve first
//! (`{{ a.{{ b }} }}`), and `\{{ … }}` escapes a literal.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::context::EvalContext;
use crate::error::EvalError;
use crate::gofmt;
use crate::pattern::anchor::strip_anchor;
use crate::text_cache::TextCache;

/// An unescaped variable: the capture group 2 is the `{{ … }}` itself, group
/// 1 is the character before it (so `\{{` is not taken). The patterns are
/// constants; `None` would only mean a typo here, caught by the tests.
static VARIABLE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(^|[^\\])(\{\{(?:\{[^{}]*\}|[^{}])*\}\})").ok());
static ESCAPED_VARIABLE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\\(\{\{(?:\{[^{}]*\}|[^{}])*\}\})").ok());

/// Guards against values that keep producing new variables.
const MAX_PASSES: usize = 32;

/// A policy value that may hold `{{ }}` variables (a pattern, a condition's
/// key or value). Whether it holds any is decided once, when the policy is
/// loaded: scanning every pattern for `{{` on every request cost more than
/// the rest of the substitution.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    value: Value,
    has_variables: bool,
}

impl Template {
    /// Whether any string or key may hold a `{{ }}` variable.
    pub fn has_variables(&self) -> bool {
        self.has_variables
    }

    pub fn new(value: Value) -> Template {
        let has_variables = has_variables(&value);
        Template {
            value,
            has_variables,
        }
    }
}

impl std::ops::Deref for Template {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// [`substitute`] for a template, without copying one that has no variable
/// (most patterns and condition values).
pub fn substitute_cow<'a>(
    template: &'a Template,
    ctx: &EvalContext,
) -> Result<Cow<'a, Value>, EvalError> {
    if template.has_variables {
        substitute(&template.value, ctx).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(&template.value))
    }
}

/// True when any string or map key of `document` may hold a `{{ }}`.
fn has_variables(document: &Value) -> bool {
    match document {
        Value::String(text) => text.contains("{{"),
        Value::Array(items) => items.iter().any(has_variables),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains("{{") || has_variables(value)),
        _ => false,
    }
}

/// Substitutes variables in every string (and map key) of `document`.
pub fn substitute(document: &Value, ctx: &EvalContext) -> Result<Value, EvalError> {
    let mut path = Vec::new();
    substitute_at(document, ctx, &mut path)
}

fn substitute_at(
    document: &Value,
    ctx: &EvalContext,
    path: &mut Vec<String>,
) -> Result<Value, EvalError> {
    match document {
        Value::String(text) => substitute_string(text, ctx, path),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                path.push(index.to_string());
                let substituted = substitute_at(item, ctx, path);
                path.pop();
                out.push(substituted?);
            }
            Ok(Value::Array(out))
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let new_key = match substitute_string(key, ctx, path)? {
                    Value::String(s) => s,
                    other => gofmt::sprint(&other),
                };
                path.push(key.clone());
                let substituted = substitute_at(value, ctx, path);
                path.pop();
                out.insert(new_key, substituted?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// Substitutes the variables of one string.
pub fn substitute_string(
    text: &str,
    ctx: &EvalContext,
    path: &[String],
) -> Result<Value, EvalError> {
    if !text.contains("{{") {
        return Ok(Value::String(text.to_string()));
    }
    // Borrowed until a pass rewrites it: most texts are one variable and
    // resolve in the first pass, with no copy of the policy's text.
    let mut current = Cow::Borrowed(text);
    for pass in 0..MAX_PASSES {
        let spans = if pass == 0 || current.contains("{{") {
            variable_spans(&current)?
        } else {
            Rc::from([])
        };
        if spans.is_empty() {
            return Ok(Value::String(unescape(&current)));
        }
        let mut rebuilt = String::with_capacity(current.len());
        let mut copied_up_to = 0;
        for &(start, end) in spans.iter() {
            let variable = &current[start..end];
            let resolved = resolve(variable, ctx, path)?;
            if start == 0 && end == current.len() {
                // The whole string is one variable: keep the JSON type.
                return Ok(resolved);
            }
            rebuilt.push_str(&current[copied_up_to..start]);
            rebuilt.push_str(&render(&resolved));
            copied_up_to = end;
        }
        rebuilt.push_str(&current[copied_up_to..]);
        current = Cow::Owned(rebuilt);
    }
    Err(EvalError::Other(format!(
        "variable substitution in {text:?} did not terminate"
    )))
}

/// Byte ranges of the `{{ … }}` variables of one text.
type Spans = Rc<[(usize, usize)]>;

/// Most distinct texts whose variable positions are kept per thread.
const SPAN_CACHE_LIMIT: usize = 4096;

thread_local! {
    /// Variable positions by text. The texts are mostly the policies' own
    /// (conditions, messages), the same on every request, and finding the
    /// variables with the capture-group regex cost ~12 k instructions a
    /// text, about a tenth of evaluating the baseline policies.
    static SPANS: TextCache<Spans> = TextCache::new(SPAN_CACHE_LIMIT);
}

/// The byte ranges of the unescaped `{{ … }}` variables in `text`.
fn variable_spans(text: &str) -> Result<Spans, EvalError> {
    SPANS.with(|cache| {
        cache.get_or_derive(text, |text| {
            let Some(variable_regex) = VARIABLE.as_ref() else {
                return Err(EvalError::Other("variable pattern unavailable".to_string()));
            };
            Ok(variable_regex
                .captures_iter(text)
                .filter_map(|c| c.get(2).map(|m| (m.start(), m.end())))
                .collect())
        })
    })
}

fn resolve(variable: &str, ctx: &EvalContext, path: &[String]) -> Result<Value, EvalError> {
    let mut expression = Cow::Borrowed(
        variable
            .trim_start_matches("{{")
            .trim_end_matches("}}")
            .trim(),
    );
    if expression == "@" {
        expression = Cow::Owned(current_path_expression(path));
    }
    if ctx.is_delete() {
        // On DELETE only the old object exists.
        expression = Cow::Owned(expression.replace("request.object", "request.oldObject"));
    }
    ctx.query(&expression).map_err(|e| EvalError::Variable {
        variable: expression.to_string(),
        path: format!("/{}", path.join("/")),
        message: e.message,
    })
}

/// `{{@}}` refers to the resource value at the current pattern position.
fn current_path_expression(path: &[String]) -> String {
    let mut expression = "request.object".to_string();
    for segment in path {
        let key = strip_anchor(segment);
        if key.chars().all(|c| c.is_ascii_digit()) && !key.is_empty() {
            expression.push_str(&format!("[{key}]"));
        } else {
            expression.push_str(&format!(".\"{}\"", key.replace('"', "\\\"")));
        }
    }
    expression
}

/// How a resolved value is embedded in a longer string.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), gofmt::format_float_v),
        other => other.to_string(),
    }
}

fn unescape(text: &str) -> String {
    match ESCAPED_VARIABLE.as_ref() {
        Some(re) => re.replace_all(text, "$1").into_owned(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> EvalContext<'static> {
        EvalContext::from_root(json!({
            "request": {"operation": "CREATE", "object": {"metadata": {"name": "web", "labels": {"tier": "front"}}, "spec": {"replicas": 3}}},
            "key": "tier"
        }))
    }

    #[test]
    fn templates_know_at_load_whether_they_hold_variables() {
        assert!(Template::new(json!({"a": ["x", "{{ request.operation }}"]})).has_variables);
        assert!(Template::new(json!({"{{ key }}": 1})).has_variables);
        assert!(
            !Template::new(json!({"spec": {"containers": [{"image": "!*:latest"}]}})).has_variables
        );
        // Without variables the template itself is used, not a copy.
        let plain = Template::new(json!({"a": 1}));
        let used = substitute_cow(&plain, &ctx()).unwrap();
        assert!(matches!(used, Cow::Borrowed(_)));
        let with = Template::new(json!("{{ request.operation }}"));
        assert_eq!(
            substitute_cow(&with, &ctx()).unwrap().into_owned(),
            json!("CREATE")
        );
    }

    #[test]
    fn variable_positions_are_the_same_from_the_cache() {
        let text =
            "pod {{request.object.metadata.name}} has {{ request.object.spec.replicas }} replicas";
        let first = substitute_string(text, &ctx(), &[]).unwrap();
        let second = substitute_string(text, &ctx(), &[]).unwrap();
        assert_eq!(first, second);
        let spans = variable_spans(text).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(
            &text[spans[0].0..spans[0].1],
            "{{request.object.metadata.name}}"
        );
        // An escaped variable is not a variable.
        assert!(variable_spans("\\{{ literal }}").unwrap().is_empty());
    }

    #[test]
    fn whole_string_variable_keeps_type() {
        assert_eq!(
            substitute(&json!("{{ request.object.spec.replicas }}"), &ctx()).unwrap(),
            json!(3)
        );
        assert_eq!(
            substitute(&json!("{{ request.object.missing }}"), &ctx()).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn embedded_variables_render_as_text() {
        let out = substitute(&json!("pod {{request.object.metadata.name}} has {{ request.object.spec.replicas }} replicas"), &ctx()).unwrap();
        assert_eq!(out, json!("pod web has 3 replicas"));
    }

    #[test]
    fn nested_variables_resolve_inside_out() {
        let out = substitute(
            &json!("{{ request.object.metadata.labels.{{ key }} }}"),
            &ctx(),
        )
        .unwrap();
        assert_eq!(out, json!("front"));
    }

    #[test]
    fn escaped_variables_stay_literal() {
        let out = substitute(
            &json!("literal \\{{ request.operation }} and {{ request.operation }}"),
            &ctx(),
        )
        .unwrap();
        assert_eq!(out, json!("literal {{ request.operation }} and CREATE"));
    }

    #[test]
    fn substitutes_keys_and_nested_values() {
        let out = substitute(&json!({"{{ key }}": ["{{ request.operation }}"]}), &ctx()).unwrap();
        assert_eq!(out, json!({"tier": ["CREATE"]}));
    }

    #[test]
    fn at_sign_refers_to_current_path() {
        let out = substitute(&json!({"metadata": {"name": "{{@}}"}}), &ctx()).unwrap();
        assert_eq!(out, json!({"metadata": {"name": "web"}}));
    }

    #[test]
    fn invalid_queries_are_errors() {
        assert!(substitute(&json!("{{ request.[ }}"), &ctx()).is_err());
    }
}
