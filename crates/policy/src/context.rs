//! The JSON document `{{ }}` variables query: `request` (object,
//! oldObject, operation, userInfo, namespace...), `images`,
//! `serviceAccountName`/`serviceAccountNamespace`, foreach `element`s,
//! rule `context` variables and user-supplied values.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::{Map, Value, json};

use crate::images::images_variable;
use crate::jmespath::{self, Deferred, Node, QueryError, to_variable};
use crate::{EvalInput, Operation};

/// The evaluation context of one rule against one resource.
///
/// The document's top-level entries are [`Node`]s: the request's own JSON
/// is borrowed, never copied or converted, and queries walk it in place.
/// `images` is built on the first query that reads it, once per request and
/// shared by every copy. Copies (a rule's variables, a foreach element)
/// share the entries and copy only the top-level map when they add one.
#[derive(Debug, Clone)]
pub struct EvalContext<'a> {
    root: Rc<BTreeMap<String, Node<'a>>>,
    delete: bool,
}

static NULL: Value = Value::Null;

impl<'a> EvalContext<'a> {
    /// Wraps an already built document.
    #[cfg(test)]
    pub fn from_root(root: Value) -> EvalContext<'static> {
        let mut entries = BTreeMap::new();
        if let Value::Object(map) = root {
            for (key, value) in &map {
                entries.insert(key.clone(), Node::Var(to_variable(value)));
            }
        }
        let mut ctx = EvalContext {
            root: Rc::new(entries),
            delete: false,
        };
        ctx.delete = ctx.operation_is_delete();
        ctx
    }

    /// Builds the context for an admission request or bare resource.
    pub fn for_input(input: &EvalInput<'a>) -> EvalContext<'a> {
        let converted = |value: &Value| Node::Var(to_variable(value));
        // `object`/`oldObject` are set below from the input.
        let mut request: BTreeMap<String, Node<'a>> = match input.admission_info {
            Some(Value::Object(map)) => map
                .iter()
                .filter(|(key, _)| key.as_str() != "object" && key.as_str() != "oldObject")
                .map(|(key, value)| (key.clone(), Node::Json(value)))
                .collect(),
            _ => BTreeMap::new(),
        };
        request.insert(
            "operation".into(),
            converted(&Value::from(input.operation.as_str())),
        );
        let (object, old_object) = match input.operation {
            Operation::Delete => (&NULL, input.old_resource.unwrap_or(input.resource)),
            _ => (input.resource, input.old_resource.unwrap_or(&NULL)),
        };
        request.insert("object".into(), Node::Json(object));
        request.insert("oldObject".into(), Node::Json(old_object));
        request.entry("userInfo".into()).or_insert_with(|| {
            converted(
                &json!({"username": input.user_info.username, "groups": input.user_info.groups}),
            )
        });
        request
            .entry("roles".into())
            .or_insert_with(|| converted(&json!(input.user_info.roles)));
        request
            .entry("clusterRoles".into())
            .or_insert_with(|| converted(&json!(input.user_info.cluster_roles)));
        let subject = input.resource;
        if let Some(namespace) = subject
            .get("metadata")
            .and_then(|metadata| metadata.get("namespace"))
            && namespace.is_string()
        {
            request
                .entry("namespace".into())
                .or_insert(Node::Json(namespace));
        }
        if let Some(name) = subject
            .get("metadata")
            .and_then(|metadata| metadata.get("name"))
            && name.is_string()
        {
            request.entry("name".into()).or_insert(Node::Json(name));
        }
        if let Some(kind) = subject.get("kind").and_then(Value::as_str) {
            let api_version = subject
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            request.entry("kind".into()).or_insert_with(|| {
                converted(&json!({"group": group, "version": version, "kind": kind}))
            });
        }

        let mut root = BTreeMap::new();
        root.insert("request".into(), Node::Map(Rc::new(request)));
        root.insert(
            "images".into(),
            Deferred::node(input.resource, images_variable),
        );
        let (sa_namespace, sa_name) = service_account(&input.user_info.username);
        root.insert(
            "serviceAccountName".into(),
            converted(&Value::from(sa_name)),
        );
        root.insert(
            "serviceAccountNamespace".into(),
            converted(&Value::from(sa_namespace)),
        );
        let mut ctx = EvalContext {
            root: Rc::new(root),
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
        let operation = self
            .root
            .get("request")
            .map_or(Node::Null, |request| request.field("operation"));
        operation.to_json() == "DELETE"
    }

    /// Runs a JMESPath query over the context.
    pub fn query(&self, expression: &str) -> Result<Value, QueryError> {
        self.query_node(expression).map(|result| result.to_json())
    }

    /// Runs a JMESPath query; the result may still borrow the request.
    pub fn query_node(&self, expression: &str) -> Result<Node<'a>, QueryError> {
        jmespath::query(expression, &Node::Map(Rc::clone(&self.root)))
    }

    /// True for DELETE requests, where `request.object` reads the old object.
    pub fn is_delete(&self) -> bool {
        self.delete
    }

    /// Sets a (possibly dotted) variable, creating intermediate maps.
    pub fn set_path(&mut self, dotted: &str, value: Value) {
        let root = Rc::make_mut(&mut self.root);
        let Some((head, rest)) = dotted.split_once('.') else {
            root.insert(dotted.to_string(), Node::Var(to_variable(&value)));
            return;
        };
        // `request.operation` and the like: edit the map, keep its
        // borrowed entries.
        if !rest.contains('.')
            && let Some(Node::Map(map)) = root.get_mut(head)
        {
            Rc::make_mut(map).insert(rest.to_string(), Node::Var(to_variable(&value)));
            return;
        }
        // Rare (dotted user values): rebuild the one top-level entry.
        let mut node = root.get(head).map_or(Value::Null, Node::to_json);
        set_nested(&mut node, rest, value);
        root.insert(head.to_string(), Node::Var(to_variable(&node)));
    }

    /// Adds a foreach element (JSON): see [`Self::with_element_node`].
    #[cfg(test)]
    pub fn with_element(&self, element: &Value, index: usize, nesting: usize) -> EvalContext<'a> {
        self.with_element_node(Node::Var(to_variable(element)), index, nesting)
    }

    /// Adds a foreach element: `element`/`elementIndex` and the nesting
    /// specific `element<N>`/`elementIndex<N>`. An element of a list queried
    /// from the request stays borrowed.
    pub fn with_element_node(
        &self,
        element: Node<'a>,
        index: usize,
        nesting: usize,
    ) -> EvalContext<'a> {
        let mut ctx = self.clone();
        let root = Rc::make_mut(&mut ctx.root);
        let index = Node::Var(to_variable(&Value::from(index)));
        root.insert("element".into(), element.clone());
        root.insert("elementIndex".into(), index.clone());
        root.insert(nested_key(ELEMENT_KEYS, "element", nesting), element);
        root.insert(nested_key(INDEX_KEYS, "elementIndex", nesting), index);
        ctx
    }
}

