//! The `format` library (Kubernetes 1.31+): named string formats.
//! `format.named(name)` is an optional format, `format.dns1123Label()` and
//! its siblings are the formats themselves, and `<format>.validate(s)` is
//! `optional.none()` for a valid `s`, else an optional list of what is
//! wrong with it.
//!
//! The checks are the API server's (lengths, character sets, the prefix
//! variants' tolerance of a trailing `-`); the error texts are this
//! engine's own words.

use cel::common::types::{CelList, CelOptional, CelString, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::objects::Opaque;
use cel::{DeclarationError, Env, ExecutionError};

use super::url::KubeUrl;
use super::{boxed, opaque_type, owned, read, take, text};

const FORMAT: &str = "kubernetes.NamedFormat";

/// One named format: its name in `format.named` and its check, which lists
/// what is wrong with a text (nothing for a valid one).
#[derive(Debug, Clone, Copy)]
pub struct NamedFormat {
    name: &'static str,
    check: fn(&str) -> Vec<String>,
}

/// A format is its name: each name has one check.
impl PartialEq for NamedFormat {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for NamedFormat {}

impl Opaque for NamedFormat {
    fn runtime_type_name(&self) -> &str {
        FORMAT
    }
}

const fn named_format(name: &'static str, check: fn(&str) -> Vec<String>) -> NamedFormat {
    NamedFormat { name, check }
}

/// Every named format, in the order `format.<name>()` is declared.
static FORMATS: [NamedFormat; 13] = [
    named_format("dns1123Label", dns1123_label),
    named_format("dns1123Subdomain", dns1123_subdomain),
    named_format("dns1035Label", dns1035_label),
    named_format("qualifiedName", qualified_name),
    named_format("dns1123LabelPrefix", dns1123_label_prefix),
    named_format("dns1123SubdomainPrefix", dns1123_subdomain_prefix),
    named_format("dns1035LabelPrefix", dns1035_label_prefix),
    named_format("labelValue", label_value),
    named_format("uri", uri),
    named_format("uuid", uuid),
    named_format("byte", byte),
    named_format("date", date),
    named_format("datetime", datetime),
];

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload("format.named", "format-named", vec![STRING_TYPE], named)?;
    env.add_member_overload(
        "validate",
        "format-validate",
        opaque_type(FORMAT),
        vec![STRING_TYPE],
        validate,
    )?;
    // One function per format; each fn item is its own function pointer.
    let constants: [(usize, cel::common::functions::Function); 13] = [
        (0, constant::<0>),
        (1, constant::<1>),
        (2, constant::<2>),
        (3, constant::<3>),
        (4, constant::<4>),
        (5, constant::<5>),
        (6, constant::<6>),
        (7, constant::<7>),
        (8, constant::<8>),
        (9, constant::<9>),
        (10, constant::<10>),
        (11, constant::<11>),
        (12, constant::<12>),
    ];
    for (index, function) in constants {
        let name = format!("format.{}", FORMATS[index].name);
        env.add_overload(&name, &name, vec![], function)?;
    }
    Ok(())
}

fn constant<'b, 'v, const INDEX: usize>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [] = take(FORMATS[INDEX].name, args)?;
    Ok(CowVal::Owned(boxed(FORMATS[INDEX])?))
}

fn named<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [name] = take("format.named", args)?;
    let name = text("format.named", name.as_ref())?;
    let optional = match FORMATS.iter().position(|f| f.name == name) {
        Some(index) => CelOptional::of(boxed(FORMATS[index])?),
        None => CelOptional::none(),
    };
    owned(optional)
}

fn validate<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [format, candidate] = take("validate", args)?;
    let candidate = text("validate", candidate.as_ref())?;
    let problems = read("validate", format.as_ref(), |f: &NamedFormat| {
        (f.check)(candidate)
    })?;
    if problems.is_empty() {
        return owned(CelOptional::none());
    }
    let list: Vec<Box<dyn Val>> = problems
        .into_iter()
        .map(|problem| Box::new(CelString::from(problem)) as Box<dyn Val>)
        .collect();
    owned(CelOptional::of(Box::new(CelList::from(list))))
}

/// Most characters in a DNS label, a label value or a qualified name.
const LABEL_MAX: usize = 63;
/// Most characters in a DNS subdomain.
const SUBDOMAIN_MAX: usize = 253;

