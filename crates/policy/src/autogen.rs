//! Auto-generated rules for pod controllers, following Kyverno: a rule that
//! matches Pods (with no name/selector/annotation restrictions) gets an
//! `autogen-<rule>` twin for Deployment, DaemonSet, Job, StatefulSet,
//! ReplicaSet and ReplicationController (patterns under `spec.template`) and
//! an `autogen-cronjob-<rule>` twin for CronJob (under
//! `spec.jobTemplate.spec.template`). The
//! `pod-policies.kyverno.io/autogen-controllers` annotation narrows the
//! controllers or disables generation (`none`).

use serde_json::{Map, Value, json};

use crate::matching::contains_kind;

/// The annotation that selects the controllers to generate rules for.
pub const AUTOGEN_ANNOTATION: &str = "pod-policies.kyverno.io/autogen-controllers";

const POD_CONTROLLERS: [&str; 6] = [
    "DaemonSet",
    "Deployment",
    "Job",
    "StatefulSet",
    "ReplicaSet",
    "ReplicationController",
];
const CRONJOB: &str = "CronJob";

/// Returns the generated rules (raw JSON) for a policy's raw rules.
pub fn generate_rules(raw_rules: &[Value], annotations: &Map<String, Value>) -> Vec<Value> {
    if !can_autogen(raw_rules) {
        return Vec::new();
    }
    let controllers: Vec<String> = match annotations.get(AUTOGEN_ANNOTATION).and_then(Value::as_str)
    {
        Some(list) => list.split(',').map(|c| c.trim().to_string()).collect(),
        None => POD_CONTROLLERS
            .iter()
            .chain(std::iter::once(&CRONJOB))
            .map(|c| (*c).to_string())
            .collect(),
    };
    if controllers.iter().any(|c| c == "none") {
        return Vec::new();
    }
    let mut non_cronjob: Vec<String> = controllers
        .iter()
        .filter(|c| POD_CONTROLLERS.contains(&c.as_str()))
        .cloned()
        .collect();
    non_cronjob.sort();
    let wants_cronjob = controllers.iter().any(|c| c == CRONJOB || c == "all");
    let all_controllers = controllers.iter().any(|c| c == "all");
    if all_controllers {
        non_cronjob = POD_CONTROLLERS.iter().map(|c| (*c).to_string()).collect();
        non_cronjob.sort();
    }

    let mut generated = Vec::new();
    for rule in raw_rules {
        if rule_name(rule).starts_with("autogen-") || !is_pod_rule(rule) {
            continue;
        }
        if !non_cronjob.is_empty()
            && let Some(controller_rule) = derive_rule(
                rule,
                &format!("autogen-{}", rule_name(rule)),
                "template",
                &non_cronjob,
                true,
            )
        {
            generated.push(rewrite_request_paths(controller_rule, PodPaths::Template));
        }
        if wants_cronjob {
            // The CronJob twin is derived from the controller twin, so the
            // pattern ends up under spec.jobTemplate.spec.template.
            let kinds_for_base = if non_cronjob.is_empty() {
                vec![CRONJOB.to_string()]
            } else {
                non_cronjob.clone()
            };
            let base = derive_rule(rule, rule_name(rule), "template", &kinds_for_base, true);
            if let Some(base) = base {
                let name = format!("autogen-cronjob-{}", rule_name(rule));
                if let Some(cron_rule) =
                    derive_rule(&base, &name, "jobTemplate", &[CRONJOB.to_string()], false)
                {
                    generated.push(rewrite_request_paths(cron_rule, PodPaths::JobTemplate));
                }
            }
        }
    }
    generated
}

fn rule_name(rule: &Value) -> &str {
    rule.get("name").and_then(Value::as_str).unwrap_or("")
}

/// Kyverno refuses autogen for the whole policy when any rule restricts by
/// name, selector or annotations, mixes Pod with other kinds, generates, or
/// patches with `patchesJson6902` (its paths are written for a Pod and
/// cannot be moved under a pod template).
fn can_autogen(raw_rules: &[Value]) -> bool {
    let mut needed = false;
    for rule in raw_rules {
        if rule.get("generate").is_some() || has_json_patch(rule.get("mutate")) {
            return false;
        }
        for block_name in ["match", "exclude"] {
            let Some(block) = rule.get(block_name) else {
                continue;
            };
            for description in resource_descriptions(block) {
                if !description_allows_autogen(description, &mut needed) {
                    return false;
                }
            }
        }
    }
    needed
}

