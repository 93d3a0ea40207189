//! The per-incident JSON Schema of the model's answer, and the client-side
//! check of every answer against it.
//!
//! Small models echo the broken value back; given a closed list of values
//! known to work they pick from it. So the schema is built per incident
//! from cluster facts:
//!
//! - `container` is an `enum` of the workload's containers;
//! - `image` is an `enum` of verified candidates (same repository, or a
//!   near-miss spelling of it, running elsewhere in the cluster or healthy
//!   in the rollout history) whenever there are any, else a tagged
//!   reference pattern;
//! - memory is a whole number of MiB between documented bounds (above the
//!   current limit for an OOM kill, at most the operator's memory cap);
//! - env names are an `enum` of the names the template already has;
//! - only the fields the findings' change classes allow appear at all.
//!
//! The answer is a compact "fix" object, never a patch: it has no place for
//! a target, namespace, kind, metadata or any other pod field. Every object
//! is closed (`additionalProperties: false`) and every property required
//! (optional values are nullable), as OpenAI's strict mode demands.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use aiops_policy::images::ImageReference;
use regex::Regex;
use serde_json::{Value, json};

use crate::k8s::quantity::parse_memory;
use crate::remediation::crd::{Evidence, Finding};
use crate::remediation::guardrails::{ChangeClass, allowed_changes};

/// The schema's name in OpenAI's `json_schema.name`.
pub const SCHEMA_NAME: &str = "remediation_fix";
/// Finding reasons that say an image cannot be pulled.
const PULL_FAILURES: [&str; 3] = ["ImagePullBackOff", "ErrImagePull", "InvalidImageName"];
/// The smallest memory value the model may write, in MiB.
pub const MIN_MEMORY_MIB: u64 = 16;

/// The confidences a model may answer.
const CONFIDENCE_TENTHS: [f64; 11] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
const MIB: u64 = 1024 * 1024;
const MAX_CANDIDATES: usize = 8;
const MAX_ENV_NAMES: usize = 32;
const MAX_ENV_CHANGES: usize = 8;
const MAX_STRING: usize = 256;
/// Characters of the model's explanation, when it gives one.
const MAX_ROOT_CAUSE: usize = 240;

/// A container image reference with a tag and/or digest.
const IMAGE_PATTERN: &str =
    r"^[a-z0-9][a-z0-9._/:-]{0,127}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$";
static IMAGE_REFERENCE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(IMAGE_PATTERN).ok());
static ENV_NAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$").ok());

/// What the cluster says about one container of the workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerFacts {
    pub name: String,
    pub init: bool,
    pub image: String,
    /// Bytes, when the template sets one.
    pub memory_limit: Option<u64>,
    pub memory_request: Option<u64>,
    /// The reasons of its findings (empty for a healthy container).
    pub reasons: Vec<String>,
}

/// Inclusive bounds on memory values, in MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBounds {
    pub min_mib: u64,
    pub max_mib: u64,
}

/// The facts the schema and the prompt are built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentFacts {
    pub containers: Vec<ContainerFacts>,
    /// Change classes the findings allow and the fix object can express.
    pub classes: BTreeSet<ChangeClass>,
    /// Container → verified candidate images (never its current image).
    pub image_candidates: BTreeMap<String, Vec<String>>,
    /// Env names the template already has.
    pub env_names: Vec<String>,
    /// Present when memory may change.
    pub memory: Option<MemoryBounds>,
    /// The limits, in MiB, a model chooses from ([`memory_choices`]); when
    /// empty, any value within `memory`.
    pub memory_choices: Vec<u64>,
    /// Whether the answer carries a `rootCause`: only where the model reads
    /// something the operator's own words cannot say (a crash's log, a
    /// probe) or where no change can be expressed and a person needs the
    /// manual fix. An image or memory fix is a decision only: the operator
    /// describes the finding and the change, and the model writes no words,
    /// which are most of the time a small model takes.
    pub explain: bool,
}

impl IncidentFacts {
    pub fn container(&self, name: &str) -> Option<&ContainerFacts> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// Every candidate image, over all containers.
    pub fn all_candidates(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.image_candidates.values().flatten().collect();
        set.into_iter().cloned().collect()
    }

    /// The fields a change may set, in the order the schema lists them.
    pub fn change_fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.classes.contains(&ChangeClass::Image) {
            fields.push("image");
        }
        if self.memory.is_some() {
            // Only the limit: the operator lowers a request that would
            // exceed it. Asked for both, a small model set a request forty
            // times the limit it chose (bench-llm).
            fields.push("memoryLimitMiB");
        }
        if self.classes.contains(&ChangeClass::Env) && !self.env_names.is_empty() {
            fields.push("env");
        }
        fields
    }
}