fn too_long(max: usize) -> String {
    format!("must be at most {max} characters long")
}

/// The prefix formats check a name to which the API server appends a
/// random suffix: a trailing `-` is fine there.
fn mask_trailing_dash(s: &str) -> String {
    match s.strip_suffix('-') {
        Some(head) if !head.is_empty() => format!("{head}a"),
        _ => s.to_string(),
    }
}

fn dns1123_label_prefix(s: &str) -> Vec<String> {
    dns1123_label(&mask_trailing_dash(s))
}

fn dns1123_subdomain_prefix(s: &str) -> Vec<String> {
    dns1123_subdomain(&mask_trailing_dash(s))
}

fn dns1035_label_prefix(s: &str) -> Vec<String> {
    dns1035_label(&mask_trailing_dash(s))
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Non-empty, of lower-case letters, digits and `-`, starting with a
/// character `first` accepts and ending with a letter or digit.
fn is_dns_label(s: &str, first: fn(char) -> bool) -> bool {
    s.chars().next().is_some_and(first)
        && s.chars().next_back().is_some_and(lower_alnum)
        && s.chars().all(|c| lower_alnum(c) || c == '-')
}

fn dns1123_label(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.len() > LABEL_MAX {
        problems.push(too_long(LABEL_MAX));
    }
    if !is_dns_label(s, lower_alnum) {
        problems.push(
            "must be an RFC 1123 label: lower-case letters, digits and '-', \
             beginning and ending with a letter or digit (such as 'web-1')"
                .to_string(),
        );
    }
    problems
}

fn dns1035_label(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.len() > LABEL_MAX {
        problems.push(too_long(LABEL_MAX));
    }
    if !is_dns_label(s, |c| c.is_ascii_lowercase()) {
        problems.push(
            "must be an RFC 1035 label: lower-case letters, digits and '-', \
             beginning with a letter and ending with a letter or digit (such as 'web-a')"
                .to_string(),
        );
    }
    problems
}

fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|label| is_dns_label(label, lower_alnum))
}

fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        problems.push(too_long(SUBDOMAIN_MAX));
    }
    if !is_dns_subdomain(s) {
        problems.push(
            "must be an RFC 1123 subdomain: dot-separated labels of lower-case letters, \
             digits and '-', each beginning and ending with a letter or digit (such as 'example.com')"
                .to_string(),
        );
    }
    problems
}

/// Letters, digits, `-`, `_` and `.`, beginning and ending with a letter or
/// digit: the name part of a qualified name, and a non-empty label value.
fn is_label_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

const NAME_CHARACTERS: &str = "must consist of letters, digits, '-', '_' or '.', \
    beginning and ending with a letter or digit (such as 'app.kubernetes.io_name-1')";

fn qualified_name(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let name = match s.split('/').collect::<Vec<_>>()[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                problems.push("the prefix before '/' must not be empty".to_string());
            } else {
                problems.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|p| format!("prefix part {p}")),
                );
            }
            name
        }
        _ => {
            return vec![
                "must be a name, optionally after a DNS subdomain prefix and '/' \
                 (such as 'example.com/my-name')"
                    .to_string(),
            ];
        }
    };
    if name.is_empty() {
        problems.push("name part must not be empty".to_string());
    } else {
        if name.len() > LABEL_MAX {
            problems.push(format!("name part {}", too_long(LABEL_MAX)));
        }
        if !is_label_name(name) {
            problems.push(format!("name part {NAME_CHARACTERS}"));
        }
    }
    problems
}

fn label_value(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.len() > LABEL_MAX {
        problems.push(too_long(LABEL_MAX));
    }
    if !s.is_empty() && !is_label_name(s) {
        problems.push(format!("a label value {NAME_CHARACTERS}, or be empty"));
    }
    problems
}

fn uri(s: &str) -> Vec<String> {
    match KubeUrl::parse(s) {
        Ok(_) => Vec::new(),
        Err(e) => vec![e.to_string()],
    }
}

fn uuid(s: &str) -> Vec<String> {
    let hex =
        |part: &str, len: usize| part.len() == len && part.chars().all(|c| c.is_ascii_hexdigit());
    let dashed = matches!(
        s.split('-').collect::<Vec<_>>()[..],
        [a, b, c, d, e] if hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12)
    );
    if dashed || hex(s, 32) {
        Vec::new()
    } else {
        vec!["is not a UUID (such as '123e4567-e89b-12d3-a456-426614174000')".to_string()]
    }
}

