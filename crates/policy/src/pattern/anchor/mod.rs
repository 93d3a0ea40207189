//! Pattern anchors: a map key such as `(name)`, `=(volumes)`, `X(hostPath)`,
//! `^(containers)`, `<(image)` or `+(label)` is parsed once into an
//! [`Anchor`]; each anchor kind has its own handler type in a sibling file,
//! so "what does `X()` mean?" is answered in `negation.rs`.

mod add_if_not_present;
mod conditional;
mod equality;
mod existence;
mod global;
mod negation;
mod plain;

pub use add_if_not_present::AddIfNotPresentAnchor;
pub use conditional::ConditionalAnchor;
pub use equality::EqualityAnchor;
pub use existence::ExistenceAnchor;
pub use global::GlobalAnchor;
pub use negation::NegationAnchor;
pub use plain::PlainKey;

use serde_json::{Map, Value};

use super::validate::{ElementError, PatternWalk};

/// The kind of anchor wrapped around a pattern key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorKind {
    /// `(key)`: if-then; a mismatch makes the rule not apply.
    Conditional,
    /// `<(key)`: like conditional, but a mismatch skips the whole rule.
    Global,
    /// `^(key)`: at least one list element must match.
    Existence,
    /// `=(key)`: validate only when the key is present.
    Equality,
    /// `X(key)`: the key must be absent.
    Negation,
    /// `+(key)`: mutate only; add when absent.
    AddIfNotPresent,
}

impl AnchorKind {
    fn prefix(self) -> &'static str {
        match self {
            AnchorKind::Conditional => "(",
            AnchorKind::Global => "<(",
            AnchorKind::Existence => "^(",
            AnchorKind::Equality => "=(",
            AnchorKind::Negation => "X(",
            AnchorKind::AddIfNotPresent => "+(",
        }
    }
}

/// A parsed anchor: its kind and the bare resource key it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor<'a> {
    pub kind: AnchorKind,
    pub key: &'a str,
}

impl<'a> Anchor<'a> {
    /// Parses a pattern key; `None` means the key carries no anchor.
    pub fn parse(raw: &'a str) -> Option<Anchor<'a>> {
        // The walk parses every key it visits: decide by the first two
        // bytes instead of trying each prefix in turn.
        let bytes = raw.as_bytes();
        if bytes.last() != Some(&b')') {
            return None;
        }
        let kind = match bytes {
            [b'<', b'(', ..] => AnchorKind::Global,
            [b'^', b'(', ..] => AnchorKind::Existence,
            [b'=', b'(', ..] => AnchorKind::Equality,
            [b'X', b'(', ..] => AnchorKind::Negation,
            [b'+', b'(', ..] => AnchorKind::AddIfNotPresent,
            [b'(', ..] => AnchorKind::Conditional,
            _ => return None,
        };
        let prefix = kind.prefix().len();
        // An empty key (`()`, `=()`) is no anchor.
        if raw.len() <= prefix + 1 {
            return None;
        }
        Some(Anchor {
            kind,
            key: &raw[prefix..raw.len() - 1],
        })
    }

    /// Renders the anchor back into pattern-key form, with a replacement key.
    pub fn render(kind: AnchorKind, key: &str) -> String {
        format!("{}{key})", kind.prefix())
    }
}

/// Where the walk is: a chain of keys and list indexes from the root,
/// rendered as a slash-separated path (`/spec/containers/0/image/`) only
/// when an error reports it. Built for every key the walk visits, so it
/// borrows its parent instead of allocating a string.
#[derive(Debug, Clone, Copy)]
pub enum WalkPath<'a> {
    Root,
    Key(&'a WalkPath<'a>, &'a str),
    Index(&'a WalkPath<'a>, usize),
}

impl<'a> WalkPath<'a> {
    /// The path one key below this one.
    pub fn key(&'a self, key: &'a str) -> WalkPath<'a> {
        WalkPath::Key(self, key)
    }

    /// The path of one element of the list at this path.
    pub fn index(&'a self, index: usize) -> WalkPath<'a> {
        WalkPath::Index(self, index)
    }
}

impl std::fmt::Display for WalkPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkPath::Root => f.write_str("/"),
            WalkPath::Key(parent, key) => write!(f, "{parent}{key}/"),
            WalkPath::Index(parent, index) => write!(f, "{parent}{index}/"),
        }
    }
}

