//! A bounded per-thread cache of values derived from a text: compiled
//! JMESPath expressions, compiled regexes, the positions of `{{ }}`
//! variables. Policies hand the engine the same few texts on every request,
//! so deriving once per thread saves most of the work; the bound keeps
//! texts built from request values from growing the cache without limit.
//!
//! When the cache is full, a miss drops one text that was not used since
//! the eviction hand last passed it (the "second chance" or clock policy).
//! Texts built from one request's values are used once and go first; the
//! policies' own texts are used on every request and stay. Emptying the
//! whole cache instead would make one request pay for dropping thousands of
//! compiled values and the next ones for compiling the policies' texts
//! again, a stall on exactly the requests that carry such texts.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

pub struct TextCache<V> {
    state: RefCell<Entries<V>>,
    limit: usize,
}

struct Entries<V> {
    /// foldhash, seeded per process: several lookups per rule on every
    /// request, where SipHash cost as much as the rest of a lookup; the
    /// random seed keeps texts built from request values from being chosen
    /// to collide.
    by_text: HashMap<Rc<str>, Entry<V>, foldhash::fast::RandomState>,
    /// Every cached text, oldest first: the eviction hand takes the front.
    hand: VecDeque<Rc<str>>,
}

struct Entry<V> {
    value: V,
    /// Used since the hand last passed it.
    used: Cell<bool>,
}

impl<V> Entries<V> {
    /// Drops the first text the hand finds unused, clearing the mark of each
    /// used one it passes. Ends within one turn: every mark it passes is
    /// cleared, so at worst the first text comes round again unused.
    fn evict_one(&mut self) {
        while let Some(text) = self.hand.pop_front() {
            match self.by_text.get(&text) {
                Some(entry) if entry.used.replace(false) => self.hand.push_back(text),
                _ => {
                    self.by_text.remove(&text);
                    return;
                }
            }
        }
    }
}

impl<V: Clone> TextCache<V> {
    /// A cache of at most `limit` texts (at least one).
    pub fn new(limit: usize) -> TextCache<V> {
        TextCache {
            state: RefCell::new(Entries {
                by_text: HashMap::default(),
                hand: VecDeque::new(),
            }),
            limit: limit.max(1),
        }
    }

    /// The value derived from `text`, computed by `derive` on a miss.
    /// Errors are not cached. `derive` runs with the cache unborrowed, so
    /// it may use the cache itself.
    pub fn get_or_derive<E>(
        &self,
        text: &str,
        derive: impl FnOnce(&str) -> Result<V, E>,
    ) -> Result<V, E> {
        if let Some(hit) = self.state.borrow().by_text.get(text) {
            hit.used.set(true);
            return Ok(hit.value.clone());
        }
        let value = derive(text)?;
        let mut state = self.state.borrow_mut();
        if state.by_text.contains_key(text) {
            // `derive` cached the same text through the cache itself.
            return Ok(value);
        }
        if state.by_text.len() >= self.limit {
            state.evict_one();
        }
        let text: Rc<str> = Rc::from(text);
        state.hand.push_back(Rc::clone(&text));
        state.by_text.insert(
            text,
            Entry {
                value: value.clone(),
                used: Cell::new(false),
            },
        );
        Ok(value)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.borrow().by_text.len()
    }
}

/// Most distinct regex patterns kept compiled per thread.
const REGEX_CACHE_LIMIT: usize = 256;

thread_local! {
    /// Compiled patterns: policies pass the same literal pattern for every
    /// element of every request, and compiling dwarfs matching. Shared by
    /// `Rc`, not cloned: a cloned `Regex` starts with an empty pool of
    /// search caches, so where the lazy DFA serves a pattern every match
    /// through a clone built a new cache, about 50 k instructions a call.
    static REGEXES: TextCache<Rc<regex::Regex>> = TextCache::new(REGEX_CACHE_LIMIT);
}

/// `pattern` compiled, once per thread while it stays in the cache; shared
/// by JMESPath's regex functions and CEL's `find`/`findAll`.
pub fn compiled_regex(pattern: &str) -> Result<Rc<regex::Regex>, regex::Error> {
    REGEXES.with(|cache| cache.get_or_derive(pattern, |text| regex::Regex::new(text).map(Rc::new)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_once_per_text_forgets_errors_and_stays_bounded() {
        let cache = TextCache::new(2);
        let calls = Cell::new(0);
        let derive = |text: &str| -> Result<usize, String> {
            calls.set(calls.get() + 1);
            if text.is_empty() {
                Err("empty".to_string())
            } else {
                Ok(text.len())
            }
        };
        assert_eq!(cache.get_or_derive("abc", derive), Ok(3));
        assert_eq!(cache.get_or_derive("abc", derive), Ok(3));
        assert_eq!(calls.get(), 1);
        assert!(cache.get_or_derive("", derive).is_err());
        assert!(cache.get_or_derive("", derive).is_err());
        assert_eq!(calls.get(), 3);
        assert_eq!(cache.get_or_derive("de", derive), Ok(2));
        // Full (2 texts): "f" takes the place of "de", the one not used
        // since it was cached; "abc" was used and stays.
        assert_eq!(cache.get_or_derive("f", derive), Ok(1));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get_or_derive("abc", derive), Ok(3));
        assert_eq!(calls.get(), 5);
        assert_eq!(cache.get_or_derive("de", derive), Ok(2));
        assert_eq!(calls.get(), 6);
    }

    #[test]
    fn texts_of_every_request_survive_a_stream_of_one_off_texts() {
        // The policies' own texts come back on every request; texts built
        // from request values (a name, an image) come once. However many of
        // those pass through, the policies' texts are derived only once.
        let policy_texts = ["request.object.spec", "element.image", "^[a-z]+$", "x"];
        let cache = TextCache::new(8);
        let derived: RefCell<HashMap<String, usize>> = RefCell::new(HashMap::new());
        let derive = |text: &str| -> Result<usize, ()> {
            *derived.borrow_mut().entry(text.to_string()).or_default() += 1;
            Ok(text.len())
        };
        for request in 0..1_000 {
            for text in policy_texts {
                assert_eq!(cache.get_or_derive(text, derive), Ok(text.len()));
            }
            for value in 0..3 {
                let one_off = format!("request {request} value {value}");
                assert_eq!(cache.get_or_derive(&one_off, derive), Ok(one_off.len()));
            }
            assert!(cache.len() <= 8);
        }
        let derived = derived.borrow();
        for text in policy_texts {
            assert_eq!(derived.get(text), Some(&1), "{text} derived again");
        }
        assert_eq!(derived.len(), policy_texts.len() + 3_000);
    }

    #[test]
    fn a_cached_regex_is_shared_not_cloned() {
        // A clone would start with no search caches of its own and build
        // them on every match.
        let first = compiled_regex(":[^/]*$").expect("valid");
        let again = compiled_regex(":[^/]*$").expect("valid");
        assert!(Rc::ptr_eq(&first, &again));
        assert!(again.is_match("nginx:1.25"));
        assert!(compiled_regex("(").is_err());
    }

    #[test]
    fn a_cache_of_texts_all_in_use_still_takes_a_new_one() {
        let cache = TextCache::new(3);
        let derive = |text: &str| -> Result<usize, ()> { Ok(text.len()) };
        for text in ["a", "bb", "ccc"] {
            assert_eq!(cache.get_or_derive(text, derive), Ok(text.len()));
            assert_eq!(cache.get_or_derive(text, derive), Ok(text.len()));
        }
        assert_eq!(cache.get_or_derive("dddd", derive), Ok(4));
        assert_eq!(cache.len(), 3);
    }
}