fn resource_descriptions(block: &Value) -> Vec<&Value> {
    let mut descriptions = Vec::new();
    if let Some(resources) = block.get("resources") {
        descriptions.push(resources);
    }
    for key in ["any", "all"] {
        if let Some(Value::Array(filters)) = block.get(key) {
            descriptions.extend(filters.iter().filter_map(|f| f.get("resources")));
        }
    }
    descriptions
}

fn kinds_of(description: &Value) -> Vec<String> {
    description
        .get("kinds")
        .and_then(Value::as_array)
        .map(|kinds| {
            kinds
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn description_allows_autogen(description: &Value, needed: &mut bool) -> bool {
    let non_empty = |key: &str| match description.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    let kinds = kinds_of(description);
    let mixes_pod = kinds.len() > 1 && contains_kind(&kinds, "Pod");
    if non_empty("name")
        || non_empty("names")
        || description.get("selector").is_some()
        || description.get("annotations").is_some()
        || mixes_pod
    {
        return false;
    }
    let interesting =
        |k: &String| k == "Pod" || POD_CONTROLLERS.contains(&k.as_str()) || k == CRONJOB;
    *needed = *needed || kinds.iter().any(interesting);
    true
}

fn all_kinds(block: Option<&Value>) -> Vec<String> {
    block
        .map(|b| {
            resource_descriptions(b)
                .into_iter()
                .flat_map(kinds_of)
                .collect()
        })
        .unwrap_or_default()
}

fn is_pod_rule(rule: &Value) -> bool {
    let match_kinds = all_kinds(rule.get("match"));
    let exclude_kinds = all_kinds(rule.get("exclude"));
    contains_kind(&match_kinds, "Pod")
        && (exclude_kinds.is_empty() || contains_kind(&exclude_kinds, "Pod"))
}

/// Copies `rule` under a new name, retargeting its kinds and wrapping its
/// pattern(s) under `spec.<template_key>`. `only_pod_filters` limits kind
/// replacement in any/all blocks to filters that name Pod.
fn derive_rule(
    rule: &Value,
    name: &str,
    template_key: &str,
    kinds: &[String],
    only_pod_filters: bool,
) -> Option<Value> {
    let mut out = rule.as_object()?.clone();
    out.insert("name".into(), Value::from(truncate_name(name)));
    for block_name in ["match", "exclude"] {
        let Some(Value::Object(block)) = out.get_mut(block_name) else {
            continue;
        };
        retarget_kinds(block, kinds, only_pod_filters, block_name == "exclude");
    }
    let wrap = |pattern: &Value| json!({"spec": {template_key: pattern}});
    if let Some(Value::Object(mutate)) = out.get_mut("mutate") {
        if let Some(patch) = mutate.get("patchStrategicMerge").cloned() {
            mutate.insert("patchStrategicMerge".into(), wrap(&patch));
            return Some(Value::Object(out));
        }
        if let Some(Value::Array(entries)) = mutate.get_mut("foreach") {
            wrap_foreach_merges(entries, template_key);
            return Some(Value::Object(out));
        }
        return None;
    }
    let Some(Value::Object(validate)) = out.get_mut("validate") else {
        return None;
    };
    if let Some(pattern) = validate.get("pattern").cloned() {
        validate.insert("pattern".into(), wrap(&pattern));
    } else if let Some(Value::Array(patterns)) = validate.get("anyPattern").cloned() {
        validate.insert(
            "anyPattern".into(),
            Value::Array(patterns.iter().map(wrap).collect()),
        );
    } else if let Some(cel) = validate.get_mut("cel") {
        let prefix = if template_key == "template" {
            "spec.template"
        } else {
            "spec.jobTemplate.spec.template"
        };
        rewrite_cel_expressions(cel, prefix);
        if let Some(preconditions) = out.get_mut("celPreconditions") {
            rewrite_cel_expressions(preconditions, prefix);
        }
    } else if !(validate.contains_key("deny")
        || validate.contains_key("podSecurity")
        || validate.contains_key("foreach"))
    {
        return None;
    }
    Some(Value::Object(out))
}

/// True when a `mutate` block, or any of its `foreach` levels, has a
/// `patchesJson6902`.
fn has_json_patch(mutate: Option<&Value>) -> bool {
    let Some(mutate) = mutate else {
        return false;
    };
    mutate.get("patchesJson6902").is_some()
        || mutate
            .get("foreach")
            .and_then(Value::as_array)
            .is_some_and(|entries| entries.iter().any(|entry| has_json_patch(Some(entry))))
}

/// A foreach merge patches the whole resource, so each level's
/// `patchStrategicMerge` moves under the pod template like a rule's. Its
/// `list` is moved by the request-path rewrite.
fn wrap_foreach_merges(entries: &mut [Value], template_key: &str) {
    for entry in entries {
        let Some(map) = entry.as_object_mut() else {
            continue;
        };
        if let Some(patch) = map.get("patchStrategicMerge").cloned() {
            map.insert(
                "patchStrategicMerge".into(),
                json!({"spec": {template_key: patch}}),
            );
        }
        if let Some(Value::Array(nested)) = map.get_mut("foreach") {
            wrap_foreach_merges(nested, template_key);
        }
    }
}

/// Moves the pod paths of every `expression`/`messageExpression` under
/// the controller's pod template. The CronJob twin is derived from the
/// controller twin, whose expressions already point at `spec.template`, so
/// only un-rewritten paths are rewritten.
fn rewrite_cel_expressions(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            for (key, entry) in map.iter_mut() {
                match (key.as_str(), &*entry) {
                    ("expression" | "messageExpression", Value::String(source)) => {
                        let source = source
                            .replace("oldObject.spec.template.", "oldObject.")
                            .replace("object.spec.template.", "object.");
                        *entry = Value::String(crate::cel::rewrite_for_controller(&source, prefix));
                    }
                    _ => rewrite_cel_expressions(entry, prefix),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_cel_expressions(item, prefix)),
        _ => {}
    }
}

fn retarget_kinds(
    block: &mut Map<String, Value>,
    kinds: &[String],
    only_pod_filters: bool,
    is_exclude: bool,
) {
    let new_kinds = Value::from(kinds.to_vec());
    for key in ["any", "all"] {
        let Some(Value::Array(filters)) = block.get_mut(key) else {
            continue;
        };
        if filters.is_empty() {
            continue;
        }
        for filter in filters.iter_mut() {
            let Some(Value::Object(resources)) = filter.get_mut("resources") else {
                continue;
            };
            let names_pod = contains_kind(&kinds_of(&Value::Object(resources.clone())), "Pod");
            if !only_pod_filters || names_pod {
                resources.insert("kinds".into(), new_kinds.clone());
            }
        }
        return;
    }
    if let Some(Value::Object(resources)) = block.get_mut("resources") {
        let has_kinds = resources
            .get("kinds")
            .and_then(Value::as_array)
            .is_some_and(|k| !k.is_empty());
        if !is_exclude || has_kinds {
            resources.insert("kinds".into(), new_kinds);
        }
    } else if !is_exclude {
        block.insert("resources".into(), json!({"kinds": kinds}));
    }
}

fn truncate_name(name: &str) -> String {
    name.chars().take(63).collect()
}

#[derive(Clone, Copy)]
enum PodPaths {
    Template,
    JobTemplate,
}

/// Rewrites `request.object.spec`/`metadata` references to the pod template,
/// the textual replacement Kyverno applies to generated rules.
fn rewrite_request_paths(rule: Value, paths: PodPaths) -> Value {
    let prefix = match paths {
        PodPaths::Template => "spec.template",
        PodPaths::JobTemplate => "spec.jobTemplate.spec.template",
    };
    let Ok(mut text) = serde_json::to_string(&rule) else {
        return rule;
    };
    for object in ["request.object", "request.oldObject"] {
        for field in ["spec", "metadata"] {
            let from = format!("{object}.{field}");
            let to = format!("{object}.{prefix}.{field}");
            text = text.replace(&from, &to);
        }
    }
    serde_json::from_str(&text).unwrap_or(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_rule() -> Value {
        json!({"name": "check", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
               "validate": {"message": "m", "pattern": {"spec": {"containers": [{"image": "*:*"}]}}}})
    }

    #[test]
    fn generates_controller_and_cronjob_rules() {
        let rules = generate_rules(&[pod_rule()], &Map::new());
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["name"], json!("autogen-check"));
        assert_eq!(
            rules[0]["match"]["any"][0]["resources"]["kinds"],
            json!([
                "DaemonSet",
                "Deployment",
                "Job",
                "ReplicaSet",
                "ReplicationController",
                "StatefulSet"
            ])
        );
        assert_eq!(
            rules[0]["validate"]["pattern"]["spec"]["template"]["spec"]["containers"][0]["image"],
            json!("*:*")
        );
        assert_eq!(rules[1]["name"], json!("autogen-cronjob-check"));
        assert_eq!(
            rules[1]["match"]["any"][0]["resources"]["kinds"],
            json!(["CronJob"])
        );
        assert_eq!(
            rules[1]["validate"]["pattern"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
                [0]["image"],
            json!("*:*")
        );
    }

    #[test]
    fn rewrites_request_paths_for_foreach_and_deny() {
        let rule = json!({"name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
            "validate": {"foreach": [{"list": "request.object.spec.containers", "deny": {}}]}});
        let rules = generate_rules(&[rule], &Map::new());
        assert_eq!(
            rules[0]["validate"]["foreach"][0]["list"],
            json!("request.object.spec.template.spec.containers")
        );
        assert_eq!(
            rules[1]["validate"]["foreach"][0]["list"],
            json!("request.object.spec.jobTemplate.spec.template.spec.containers")
        );
    }

    #[test]
    fn foreach_merges_move_under_the_template_and_json_patches_disable_autogen() {
        let rule = json!({"name": "pull", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
            "mutate": {"foreach": [{"list": "request.object.spec.containers",
                "patchStrategicMerge": {"spec": {"containers": [{"name": "{{ element.name }}", "imagePullPolicy": "Always"}]}}}]}});
        let generated = generate_rules(std::slice::from_ref(&rule), &Map::new());
        assert_eq!(generated.len(), 2);
        let foreach = &generated[0]["mutate"]["foreach"][0];
        assert_eq!(
            foreach["list"],
            json!("request.object.spec.template.spec.containers")
        );
        assert_eq!(
            foreach["patchStrategicMerge"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            json!("Always")
        );
        let cron = &generated[1]["mutate"]["foreach"][0];
        assert!(
            cron["patchStrategicMerge"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                .is_object()
        );

        let mut json_patch = rule.clone();
        json_patch["mutate"]["foreach"][0] = json!({"list": "request.object.spec.containers",
            "patchesJson6902": "- op: add\n  path: /metadata/labels/a\n  value: b\n"});
        assert!(generate_rules(&[rule.clone(), json_patch], &Map::new()).is_empty());
        let top_level = json!({"name": "label", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
            "mutate": {"patchesJson6902": "[]"}});
        assert!(generate_rules(&[rule, top_level], &Map::new()).is_empty());
    }

    #[test]
    fn annotation_limits_or_disables_controllers() {
        let mut annotations = Map::new();
        annotations.insert(AUTOGEN_ANNOTATION.into(), json!("Deployment,StatefulSet"));
        let rules = generate_rules(&[pod_rule()], &annotations);
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0]["match"]["any"][0]["resources"]["kinds"],
            json!(["Deployment", "StatefulSet"])
        );
        annotations.insert(AUTOGEN_ANNOTATION.into(), json!("none"));
        assert!(generate_rules(&[pod_rule()], &annotations).is_empty());
        annotations.insert(AUTOGEN_ANNOTATION.into(), json!("CronJob"));
        let rules = generate_rules(&[pod_rule()], &annotations);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["name"], json!("autogen-cronjob-check"));
    }

    #[test]
    fn skips_rules_with_name_restrictions_or_other_kinds() {
        let mut named = pod_rule();
        named["match"]["any"][0]["resources"]["names"] = json!(["web"]);
        assert!(generate_rules(&[named], &Map::new()).is_empty());
        let mut mixed = pod_rule();
        mixed["match"]["any"][0]["resources"]["kinds"] = json!(["Pod", "Service"]);
        assert!(generate_rules(&[mixed], &Map::new()).is_empty());
        let mut service = pod_rule();
        service["match"]["any"][0]["resources"]["kinds"] = json!(["Service"]);
        assert!(generate_rules(&[service], &Map::new()).is_empty());
    }
}
