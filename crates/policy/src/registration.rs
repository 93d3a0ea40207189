//! Which API resources a set of validate rules can match: what a webhook
//! must stay registered for when the other rules run elsewhere (in the API
//! server as admission policies), so that a resource no webhook rule can
//! match costs no webhook call.
//!
//! Conservative by construction: whatever cannot be stated exactly (a
//! wildcard kind, a filter with no kinds) needs every resource.

use std::collections::BTreeSet;

use crate::PolicySet;
use crate::matching::plural_of_kind;
use crate::spec::{ApiResourceRule, KindSelector, MatchBlock, ResourceFilter, RuleBody};
use crate::vap::KIND_GROUPS;

/// One API resource: its group (`*` for a kind named without a group that
/// is not built in) and its plural name, with `/subresource` if any.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResourceRef {
    pub group: String,
    pub resource: String,
}

/// The resources some rule can match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceNeeds {
    /// Any resource (a wildcard, or a rule whose kinds cannot be listed).
    Any,
    /// Only these.
    Only(BTreeSet<ResourceRef>),
}

impl ResourceNeeds {
    /// True when a request for `resource` (plural, with `/subresource` if
    /// any) in `group` may meet one of the rules.
    pub fn covers(&self, group: &str, resource: &str) -> bool {
        match self {
            ResourceNeeds::Any => true,
            ResourceNeeds::Only(needed) => needed.iter().any(|need| {
                (need.group == "*" || group == "*" || need.group == group)
                    && (need.resource == resource || resource == "*")
            }),
        }
    }

    fn add(&mut self, group: &str, resource: String) {
        if let ResourceNeeds::Only(needed) = self {
            needed.insert(ResourceRef {
                group: group.to_string(),
                resource,
            });
        }
    }
}

impl PolicySet {
    /// The resources the validate rules for which `evaluated(policy,
    /// rule)` holds can match (policy by display name). Mutate rules are
    /// not counted: they have their own registration.
    pub fn validate_resources(
        &self,
        mut evaluated: impl FnMut(&str, &str) -> bool,
    ) -> ResourceNeeds {
        let mut needs = ResourceNeeds::Only(BTreeSet::new());
        for policy in &self.policies {
            let name = policy.display_name();
            for rule in &policy.rules {
                if !matches!(rule.body, RuleBody::Validate(_)) || !evaluated(&name, &rule.name) {
                    continue;
                }
                add_block(&mut needs, &rule.match_block);
                if needs == ResourceNeeds::Any {
                    return needs;
                }
            }
        }
        needs
    }
}

fn add_block(needs: &mut ResourceNeeds, block: &MatchBlock) {
    let legacy_used = !block.legacy.resources.is_empty() || !block.legacy.user.is_empty();
    let filters = block
        .any
        .iter()
        .chain(&block.all)
        .chain(legacy_used.then_some(&block.legacy));
    let mut any_filter = false;
    for filter in filters {
        any_filter = true;
        add_filter(needs, filter);
    }
    if !any_filter {
        *needs = ResourceNeeds::Any;
    }
}

fn add_filter(needs: &mut ResourceNeeds, filter: &ResourceFilter) {
    let description = &filter.resources;
    if description.kinds.is_empty() && description.api_resources.is_empty() {
        *needs = ResourceNeeds::Any;
        return;
    }
    for kind in &description.kinds {
        add_kind(needs, kind);
    }
    for rule in &description.api_resources {
        add_api_resources(needs, rule);
    }
}

fn is_wildcard(text: &str) -> bool {
    text.contains('*') || text.contains('?')
}

fn add_kind(needs: &mut ResourceNeeds, kind: &KindSelector) {
    if is_wildcard(&kind.kind) || is_wildcard(&kind.subresource) {
        *needs = ResourceNeeds::Any;
        return;
    }
    let group = if kind.group.is_empty() {
        KIND_GROUPS
            .iter()
            .find(|(known, _)| *known == kind.kind)
            .map_or("*", |(_, group)| *group)
    } else if is_wildcard(&kind.group) {
        "*"
    } else {
        kind.group.as_str()
    };
    let mut resource = plural_of_kind(&kind.kind);
    if !kind.subresource.is_empty() {
        resource = format!("{resource}/{}", kind.subresource);
    }
    needs.add(group, resource);
}

fn add_api_resources(needs: &mut ResourceNeeds, rule: &ApiResourceRule) {
    for resource in &rule.resources {
        if is_wildcard(resource) {
            *needs = ResourceNeeds::Any;
            return;
        }
        for group in &rule.groups {
            let group = if is_wildcard(group) { "*" } else { group };
            needs.add(group, resource.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: pods-and-ingress}
spec:
  rules:
  - name: pod-rule
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate: {pattern: {spec: {containers: [{name: "?*"}]}}}
  - name: ingress-rule
    match: {any: [{resources: {kinds: [networking.k8s.io/v1/Ingress]}}]}
    validate: {pattern: {spec: {rules: [{host: "?*"}]}}}
---
apiVersion: policies.kyverno.io/v1alpha1
kind: ValidatingPolicy
metadata: {name: deployments-only}
spec:
  autogen: {podControllers: {controllers: []}}
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}
  validations:
  - expression: "true"
---
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: everything}
spec:
  rules:
  - name: any-kind
    match: {any: [{resources: {kinds: ["*"]}}]}
    validate: {pattern: {metadata: {name: "?*"}}}
"#;

    #[test]
    fn lists_the_resources_of_the_evaluated_rules_only() {
        let set = PolicySet::from_yaml(POLICIES, "inline").unwrap_or_else(|e| panic!("{e}"));
        let pod_rules = set.validate_resources(|policy, rule| {
            policy == "pods-and-ingress" && rule.contains("pod-rule")
        });
        // The Pod rule and its pod-controller twins.
        for (group, resource) in [
            ("", "pods"),
            ("apps", "deployments"),
            ("apps", "statefulsets"),
            ("batch", "cronjobs"),
        ] {
            assert!(
                pod_rules.covers(group, resource),
                "{group}/{resource}: {pod_rules:?}"
            );
        }
        assert!(!pod_rules.covers("", "pods/ephemeralcontainers"));
        assert!(!pod_rules.covers("", "configmaps"));

        let ingress = set.validate_resources(|_, rule| rule == "ingress-rule");
        assert!(ingress.covers("networking.k8s.io", "ingresses"));
        assert!(!ingress.covers("", "pods"));

        let deployments = set.validate_resources(|policy, _| policy == "deployments-only");
        assert!(deployments.covers("apps", "deployments"));
        assert!(!deployments.covers("apps", "statefulsets"));

        let none = set.validate_resources(|_, _| false);
        assert_eq!(none, ResourceNeeds::Only(BTreeSet::new()));
        assert!(!none.covers("", "pods"));

        assert_eq!(set.validate_resources(|_, _| true), ResourceNeeds::Any);
    }
}
