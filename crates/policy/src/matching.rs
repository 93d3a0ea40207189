//! Does a rule's `match`/`exclude` select this resource? Kinds (with
//! group/version/subresource forms and wildcards), names, namespaces,
//! annotations, label and namespace selectors, operations, and the
//! requester's roles and subjects.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::spec::{
    ApiResourceRule, KindSelector, MatchBlock, ResourceDescription, ResourceFilter, Subject,
    UserFilter,
};
use crate::wildcard;
use crate::{EvalInput, UserInfo};

/// The facts about a request that matching looks at.
pub struct MatchSubject<'a> {
    pub resource: &'a Value,
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub subresource: &'a str,
    pub operation: &'static str,
    pub user: &'a UserInfo,
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
}

impl<'a> MatchSubject<'a> {
    pub fn from_input(input: &'a EvalInput<'a>) -> MatchSubject<'a> {
        let resource = input.resource;
        let api_version = resource
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let subresource = input
            .admission_info
            .and_then(|info| info.get("subResource"))
            .and_then(Value::as_str)
            .unwrap_or("");
        MatchSubject {
            resource,
            group,
            version,
            kind: resource.get("kind").and_then(Value::as_str).unwrap_or(""),
            subresource,
            operation: input.operation.as_str(),
            user: &input.user_info,
            namespace_labels: input.namespace_labels,
        }
    }

    fn name(&self) -> &str {
        let metadata = self.resource.get("metadata");
        metadata
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .or_else(|| {
                metadata
                    .and_then(|m| m.get("generateName"))
                    .and_then(Value::as_str)
            })
            .unwrap_or("")
    }

    fn namespace(&self) -> &str {
        self.resource
            .get("metadata")
            .and_then(|metadata| metadata.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn has_requester(&self) -> bool {
        !(self.user.username.is_empty()
            && self.user.groups.is_empty()
            && self.user.roles.is_empty()
            && self.user.cluster_roles.is_empty())
    }
}

/// True when the rule's match block selects the subject and its exclude
/// block does not.
pub fn rule_applies(
    match_block: &MatchBlock,
    exclude: Option<&MatchBlock>,
    subject: &MatchSubject,
) -> bool {
    let matched = if !match_block.any.is_empty() {
        match_block
            .any
            .iter()
            .any(|filter| filter_matches(filter, subject, true))
    } else if !match_block.all.is_empty() {
        match_block
            .all
            .iter()
            .all(|filter| filter_matches(filter, subject, true))
    } else {
        filter_matches(&match_block.legacy, subject, true)
    };
    if !matched {
        return false;
    }
    let Some(exclude) = exclude else {
        return true;
    };
    let excluded = if !exclude.any.is_empty() {
        exclude.any.iter().any(|filter| excludes(filter, subject))
    } else if !exclude.all.is_empty() {
        exclude.all.iter().all(|filter| excludes(filter, subject))
    } else {
        excludes(&exclude.legacy, subject)
    };
    !excluded
}

fn excludes(filter: &ResourceFilter, subject: &MatchSubject) -> bool {
    if filter.resources.is_empty() && filter.user.is_empty() {
        return false;
    }
    filter_matches(filter, subject, false)
}

fn filter_matches(filter: &ResourceFilter, subject: &MatchSubject, is_match: bool) -> bool {
    // Without a known requester (background/offline checks) requester
    // criteria in match blocks are ignored, as Kyverno does.
    let ignore_user = is_match && !subject.has_requester();
    if filter.resources.is_empty() && (filter.user.is_empty() || ignore_user) {
        // An empty match block selects nothing.
        return false;
    }
    description_matches(&filter.resources, subject)
        && (ignore_user || user_matches(&filter.user, subject.user))
}

fn description_matches(description: &ResourceDescription, subject: &MatchSubject) -> bool {
    if !description.kinds.is_empty() && !kinds_match(&description.kinds, subject) {
        return false;
    }
    if !description.api_resources.is_empty()
        && !description
            .api_resources
            .iter()
            .any(|rule| api_resource_matches(rule, subject))
    {
        return false;
    }
    // The name is two map lookups in the resource; most filters name no
    // name, and this runs for every rule of every policy on each review.
    if let Some(expected) = &description.name
        && !wildcard::matches(expected, subject.name())
    {
        return false;
    }
    if !description.names.is_empty() {
        let name = subject.name();
        if !description.names.iter().any(|n| wildcard::matches(n, name)) {
            return false;
        }
    }
    if !description.namespaces.is_empty() {
        let namespace = if subject.kind == "Namespace" {
            subject.name()
        } else {
            subject.namespace()
        };
        if !description
            .namespaces
            .iter()
            .any(|n| wildcard::matches(n, namespace))
        {
            return false;
        }
    }
    if !description.annotations.is_empty()
        && !annotations_match(&description.annotations, subject.resource)
    {
        return false;
    }
    if let Some(selector) = &description.selector
        && !selector_matches(selector, &labels_of(subject.resource))
    {
        return false;
    }
    if let Some(selector) = &description.namespace_selector {
        let labels = if subject.kind == "Namespace" {
            labels_of(subject.resource)
        } else {
            subject.namespace_labels.cloned().unwrap_or_default()
        };
        if !selector_matches(selector, &labels) {
            return false;
        }
    }
    if !description.operations.is_empty()
        && !description
            .operations
            .iter()
            .any(|op| op.eq_ignore_ascii_case(subject.operation))
    {
        return false;
    }
    true
}

/// Parses a kind selector into (group, version, kind, subresource).
pub fn parse_kind_selector(selector: &str) -> (&str, &str, &str, &str) {
    let is_version = |s: &str| {
        s == "*" || {
            let rest = s.strip_prefix('v').unwrap_or("");
            let digits_end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (digits, suffix) = rest.split_at(digits_end);
            !digits.is_empty()
                && (suffix.is_empty()
                    || ["alpha", "beta"].iter().any(|stage| {
                        suffix
                            .strip_prefix(stage)
                            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                    }))
        }
    };
    // Runs for every kind of every rule on every request: split without
    // allocating. More than four parts selects nothing.
    let mut parts = [""; 4];
    let mut count = 0;
    let (head, last) = match selector.rsplit_once('/') {
        Some((head, last)) => (Some(head), last),
        None => (None, selector),
    };
    for part in head
        .into_iter()
        .flat_map(|head| head.split('/'))
        .chain(last.split('.'))
    {
        if count == parts.len() {
            return ("", "", "", "");
        }
        parts[count] = part;
        count += 1;
    }
    let lower_case = |s: &str| s.chars().all(|c| c.to_lowercase().eq(std::iter::once(c)));
    match &parts[..count] {
        [kind] => ("*", "*", kind, ""),
        ["*", "*"] => ("*", "*", "*", "*"),
        ["*", b] if lower_case(b) => ("*", "*", "*", b),
        [a, b] if is_version(a) => ("*", a, b, ""),
        [a, b] => ("*", "*", a, b),
        // `v1/Pod/status` is version/kind/subresource, but `*/*/Pod` reads
        // as group/version/kind: subresources are lower case, kinds are not.
        [a, b, c] if is_version(a) && !(is_version(b) && c.starts_with(char::is_uppercase)) => {
            ("*", a, b, c)
        }
        [a, b, c] => (a, b, c, ""),
        [a, b, c, d] => (a, b, c, d),
        _ => ("", "", "", ""),
    }
}

fn api_resource_matches(rule: &ApiResourceRule, subject: &MatchSubject) -> bool {
    let listed = |values: &[String], wanted: &str| {
        values
            .iter()
            .any(|v| v == "*" || v.eq_ignore_ascii_case(wanted))
    };
    let plural = plural_of_kind(subject.kind);
    let resource_matches = rule.resources.iter().any(|entry| {
        let (resource, subresource) = entry.split_once('/').unwrap_or((entry, ""));
        (resource == "*" || resource == plural)
            && (subresource == "*" || subresource == subject.subresource)
    });
    listed(&rule.groups, subject.group)
        && listed(&rule.versions, subject.version)
        && resource_matches
        && (rule.operations.is_empty() || listed(&rule.operations, subject.operation))
}

/// Whether a built-in kind lives outside namespaces.
pub fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "Node"
            | "PersistentVolume"
            | "StorageClass"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "ValidatingWebhookConfiguration"
            | "MutatingWebhookConfiguration"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
            | "PriorityClass"
            | "RuntimeClass"
            | "IngressClass"
            | "CSIDriver"
            | "CSINode"
            | "VolumeAttachment"
            | "APIService"
            | "ClusterPolicy"
            | "PodSecurityPolicy"
            | "FlowSchema"
            | "PriorityLevelConfiguration"
            | "CertificateSigningRequest"
    )
}

