//! Boolean CEL terms that fold constants as they are combined, and the
//! literal and wildcard texts the pattern translation writes.
//!
//! Every combinator keeps its left operand on the left: the translation
//! puts type guards first, so a test on a value of the wrong type only runs
//! beside a false guard, where `&&` is false in both CEL evaluators (this
//! crate's stops at the guard; the API server's absorbs the error).

use crate::wildcard;

/// How tightly a CEL text binds, to parenthesize only where needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Binding {
    /// A negation or anything parenthesized.
    Tight,
    /// A call or a comparison (`==`, `in`): tighter than `&&`, looser
    /// than `!`.
    Relation,
    And,
    Or,
    /// `c ? a : b`: binds loosest of all.
    Choice,
}

/// A boolean term: a constant the translation could decide, or CEL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    Const(bool),
    Cel(String, Binding),
}

impl Term {
    /// A comparison, call or other term that binds tighter than `&&`.
    pub fn test(text: impl Into<String>) -> Term {
        Term::Cel(text.into(), Binding::Relation)
    }

    /// `self && other`.
    pub fn and(self, other: Term) -> Term {
        match (self, other) {
            (Term::Const(false), _) | (_, Term::Const(false)) => Term::Const(false),
            (Term::Const(true), term) | (term, Term::Const(true)) => term,
            (left, right) if left == right => left,
            (left, right) => Term::Cel(
                format!(
                    "{} && {}",
                    left.text_within(Binding::And),
                    right.text_within(Binding::And)
                ),
                Binding::And,
            ),
        }
    }

    /// `self || other`.
    pub fn or(self, other: Term) -> Term {
        match (self, other) {
            (Term::Const(true), _) | (_, Term::Const(true)) => Term::Const(true),
            (Term::Const(false), term) | (term, Term::Const(false)) => term,
            (left, right) if left == right => left,
            (left, right) => Term::Cel(
                format!(
                    "{} || {}",
                    left.text_within(Binding::Or),
                    right.text_within(Binding::Or)
                ),
                Binding::Or,
            ),
        }
    }

    /// `!self`.
    pub fn not(self) -> Term {
        match self {
            Term::Const(value) => Term::Const(!value),
            term => Term::Cel(
                format!("!{}", term.text_within(Binding::Tight)),
                Binding::Tight,
            ),
        }
    }

    /// `condition ? self : otherwise`, written as `&&`/`||` when a branch
    /// is constant.
    pub fn when(condition: Term, then: Term, otherwise: Term) -> Term {
        match (&then, &otherwise) {
            _ if then == otherwise => then,
            (_, Term::Const(false)) => condition.and(then),
            (_, Term::Const(true)) => condition.not().or(then),
            (Term::Const(true), _) => condition.or(otherwise),
            (Term::Const(false), _) => condition.not().and(otherwise),
            _ => Term::Cel(
                format!(
                    "{} ? {} : {}",
                    condition.text_within(Binding::Or),
                    then.text_within(Binding::Or),
                    otherwise.text_within(Binding::Choice)
                ),
                Binding::Choice,
            ),
        }
    }

    /// `list.all(variable, self)`, or what it always is.
    pub fn for_all(self, list: &str, variable: &str) -> Term {
        match self {
            Term::Const(true) => Term::Const(true),
            Term::Const(false) => Term::test(format!("{list}.size() == 0")),
            term => Term::test(format!("{list}.all({variable}, {})", term.text())),
        }
    }

    /// `list.exists(variable, self)`, or what it always is.
    pub fn exists(self, list: &str, variable: &str) -> Term {
        match self {
            Term::Const(false) => Term::Const(false),
            Term::Const(true) => Term::test(format!("{list}.size() > 0")),
            term => Term::test(format!("{list}.exists({variable}, {})", term.text())),
        }
    }

    /// The CEL text of the whole term.
    pub fn text(&self) -> String {
        match self {
            Term::Const(value) => value.to_string(),
            Term::Cel(text, _) => text.clone(),
        }
    }

    fn text_within(&self, outer: Binding) -> String {
        match self {
            Term::Cel(text, binding) if *binding > outer => format!("({text})"),
            // `a && b` inside `||` reads the same without parentheses, but
            // a reader should not have to know CEL's precedence table.
            Term::Cel(text, Binding::And) if outer == Binding::Or => format!("({text})"),
            term => term.text(),
        }
    }
}

