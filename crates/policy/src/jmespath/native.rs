//! Evaluates compiled JMESPath expressions over the request's JSON in
//! place.
//!
//! The `jmespath` crate parses every expression and runs every function;
//! this module only walks the crate's AST. The crate's own interpreter
//! needs the whole document in its `Variable` form, and converting each
//! request's object (several KB) into that form, then dropping it, was the
//! largest cost left in evaluating the baseline policies. Here a value is a
//! [`Node`]: a borrowed piece of the request's JSON, an already converted
//! `Variable`, or a list or map of nodes that a projection or the context
//! built. Only what a function receives, and what a comparison compares, is
//! converted, and only that piece.
//!
//! The semantics follow the crate's interpreter node for node (null
//! propagation, truthiness, projections dropping nulls, flatten one level,
//! multi-selects on null); `tests` checks both give the same answer on a
//! table of expressions, so a difference is a test failure, not a silent
//! change of verdict.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use jmespath::ast::Ast;
use jmespath::{Context, ErrorReason, JmespathError, Rcvar, RuntimeError, Variable};
use serde_json::Value;

use super::{to_json, to_variable};

/// A value during evaluation.
#[derive(Debug, Clone)]
pub enum Node<'a> {
    Null,
    /// Borrowed from the request (or another document that outlives the
    /// evaluation).
    Json(&'a Value),
    /// Already in the crate's form: literals, function results, values the
    /// context converted.
    Var(Rcvar),
    /// An array built during evaluation (projections, flatten, multi-select
    /// lists) whose items may still be borrowed.
    List(Rc<Vec<Node<'a>>>),
    /// An object built by the context (the root, `request`) or a
    /// multi-select hash. Keys are sorted, as in the crate's objects.
    Map(Rc<BTreeMap<String, Node<'a>>>),
    /// A value built on first read from a borrowed source (`images`).
    Deferred(Rc<Deferred<'a>>),
}

/// A part of the document that costs something to build and that most
/// queries never read.
#[derive(Debug)]
pub struct Deferred<'a> {
    source: &'a Value,
    build: fn(&Value) -> Value,
    built: OnceCell<Rcvar>,
}

impl<'a> Deferred<'a> {
    pub fn node(source: &'a Value, build: fn(&Value) -> Value) -> Node<'a> {
        Node::Deferred(Rc::new(Deferred {
            source,
            build,
            built: OnceCell::new(),
        }))
    }

    fn get(&self) -> Rcvar {
        Rcvar::clone(
            self.built
                .get_or_init(|| to_variable(&(self.build)(self.source))),
        )
    }
}

impl<'a> Node<'a> {
    /// The node itself, or what a deferred node builds.
    fn settled(&self) -> Node<'a> {
        match self {
            Node::Deferred(deferred) => Node::Var(deferred.get()),
            other => other.clone(),
        }
    }

    pub fn is_null(&self) -> bool {
        match self {
            Node::Null => true,
            Node::Json(value) => value.is_null(),
            Node::Var(var) => var.is_null(),
            Node::Deferred(deferred) => deferred.get().is_null(),
            Node::List(_) | Node::Map(_) => false,
        }
    }

    pub fn is_object(&self) -> bool {
        match self {
            Node::Json(value) => value.is_object(),
            Node::Var(var) => var.is_object(),
            Node::Deferred(deferred) => deferred.get().is_object(),
            Node::Map(_) => true,
            Node::Null | Node::List(_) => false,
        }
    }

    /// JMESPath truthiness: false, null, "", [] and {} are false.
    pub fn is_truthy(&self) -> bool {
        match self {
            Node::Null => false,
            Node::Json(value) => match value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(_) => true,
                Value::String(s) => !s.is_empty(),
                Value::Array(items) => !items.is_empty(),
                Value::Object(map) => !map.is_empty(),
            },
            Node::Var(var) => var.is_truthy(),
            Node::List(items) => !items.is_empty(),
            Node::Map(map) => !map.is_empty(),
            Node::Deferred(deferred) => deferred.get().is_truthy(),
        }
    }

    /// The field `name` of an object; null for anything else.
    pub fn field(&self, name: &str) -> Node<'a> {
        match self {
            Node::Json(Value::Object(map)) => map.get(name).map_or(Node::Null, Node::Json),
            Node::Var(var) => match var.as_object().and_then(|map| map.get(name)) {
                Some(value) => Node::Var(Rcvar::clone(value)),
                None => Node::Null,
            },
            Node::Map(map) => map.get(name).cloned().unwrap_or(Node::Null),
            Node::Deferred(_) => self.settled().field(name),
            _ => Node::Null,
        }
    }

    /// The items of an array; `None` for anything else.
    pub fn items(&self) -> Option<Vec<Node<'a>>> {
        match self {
            Node::Json(Value::Array(items)) => Some(items.iter().map(Node::Json).collect()),
            Node::Var(var) => var.as_array().map(|items| {
                items
                    .iter()
                    .map(|item| Node::Var(Rcvar::clone(item)))
                    .collect()
            }),
            Node::List(items) => Some(items.as_ref().clone()),
            Node::Deferred(_) => self.settled().items(),
            _ => None,
        }
    }

    /// An array item by index, negative indexes counting from the end
    /// (-1 is the last); null when out of range or not an array.
    fn index(&self, index: i32) -> Node<'a> {
        let pick = |len: usize| -> Option<usize> {
            if index >= 0 {
                let index = index as usize;
                (index < len).then_some(index)
            } else {
                let back = (index.unsigned_abs() as usize).max(1);
                (back <= len).then(|| len - back)
            }
        };
        match self {
            Node::Json(Value::Array(items)) => {
                pick(items.len()).map_or(Node::Null, |i| Node::Json(&items[i]))
            }
            Node::Var(var) => match var.as_array() {
                Some(items) => {
                    pick(items.len()).map_or(Node::Null, |i| Node::Var(Rcvar::clone(&items[i])))
                }
                None => Node::Null,
            },
            Node::List(items) => pick(items.len()).map_or(Node::Null, |i| items[i].clone()),
            Node::Deferred(_) => self.settled().index(index),
            _ => Node::Null,
        }
    }

    /// The values of an object, in key order; `None` for anything else.
    fn object_values(&self) -> Option<Vec<Node<'a>>> {
        match self {
            Node::Json(Value::Object(map)) => {
                let mut entries: Vec<(&String, &'a Value)> = map.iter().collect();
                // serde_json's map is sorted unless `preserve_order` is on.
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Some(
                    entries
                        .into_iter()
                        .map(|(_, value)| Node::Json(value))
                        .collect(),
                )
            }
            Node::Var(var) => var.as_object().map(|map| {
                map.values()
                    .map(|value| Node::Var(Rcvar::clone(value)))
                    .collect()
            }),
            Node::Map(map) => Some(map.values().cloned().collect()),
            Node::Deferred(_) => self.settled().object_values(),
            _ => None,
        }
    }

    /// The node in the crate's form (converts borrowed JSON).
    pub fn to_var(&self) -> Rcvar {
        match self {
            Node::Null => Rcvar::new(Variable::Null),
            Node::Json(value) => to_variable(value),
            Node::Var(var) => Rcvar::clone(var),
            Node::List(items) => {
                Rcvar::new(Variable::Array(items.iter().map(Node::to_var).collect()))
            }
            Node::Map(map) => Rcvar::new(Variable::Object(
                map.iter()
                    .map(|(key, value)| (key.clone(), value.to_var()))
                    .collect(),
            )),
            Node::Deferred(deferred) => deferred.get(),
        }
    }

    /// The node as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Json(value) => (*value).clone(),
            Node::Var(var) => to_json(var),
            Node::List(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map(map) => Value::Object(
                map.iter()
                    .map(|(key, value)| (key.clone(), value.to_json()))
                    .collect(),
            ),
            Node::Deferred(deferred) => to_json(&deferred.get()),
        }
    }

    /// The node in the crate's form when it is an array (for slices).
    fn to_var_if_array(&self) -> Option<Rcvar> {
        match self {
            Node::Json(Value::Array(_)) | Node::List(_) => Some(self.to_var()),
            Node::Var(var) if var.is_array() => Some(Rcvar::clone(var)),
            Node::Deferred(_) => self.settled().to_var_if_array(),
            _ => None,
        }
    }

    /// The JSON this node borrows, when it is borrowed JSON.
    pub fn as_borrowed_json(&self) -> Option<&'a Value> {
        match self {
            Node::Json(value) => Some(value),
            _ => None,
        }
    }
}