/// The API resource name of a kind (`Pod` → `pods`, `NetworkPolicy` →
/// `networkpolicies`, `Ingress` → `ingresses`), as the API server names
/// its built-in resources.
pub fn plural_of_kind(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.as_str() {
        "endpoints" | "podsecuritypolicies" => lower,
        _ if lower.ends_with('y') && !lower.ends_with("ey") => {
            format!("{}ies", &lower[..lower.len() - 1])
        }
        _ if lower.ends_with('s') || lower.ends_with("ch") || lower.ends_with('x') => {
            format!("{lower}es")
        }
        _ => format!("{lower}s"),
    }
}

fn kinds_match(kinds: &[KindSelector], subject: &MatchSubject) -> bool {
    let field = |literal: bool, pattern: &str, text: &str| {
        if literal {
            pattern == text
        } else {
            wildcard::matches(pattern, text)
        }
    };
    kinds.iter().any(|selector| {
        let [kind, group, version] = selector.literal;
        field(kind, &selector.kind, subject.kind)
            && field(group, &selector.group, subject.group)
            && field(version, &selector.version, subject.version)
            && if selector.subresource.is_empty() {
                subject.subresource.is_empty()
            } else {
                wildcard::matches(&selector.subresource, subject.subresource)
            }
    })
}