/// Gathers the facts for one incident. `cluster_images` are images running
/// in other pods of the cluster (the caller lists them); `memory_cap` is
/// the highest memory limit a fix may set, in bytes.
pub fn incident_facts(
    evidence: &Evidence,
    findings: &[Finding],
    cluster_images: &[String],
    memory_cap: u64,
) -> IncidentFacts {
    let mut containers: Vec<ContainerFacts> = evidence
        .containers
        .iter()
        .map(|c| ContainerFacts {
            name: c.name.clone(),
            init: c.init,
            image: c.image.clone(),
            memory_limit: c.limits.get("memory").and_then(|q| parse_memory(q)),
            memory_request: c.requests.get("memory").and_then(|q| parse_memory(q)),
            reasons: Vec::new(),
        })
        .collect();
    for finding in findings.iter().filter(|f| !f.container.is_empty()) {
        match containers.iter_mut().find(|c| c.name == finding.container) {
            Some(c) => c.reasons.push(finding.reason.clone()),
            None => containers.push(ContainerFacts {
                name: finding.container.clone(),
                init: finding.init,
                image: finding.image.clone().unwrap_or_default(),
                reasons: vec![finding.reason.clone()],
                ..ContainerFacts::default()
            }),
        }
    }

    // Command and args are not offered: a small model asked for them
    // writes a plausible command line of its own (measured: `docker run
    // ...` for a postgres crash), which passes every check and is rolled
    // back after approval. A crash's command stays in the evidence for the
    // model's reading and in the rules' hands.
    let expressible = [ChangeClass::Image, ChangeClass::Resources, ChangeClass::Env];
    let mut classes: BTreeSet<ChangeClass> = findings
        .iter()
        .flat_map(|f| allowed_changes(&f.reason).iter().copied())
        .filter(|c| expressible.contains(c))
        .collect();

    let image_candidates: BTreeMap<String, Vec<String>> = containers
        .iter()
        .filter(|c| {
            c.reasons
                .iter()
                .any(|r| allowed_changes(r).contains(&ChangeClass::Image))
        })
        .map(|c| {
            (
                c.name.clone(),
                image_candidates(evidence, c, cluster_images),
            )
        })
        .filter(|(_, candidates)| !candidates.is_empty())
        .collect();

    let env_names: BTreeSet<String> = evidence
        .containers
        .iter()
        .flat_map(|c| c.env_names.iter())
        .filter(|name| is_match(&ENV_NAME, name))
        .cloned()
        .collect();

    // A crash's image is offered only as a candidate: with none, a small
    // model writes the current image back. Its memory is offered only for
    // an OOM kill: asked about a crash with another exit code, a small
    // model set the cap, a change that fixes nothing and was rolled back
    // after approval (bench-llm).
    let pull_failure = findings
        .iter()
        .any(|f| PULL_FAILURES.contains(&f.reason.as_str()));
    if image_candidates.is_empty() && !pull_failure {
        classes.remove(&ChangeClass::Image);
    }
    let oom = containers
        .iter()
        .any(|c| c.reasons.iter().any(|r| r == "OOMKilled"));
    let memory = (oom && classes.contains(&ChangeClass::Resources))
        .then(|| memory_bounds(&containers, memory_cap))
        .flatten();
    let memory_choices = memory
        .map(|bounds| memory_choices(&containers, bounds))
        .unwrap_or_default();

    let mut facts = IncidentFacts {
        containers,
        classes,
        image_candidates,
        env_names: env_names.into_iter().take(MAX_ENV_NAMES).collect(),
        memory,
        memory_choices,
        explain: false,
    };
    facts.explain = facts.change_fields().is_empty()
        || findings
            .iter()
            .flat_map(|f| allowed_changes(&f.reason).iter())
            .any(|c| EXPLAINED.contains(c));
    facts
}

/// Change classes whose evidence (a log, a probe) the operator cannot put
/// into words; the model's reading of it goes to the reviewer.
pub const EXPLAINED: [ChangeClass; 3] = [
    ChangeClass::Env,
    ChangeClass::CommandArgs,
    ChangeClass::Probes,
];

/// The model may lower nothing it was OOM-killed for: the lower bound is
/// just above the smallest OOM-killed container's current limit.
/// The limits a model chooses from after an OOM kill: two, four and eight
/// times the smallest OOM-killed limit, within the bounds. Asked for a
/// number in a range, a small model answered either end of it (the cap,
/// or one MiB above the limit that was killed); from a short list it picks
/// a plausible one. Empty when no OOM-killed container had a limit.
fn memory_choices(containers: &[ContainerFacts], bounds: MemoryBounds) -> Vec<u64> {
    let Some(killed_mib) = containers
        .iter()
        .filter(|c| c.reasons.iter().any(|r| r == "OOMKilled"))
        .filter_map(|c| c.memory_limit)
        .min()
        .map(|limit| limit.div_ceil(MIB))
    else {
        return Vec::new();
    };
    let mut choices: Vec<u64> = [2, 4, 8]
        .iter()
        .map(|factor| (killed_mib * factor).clamp(bounds.min_mib, bounds.max_mib))
        .collect();
    choices.dedup();
    choices
}