/// `element<N>`/`elementIndex<N>` for the nesting depths policies use, so
/// that a foreach element (several per rule and review) does not run the
/// formatter twice.
const ELEMENT_KEYS: [&str; 4] = ["element0", "element1", "element2", "element3"];
const INDEX_KEYS: [&str; 4] = [
    "elementIndex0",
    "elementIndex1",
    "elementIndex2",
    "elementIndex3",
];

fn nested_key(known: [&str; 4], prefix: &str, nesting: usize) -> String {
    match known.get(nesting) {
        Some(key) => (*key).to_string(),
        None => format!("{prefix}{nesting}"),
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
    use crate::UserInfo;
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
            rule_variables: &BTreeMap::new(),
            cluster_data: None,
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
    fn borrowed_request_answers_like_an_eager_document() {
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
            rule_variables: &BTreeMap::new(),
            cluster_data: None,
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
        // A foreach copy still reads the request.
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

    #[test]
    fn nested_elements_are_named_by_depth_past_the_known_keys() {
        let ctx = EvalContext::from_root(json!({}));
        let outer = ctx.with_element(&json!("a"), 1, 1);
        let deep = outer.with_element(&json!("b"), 7, 5);
        assert_eq!(deep.query("element1").unwrap(), json!("a"));
        assert_eq!(deep.query("elementIndex1").unwrap(), json!(1));
        assert_eq!(deep.query("element5").unwrap(), json!("b"));
        assert_eq!(deep.query("elementIndex5").unwrap(), json!(7));
        assert_eq!(deep.query("element").unwrap(), json!("b"));
    }
}
