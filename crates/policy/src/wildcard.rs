//! Kyverno-style wildcard matching: `*` matches any run of characters
//! (including none) and `?` matches exactly one character. Everything else
//! matches itself, case-sensitively.

/// Returns true when `pattern` contains a wildcard character.
pub fn contains_wildcard(pattern: &str) -> bool {
    pattern.contains('*') || pattern.contains('?')
}

/// Matches `text` against a wildcard `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    // Called hundreds of times per admission review (kinds, names,
    // namespaces, pattern values): compare without allocating when possible.
    Wildcard::new(pattern).matches(text)
}

/// A wildcard pattern prepared for matching many texts: every label and
/// annotation key of a resource against one wildcard metadata key, say.
#[derive(Debug, Clone, Copy)]
pub struct Wildcard<'p> {
    pattern: &'p str,
    /// The literal runs before the first wildcard and after the last one;
    /// `None` when the pattern has no wildcard.
    ends: Option<(&'p str, &'p str)>,
}

impl<'p> Wildcard<'p> {
    pub fn new(pattern: &'p str) -> Wildcard<'p> {
        // A byte loop: patterns are short, and the string searchers cost
        // more to set up than this scan.
        let is_wildcard = |b: &u8| *b == b'*' || *b == b'?';
        let bytes = pattern.as_bytes();
        let ends = bytes.iter().position(is_wildcard).map(|first| {
            let last = bytes.iter().rposition(is_wildcard).unwrap_or(first);
            // Both are ASCII bytes, so both are character boundaries.
            (&pattern[..first], &pattern[last + 1..])
        });
        Wildcard { pattern, ends }
    }

    pub fn matches(&self, text: &str) -> bool {
        let Some((head, tail)) = self.ends else {
            return self.pattern == text;
        };
        if self.pattern == "*" {
            return true;
        }
        // The literal ends must begin and end the text: most candidates
        // fail here, on a byte comparison, before the matcher runs.
        if !text.starts_with(head) || !text.ends_with(tail) {
            return false;
        }
        if self.pattern.is_ascii() && text.is_ascii() {
            return match_units(self.pattern.as_bytes(), text.as_bytes(), b'*', b'?');
        }
        let pattern: Vec<char> = self.pattern.chars().collect();
        let text: Vec<char> = text.chars().collect();
        match_units(&pattern, &text, '*', '?')
    }
}

/// Iterative matcher with single-star backtracking: linear in practice and
/// free of recursion, so hostile patterns cannot blow the stack.
fn match_units<T: Copy + PartialEq>(pattern: &[T], text: &[T], any_run: T, any_one: T) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<usize> = None;
    let mut star_text = 0usize;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == any_one || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == any_run {
            star = Some(p);
            star_text = t;
            p += 1;
        } else if let Some(star_at) = star {
            p = star_at + 1;
            star_text += 1;
            t = star_text;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == any_run {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run() {
        assert!(matches("*", ""));
        assert!(matches("nginx:*", "nginx:1.2"));
        assert!(matches("*:latest", "busybox:latest"));
        assert!(!matches("*:latest", "busybox:1.0"));
        assert!(matches("eu.foo.io/*", "eu.foo.io/app"));
        assert!(matches("*tiller*", "ghcr.io/helm/tiller:v2"));
    }

    #[test]
    fn question_mark_matches_one_char() {
        assert!(matches("?*", "a"));
        assert!(!matches("?*", ""));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
    }

    #[test]
    fn literal_and_empty() {
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(contains_wildcard("a*"));
        assert!(!contains_wildcard("abc"));
    }

    #[test]
    fn literal_ends_are_required_but_not_sufficient() {
        assert!(matches("a*a", "aa"));
        assert!(!matches("a*a", "a"), "the two literal ends may not overlap");
        assert!(!matches("ab?", "ab"));
        assert!(matches("ab?", "abc"));
        assert!(!matches("?bc", "bc"));
        assert!(matches("x*y?z", "x-y-z"));
        assert!(!matches("x*y?z", "x-y-q"));
        assert!(!matches(
            "container.apparmor.io/*",
            "app.kubernetes.io/name"
        ));
        assert!(matches(
            "container.apparmor.io/*",
            "container.apparmor.io/web"
        ));
        assert!(matches("*", ""));
        assert!(matches("**", ""));
    }

    #[test]
    fn non_ascii_text_matches_by_character() {
        // `?` is one character, not one byte.
        assert!(matches("caf?", "café"));
        assert!(matches("*é", "résumé"));
        assert!(!matches("caf??", "café"));
        assert!(matches("ü*", "über"));
    }
}