fn memory_bounds(containers: &[ContainerFacts], memory_cap: u64) -> Option<MemoryBounds> {
    let max_mib = memory_cap / MIB;
    let min_mib = containers
        .iter()
        .filter(|c| c.reasons.iter().any(|r| r == "OOMKilled"))
        .filter_map(|c| c.memory_limit)
        .min()
        .map_or(MIN_MEMORY_MIB, |limit| {
            (limit / MIB + 1).max(MIN_MEMORY_MIB)
        });
    (min_mib <= max_mib).then_some(MemoryBounds { min_mib, max_mib })
}

/// Candidate images for a container whose image cannot run: images of the
/// same repository (or a near-miss spelling of it, for a typo in the
/// name) that ran healthily in the workload's history or run elsewhere in
/// the cluster. Never the current image, never `:latest` or untagged.
pub fn image_candidates(
    evidence: &Evidence,
    container: &ContainerFacts,
    cluster_images: &[String],
) -> Vec<String> {
    let Some((current, _)) = repository_of(&container.image) else {
        return Vec::new();
    };
    let history = evidence
        .history
        .iter()
        .filter(|r| r.healthy)
        .filter_map(|r| r.images.get(&container.name));
    let mut out: Vec<String> = Vec::new();
    for image in history.chain(cluster_images.iter()) {
        if out.len() >= MAX_CANDIDATES {
            break;
        }
        let Some((candidate, unversioned)) = repository_of(image) else {
            continue;
        };
        let usable = image != &container.image
            && is_match(&IMAGE_REFERENCE, image)
            && !unversioned
            && similar_repository(&current, &candidate)
            && !out.contains(image);
        if usable {
            out.push(image.clone());
        }
    }
    out
}

/// An image's repository with Docker Hub's implicit registry and `library/`
/// made explicit ("nginx:1.25" → "docker.io/library/nginx"), and whether it
/// names no version (untagged or `:latest`, and no digest).
fn repository_of(image: &str) -> Option<(String, bool)> {
    let image = image.trim();
    if image.is_empty() {
        return None;
    }
    let parts = ImageReference::parse(image);
    let unversioned = parts.digest.is_empty() && parts.tag == "latest";
    Some((
        format!("{}/{}", parts.registry, parts.path).to_ascii_lowercase(),
        unversioned,
    ))
}

/// Same repository, or same registry and path with a last name component
/// at most two edits away (a typo: `ngnix` for `nginx`).
fn similar_repository(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (a_dir, a_name) = a.rsplit_once('/').unwrap_or(("", a));
    let (b_dir, b_name) = b.rsplit_once('/').unwrap_or(("", b));
    a_dir == b_dir
        && a_name.len().min(b_name.len()) >= 3
        && strsim::levenshtein(a_name, b_name) <= 2
}

fn is_match(regex: &LazyLock<Option<Regex>>, text: &str) -> bool {
    regex.as_ref().is_some_and(|r| r.is_match(text))
}

/// A closed object with every property required, as OpenAI's strict mode
/// demands (optional values are nullable instead).
fn closed_object(properties: serde_json::Map<String, Value>) -> Value {
    let required: Vec<&String> = properties.keys().collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    })
}

/// The schema of one container change: `container` names it, `image` is
/// what that container may be set to; the other fields follow the facts.
fn change_schema(facts: &IncidentFacts, container: Value, image: Value) -> Value {
    let mut properties = serde_json::Map::new();
    properties.insert("container".into(), container);
    for field in facts.change_fields() {
        let schema = match field {
            "image" => image.clone(),
            "memoryLimitMiB" if !facts.memory_choices.is_empty() => {
                let mut values: Vec<Value> =
                    facts.memory_choices.iter().map(|m| json!(m)).collect();
                values.push(Value::Null);
                json!({"type": ["integer", "null"], "enum": values})
            }
            "memoryLimitMiB" => {
                let bounds = facts.memory.unwrap_or(MemoryBounds {
                    min_mib: MIN_MEMORY_MIB,
                    max_mib: MIN_MEMORY_MIB,
                });
                json!({"type": ["integer", "null"], "minimum": bounds.min_mib, "maximum": bounds.max_mib})
            }
            // "env", the last of the fields.
            _ => json!({
                "type": ["array", "null"],
                "maxItems": MAX_ENV_CHANGES,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name", "value"],
                    "properties": {
                        "name": {"type": "string", "enum": facts.env_names},
                        "value": {"type": "string", "maxLength": MAX_STRING},
                    },
                },
            }),
        };
        properties.insert(field.into(), schema);
    }
    closed_object(properties)
}