fn list(items: Vec<Node<'_>>) -> Node<'_> {
    Node::List(Rc::new(items))
}

/// Evaluates `ast` against `data`. Functions are the runtime's in `ctx`.
pub fn interpret<'a>(
    data: &Node<'a>,
    ast: &Ast,
    ctx: &mut Context<'_>,
) -> Result<Node<'a>, JmespathError> {
    Ok(match ast {
        Ast::Field { name, .. } => data.field(name),
        Ast::Subexpr { lhs, rhs, .. } => {
            let left = interpret(data, lhs, ctx)?;
            interpret(&left, rhs, ctx)?
        }
        Ast::Identity { .. } => data.clone(),
        Ast::Literal { value, .. } => Node::Var(Rcvar::clone(value)),
        Ast::Index { idx, .. } => data.index(*idx),
        Ast::Or { lhs, rhs, .. } => {
            let left = interpret(data, lhs, ctx)?;
            if left.is_truthy() {
                left
            } else {
                interpret(data, rhs, ctx)?
            }
        }
        Ast::And { lhs, rhs, .. } => {
            let left = interpret(data, lhs, ctx)?;
            if left.is_truthy() {
                interpret(data, rhs, ctx)?
            } else {
                left
            }
        }
        Ast::Not { node, .. } => {
            let value = interpret(data, node, ctx)?;
            Node::Var(Rcvar::new(Variable::Bool(!value.is_truthy())))
        }
        Ast::Condition {
            predicate, then, ..
        } => {
            if interpret(data, predicate, ctx)?.is_truthy() {
                interpret(data, then, ctx)?
            } else {
                Node::Null
            }
        }
        Ast::Comparison {
            comparator,
            lhs,
            rhs,
            ..
        } => {
            let left = interpret(data, lhs, ctx)?;
            let right = interpret(data, rhs, ctx)?;
            // The compared values are converted: they are small in practice,
            // and the crate's comparison then decides equality and ordering
            // exactly as its own interpreter would.
            match left.to_var().compare(comparator, &right.to_var()) {
                Some(result) => Node::Var(Rcvar::new(Variable::Bool(result))),
                None => Node::Null,
            }
        }
        Ast::ObjectValues { node, .. } => match interpret(data, node, ctx)?.object_values() {
            Some(values) => list(values),
            None => Node::Null,
        },
        Ast::Projection { lhs, rhs, .. } => match interpret(data, lhs, ctx)?.items() {
            None => Node::Null,
            Some(items) => {
                let mut collected = Vec::with_capacity(items.len());
                for item in &items {
                    let projected = interpret(item, rhs, ctx)?;
                    if !projected.is_null() {
                        collected.push(projected);
                    }
                }
                list(collected)
            }
        },
        Ast::Flatten { node, .. } => match interpret(data, node, ctx)?.items() {
            None => Node::Null,
            Some(items) => {
                let mut collected = Vec::with_capacity(items.len());
                for item in items {
                    match item.items() {
                        Some(inner) => collected.extend(inner),
                        None => collected.push(item),
                    }
                }
                list(collected)
            }
        },
        Ast::MultiList { elements, .. } => {
            if data.is_null() {
                Node::Null
            } else {
                let mut collected = Vec::with_capacity(elements.len());
                for element in elements {
                    collected.push(interpret(data, element, ctx)?);
                }
                list(collected)
            }
        }
        Ast::MultiHash { elements, .. } => {
            if data.is_null() {
                Node::Null
            } else {
                let mut collected = BTreeMap::new();
                for pair in elements {
                    collected.insert(pair.key.clone(), interpret(data, &pair.value, ctx)?);
                }
                Node::Map(Rc::new(collected))
            }
        }
        Ast::Function { name, args, offset } => {
            let mut values = Vec::with_capacity(args.len());
            for arg in args {
                values.push(interpret(data, arg, ctx)?.to_var());
            }
            ctx.offset = *offset;
            let Some(function) = ctx.runtime.get_function(name) else {
                let reason = ErrorReason::Runtime(RuntimeError::UnknownFunction(name.clone()));
                return Err(JmespathError::from_ctx(ctx, reason));
            };
            Node::Var(function.evaluate(&values, ctx)?)
        }
        Ast::Expref { ast, .. } => Node::Var(Rcvar::new(Variable::Expref((**ast).clone()))),
        Ast::Slice {
            start,
            stop,
            step,
            offset,
        } => {
            if *step == 0 {
                ctx.offset = *offset;
                let reason = ErrorReason::Runtime(RuntimeError::InvalidSlice);
                return Err(JmespathError::from_ctx(ctx, reason));
            }
            // Rare in policies: slice in the crate's form.
            match data
                .to_var_if_array()
                .and_then(|array| array.slice(*start, *stop, *step))
            {
                Some(items) => Node::Var(Rcvar::new(Variable::Array(items))),
                None => Node::Null,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jmespath::{KYVERNO_RUNTIME, compiled, search};
    use serde_json::json;

    /// The crate's own interpreter over the converted document.
    fn crate_answer(expression: &str, document: &Value) -> Result<Value, String> {
        let compiled = compiled(expression)?;
        let mut context = Context::new(compiled.as_str(), &KYVERNO_RUNTIME);
        jmespath::interpret(&to_variable(document), compiled.as_ast(), &mut context)
            .map(|result| to_json(&result))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn answers_like_the_crates_interpreter() {
        let document = json!({
            "spec": {
                "containers": [
                    {"name": "a", "image": "nginx:1.25", "ports": [{"containerPort": 80}, {"containerPort": 443}],
                     "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}},
                    {"name": "b", "image": "redis", "securityContext": null},
                    {"name": "c", "image": "", "env": []}
                ],
                "initContainers": [{"name": "i", "image": "busybox:1.36", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
                "nested": [[1, [2, 3]], [4], 5, null],
                "numbers": [3, 1.5, -2, 10],
                "mixed": [0, "", [], {}, false, null, "x"],
                "labels": {"b": "2", "a": "1", "c": {"d": true}}
            },
            "empty": {},
            "zero": 0,
            "text": "hello"
        });
        let expressions = [
            "spec.containers[].name",
            "spec.containers[*].image",
            "spec.[containers, initContainers, ephemeralContainers][].securityContext.capabilities.add[]",
            "spec.containers[].ports[].containerPort",
            "spec.containers[*].ports[*].containerPort",
            "spec.containers[0].name",
            "spec.containers[-1].name",
            "spec.containers[-3].name",
            "spec.containers[-4].name",
            "spec.containers[5].name",
            "spec.containers[1:].name",
            "spec.numbers[::-1]",
            "spec.numbers[1:3]",
            "spec.labels[0]",
            "spec.containers.name",
            "spec.nested[]",
            "spec.nested[][]",
            "spec.nested[0][1][0]",
            "spec.labels.*",
            "spec.labels.*.d",
            "spec.mixed[?@]",
            "spec.containers[?name == 'b'].image | [0]",
            "spec.containers[?image != ''].name",
            "spec.numbers[?@ > `2`]",
            "spec.numbers[?@ >= `1.5`]",
            "spec.containers[?name < 'b']",
            "spec.containers[?securityContext].name",
            "spec.containers[?!securityContext].name",
            "spec.containers[?ports && name == 'a'].name",
            "spec.missing || 'DEFAULT'",
            "empty || 'DEFAULT'",
            "zero || 'DEFAULT'",
            "text && zero",
            "empty && text",
            "!empty",
            "!zero",
            "spec.missing.[a, b]",
            "spec.missing.{a: a}",
            "spec.containers[0].{n: name, i: image, p: ports[0].containerPort}",
            "spec.containers[].[name, image]",
            "[spec.containers[0].name, `\"lit\"`, 'raw', `3`]",
            "@",
            "*",
            "spec.labels == `{\"a\": \"1\", \"b\": \"2\", \"c\": {\"d\": true}}`",
            "spec.numbers[0] == `3.0`",
            "spec.numbers[0] < `4`",
            "text < `4`",
            "length(spec.containers)",
            "keys(spec.labels)",
            "values(spec.labels)",
            "contains(spec.containers[].name, 'b')",
            "sort_by(spec.containers, &name)[].name",
            "max_by(spec.containers, &length(name)).name",
            "map(&name, spec.containers)",
            "to_string(spec.labels)",
            "join(',', spec.containers[].name)",
            "regex_match(':[^/]*$', spec.containers[0].image)",
            "spec.containers[?regex_match(':[^/]*$', image)].name",
            "length(spec.containers[?contains(keys(@), 'env')])",
            "not_null(spec.missing, spec.labels.a)",
            "spec.containers | [0] | name",
            "spec.containers[*].securityContext.capabilities.add | []",
        ];
        for expression in expressions {
            let ours = search(expression, &document).map_err(|e| e.message);
            let theirs = crate_answer(expression, &document);
            assert_eq!(ours, theirs, "{expression}");
        }
        // Errors stay errors (an invalid slice step, an unknown function).
        for expression in ["spec.numbers[::0]", "no_such_function(@)", "length(`1`)"] {
            assert!(search(expression, &document).is_err(), "{expression}");
            assert!(crate_answer(expression, &document).is_err(), "{expression}");
        }
    }

    #[test]
    fn borrowed_results_are_not_copies() {
        let document = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let root = Node::Json(&document);
        let result = match crate::jmespath::query("spec.containers[]", &root) {
            Ok(result) => result,
            Err(e) => panic!("{e}"),
        };
        let Some(items) = result.items() else {
            panic!("not a list: {result:?}")
        };
        assert_eq!(items.len(), 2);
        for (item, expected) in items.iter().zip(
            &document["spec"]["containers"]
                .as_array()
                .unwrap_or(&Vec::new())
                .clone(),
        ) {
            let borrowed = item.as_borrowed_json().unwrap_or(&Value::Null);
            assert!(
                std::ptr::eq(borrowed, &document["spec"]["containers"][0])
                    || std::ptr::eq(borrowed, &document["spec"]["containers"][1])
            );
            assert_eq!(borrowed, expected);
        }
    }

    #[test]
    fn deferred_parts_are_built_once_on_first_read() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static BUILDS: AtomicUsize = AtomicUsize::new(0);
        fn build(source: &Value) -> Value {
            BUILDS.fetch_add(1, Ordering::SeqCst);
            json!({"copy": source.clone()})
        }
        let source = json!({"x": 1});
        let deferred = Deferred::node(&source, build);
        let mut root = BTreeMap::new();
        root.insert("lazy".to_string(), deferred);
        root.insert("plain".to_string(), Node::Json(&source));
        let root = Node::Map(Rc::new(root));
        let query = |expression: &str| match crate::jmespath::query(expression, &root) {
            Ok(result) => result.to_json(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(query("plain.x"), json!(1));
        assert_eq!(BUILDS.load(Ordering::SeqCst), 0);
        assert_eq!(query("lazy.copy.x"), json!(1));
        assert_eq!(query("keys(lazy)"), json!(["copy"]));
        assert_eq!(BUILDS.load(Ordering::SeqCst), 1);
    }
}
