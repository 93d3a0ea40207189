//! The model's free text checked against the incident. A small model
//! copies names from examples it has seen or the prompt's own framing
//! (the evidence markers), or invents a plausible tag, into an explanation
//! that reads as fact. Every name, image, tag,
//! quantity or env var the text mentions must appear in this incident's
//! evidence, its facts or the proposal itself; text that mentions anything
//! else is not shown as the cause.
//!
//! What counts as a mention is deliberately broad (any token with a digit,
//! a `:` or a `/`, an `ENV_NAME`, the word after "container"): a false
//! alarm only moves the model's words from the cause to the risks, while a
//! missed invention would mislead the person who approves the fix.
use std::collections::BTreeSet;

use super::answer::ModelFix;
use super::prompt::{BEGIN_UNTRUSTED, END_UNTRUSTED};
use super::schema::IncidentFacts;
use crate::remediation::crd::{Evidence, Proposal};

/// Everything the incident and the proposal state, to check mentions against.
#[derive(Debug)]
pub struct IncidentWords {
    /// The evidence, facts and proposed values, lower-cased, as one text.
    corpus: String,
    containers: BTreeSet<String>,
}

impl IncidentWords {
    pub fn new(evidence: &Evidence, facts: &IncidentFacts, fix: &ModelFix) -> Self {
        let mut corpus = serde_json::to_string(evidence)
            .unwrap_or_default()
            .to_lowercase();
        let mut add = |word: &str| {
            corpus.push(' ');
            corpus.push_str(&word.to_lowercase());
        };
        for container in &facts.containers {
            add(&container.name);
            add(&container.image);
            container.reasons.iter().for_each(|r| add(r));
        }
        facts.all_candidates().iter().for_each(|i| add(i));
        facts.env_names.iter().for_each(|e| add(e));
        for change in &fix.changes {
            if let Some(image) = &change.image {
                add(image);
            }
            if let Some(mib) = change.memory_limit_mib {
                add(&format!("{mib}Mi {mib}MiB"));
            }
            for env in change.env.iter().flatten() {
                add(&env.name);
            }
        }
        let containers = facts
            .containers
            .iter()
            .map(|c| c.name.to_lowercase())
            .chain(evidence.containers.iter().map(|c| c.name.to_lowercase()))
            .collect();
        IncidentWords { corpus, containers }
    }

    /// The words of an incident and of a finished proposal (its actions'
    /// patches stand in for the model's fix object).
    pub fn for_proposal(evidence: &Evidence, facts: &IncidentFacts, proposal: &Proposal) -> Self {
        let mut words = IncidentWords::new(evidence, facts, &ModelFix::default());
        for action in &proposal.actions {
            words.corpus.push(' ');
            words
                .corpus
                .push_str(&action.patch.to_string().to_lowercase());
        }
        words
    }

    /// The mentions in `text` that this incident does not contain, in order,
    /// each once.
    pub fn unknown_mentions(&self, text: &str) -> Vec<String> {
        let mut unknown: Vec<String> = Vec::new();
        // The prompt's frame copied into the answer (seen with Qwen 0.5B:
        // a summary ending "BEGIN UNTRUSTED EVIDENCE {") is never a fact.
        let lower_text = text.to_lowercase();
        for marker in [BEGIN_UNTRUSTED, END_UNTRUSTED] {
            if lower_text.contains(&marker.to_lowercase()) {
                unknown.push(marker.to_string());
            }
        }
        let mut after_container = false;
        for raw in text.split_whitespace() {
            // A mention starts and ends with a letter, digit or `_`: the
            // punctuation around it ("(image a:1.2):") is prose, not part of it.
            let token = raw.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_'));
            if token.is_empty() {
                after_container = false;
                continue;
            }
            let lower = token.to_lowercase();
            let known = if after_container {
                self.containers.contains(&lower)
            } else if is_mention(token) {
                self.corpus.contains(&lower)
            } else {
                true
            };
            if !known && !unknown.contains(&token.to_string()) {
                unknown.push(token.to_string());
            }
            after_container = matches!(lower.as_str(), "container" | "containers");
        }
        unknown
    }
}

/// Whether a token names something checkable: an image, tag, version,
/// quantity or path (a digit, `:` or `/` in it), or an env var.
fn is_mention(token: &str) -> bool {
    let has_digit = token.chars().any(|c| c.is_ascii_digit());
    let plain_number = token.chars().all(|c| c.is_ascii_digit());
    let env_name = token.contains('_')
        && token
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    (has_digit && !plain_number) || token.contains(':') || token.contains('/') || env_name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::crd::{ContainerTemplate, WorkloadRef};
    use crate::remediation::propose::model::answer::ContainerChange;
    use crate::remediation::propose::model::schema::ContainerFacts;

    fn incident() -> IncidentWords {
        let evidence = Evidence {
            workload: WorkloadRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "api".into(),
                uid: "u1".into(),
            },
            namespace: "demo".into(),
            containers: vec![ContainerTemplate {
                name: "ngnix".into(),
                image: "ngnix:1.25.5".into(),
                env_names: vec!["LOG_LEVEL".into()],
                ..ContainerTemplate::default()
            }],
            ..Evidence::default()
        };
        let facts = IncidentFacts {
            containers: vec![ContainerFacts {
                name: "ngnix".into(),
                image: "ngnix:1.25.5".into(),
                reasons: vec!["ErrImagePull".into()],
                ..ContainerFacts::default()
            }],
            image_candidates: [("ngnix".to_string(), vec!["nginx:1.25.5".to_string()])].into(),
            ..IncidentFacts::default()
        };
        let fix = ModelFix {
            confidence: 0.5,
            root_cause: String::new(),
            changes: vec![ContainerChange {
                container: "ngnix".into(),
                image: Some("nginx:1.25.5".into()),
                memory_limit_mib: Some(256),
                ..ContainerChange::default()
            }],
        };
        IncidentWords::new(&evidence, &facts, &fix)
    }

    #[test]
    fn words_copied_from_an_example_are_caught() {
        let words = incident();
        assert_eq!(
            words.unknown_mentions("The tag 1.25.55 is a typo; use it for container web."),
            vec!["1.25.55".to_string(), "web".to_string()]
        );
        assert_eq!(
            words.unknown_mentions("POSTGRES_PASSWORD is missing"),
            vec!["POSTGRES_PASSWORD".to_string()]
        );
        assert_eq!(
            words.unknown_mentions("Use nginx:1.25.5. BEGIN UNTRUSTED EVIDENCE {"),
            vec![BEGIN_UNTRUSTED.to_string()]
        );
    }

    #[test]
    fn words_of_this_incident_and_its_proposal_pass() {
        let words = incident();
        for text in [
            "The image ngnix:1.25.5 does not exist; nginx:1.25.5 runs in the cluster.",
            "Container ngnix cannot pull its image (ErrImagePull).",
            "Raise the limit to 256Mi; LOG_LEVEL is unrelated.",
            "It failed 3 times in 2 pods.",
            "Container ngnix (image ngnix:1.25.5): ImagePullBackOff.",
        ] {
            assert!(
                words.unknown_mentions(text).is_empty(),
                "{text}: {:?}",
                words.unknown_mentions(text)
            );
        }
    }
}
