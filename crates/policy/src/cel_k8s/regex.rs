//! The Kubernetes `regex` library: `s.find(re)` (the first match, or `''`),
//! `s.findAll(re)` and `s.findAll(re, limit)` (the matches, at most `limit`
//! of them when it is not negative). Patterns are compiled once per thread
//! through the engine's regex cache: a policy passes the same literal
//! pattern on every request.

use cel::common::types::{CelList, CelString, INT_TYPE, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use super::{int, owned, string, take, text};
use crate::text_cache::compiled_regex;

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_member_overload(
        "find",
        "string_find_string",
        STRING_TYPE,
        vec![STRING_TYPE],
        find,
    )?;
    env.add_member_overload(
        "findAll",
        "string_find_all_string",
        STRING_TYPE,
        vec![STRING_TYPE],
        find_all,
    )?;
    env.add_member_overload(
        "findAll",
        "string_find_all_string_int",
        STRING_TYPE,
        vec![STRING_TYPE, INT_TYPE],
        find_all_limited,
    )?;
    Ok(())
}

fn regex(function: &str, pattern: &dyn Val) -> Result<std::rc::Rc<regex::Regex>, ExecutionError> {
    compiled_regex(text(function, pattern)?)
        .map_err(|e| ExecutionError::function_error(function, e))
}

fn find<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [haystack, pattern] = take("find", args)?;
    let regex = regex("find", pattern.as_ref())?;
    let found = regex.find(text("find", haystack.as_ref())?);
    string(found.map_or_else(String::new, |m| m.as_str().to_string()))
}

fn find_all<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [haystack, pattern] = take("findAll", args)?;
    matches(haystack.as_ref(), pattern.as_ref(), usize::MAX)
}

fn find_all_limited<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [haystack, pattern, limit] = take("findAll", args)?;
    // A negative limit means no limit.
    let limit = usize::try_from(int("findAll", limit.as_ref())?).unwrap_or(usize::MAX);
    matches(haystack.as_ref(), pattern.as_ref(), limit)
}

fn matches<'b, 'v>(
    haystack: &dyn Val,
    pattern: &dyn Val,
    limit: usize,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let regex = regex("findAll", pattern)?;
    let found: Vec<Box<dyn Val>> = regex
        .find_iter(text("findAll", haystack)?)
        .take(limit)
        .map(|m| Box::new(CelString::from(m.as_str().to_string())) as Box<dyn Val>)
        .collect();
    owned(CelList::from(found))
}

#[cfg(test)]
mod tests {
    use crate::cel_k8s::test_support::{all_errors, all_true};

    #[test]
    fn find_returns_the_first_match_or_nothing() {
        all_true(&[
            "'abc 123'.find('[0-9]+') == '123'",
            "'abc'.find('[0-9]+') == ''",
            "object.spec.containers[0].image.find('[0-9.]+$') == '1.27'",
            // A group does not narrow the match.
            "'key=value'.find('k(e)y') == 'key'",
        ]);
    }

    #[test]
    fn find_all_lists_matches_up_to_a_limit() {
        all_true(&[
            "'123 abc 456'.findAll('[0-9]+') == ['123', '456']",
            "'123 abc 456'.findAll('[0-9]+', 1) == ['123']",
            "'123 abc 456'.findAll('[0-9]+', 0) == []",
            "'123 abc 456'.findAll('[0-9]+', -1) == ['123', '456']",
            "'abc'.findAll('[0-9]+') == []",
        ]);
    }

    #[test]
    fn a_broken_pattern_is_an_error() {
        all_errors(&["'abc'.find('[') == ''"], "find");
        all_errors(
            &["'abc'.findAll('(') == []", "'abc'.findAll('(', 2) == []"],
            "findAll",
        );
    }
}
