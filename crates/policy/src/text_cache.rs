//! A bounded per-thread cache of values derived from a text: compiled
//! JMESPath expressions, compiled regexes, the positions of `{{ }}`
//! variables. Policies hand the engine the same few texts on every request,
//! so deriving once per thread saves most of the work; the bound keeps
//! texts built from request values from growing the cache without limit.

use std::cell::RefCell;
use std::collections::HashMap;

pub struct TextCache<V> {
    entries: RefCell<HashMap<String, V>>,
    limit: usize,
}

impl<V: Clone> TextCache<V> {
    /// A cache that starts over once it holds `limit` texts.
    pub fn new(limit: usize) -> TextCache<V> {
        TextCache {
            entries: RefCell::new(HashMap::new()),
            limit,
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
        if let Some(hit) = self.entries.borrow().get(text) {
            return Ok(hit.clone());
        }
        let value = derive(text)?;
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.limit {
            entries.clear();
        }
        entries.insert(text.to_string(), value.clone());
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

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
        // Full (2 texts): the next miss starts over.
        assert_eq!(cache.get_or_derive("f", derive), Ok(1));
        assert_eq!(cache.entries.borrow().len(), 1);
        assert_eq!(cache.get_or_derive("abc", derive), Ok(3));
        assert_eq!(calls.get(), 6);
    }
}
