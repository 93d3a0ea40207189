//! The JSON document `{{ }}` variables query: `request` (object,
//! oldObject, operation, userInfo, namespace...), `images`,
//! `serviceAccountName`/`serviceAccountNamespace`, foreach `element`s,
//! rule `context` variables and user-supplied values.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use ::jmespath::{Rcvar, Variable};
use serde_json::{Map, Value, json};

use crate::policy::images::images_variable;
use crate::policy::jmespath::{self, QueryError, Reads, to_variable};
use crate::policy::{EvalInput, Operation};

/// The evaluation context of one rule against one resource.
///
/// The document is kept as its top-level entries, already converted for the
/// JMESPath runtime and shared by reference: a query does not re-convert
/// the request, and adding a rule variable or foreach element to a copy of
/// the context copies only the top-level map. The costly parts (the
/// request's objects, `images`) are converted on the first query that may
/// read them, once per request, shared by all copies.
#[derive(Debug, Clone)]
pub struct EvalContext<'a> {
    /// The document; `request` lacks `object`/`oldObject` and `images` is
    /// absent while `lazy` is set.
    root: BTreeMap<String, Rcvar>,
    lazy: Option<Rc<LazyParts<'a>>>,
    delete: bool,
}

/// The parts of the document built on first need.
#[derive(Debug)]
struct LazyParts<'a> {
    /// `request` without its objects: the same value as the root's.
    request_fields: Rcvar,
    object: &'a Value,
    old_object: &'a Value,
    /// The resource `images` is read from.
    resource: &'a Value,
    request: OnceCell<Rcvar>,
    images: OnceCell<Rcvar>,
}

impl LazyParts<'_> {
    fn request(&self) -> Rcvar {
        Rcvar::clone(self.request.get_or_init(|| {
            let mut request = self.request_fields.as_object().cloned().unwrap_or_default();
            request.insert("object".into(), to_variable(self.object));
            request.insert("oldObject".into(), to_variable(self.old_object));
            Rcvar::new(Variable::Object(request))
        }))
    }

    fn images(&self) -> Rcvar {
        Rcvar::clone(
            self.images
                .get_or_init(|| to_variable(&images_variable(self.resource))),
        )
    }
}

static NULL: Value = Value::Null;

