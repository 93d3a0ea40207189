//! The JSON document `{{ }}` variables query: `request` (object,
//! oldObject, operation, userInfo, namespace...), `images`,
//! `serviceAccountName`/`serviceAccountNamespace`, foreach `element`s,
//! rule `context` variables and user-supplied values.

use serde_json::{Map, Value, json};

use crate::policy::images::images_variable;
use crate::policy::jmespath::{self, QueryError};
use crate::policy::{EvalInput, Operation};

/// The evaluation context of one rule against one resource.
#[derive(Debug, Clone)]
pub struct EvalContext {
    root: Value,
    delete: bool,
}

impl EvalContext {
    /// Wraps an already built document.
    #[cfg(test)]
    pub fn from_root(root: Value) -> EvalContext {
        let delete = root.pointer("/request/operation").and_then(Value::as_str) == Some("DELETE");
        EvalContext { root, delete }
    }

    /// Builds the context for an admission request or bare resource.
    pub fn for_input(input: &EvalInput<'_>) -> EvalContext {
        let mut request = match input.admission_info {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        let operation = input.operation.as_str();
        request.insert("operation".into(), Value::from(operation));
        let (object, old_object) = match input.operation {
            Operation::Delete => (
                Value::Null,
                input.old_resource.unwrap_or(input.resource).clone(),
            ),
            _ => (
                input.resource.clone(),
                input.old_resource.cloned().unwrap_or(Value::Null),
            ),
        };
        request.insert("object".into(), object);
        request.insert("oldObject".into(), old_object);
        request.entry("userInfo").or_insert_with(
            || json!({"username": input.user_info.username, "groups": input.user_info.groups}),
        );
        request
            .entry("roles")
            .or_insert_with(|| json!(input.user_info.roles));
        request
            .entry("clusterRoles")
            .or_insert_with(|| json!(input.user_info.cluster_roles));
        let subject = input.resource;
        if let Some(namespace) = subject
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            request
                .entry("namespace")
                .or_insert_with(|| Value::from(namespace));
        }
        if let Some(name) = subject.pointer("/metadata/name").and_then(Value::as_str) {
            request.entry("name").or_insert_with(|| Value::from(name));
        }
        if let Some(kind) = subject.get("kind").and_then(Value::as_str) {
            let api_version = subject
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            request
                .entry("kind")
                .or_insert_with(|| json!({"group": group, "version": version, "kind": kind}));
        }

        let mut root = Map::new();
        root.insert("request".into(), Value::Object(request));
        root.insert("images".into(), images_variable(input.resource));
        let (sa_namespace, sa_name) = service_account(&input.user_info.username);
        root.insert("serviceAccountName".into(), Value::from(sa_name));
        root.insert("serviceAccountNamespace".into(), Value::from(sa_namespace));
        let mut ctx = EvalContext {
            root: Value::Object(root),
            delete: input.operation == Operation::Delete,
        };
        for (name, value) in input.variables {
            ctx.set_path(name, value.clone());
        }
        // Values may override the operation (kyverno-test `request.operation`).
        ctx.delete = ctx
            .root
            .pointer("/request/operation")
            .and_then(Value::as_str)
            == Some("DELETE");
        ctx
    }

    /// Runs a JMESPath query over the context.
    pub fn query(&self, expression: &str) -> Result<Value, QueryError> {
        jmespath::search(expression, &self.root)
    }

    /// True for DELETE requests, where `request.object` reads the old object.
    pub fn is_delete(&self) -> bool {
        self.delete
    }

    /// Sets a (possibly dotted) variable, creating intermediate maps.
    pub fn set_path(&mut self, dotted: &str, value: Value) {
        let mut node = &mut self.root;
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

    /// Adds a foreach element: `element`/`elementIndex` and the nesting
    /// specific `element<N>`/`elementIndex<N>`.
    pub fn with_element(&self, element: &Value, index: usize, nesting: usize) -> EvalContext {
        let mut ctx = self.clone();
        ctx.set_path("element", element.clone());
        ctx.set_path("elementIndex", Value::from(index));
        ctx.set_path(&format!("element{nesting}"), element.clone());
        ctx.set_path(&format!("elementIndex{nesting}"), Value::from(index));
        ctx
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
