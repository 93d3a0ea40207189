//! Evaluates one mutate rule against one resource, as Kyverno does:
//! `celPreconditions`, the rule's `context` variables and `preconditions`,
//! then its mutation:
//! - `patchStrategicMerge` (see `strategic_merge`: conditional `(key)`,
//!   global `<(key)` and add-if-not-present `+(key)` anchors, `$patch:
//!   replace`/`delete` directives);
//! - `patchesJson6902` (see `json6902`), `{{ }}` variables substituted into
//!   the text before it is parsed;
//! - `foreach`: per element of a JMESPath `list`, with `element`,
//!   `elementIndex` and the nesting-specific `element<N>`/`elementIndex<N>`
//!   (N counts from 0 at the outermost level), per-element `context` and
//!   `preconditions`, nested `foreach`, and `order`.
//!
//! A rule whose mutation leaves the resource unchanged is skipped ("no
//! patches applied"), as in Kyverno. Mutating existing resources
//! (`targets`) is refused by the parser.

use serde_json::Value;

use crate::cel::CelBindings;
use crate::cluster_data::Lookups;
use crate::context::EvalContext;
use crate::engine::{conditions_hold, lookups, rule_context, rule_values, with_rule_values};
use crate::jmespath::Node;
use crate::spec::{ForeachMutation, ForeachOrder, Mutation, Rule};
use crate::strategic_merge;
use crate::variables;
use crate::{EvalInput, Policy};
use crate::{json6902, strategic_merge::NotApplied};

/// What one mutate rule did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MutateVerdict {
    /// The rule changed the resource; this is the result.
    Patched(Value),
    /// The rule did not apply or changed nothing; why.
    Skipped(String),
    /// The rule could not be evaluated; the resource is left as it was.
    Failed(String),
}

/// Evaluates `rule` (whose body is `mutation`) against `input.resource`,
/// the resource as earlier rules left it: `request.object` reads it too.
pub(crate) fn mutate_rule(
    policy: &Policy,
    rule: &Rule,
    mutation: &Mutation,
    input: &EvalInput<'_>,
) -> MutateVerdict {
    if !rule.cel_preconditions.is_empty() {
        match crate::cel::preconditions_hold(
            &rule.cel_preconditions,
            &CelBindings::for_input(input),
        ) {
            Ok(true) => {}
            Ok(false) => return MutateVerdict::Skipped("cel preconditions not met".to_string()),
            Err(e) => {
                return MutateVerdict::Failed(format!("failed to evaluate cel preconditions: {e}"));
            }
        }
    }
    let lookups = lookups(input, policy, rule);
    let base = EvalContext::for_input(input);
    let base = with_rule_values(&base, rule_values(input, rule));
    let ctx = match rule_context(&base, &rule.context, &lookups) {
        Ok(ctx) => ctx,
        Err(e) => return MutateVerdict::Failed(format!("failed to load context: {e}")),
    };
    if let Some(preconditions) = &rule.preconditions {
        match conditions_hold(preconditions, &ctx) {
            Ok(true) => {}
            Ok(false) => return MutateVerdict::Skipped("preconditions not met".to_string()),
            Err(e) => {
                return MutateVerdict::Failed(format!("failed to evaluate preconditions: {e}"));
            }
        }
    }
    match apply_mutation(mutation, &ctx, &lookups, input.resource, 0) {
        Ok(Some(patched)) => MutateVerdict::Patched(patched),
        Ok(None) => MutateVerdict::Skipped("no patches applied".to_string()),
        Err(reason) => MutateVerdict::Failed(reason),
    }
}

/// Applies one mutation to `resource`: `Ok(None)` when nothing changed.
/// `nesting` is the foreach depth the mutation sits at.
fn apply_mutation(
    mutation: &Mutation,
    ctx: &EvalContext,
    lookups: &Lookups,
    resource: &Value,
    nesting: usize,
) -> Result<Option<Value>, String> {
    let patched = match mutation {
        Mutation::StrategicMerge(template) => {
            let patch = variables::substitute_cow(template, ctx)
                .map_err(|e| format!("variable substitution failed: {e}"))?;
            match strategic_merge::apply_patch(resource, &patch) {
                Ok(patched) => patched,
                // A global anchor that does not hold discards the patch.
                Err(NotApplied::Global | NotApplied::Condition) => return Ok(None),
            }
        }
        Mutation::Json6902(text) => {
            let operations = match variables::substitute_string(text, ctx, &[])
                .map_err(|e| format!("variable substitution failed: {e}"))?
            {
                Value::String(substituted) => json6902::parse(&substituted),
                // The whole text was one variable holding the operations.
                other => json6902::operations(other),
            }
            .map_err(|e| format!("failed to parse patchesJson6902: {e}"))?;
            json6902::apply(resource, &operations)
                .map_err(|e| format!("failed to apply patchesJson6902: {e}"))?
        }
        Mutation::Foreach(entries) => {
            return apply_foreach(entries, ctx, lookups, resource, nesting);
        }
    };
    Ok((patched != *resource).then_some(patched))
}