/// A CEL string literal: JSON's escapes are a subset of CEL's.
pub fn literal(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// `expression['key']`, or `expression.key` when the key is a CEL
/// identifier that is not reserved.
pub fn select(expression: &str, key: &str) -> String {
    const RESERVED: [&str; 21] = [
        "as",
        "break",
        "const",
        "continue",
        "else",
        "false",
        "for",
        "function",
        "if",
        "import",
        "in",
        "let",
        "loop",
        "namespace",
        "null",
        "package",
        "return",
        "true",
        "var",
        "void",
        "while",
    ];
    let identifier = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&key);
    if identifier {
        format!("{expression}.{key}")
    } else {
        format!("{expression}[{}]", literal(key))
    }
}

/// Whether the string `text` (a CEL expression) matches the Kyverno
/// wildcard `pattern` (`*` any run, `?` one character).
pub fn wildcard_test(pattern: &str, text: &str) -> Term {
    if !wildcard::contains_wildcard(pattern) {
        return Term::test(format!("{text} == {}", literal(pattern)));
    }
    if pattern.chars().all(|c| c == '*') {
        return Term::Const(true);
    }
    if !pattern.contains('?') {
        let inner = pattern.trim_matches('*');
        let method = match (pattern.starts_with('*'), pattern.ends_with('*')) {
            _ if inner.contains('*') => None,
            (true, true) => Some("contains"),
            (true, false) => Some("endsWith"),
            (false, true) => Some("startsWith"),
            (false, false) => None,
        };
        if let Some(method) = method {
            return Term::test(format!("{text}.{method}({})", literal(inner)));
        }
    }
    // `(?s)`: `?` and `*` match line breaks too. RE2 and the regex crate
    // agree on this syntax and on escaped punctuation.
    let mut regex = String::from("(?s)^");
    for c in pattern.chars() {
        match c {
            '*' => regex.push_str(".*"),
            '?' => regex.push('.'),
            '\\' | '.' | '+' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                regex.push('\\');
                regex.push(c);
            }
            other => regex.push(other),
        }
    }
    regex.push('$');
    Term::test(format!("{text}.matches({})", literal(&regex)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_fold_and_guards_stay_on_the_left() {
        let guard = Term::test("type(v) == string");
        assert_eq!(guard.clone().and(Term::Const(true)), guard);
        assert_eq!(guard.clone().and(Term::Const(false)), Term::Const(false));
        let either = Term::test("a").or(Term::test("b"));
        assert_eq!(guard.and(either).text(), "type(v) == string && (a || b)");
        let choice = Term::when(Term::test("c"), Term::test("x"), Term::test("y"));
        assert_eq!(choice.not().text(), "!(c ? x : y)");
        assert_eq!(
            Term::when(Term::test("k in m"), Term::test("x"), Term::Const(true)).text(),
            "!(k in m) || x"
        );
    }

    #[test]
    fn wildcards_become_string_calls_or_an_anchored_regex() {
        assert_eq!(wildcard_test("latest", "v").text(), r#"v == "latest""#);
        assert_eq!(
            wildcard_test("*:latest", "v").text(),
            r#"v.endsWith(":latest")"#
        );
        assert_eq!(
            wildcard_test("eu.io/*", "v").text(),
            r#"v.startsWith("eu.io/")"#
        );
        assert_eq!(
            wildcard_test("*tiller*", "v").text(),
            r#"v.contains("tiller")"#
        );
        assert_eq!(wildcard_test("**", "v"), Term::Const(true));
        assert_eq!(
            wildcard_test("?*.io/a*b", "v").text(),
            r#"v.matches("(?s)^..*\\.io/a.*b$")"#
        );
    }

    #[test]
    fn keys_that_are_not_identifiers_are_indexed() {
        assert_eq!(select("o", "spec"), "o.spec");
        assert_eq!(select("o", "in"), r#"o["in"]"#);
        assert_eq!(
            select("o", "app.kubernetes.io/name"),
            r#"o["app.kubernetes.io/name"]"#
        );
    }
}