/// The JSON Schema of the answer for this incident.
pub fn answer_schema(facts: &IncidentFacts) -> Value {
    let names: Vec<&str> = facts.containers.iter().map(|c| c.name.as_str()).collect();
    let change = if facts.change_fields().contains(&"image")
        && !facts.image_candidates.is_empty()
        && names.len() > 1
    {
        // One variant per container, each with only its own candidates: a
        // small model otherwise puts one container's candidate on another
        // (measured: an init container's image proposed for the main one).
        let variants: Vec<Value> = names
            .iter()
            .map(|name| {
                let image = match facts.image_candidates.get(*name) {
                    Some(candidates) => {
                        let mut values: Vec<Value> =
                            candidates.iter().cloned().map(Value::String).collect();
                        values.push(Value::Null);
                        json!({"type": ["string", "null"], "enum": values})
                    }
                    None => json!({"type": "null"}),
                };
                change_schema(facts, json!({"type": "string", "enum": [name]}), image)
            })
            .collect();
        json!({"anyOf": variants})
    } else {
        let image = match facts.all_candidates() {
            candidates if candidates.is_empty() => {
                json!({"type": ["string", "null"], "pattern": IMAGE_PATTERN, "maxLength": MAX_STRING})
            }
            candidates => {
                let mut values: Vec<Value> = candidates.into_iter().map(Value::String).collect();
                values.push(Value::Null);
                json!({"type": ["string", "null"], "enum": values})
            }
        };
        change_schema(facts, json!({"type": "string", "enum": names}), image)
    };
    let max_changes = if facts.change_fields().is_empty() {
        0
    } else {
        facts.containers.len()
    };
    let mut properties = serde_json::Map::new();
    properties.insert(
        "changes".into(),
        json!({"type": "array", "maxItems": max_changes, "items": change}),
    );
    // Tenths, as an enum: a grammar can hold a model to listed values but
    // not to a numeric range, and small models do answer 304 for a 0-to-1
    // scale.
    properties.insert("confidence".into(), json!({"enum": CONFIDENCE_TENTHS}));
    if facts.explain {
        // What a reviewer reads at a glance; every character the model
        // writes costs time on a small CPU, and the grammar holds it to
        // this bound.
        properties.insert(
            "rootCause".into(),
            json!({"type": "string", "maxLength": MAX_ROOT_CAUSE}),
        );
    }
    closed_object(properties)
}

/// The longest answer `schema` allows, in characters of compact JSON, or
/// `None` when it allows answers of any length. A completion cap derived
/// from it stops a model that rambles without cutting off an answer the
/// schema accepts.
pub fn answer_char_bound(schema: &Value) -> Option<usize> {
    if let Some(variants) = schema.get("anyOf").and_then(Value::as_array) {
        return variants
            .iter()
            .map(answer_char_bound)
            .try_fold(0, |longest, bound| Some(longest.max(bound?)));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(|v| v.to_string().len()).max();
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    let number = |key: &str| schema.get(key).and_then(Value::as_u64).map(|n| n as usize);
    types.iter().try_fold(0, |longest, kind| {
        let bound = match *kind {
            "null" | "boolean" => 5,
            // Digits, sign, point and exponent of any JSON number a model writes.
            "integer" | "number" => 24,
            // The quotes and the text; an answer's words seldom need escapes.
            "string" => 2 + number("maxLength")?,
            "array" => {
                let items = answer_char_bound(schema.get("items")?)?;
                2 + number("maxItems")? * (items + 1)
            }
            "object" => {
                let properties = schema.get("properties")?.as_object()?;
                properties.iter().try_fold(2, |sum, (key, value)| {
                    Some(sum + key.len() + 4 + answer_char_bound(value)?)
                })?
            }
            _ => return None,
        };
        Some(longest.max(bound))
    })
}

/// The completion cap for `schema`: one token per character of its
/// longest compact answer, and never under [`MIN_ANSWER_TOKENS`]. A
/// grammar lets a model put whitespace between the answer's elements (an
/// indented object costs a token or two a line), which in a short answer
/// is most of it: a 38-token cap (two characters a token) cut off a
/// 70-character decision. The cap is there to stop a model that never
/// ends, not to size a fair answer; `None` when the schema sets no bound.
pub fn answer_token_cap(schema: &Value) -> Option<u32> {
    answer_char_bound(schema)
        .map(|chars| u32::try_from(chars.max(MIN_ANSWER_TOKENS)).unwrap_or(u32::MAX))
}

/// The smallest completion cap: room for the framing and whitespace of any
/// answer.
const MIN_ANSWER_TOKENS: usize = 96;

#[cfg(test)]
mod tests;