/// Runs the foreach entries in turn; each sees the resource (and
/// `request.object`) as the entries before it left it. `Ok(None)` when no
/// entry changed anything.
fn apply_foreach(
    entries: &[ForeachMutation],
    ctx: &EvalContext,
    lookups: &Lookups,
    resource: &Value,
    nesting: usize,
) -> Result<Option<Value>, String> {
    let mut ctx = ctx.clone();
    let mut current: Option<Value> = None;
    for entry in entries {
        // A missing list is `null`, a single element with nothing to
        // mutate; only an expression that cannot run is an error.
        let list = ctx
            .query_node(&entry.list)
            .map_err(|e| format!("failed to evaluate list {}: {e}", entry.list))?;
        let elements = list.items().unwrap_or_else(|| vec![list]);
        let before = current.as_ref().unwrap_or(resource);
        if let Some(patched) = mutate_elements(entry, &ctx, lookups, &elements, before, nesting)? {
            ctx.set_path("request.object", patched.clone());
            current = Some(patched);
        }
    }
    Ok(current)
}

/// Kyverno walks a list backwards by default when each element is merged
/// with `patchStrategicMerge`, forwards otherwise (a JSON patch's indices
/// are written for the list as it is); `order` overrides both.
fn walks_descending(entry: &ForeachMutation) -> bool {
    match entry.order {
        Some(ForeachOrder::Descending) => true,
        Some(ForeachOrder::Ascending) => false,
        None => matches!(entry.mutation, Mutation::StrategicMerge(_)),
    }
}

