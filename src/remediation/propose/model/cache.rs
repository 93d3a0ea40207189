//! Answers reused for identical failures: the same failure signature (the
//! findings' containers and reasons) on the same container template, asked
//! of the same model with the same schema, gets the cached answer instead
//! of another model call. The cache holds the validated *answer*, never a
//! finished proposal, so a reuse is still turned into a patch of the
//! asking Remediation's own workload and passes its guardrails.
//!
//! Bounded: at most `capacity` entries (least recently used go first), each
//! for at most `ttl`.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::llm::provider::ModelAnswer;
use crate::remediation::crd::{ContainerTemplate, Finding};

/// The cache key of one incident.
pub fn fingerprint(
    findings: &[Finding],
    containers: &[ContainerTemplate],
    schema: &Value,
    model: &str,
) -> String {
    let mut signature: Vec<(bool, &str, &str)> = findings
        .iter()
        .map(|f| (f.init, f.container.as_str(), f.reason.as_str()))
        .collect();
    signature.sort_unstable();
    signature.dedup();
    let canonical = json!({
        "findings": signature,
        "containers": containers,
        "schema": schema,
        "model": model,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    format!("sha256:{}", hex::encode(digest))
}

#[derive(Debug)]
struct Entry {
    answer: ModelAnswer,
    inserted: Instant,
    last_used: Instant,
}

/// A bounded LRU map with a time to live.
#[derive(Debug)]
pub struct ProposalCache {
    capacity: usize,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl ProposalCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ProposalCache {
            capacity,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<ModelAnswer> {
        let mut entries = self.lock();
        let now = Instant::now();
        let expired = entries
            .get(key)
            .is_some_and(|e| now.duration_since(e.inserted) > self.ttl);
        if expired {
            entries.remove(key);
            return None;
        }
        let entry = entries.get_mut(key)?;
        entry.last_used = now;
        Some(entry.answer.clone())
    }

    pub fn insert(&self, key: String, answer: ModelAnswer) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        let now = Instant::now();
        entries.retain(|_, e| now.duration_since(e.inserted) <= self.ttl);
        while entries.len() >= self.capacity && !entries.contains_key(&key) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => entries.remove(&k),
                None => break,
            };
        }
        entries.insert(
            key,
            Entry {
                answer,
                inserted: now,
                last_used: now,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::provider::Usage;

    fn answer(n: u64) -> ModelAnswer {
        ModelAnswer {
            answer: json!({ "n": n }),
            usage: Usage::default(),
            notes: Vec::new(),
        }
    }

    fn finding(container: &str, reason: &str, pods: u32) -> Finding {
        Finding {
            container: container.into(),
            reason: reason.into(),
            pods,
            message: format!("pod-{pods} failed"),
            ..Finding::default()
        }
    }

    #[test]
    fn same_signature_same_key_and_anything_else_differs() {
        let template = vec![ContainerTemplate {
            name: "app".into(),
            image: "ngnix:1.25".into(),
            ..ContainerTemplate::default()
        }];
        let schema = json!({"type": "object"});
        let a = fingerprint(
            &[finding("app", "ImagePullBackOff", 3)],
            &template,
            &schema,
            "m",
        );
        // Pod counts and messages are not part of the signature.
        let b = fingerprint(
            &[finding("app", "ImagePullBackOff", 1)],
            &template,
            &schema,
            "m",
        );
        assert_eq!(a, b);
        let other_reason = fingerprint(
            &[finding("app", "ErrImagePull", 3)],
            &template,
            &schema,
            "m",
        );
        assert_ne!(a, other_reason);
        let mut changed = template.clone();
        changed[0].image = "ngnix:1.26".into();
        assert_ne!(
            a,
            fingerprint(
                &[finding("app", "ImagePullBackOff", 3)],
                &changed,
                &schema,
                "m"
            )
        );
        assert_ne!(
            a,
            fingerprint(
                &[finding("app", "ImagePullBackOff", 3)],
                &template,
                &schema,
                "m2"
            )
        );
    }

    #[test]
    fn lru_eviction_and_ttl() {
        let cache = ProposalCache::new(2, Duration::from_secs(60));
        cache.insert("a".into(), answer(1));
        cache.insert("b".into(), answer(2));
        assert!(cache.get("a").is_some()); // b is now least recently used
        cache.insert("c".into(), answer(3));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b").is_none());
        assert_eq!(cache.get("a"), Some(answer(1)));

        let short = ProposalCache::new(2, Duration::from_millis(10));
        short.insert("a".into(), answer(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(short.get("a").is_none());
        assert!(short.is_empty());

        let off = ProposalCache::new(0, Duration::from_secs(60));
        off.insert("a".into(), answer(1));
        assert!(off.get("a").is_none());
    }
}