fn byte(s: &str) -> Vec<String> {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(s) {
        Ok(_) => Vec::new(),
        Err(_) => vec!["is not standard base64".to_string()],
    }
}

fn date(s: &str) -> Vec<String> {
    let parsed = s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
    if parsed {
        Vec::new()
    } else {
        vec!["is not a full date (YYYY-MM-DD)".to_string()]
    }
}

/// RFC 3339, and the forms without an offset that the API server's
/// date-time format also takes.
fn datetime(s: &str) -> Vec<String> {
    const LOCAL: [&str; 3] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
    ];
    let parsed = chrono::DateTime::parse_from_rfc3339(s).is_ok()
        || LOCAL
            .iter()
            .any(|layout| chrono::NaiveDateTime::parse_from_str(s, layout).is_ok());
    if parsed {
        Vec::new()
    } else {
        vec!["is not a date-time (RFC 3339, such as '2024-01-31T12:00:00Z')".to_string()]
    }
}

#[cfg(test)]
mod tests {
    use crate::cel_k8s::test_support::{all_errors, all_true};

    #[test]
    fn dns_names_and_labels() {
        all_true(&[
            "!format.dns1123Label().validate(object.metadata.name).hasValue()",
            "format.dns1123Label().validate('My_Name').hasValue()",
            "format.dns1123Label().validate('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa').value().size() == 1",
            "!format.dns1123Subdomain().validate('apiextensions.k8s.io').hasValue()",
            "format.dns1123Subdomain().validate('a..b').hasValue()",
            "!format.dns1035Label().validate('web-a').hasValue()",
            "format.dns1035Label().validate('1web').hasValue()",
            "!format.dns1123LabelPrefix().validate('my-label-prefix-').hasValue()",
            "format.dns1123Label().validate('my-label-prefix-').hasValue()",
            "!format.dns1123SubdomainPrefix().validate('mysubdomain.prefix.-').hasValue()",
            "!format.dns1035LabelPrefix().validate('my-label-prefix-').hasValue()",
        ]);
    }

    #[test]
    fn qualified_names_and_label_values() {
        all_true(&[
            "!format.qualifiedName().validate('apiextensions.k8s.io/v1beta1').hasValue()",
            "!format.qualifiedName().validate('app_name.x-1').hasValue()",
            "format.qualifiedName().validate('/name').hasValue()",
            "format.qualifiedName().validate('a/b/c').hasValue()",
            "format.qualifiedName().validate('Bad_Prefix/name').value().size() == 1",
            "!format.labelValue().validate('').hasValue() && !format.labelValue().validate('v1.2_b').hasValue()",
            "format.labelValue().validate('-v').hasValue()",
        ]);
    }

    #[test]
    fn uris_uuids_base64_and_dates() {
        all_true(&[
            "!format.uri().validate('http://example.com').hasValue()",
            "format.uri().validate('example.com').hasValue()",
            "!format.uuid().validate('123e4567-e89b-12d3-a456-426614174000').hasValue()",
            "!format.uuid().validate('123E4567E89B12D3A456426614174000').hasValue()",
            "format.uuid().validate('123e4567-e89b-12d3-a456').hasValue()",
            "!format.byte().validate('aGVsbG8=').hasValue() && format.byte().validate('aGVsbG8').hasValue()",
            "!format.date().validate('2021-01-01').hasValue() && format.date().validate('2021-02-30').hasValue()",
            "!format.datetime().validate('2021-01-01T00:00:00Z').hasValue()",
            "!format.datetime().validate('2021-01-01T00:00:00.5+02:00').hasValue()",
            "format.datetime().validate('2021-01-01').hasValue()",
        ]);
    }

    #[test]
    fn formats_by_name_are_optional() {
        all_true(&[
            "format.named('dns1123Label').hasValue()",
            "!format.named('noSuchFormat').hasValue()",
            "format.named('uuid').value().validate('x').value().size() == 1",
            "format.named('labelValue').value() == format.labelValue()",
            "format.dns1123Label().validate('Bad').orValue([]).size() == 1",
            "format.dns1123Label().validate('good').orValue([]) == []",
        ]);
        all_errors(
            &[
                "format.named(1).hasValue()",
                "format.uuid().validate(1).hasValue()",
            ],
            "",
        );
    }
}
