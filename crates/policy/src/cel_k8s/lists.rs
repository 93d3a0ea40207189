//! The Kubernetes `lists` library, the part the `cel` crate's lists
//! extension does not have: `isSorted()`, `sum()`, `min()`, `max()`,
//! `indexOf(x)` and `lastIndexOf(x)` on any list. Elements are ordered and
//! added by CEL's own `<` and `+`, and compared by `==`.

use std::cmp::Ordering;

use cel::common::types::{CelInt, DYN_TYPE, Kind, LIST_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use super::{boolean, owned, take};

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_member_overload("isSorted", "list_is_sorted", LIST_TYPE, vec![], is_sorted)?;
    env.add_member_overload("sum", "list_sum", LIST_TYPE, vec![], sum)?;
    env.add_member_overload("min", "list_min", LIST_TYPE, vec![], min)?;
    env.add_member_overload("max", "list_max", LIST_TYPE, vec![], max)?;
    env.add_member_overload(
        "indexOf",
        "list_index_of",
        LIST_TYPE,
        vec![DYN_TYPE],
        index_of,
    )?;
    env.add_member_overload(
        "lastIndexOf",
        "list_last_index_of",
        LIST_TYPE,
        vec![DYN_TYPE],
        last_index_of,
    )?;
    Ok(())
}

/// The elements of a list receiver, borrowed.
fn elements<'b, 'v>(
    function: &str,
    list: &'b (dyn Val + 'v),
) -> Result<Vec<&'b (dyn Val + 'v)>, ExecutionError> {
    let iterable = list
        .as_iterable()
        .ok_or_else(|| ExecutionError::function_error(function, "the receiver is not a list"))?;
    let mut items = iterable.iter();
    let mut out = Vec::new();
    while let Some(item) = items.next() {
        out.push(item);
    }
    Ok(out)
}

/// `a` ordered against `b` by CEL's `<`: an error for values of types that
/// do not order, or order only among themselves.
fn order(function: &str, a: &dyn Val, b: &dyn Val) -> Result<Ordering, ExecutionError> {
    let comparer = a.as_comparer().ok_or_else(|| {
        ExecutionError::function_error(
            function,
            format!("values of type {} are not ordered", a.get_type().name()),
        )
    })?;
    comparer
        .compare(b)
        .map_err(|e| ExecutionError::function_error(function, e))
}

fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take("isSorted", args)?;
    let items = elements("isSorted", list.as_ref())?;
    for pair in items.windows(2) {
        if order("isSorted", pair[0], pair[1])? == Ordering::Greater {
            return boolean(false);
        }
    }
    boolean(true)
}

fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take("sum", args)?;
    let items = elements("sum", list.as_ref())?;
    let Some((first, rest)) = items.split_first() else {
        return owned(CelInt::from(0));
    };
    // The API server sums numbers and durations only; strings and lists,
    // which `+` would concatenate, are not summed.
    for item in &items {
        if !matches!(
            item.get_type().kind(),
            Kind::Int | Kind::UInt | Kind::Double | Kind::Duration
        ) {
            return Err(ExecutionError::function_error(
                "sum",
                format!("cannot sum values of type {}", item.get_type().name()),
            ));
        }
    }
    let mut total = first.clone_as_boxed();
    for item in rest {
        let adder = total
            .as_adder()
            .ok_or_else(|| ExecutionError::function_error("sum", "values do not add"))?;
        let next = adder
            .add(*item)
            .map_err(|e| ExecutionError::function_error("sum", e))?
            .into_owned();
        total = next;
    }
    Ok(CowVal::Owned(total))
}

/// The element that `wanted` says wins over every other; an empty list is
/// an error, as it has no least or greatest element.
fn extreme<'b, 'v>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
    wanted: Ordering,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take(function, args)?;
    let items = elements(function, list.as_ref())?;
    let Some((first, rest)) = items.split_first() else {
        return Err(ExecutionError::function_error(
            function,
            format!("{function}() called on an empty list"),
        ));
    };
    let mut best = *first;
    for item in rest {
        if order(function, *item, best)? == wanted {
            best = *item;
        }
    }
    Ok(CowVal::Owned(best.clone_as_boxed()))
}

fn min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme("min", args, Ordering::Less)
}

fn max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme("max", args, Ordering::Greater)
}

/// The position of the first (or last) element equal to the argument, or -1.
fn position<'b, 'v>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
    from_end: bool,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list, wanted] = take(function, args)?;
    let items = elements(function, list.as_ref())?;
    let is_wanted = |item: &&(dyn Val + '_)| item.equals(wanted.as_ref());
    let found = if from_end {
        items.iter().rposition(is_wanted)
    } else {
        items.iter().position(is_wanted)
    };
    let index = found.map_or(Ok(-1), i64::try_from).map_err(|_| {
        ExecutionError::function_error(function, "the list is longer than an int counts")
    })?;
    owned(CelInt::from(index))
}

fn index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    position("indexOf", args, false)
}

fn last_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    position("lastIndexOf", args, true)
}

#[cfg(test)]
mod tests {
    use crate::cel_k8s::test_support::{all_errors, all_true};

    #[test]
    fn sortedness_sums_and_extremes() {
        all_true(&[
            "[1, 2, 2, 3].isSorted() && !['b', 'a'].isSorted() && [].isSorted()",
            "[1, 2, 3].sum() == 6 && [1.5, 2.5].sum() == 4.0 && [].sum() == 0",
            "[duration('1s'), duration('2s')].sum() == duration('3s')",
            "[3, 1, 2].min() == 1 && [3, 1, 2].max() == 3",
            "['b', 'c', 'a'].max() == 'c'",
            "object.spec.containers.map(c, c.name).min() == 'app'",
        ]);
    }

    #[test]
    fn positions_use_equality() {
        all_true(&[
            "[1, 2, 1].indexOf(1) == 0 && [1, 2, 1].lastIndexOf(1) == 2",
            "[1, 2].indexOf(3) == -1 && [].lastIndexOf('a') == -1",
            "[[1], [2]].indexOf([2]) == 1",
            // The strings extension's indexOf still serves strings.
            "'abcabc'.indexOf('c') == 2 && 'abcabc'.lastIndexOf('c') == 5",
        ]);
    }

    #[test]
    fn what_has_no_answer_is_an_error() {
        all_errors(&["[].min() == 0", "[].max() == 0"], "empty list");
        all_errors(&["['a', 'b'].sum() == 'ab'"], "cannot sum");
        all_errors(&["[1, 'a'].isSorted()", "[{}, {}].max() == {}"], "");
        all_errors(&["[9223372036854775807, 1].sum() == 0"], "sum");
    }
}
