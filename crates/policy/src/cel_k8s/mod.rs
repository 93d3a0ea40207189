//! The Kubernetes CEL libraries the `cel` crate lacks: `quantity`, `url`,
//! `ip`/`cidr`, `format`, and the Kubernetes `regex` (`find`, `findAll`) and
//! `lists` (`isSorted`, `sum`, `min`, `max`, `indexOf`, `lastIndexOf`)
//! functions. Each library is one file; [`register`] adds them all to the
//! engine's one shared environment, so an expression that calls none of
//! them pays nothing for them.
//!
//! Values of the libraries' own types (a quantity, a URL, an address, a
//! network, a format) are the crate's opaque values: each is a Rust type
//! implementing [`Opaque`] under its Kubernetes type name, so it keeps its
//! type through `variables` (which pass through [`CelValue`]) and `==`
//! compares it by the type's own equality. Functions reach the Rust value
//! through [`read`].
//!
//! Bad input is an evaluation error naming the function, never a panic.

mod format;
mod lists;
mod net;
mod quantity;
mod regex;
mod url;

use std::sync::Arc;

use cel::common::types::{CelBool, CelInt, CelString, Type};
use cel::common::value::{CowVal, Val};
use cel::objects::Opaque;
use cel::{DeclarationError, Env, ExecutionError, Value as CelValue};

/// Adds every library to `env`. Fails only on a duplicate declaration: a
/// function name the environment already declares for the same types.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    quantity::register(env)?;
    url::register(env)?;
    regex::register(env)?;
    lists::register(env)?;
    format::register(env)?;
    net::register(env)?;
    Ok(())
}

/// Function names whose result is an optional by construction, for the
/// `orValue` rewrite in `cel`: `format.named(..)` and `<format>.validate(..)`.
/// No other function of the environment is called `validate`.
pub fn yields_optional(func_name: &str, qualifier: Option<&str>) -> bool {
    matches!(
        (qualifier, func_name),
        (_, "validate") | (Some("format"), "named") | (None, "format.named")
    )
}

/// The opaque type named `name`, as the overloads declare it.
fn opaque_type(name: &'static str) -> Type {
    Type::new_opaque_type(name)
}

/// `value` as a CEL value of its opaque type.
fn boxed<T: Opaque>(value: T) -> Result<Box<dyn Val>, ExecutionError> {
    Box::<dyn Val>::try_from(CelValue::Opaque(Arc::new(value)))
}

/// `value` as the result of a function.
fn wrap<'b, 'v, T: Opaque>(value: T) -> Result<CowVal<'b, 'v>, ExecutionError> {
    Ok(CowVal::Owned(boxed(value)?))
}

/// Applies `read` to the `T` behind `arg`, which an overload declared with
/// `T`'s opaque type receives.
fn read<T: Opaque, R>(
    function: &str,
    arg: &dyn Val,
    read: impl FnOnce(&T) -> R,
) -> Result<R, ExecutionError> {
    match CelValue::try_from(arg)? {
        CelValue::Opaque(value) => match value.downcast_ref::<T>() {
            Some(inner) => Ok(read(inner)),
            None => Err(wrong_type(function, arg)),
        },
        _ => Err(wrong_type(function, arg)),
    }
}

fn wrong_type(function: &str, arg: &dyn Val) -> ExecutionError {
    ExecutionError::function_error(
        function,
        format!("unexpected argument of type {}", arg.get_type().name()),
    )
}

/// The `N` arguments of a call, the receiver first.
fn take<'b, 'v, const N: usize>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
) -> Result<[CowVal<'b, 'v>; N], ExecutionError> {
    args.try_into().map_err(|args: Vec<_>| {
        ExecutionError::function_error(
            function,
            format!("expected {N} arguments, got {}", args.len()),
        )
    })
}

fn text<'a>(function: &str, arg: &'a dyn Val) -> Result<&'a str, ExecutionError> {
    arg.downcast_ref::<CelString>()
        .map(CelString::inner)
        .ok_or_else(|| wrong_type(function, arg))
}

fn int(function: &str, arg: &dyn Val) -> Result<i64, ExecutionError> {
    arg.downcast_ref::<CelInt>()
        .map(|value| *value.inner())
        .ok_or_else(|| wrong_type(function, arg))
}

fn owned<'b, 'v, T: Val + 'v>(value: T) -> Result<CowVal<'b, 'v>, ExecutionError> {
    Ok(CowVal::owned(value))
}

fn boolean<'b, 'v>(value: bool) -> Result<CowVal<'b, 'v>, ExecutionError> {
    owned(CelBool::from(value))
}

fn string<'b, 'v>(value: String) -> Result<CowVal<'b, 'v>, ExecutionError> {
    owned(CelString::from(value))
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Evaluates an expression as a policy's CEL rule would be, against a
    //! small Pod, for the libraries' unit tests.

    use serde_json::json;

    use crate::EvalInput;
    use crate::cel::{CelBindings, CelCheck, CelExpression, CelValidation, CelVerdict};

    /// The verdict of `expression` as a validation: `Pass` for true, `Fail`
    /// for false, `Error` with the message otherwise.
    pub fn verdict(expression: &str) -> CelVerdict {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "team"},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                "resources": {"limits": {"memory": "512Mi", "cpu": "500m"}}}]}
        });
        let bindings = CelBindings::for_input(&EvalInput::for_resource(&pod));
        let check = CelCheck {
            validations: vec![CelValidation {
                expression: CelExpression::compile(expression)
                    .unwrap_or_else(|e| panic!("{expression}: {e}")),
                message: Some("false".into()),
                message_expression: None,
            }],
            ..CelCheck::default()
        };
        check.evaluate(&bindings)
    }

    /// Asserts each expression is true.
    pub fn all_true(expressions: &[&str]) {
        for expression in expressions {
            assert_eq!(verdict(expression), CelVerdict::Pass, "{expression}");
        }
    }

    /// Asserts each expression is an evaluation error (not false, not a
    /// panic) whose message contains `needle`.
    pub fn all_errors(expressions: &[&str], needle: &str) {
        for expression in expressions {
            match verdict(expression) {
                CelVerdict::Error(message) => {
                    assert!(message.contains(needle), "{expression}: {message}")
                }
                other => panic!("{expression}: expected an error, got {other:?}"),
            }
        }
    }
}