impl<'a> EvalContext<'a> {
    /// Wraps an already built document.
    #[cfg(test)]
    pub fn from_root(root: Value) -> EvalContext<'static> {
        let mut ctx = EvalContext {
            root: BTreeMap::new(),
            lazy: None,
            delete: false,
        };
        if let Value::Object(map) = root {
            for (key, value) in &map {
                ctx.root.insert(key.clone(), to_variable(value));
            }
        }
        ctx.delete = ctx.operation_is_delete();
        ctx
    }

    /// Builds the context for an admission request or bare resource.
    pub fn for_input(input: &EvalInput<'a>) -> EvalContext<'a> {
        // `object`/`oldObject` are replaced below: convert neither twice.
        let mut request: BTreeMap<String, Rcvar> = match input.admission_info {
            Some(Value::Object(map)) => map
                .iter()
                .filter(|(key, _)| key.as_str() != "object" && key.as_str() != "oldObject")
                .map(|(key, value)| (key.clone(), to_variable(value)))
                .collect(),
            _ => BTreeMap::new(),
        };
        let operation = input.operation.as_str();
        request.insert("operation".into(), to_variable(&Value::from(operation)));
        let (object, old_object) = match input.operation {
            Operation::Delete => (&NULL, input.old_resource.unwrap_or(input.resource)),
            _ => (input.resource, input.old_resource.unwrap_or(&NULL)),
        };
        request.entry("userInfo".into()).or_insert_with(|| {
            to_variable(
                &json!({"username": input.user_info.username, "groups": input.user_info.groups}),
            )
        });
        request
            .entry("roles".into())
            .or_insert_with(|| to_variable(&json!(input.user_info.roles)));
        request
            .entry("clusterRoles".into())
            .or_insert_with(|| to_variable(&json!(input.user_info.cluster_roles)));
        let subject = input.resource;
        if let Some(namespace) = subject
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            request
                .entry("namespace".into())
                .or_insert_with(|| to_variable(&Value::from(namespace)));
        }
        if let Some(name) = subject.pointer("/metadata/name").and_then(Value::as_str) {
            request
                .entry("name".into())
                .or_insert_with(|| to_variable(&Value::from(name)));
        }
        if let Some(kind) = subject.get("kind").and_then(Value::as_str) {
            let api_version = subject
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            request.entry("kind".into()).or_insert_with(|| {
                to_variable(&json!({"group": group, "version": version, "kind": kind}))
            });
        }

        let request = Rcvar::new(Variable::Object(request));
        let mut root = BTreeMap::new();
        root.insert("request".into(), Rcvar::clone(&request));
        let lazy = LazyParts {
            request_fields: request,
            object,
            old_object,
            resource: input.resource,
            request: OnceCell::new(),
            images: OnceCell::new(),
        };
        let (sa_namespace, sa_name) = service_account(&input.user_info.username);
        root.insert(
            "serviceAccountName".into(),
            to_variable(&Value::from(sa_name)),
        );
        root.insert(
            "serviceAccountNamespace".into(),
            to_variable(&Value::from(sa_namespace)),
        );
        let mut ctx = EvalContext {
            root,
            lazy: Some(Rc::new(lazy)),
            delete: input.operation == Operation::Delete,
        };
        for (name, value) in input.variables {
            ctx.set_path(name, value.clone());
        }
        // Values may override the operation (kyverno-test `request.operation`).
        ctx.delete = ctx.operation_is_delete();
        ctx
    }

    fn operation_is_delete(&self) -> bool {
        self.root
            .get("request")
            .and_then(|request| request.as_object())
            .and_then(|request| request.get("operation"))
            .and_then(|operation| operation.as_string())
            .is_some_and(|operation| operation == "DELETE")
    }

    /// Runs a JMESPath query over the context.
    pub fn query(&self, expression: &str) -> Result<Value, QueryError> {
        self.query_variable(expression)
            .map(|result| jmespath::to_json(&result))
    }

    /// Runs a JMESPath query, keeping the result in the runtime's form.
    pub fn query_variable(&self, expression: &str) -> Result<Rcvar, QueryError> {
        jmespath::evaluate_with(expression, |reads| self.document(reads))
    }

    /// The document for a query that may read `reads`.
    fn document(&self, reads: Reads) -> Rcvar {
        let mut root = self.root.clone();
        if let Some(lazy) = &self.lazy {
            if reads.request_objects {
                root.insert("request".into(), lazy.request());
            }
            if reads.images {
                root.insert("images".into(), lazy.images());
            }
        }
        Rcvar::new(Variable::Object(root))
    }

    /// Builds the lazy parts into the root for good, before the root is
    /// edited where they live.
    fn materialize(&mut self) {
        if let Some(lazy) = self.lazy.take() {
            self.root.insert("request".into(), lazy.request());
            self.root.insert("images".into(), lazy.images());
        }
    }

    /// True for DELETE requests, where `request.object` reads the old object.
    pub fn is_delete(&self) -> bool {
        self.delete
    }

    /// Sets a (possibly dotted) variable, creating intermediate maps.
    pub fn set_path(&mut self, dotted: &str, value: Value) {
        let head = dotted.split_once('.').map_or(dotted, |(head, _)| head);
        if head == "request" || head == "images" {
            self.materialize();
        }
        let Some((head, rest)) = dotted.split_once('.') else {
            self.root.insert(dotted.to_string(), to_variable(&value));
            return;
        };
        // Rare (dotted user values): rebuild the one top-level entry.
        let mut node = self
            .root
            .get(head)
            .map(|existing| jmespath::to_json(existing))
            .unwrap_or(Value::Null);
        set_nested(&mut node, rest, value);
        self.root.insert(head.to_string(), to_variable(&node));
    }

    /// Adds a foreach element: `element`/`elementIndex` and the nesting
    /// specific `element<N>`/`elementIndex<N>`.
    #[cfg(test)]
    pub fn with_element(&self, element: &Value, index: usize, nesting: usize) -> EvalContext<'a> {
        self.with_element_variable(to_variable(element), index, nesting)
    }

    /// [`Self::with_element`] for an element already in the runtime's form
    /// (an item of a foreach list): nothing is converted.
    pub fn with_element_variable(
        &self,
        element: Rcvar,
        index: usize,
        nesting: usize,
    ) -> EvalContext<'a> {
        let mut ctx = self.clone();
        let index = to_variable(&Value::from(index));
        ctx.root.insert("element".into(), Rcvar::clone(&element));
        ctx.root.insert("elementIndex".into(), Rcvar::clone(&index));
        ctx.root.insert(format!("element{nesting}"), element);
        ctx.root.insert(format!("elementIndex{nesting}"), index);
        ctx
    }
}