fn annotations_match(expected: &serde_json::Map<String, Value>, resource: &Value) -> bool {
    let actual = resource
        .get("metadata")
        .and_then(|metadata| metadata.get("annotations"))
        .and_then(Value::as_object);
    expected.iter().all(|(key, value)| {
        let pattern = value.as_str().unwrap_or("");
        actual.is_some_and(|annotations| {
            annotations.iter().any(|(k, v)| {
                wildcard::matches(key, k) && wildcard::matches(pattern, v.as_str().unwrap_or(""))
            })
        })
    })
}

fn labels_of(resource: &Value) -> BTreeMap<String, String> {
    resource
        .get("metadata")
        .and_then(|metadata| metadata.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Evaluates a Kubernetes label selector (with Kyverno's wildcard support in
/// `matchLabels`).
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(match_labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in match_labels {
            let expected = value.as_str().unwrap_or("");
            let found = if wildcard::contains_wildcard(key) || wildcard::contains_wildcard(expected)
            {
                labels
                    .iter()
                    .any(|(k, v)| wildcard::matches(key, k) && wildcard::matches(expected, v))
            } else {
                labels.get(key).is_some_and(|v| v == expected)
            };
            if !found {
                return false;
            }
        }
    }
    if let Some(expressions) = selector.get("matchExpressions").and_then(Value::as_array) {
        for expression in expressions {
            let key = expression.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = expression
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let actual = labels.get(key);
            let holds = match expression
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or("")
            {
                "In" => actual.is_some_and(|v| values.contains(&v.as_str())),
                "NotIn" => actual.is_none_or(|v| !values.contains(&v.as_str())),
                "Exists" => actual.is_some(),
                "DoesNotExist" => actual.is_none(),
                _ => false,
            };
            if !holds {
                return false;
            }
        }
    }
    true
}

fn user_matches(filter: &UserFilter, user: &UserInfo) -> bool {
    if !filter.roles.is_empty() && !filter.roles.iter().any(|r| user.roles.contains(r)) {
        return false;
    }
    if !filter.cluster_roles.is_empty()
        && !filter
            .cluster_roles
            .iter()
            .any(|r| user.cluster_roles.contains(r))
    {
        return false;
    }
    if !filter.subjects.is_empty() && !filter.subjects.iter().any(|s| subject_matches(s, user)) {
        return false;
    }
    true
}

fn subject_matches(subject: &Subject, user: &UserInfo) -> bool {
    match subject.kind.as_str() {
        "ServiceAccount" => {
            let namespace = subject.namespace.as_deref().unwrap_or("");
            let expected = format!("system:serviceaccount:{namespace}:{}", subject.name);
            wildcard::matches(&expected, &user.username)
        }
        "User" => wildcard::matches(&subject.name, &user.username),
        "Group" => user
            .groups
            .iter()
            .any(|g| wildcard::matches(&subject.name, g)),
        _ => false,
    }
}

/// True when `kinds` names `kind` (ignoring group/version and subresource),
/// the test autogen uses to decide whether a rule is about Pods.
pub fn contains_kind(kinds: &[String], kind: &str) -> bool {
    kinds.iter().any(|selector| {
        let parts: Vec<&str> = selector.split('/').collect();
        let is_version = |s: &str| {
            s == "*" || (s.starts_with('v') && s[1..].starts_with(|c: char| c.is_ascii_digit()))
        };
        let kind_part = match parts.as_slice() {
            [k] => (*k).to_string(),
            [a, b] if *a == "*" && *b == "*" => format!("{a}/{b}"),
            [a, b] if is_version(a) => (*b).to_string(),
            [a, b] => format!("{a}/{b}"),
            [a, b, c] if is_version(a) => format!("{b}/{c}"),
            [_, _, c] => (*c).to_string(),
            [_, _, c, d] => format!("{c}/{d}"),
            _ => String::new(),
        };
        let bare = kind_part.split('/').next().unwrap_or("");
        let bare = if kind_part.matches('/').count() == 1 {
            bare
        } else {
            kind_part.as_str()
        };
        bare == kind
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Operation;
    use serde_json::json;

    fn subject_for<'a>(resource: &'a Value, user: &'a UserInfo) -> MatchSubject<'a> {
        let api_version = resource["apiVersion"].as_str().unwrap_or("");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        MatchSubject {
            resource,
            group,
            version,
            kind: resource["kind"].as_str().unwrap_or(""),
            subresource: "",
            operation: Operation::Create.as_str(),
            user,
            namespace_labels: None,
        }
    }

    #[test]
    fn kind_selectors() {
        assert_eq!(parse_kind_selector("Pod"), ("*", "*", "Pod", ""));
        assert_eq!(parse_kind_selector("v1/Pod"), ("*", "v1", "Pod", ""));
        assert_eq!(
            parse_kind_selector("apps/v1/Deployment"),
            ("apps", "v1", "Deployment", "")
        );
        assert_eq!(
            parse_kind_selector("batch/*/CronJob"),
            ("batch", "*", "CronJob", "")
        );
        assert_eq!(
            parse_kind_selector("Pod/status"),
            ("*", "*", "Pod", "status")
        );
        assert_eq!(parse_kind_selector("*/*/Pod"), ("*", "*", "Pod", ""));
        assert_eq!(
            parse_kind_selector("apps/v1/Deployment/scale"),
            ("apps", "v1", "Deployment", "scale")
        );
        assert_eq!(parse_kind_selector("*/scale"), ("*", "*", "*", "scale"));
        // More than four parts selects nothing.
        assert_eq!(parse_kind_selector("a/b/c/d/e"), ("", "", "", ""));
        assert_eq!(parse_kind_selector("a/b/c/D.e"), ("", "", "", ""));
    }

    #[test]
    fn matches_kinds_names_namespaces() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "prod", "labels": {"app": "web"}}});
        let user = UserInfo::default();
        let subject = subject_for(&pod, &user);
        let filter = |resources: Value| ResourceFilter {
            resources: parse_description(resources),
            user: UserFilter::default(),
        };
        let block = |f: ResourceFilter| MatchBlock {
            any: vec![f],
            ..MatchBlock::default()
        };
        assert!(rule_applies(
            &block(filter(json!({"kinds": ["Pod"]}))),
            None,
            &subject
        ));
        assert!(rule_applies(
            &block(filter(json!({"kinds": ["*/*/Pod"]}))),
            None,
            &subject
        ));
        assert!(!rule_applies(
            &block(filter(json!({"kinds": ["apps/v1/Deployment"]}))),
            None,
            &subject
        ));
        // Wildcards inside a kind, and a literal that only
        // shares a prefix.
        assert!(rule_applies(
            &block(filter(json!({"kinds": ["P?d"]}))),
            None,
            &subject
        ));
        assert!(rule_applies(
            &block(filter(json!({"kinds": ["*/P*"]}))),
            None,
            &subject
        ));
        assert!(!rule_applies(
            &block(filter(json!({"kinds": ["Po"]}))),
            None,
            &subject
        ));
        assert!(!rule_applies(
            &block(filter(json!({"kinds": ["Pod/status"]}))),
            None,
            &subject
        ));
        assert!(rule_applies(
            &block(filter(json!({"kinds": ["Pod"], "names": ["web-*"]}))),
            None,
            &subject
        ));
        assert!(!rule_applies(
            &block(filter(json!({"kinds": ["Pod"], "namespaces": ["dev*"]}))),
            None,
            &subject
        ));
        assert!(rule_applies(
            &block(filter(
                json!({"kinds": ["Pod"], "selector": {"matchLabels": {"app": "w*"}}})
            )),
            None,
            &subject
        ));
        assert!(rule_applies(
            &block(filter(json!({"kinds": ["Pod"], "operations": ["CREATE"]}))),
            None,
            &subject
        ));
        let exclude = block(filter(json!({"namespaces": ["prod"]})));
        assert!(!rule_applies(
            &block(filter(json!({"kinds": ["Pod"]}))),
            Some(&exclude),
            &subject
        ));
    }

    fn parse_description(raw: Value) -> ResourceDescription {
        let rule = json!({"name": "r", "match": {"resources": raw}, "validate": {"deny": {}}});
        crate::spec::parse_rule("p", &rule)
            .unwrap()
            .match_block
            .legacy
            .resources
    }

    #[test]
    fn selectors_support_expressions() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}),
            &labels
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
            &labels
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}),
            &labels
        ));
    }

    #[test]
    fn contains_kind_follows_kyverno() {
        assert!(contains_kind(&["Pod".into()], "Pod"));
        assert!(contains_kind(&["v1/Pod".into()], "Pod"));
        assert!(!contains_kind(&["Deployment".into()], "Pod"));
    }
}