/// Applies one foreach entry's mutation per element, cumulatively.
fn mutate_elements(
    entry: &ForeachMutation,
    ctx: &EvalContext,
    lookups: &Lookups,
    elements: &[Node<'_>],
    resource: &Value,
    nesting: usize,
) -> Result<Option<Value>, String> {
    let mut indices: Vec<usize> = (0..elements.len()).collect();
    if walks_descending(entry) {
        indices.reverse();
    }
    let mut current = resource.clone();
    for index in indices {
        let element = &elements[index];
        if element.is_null() {
            continue;
        }
        // `elementIndex` stays the element's position in the list
        // whichever way the list is walked.
        let element_ctx = ctx.with_element_node(element.clone(), index, nesting);
        let element_ctx = rule_context(&element_ctx, &entry.context, lookups)
            .map_err(|e| format!("failed to load mutate.foreach[{index}].context: {e}"))?;
        if let Some(preconditions) = &entry.preconditions {
            let holds = conditions_hold(preconditions, &element_ctx).map_err(|e| {
                format!("failed to evaluate mutate.foreach[{index}].preconditions: {e}")
            })?;
            if !holds {
                continue;
            }
        }
        if let Some(patched) = apply_mutation(
            &entry.mutation,
            &element_ctx,
            lookups,
            &current,
            nesting + 1,
        )? {
            current = patched;
        }
    }
    Ok((current != *resource).then_some(current))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::{EvalInput, MutationOutcome, PolicyError, PolicySet, RuleStatus};

    /// A ClusterPolicy named `p` (no autogen) with `rules` as its rule list.
    fn policy(rules: &str) -> PolicySet {
        let yaml = format!(
            "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata:\n  name: p\n  annotations:\n    pod-policies.kyverno.io/autogen-controllers: none\nspec:\n  rules:\n{rules}"
        );
        PolicySet::from_yaml(&yaml, "test").unwrap()
    }

    const MATCH_POD: &str = "    match:\n      any:\n      - resources:\n          kinds: [Pod]\n";

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "app", "image": "nginx:latest"},
                {"name": "sidecar", "image": "envoy:1.0"}]}})
    }

    fn run(set: &PolicySet, resource: &Value) -> MutationOutcome {
        set.mutate_resource(&EvalInput::for_resource(resource))
    }

    fn rule(name: &str, body: &str) -> String {
        format!("  - name: {name}\n{MATCH_POD}{body}")
    }

    #[test]
    fn json_patch_substitutes_variables_and_reports_pass() {
        let set = policy(&rule(
            "label",
            "    mutate:\n      patchesJson6902: |-\n        - op: add\n          path: /metadata/labels/owner\n          value: \"team-{{ request.object.metadata.name }}\"\n        - op: add\n          path: /spec/tolerations/-\n          value: {key: dedicated, operator: Exists}\n",
        ));
        let outcome = run(&set, &pod());
        assert_eq!(outcome.rules.len(), 1);
        assert_eq!(outcome.rules[0].status, RuleStatus::Pass);
        assert_eq!(
            outcome.rules[0].message,
            "mutated Pod/web in namespace prod"
        );
        assert_eq!(
            outcome.resource["metadata"]["labels"]["owner"],
            json!("team-web")
        );
        assert_eq!(
            outcome.resource["spec"]["tolerations"],
            json!([{"key": "dedicated", "operator": "Exists"}])
        );
        let ops = set.mutate(&EvalInput::for_resource(&pod())).unwrap();
        assert_eq!(ops.len(), 2, "{ops:?}");
    }

    #[test]
    fn json_patch_to_a_missing_path_is_an_error_and_changes_nothing() {
        let set = policy(&rule(
            "replace-node",
            "    mutate:\n      patchesJson6902: |-\n        - op: replace\n          path: /spec/nodeName\n          value: n1\n",
        ));
        let outcome = run(&set, &pod());
        assert_eq!(outcome.rules[0].status, RuleStatus::Error);
        assert!(
            outcome.rules[0]
                .message
                .contains("failed to apply patchesJson6902"),
            "{}",
            outcome.rules[0].message
        );
        assert_eq!(outcome.resource, pod());
        match set.mutate(&EvalInput::for_resource(&pod())) {
            Err(PolicyError::Mutation { policy, rule, .. }) => {
                assert_eq!((policy.as_str(), rule.as_str()), ("p", "replace-node"));
            }
            other => panic!("expected a mutation error, got {other:?}"),
        }
    }

    #[test]
    fn json_patch_removing_a_missing_path_is_skipped() {
        let set = policy(&rule(
            "drop",
            "    mutate:\n      patchesJson6902: |-\n        - op: remove\n          path: /metadata/annotations/debug\n",
        ));
        let outcome = run(&set, &pod());
        assert_eq!(outcome.rules[0].status, RuleStatus::Skip);
        assert_eq!(outcome.rules[0].message, "no patches applied");
    }

    #[test]
    fn foreach_strategic_merge_patches_each_element() {
        let set = policy(&rule(
            "pull-always",
            "    mutate:\n      foreach:\n      - list: request.object.spec.containers\n        preconditions:\n          all:\n          - key: \"{{ element.image }}\"\n            operator: Equals\n            value: \"*:latest\"\n        patchStrategicMerge:\n          spec:\n            containers:\n            - name: \"{{ element.name }}\"\n              imagePullPolicy: Always\n",
        ));
        let outcome = run(&set, &pod());
        assert_eq!(outcome.rules[0].status, RuleStatus::Pass);
        let containers = &outcome.resource["spec"]["containers"];
        assert_eq!(containers[0]["imagePullPolicy"], json!("Always"));
        // The precondition skipped the pinned image.
        assert!(containers[1].get("imagePullPolicy").is_none());
        assert_eq!(containers.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn foreach_json_patch_uses_element_index() {
        let set = policy(&rule(
            "index",
            "    mutate:\n      foreach:\n      - list: request.object.spec.containers\n        patchesJson6902: |-\n          - op: add\n            path: /spec/containers/{{ elementIndex }}/env\n            value: [{name: POSITION, value: \"{{ elementIndex }}\"}]\n",
        ));
        let outcome = run(&set, &pod());
        let containers = &outcome.resource["spec"]["containers"];
        assert_eq!(containers[0]["env"][0]["value"], json!("0"));
        assert_eq!(containers[1]["env"][0]["value"], json!("1"));
    }

    #[test]
    fn foreach_order_defaults_depend_on_the_patch_and_can_be_set() {
        // Each element overwrites one annotation: the last element walked wins.
        let merge = "        patchStrategicMerge:\n          metadata:\n            annotations:\n              last: \"{{ element.name }}\"\n";
        let json = "        patchesJson6902: |-\n          - op: add\n            path: /metadata/annotations\n            value: {last: \"{{ element.name }}\"}\n";
        let last = |patch: &str, order: &str| {
            let set = policy(&rule(
                "order",
                &format!(
                    "    mutate:\n      foreach:\n      - list: request.object.spec.containers\n{order}{patch}"
                ),
            ));
            run(&set, &pod()).resource["metadata"]["annotations"]["last"].clone()
        };
        assert_eq!(last(merge, ""), json!("app"), "merge walks backwards");
        assert_eq!(
            last(json, ""),
            json!("sidecar"),
            "JSON patch walks forwards"
        );
        assert_eq!(last(merge, "        order: Ascending\n"), json!("sidecar"));
        assert_eq!(last(json, "        order: Descending\n"), json!("app"));
    }

    #[test]
    fn foreach_over_a_missing_list_is_skipped() {
        let set = policy(&rule(
            "init",
            "    mutate:\n      foreach:\n      - list: request.object.spec.initContainers\n        patchStrategicMerge:\n          spec:\n            initContainers:\n            - name: \"{{ element.name }}\"\n              imagePullPolicy: Always\n",
        ));
        let outcome = run(&set, &pod());
        assert_eq!(outcome.rules[0].status, RuleStatus::Skip);
        assert_eq!(outcome.resource, pod());
    }

    #[test]
    fn nested_foreach_sees_both_levels() {
        let mut resource = pod();
        resource["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80}, {"containerPort": 443}]);
        resource["spec"]["containers"][1]["ports"] = json!([{"containerPort": 9901}]);
        let set = policy(&rule(
            "port-names",
            "    mutate:\n      foreach:\n      - list: request.object.spec.containers\n        foreach:\n        - list: element.ports\n          patchesJson6902: |-\n            - op: add\n              path: /spec/containers/{{ elementIndex0 }}/ports/{{ elementIndex1 }}/name\n              value: \"{{ element0.name }}-{{ element1.containerPort }}\"\n",
        ));
        let outcome = run(&set, &resource);
        assert_eq!(outcome.rules[0].status, RuleStatus::Pass);
        let containers = &outcome.resource["spec"]["containers"];
        assert_eq!(containers[0]["ports"][1]["name"], json!("app-443"));
        assert_eq!(containers[1]["ports"][0]["name"], json!("sidecar-9901"));
    }

    #[test]
    fn rule_preconditions_skip_and_later_rules_see_earlier_patches() {
        let set = policy(&format!(
            "{}{}",
            rule(
                "team",
                "    mutate:\n      patchStrategicMerge:\n        metadata:\n          labels:\n            +(team): core\n",
            ),
            rule(
                "copy-team",
                "    preconditions:\n      all:\n      - key: \"{{ request.object.metadata.labels.team || '' }}\"\n        operator: NotEquals\n        value: \"\"\n    mutate:\n      patchStrategicMerge:\n        metadata:\n          annotations:\n            team: \"{{ request.object.metadata.labels.team }}\"\n",
            )
        ));
        let outcome = run(&set, &pod());
        let statuses: Vec<RuleStatus> = outcome.rules.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [RuleStatus::Pass, RuleStatus::Pass]);
        assert_eq!(
            outcome.resource["metadata"]["annotations"]["team"],
            json!("core")
        );

        let only_copy = policy(&rule(
            "copy-team",
            "    preconditions:\n      all:\n      - key: \"{{ request.object.metadata.labels.team || '' }}\"\n        operator: NotEquals\n        value: \"\"\n    mutate:\n      patchStrategicMerge:\n        metadata:\n          annotations:\n            team: x\n",
        ));
        let outcome = run(&only_copy, &pod());
        assert_eq!(outcome.rules[0].status, RuleStatus::Skip);
        assert_eq!(outcome.rules[0].message, "preconditions not met");
    }

    #[test]
    fn global_anchor_that_does_not_hold_skips_the_rule() {
        let set = policy(&rule(
            "latest-only",
            "    mutate:\n      patchStrategicMerge:\n        spec:\n          containers:\n          - (name): \"*\"\n            <(image): \"*:latest\"\n        metadata:\n          labels:\n            uses-latest: \"true\"\n",
        ));
        let outcome = run(&set, &pod());
        assert_eq!(outcome.rules[0].status, RuleStatus::Pass);
        assert_eq!(
            outcome.resource["metadata"]["labels"]["uses-latest"],
            json!("true")
        );
        let mut pinned = pod();
        pinned["spec"]["containers"][0]["image"] = json!("nginx:1.25");
        let outcome = run(&set, &pinned);
        assert_eq!(outcome.rules[0].status, RuleStatus::Skip);
        assert_eq!(outcome.resource, pinned);
    }

    #[test]
    fn a_patch_that_changes_nothing_is_skipped() {
        let set = policy(&rule(
            "already",
            "    mutate:\n      patchStrategicMerge:\n        metadata:\n          labels:\n            app: web\n",
        ));
        assert_eq!(run(&set, &pod()).rules[0].status, RuleStatus::Skip);
        assert!(
            set.mutate(&EvalInput::for_resource(&pod()))
                .unwrap()
                .is_empty()
        );
    }
}