/// Sets the dotted path `dotted` below `node`, creating intermediate maps.
fn set_nested(mut node: &mut Value, dotted: &str, value: Value) {
    let parts: Vec<&str> = dotted.split('.').collect();
    for (index, part) in parts.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            return;
        };
        if index == parts.len() - 1 {
            map.insert((*part).to_string(), value);
            return;
        }
        node = map
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Splits `system:serviceaccount:<ns>:<name>` into (namespace, name).
fn service_account(username: &str) -> (String, String) {
    match username.strip_prefix("system:serviceaccount:") {
        Some(rest) => match rest.split_once(':') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (String::new(), String::new()),
        },
        None => (String::new(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::UserInfo;
    use std::collections::BTreeMap;

    #[test]
    fn exposes_request_and_service_account() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}});
        let vars = BTreeMap::new();
        let input = EvalInput {
            resource: &pod,
            old_resource: None,
            operation: Operation::Create,
            user_info: UserInfo {
                username: "system:serviceaccount:team:builder".into(),
                ..UserInfo::default()
            },
            namespace_labels: None,
            admission_info: None,
            variables: &vars,
        };
        let ctx = EvalContext::for_input(&input);
        assert_eq!(ctx.query("request.operation").unwrap(), json!("CREATE"));
        assert_eq!(
            ctx.query("request.object.metadata.name").unwrap(),
            json!("p")
        );
        assert_eq!(ctx.query("request.namespace").unwrap(), json!("ns"));
        assert_eq!(ctx.query("serviceAccountName").unwrap(), json!("builder"));
        assert_eq!(ctx.query("serviceAccountNamespace").unwrap(), json!("team"));
    }

    #[test]
    fn lazy_parts_answer_like_an_eager_document() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "a", "image": "registry.example/app:1.2"}]}});
        let old = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "old"}});
        let vars = BTreeMap::new();
        let admission = json!({"uid": "u1", "dryRun": false, "object": {"ignored": true}});
        let input = EvalInput {
            resource: &pod,
            old_resource: Some(&old),
            operation: Operation::Update,
            user_info: UserInfo::default(),
            namespace_labels: None,
            admission_info: Some(&admission),
            variables: &vars,
        };
        let ctx = EvalContext::for_input(&input);
        let cases = [
            ("request.object.metadata.name", json!("p")),
            ("request.oldObject.metadata.name", json!("old")),
            ("request.uid", json!("u1")),
            ("request.operation", json!("UPDATE")),
            ("keys(request) | contains(@, 'object')", json!(true)),
            ("request.object.spec.containers[].name", json!(["a"])),
            ("images.containers.a.tag", json!("1.2")),
            ("length(keys(@)) > `3`", json!(true)),
        ];
        for (expression, expected) in cases {
            assert_eq!(ctx.query(expression).unwrap(), expected, "{expression}");
        }
        // The foreach copy shares the parts.
        let with = ctx.with_element(&json!({"x": 1}), 0, 0);
        assert_eq!(with.query("request.object.kind").unwrap(), json!("Pod"));
        // Editing `request` keeps the objects.
        let mut edited = ctx.clone();
        edited.set_path("request.operation", json!("CREATE"));
        assert_eq!(edited.query("request.operation").unwrap(), json!("CREATE"));
        assert_eq!(
            edited.query("request.object.metadata.name").unwrap(),
            json!("p")
        );
        assert_eq!(
            edited.query("images.containers.a.tag").unwrap(),
            json!("1.2")
        );
    }

    #[test]
    fn dotted_variables_nest() {
        let mut ctx = EvalContext::from_root(json!({"request": {"operation": "CREATE"}}));
        ctx.set_path("request.operation", json!("UPDATE"));
        ctx.set_path("a.b", json!(1));
        assert_eq!(ctx.query("request.operation").unwrap(), json!("UPDATE"));
        assert_eq!(ctx.query("a.b").unwrap(), json!(1));
        let with = ctx.with_element(&json!({"x": 1}), 2, 0);
        assert_eq!(with.query("element.x").unwrap(), json!(1));
        assert_eq!(with.query("elementIndex0").unwrap(), json!(2));
    }
}