/// Removes any anchor from a key, e.g. `=(volumes)` → `volumes`.
pub fn strip_anchor(raw: &str) -> &str {
    Anchor::parse(raw).map_or(raw, |anchor| anchor.key)
}

/// One validation step for one pattern key against a resource map.
pub trait ElementHandler {
    fn handle(
        &self,
        walk: &mut PatternWalk,
        resource: &Map<String, Value>,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError>;
}

/// The handler for one pattern key: one variant per anchor kind. An enum,
/// not a boxed trait object: the walk builds one for every key it visits.
pub enum Handler<'a> {
    Conditional(ConditionalAnchor<'a>),
    Global(GlobalAnchor<'a>),
    Existence(ExistenceAnchor<'a>),
    Equality(EqualityAnchor<'a>),
    Negation(NegationAnchor<'a>),
    AddIfNotPresent(AddIfNotPresentAnchor<'a>),
    Plain(PlainKey<'a>),
}

impl Handler<'_> {
    pub fn handle(
        &self,
        walk: &mut PatternWalk,
        resource: &Map<String, Value>,
        path: &WalkPath<'_>,
    ) -> Result<(), ElementError> {
        match self {
            Handler::Conditional(h) => h.handle(walk, resource, path),
            Handler::Global(h) => h.handle(walk, resource, path),
            Handler::Existence(h) => h.handle(walk, resource, path),
            Handler::Equality(h) => h.handle(walk, resource, path),
            Handler::Negation(h) => h.handle(walk, resource, path),
            Handler::AddIfNotPresent(h) => h.handle(walk, resource, path),
            Handler::Plain(h) => h.handle(walk, resource, path),
        }
    }
}

/// Builds the handler for a pattern key, given its parsed anchor.
pub fn handler_with<'a>(
    key: &'a str,
    anchor: Option<Anchor<'a>>,
    pattern: &'a Value,
) -> Handler<'a> {
    match anchor {
        Some(anchor) => match anchor.kind {
            AnchorKind::Conditional => Handler::Conditional(ConditionalAnchor {
                key: anchor.key,
                pattern,
            }),
            AnchorKind::Global => Handler::Global(GlobalAnchor {
                key: anchor.key,
                pattern,
            }),
            AnchorKind::Existence => Handler::Existence(ExistenceAnchor {
                key: anchor.key,
                pattern,
            }),
            AnchorKind::Equality => Handler::Equality(EqualityAnchor {
                key: anchor.key,
                pattern,
            }),
            AnchorKind::Negation => Handler::Negation(NegationAnchor { key: anchor.key }),
            AnchorKind::AddIfNotPresent => Handler::AddIfNotPresent(AddIfNotPresentAnchor {
                raw_key: key,
                pattern,
            }),
        },
        None => Handler::Plain(PlainKey { key, pattern }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_anchor_kind() {
        let cases = [
            ("(name)", AnchorKind::Conditional),
            ("<(image)", AnchorKind::Global),
            ("^(containers)", AnchorKind::Existence),
            ("=(volumes)", AnchorKind::Equality),
            ("X(hostPath)", AnchorKind::Negation),
            ("+(labels)", AnchorKind::AddIfNotPresent),
        ];
        for (raw, kind) in cases {
            let anchor = Anchor::parse(raw).unwrap();
            assert_eq!(anchor.kind, kind, "{raw}");
            assert_eq!(anchor.key, strip_anchor(raw));
        }
        assert_eq!(Anchor::parse("name"), None);
        assert_eq!(Anchor::parse("()"), None);
        assert_eq!(Anchor::parse("=()"), None);
        assert_eq!(Anchor::parse(")"), None);
        assert_eq!(Anchor::parse("a(b)"), None);
        // `<(` is a global anchor, but `(<x)` a conditional one on `<x`.
        assert_eq!(
            Anchor::parse("(<x)"),
            Some(Anchor {
                kind: AnchorKind::Conditional,
                key: "<x"
            })
        );
        assert_eq!(
            Anchor::parse("=(a)"),
            Some(Anchor {
                kind: AnchorKind::Equality,
                key: "a"
            })
        );
        assert_eq!(strip_anchor("plain"), "plain");
        assert_eq!(Anchor::render(AnchorKind::Equality, "a/b"), "=(a/b)");
    }
}
