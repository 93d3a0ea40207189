//! The `quantity` library: `quantity(s)`, `isQuantity(s)` and, on a
//! quantity, `isInteger`, `asInteger`, `asApproximateFloat`, `sign`,
//! `add`/`sub` (a quantity or an int), `isGreaterThan`, `isLessThan` and
//! `compareTo`. The value is the engine's exact [`Quantity`].

use cel::common::types::{CelDouble, CelInt, INT_TYPE, STRING_TYPE};
use cel::common::value::CowVal;
use cel::objects::Opaque;
use cel::{DeclarationError, Env, ExecutionError};

use super::{boolean, int, opaque_type, owned, read, take, text, wrap};
use crate::quantity::Quantity;

const QUANTITY: &str = "kubernetes.Quantity";

impl Opaque for Quantity {
    fn runtime_type_name(&self) -> &str {
        QUANTITY
    }
}

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let quantity = || opaque_type(QUANTITY);
    env.add_overload("quantity", "string_to_quantity", vec![STRING_TYPE], parse)?;
    env.add_overload(
        "isQuantity",
        "is_quantity_string",
        vec![STRING_TYPE],
        is_quantity,
    )?;
    // The API server declares `sign` as a global function and documents it
    // as a method; both spellings work here.
    env.add_overload("sign", "quantity_sign", vec![quantity()], sign)?;
    env.add_member_overload("sign", "quantity.sign()", quantity(), vec![], sign)?;
    env.add_member_overload(
        "isInteger",
        "quantity_is_integer",
        quantity(),
        vec![],
        is_integer,
    )?;
    env.add_member_overload(
        "asInteger",
        "quantity_get_int",
        quantity(),
        vec![],
        as_integer,
    )?;
    env.add_member_overload(
        "asApproximateFloat",
        "quantity_get_float",
        quantity(),
        vec![],
        as_float,
    )?;
    env.add_member_overload("add", "quantity_add", quantity(), vec![quantity()], add)?;
    env.add_member_overload(
        "add",
        "quantity_add_int",
        quantity(),
        vec![INT_TYPE],
        add_int,
    )?;
    env.add_member_overload("sub", "quantity_sub", quantity(), vec![quantity()], sub)?;
    env.add_member_overload(
        "sub",
        "quantity_sub_int",
        quantity(),
        vec![INT_TYPE],
        sub_int,
    )?;
    env.add_member_overload(
        "isGreaterThan",
        "quantity_is_greater_than",
        quantity(),
        vec![quantity()],
        is_greater_than,
    )?;
    env.add_member_overload(
        "isLessThan",
        "quantity_is_less_than",
        quantity(),
        vec![quantity()],
        is_less_than,
    )?;
    env.add_member_overload(
        "compareTo",
        "quantity_compare_to",
        quantity(),
        vec![quantity()],
        compare_to,
    )?;
    Ok(())
}

/// The quantity behind a receiver or argument.
fn value(function: &str, arg: &CowVal<'_, '_>) -> Result<Quantity, ExecutionError> {
    read(function, arg.as_ref(), |q: &Quantity| *q)
}

fn parse<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [source] = take("quantity", args)?;
    let quantity = Quantity::parse(text("quantity", source.as_ref())?)
        .map_err(|e| ExecutionError::function_error("quantity", e))?;
    wrap(quantity)
}

fn is_quantity<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [source] = take("isQuantity", args)?;
    boolean(Quantity::parse(text("isQuantity", source.as_ref())?).is_ok())
}

fn sign<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [q] = take("sign", args)?;
    owned(CelInt::from(value("sign", &q)?.sign()))
}

fn is_integer<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [q] = take("isInteger", args)?;
    boolean(value("isInteger", &q)?.as_i64().is_some())
}

fn as_integer<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [q] = take("asInteger", args)?;
    let whole = value("asInteger", &q)?.as_i64().ok_or_else(|| {
        ExecutionError::function_error(
            "asInteger",
            "the quantity is not a whole number that fits an int",
        )
    })?;
    owned(CelInt::from(whole))
}

fn as_float<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [q] = take("asApproximateFloat", args)?;
    owned(CelDouble::from(value("asApproximateFloat", &q)?.as_f64()))
}

/// `a op b` for two quantities; the sum or difference of two quantities
/// the engine can hold can overflow only past 1e29 units.
fn arithmetic<'b, 'v>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
    operand: fn(&str, &CowVal<'_, '_>) -> Result<Quantity, ExecutionError>,
    op: fn(Quantity, Quantity) -> Option<Quantity>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = take(function, args)?;
    let result = op(value(function, &a)?, operand(function, &b)?)
        .ok_or_else(|| ExecutionError::function_error(function, "the result is too large"))?;
    wrap(result)
}

fn int_operand(function: &str, arg: &CowVal<'_, '_>) -> Result<Quantity, ExecutionError> {
    int(function, arg.as_ref()).map(Quantity::from_int)
}

fn add<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    arithmetic("add", args, value, Quantity::checked_add)
}

fn add_int<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    arithmetic("add", args, int_operand, Quantity::checked_add)
}

fn sub<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    arithmetic("sub", args, value, Quantity::checked_sub)
}

fn sub_int<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    arithmetic("sub", args, int_operand, Quantity::checked_sub)
}

fn compared(
    function: &str,
    args: Vec<CowVal<'_, '_>>,
) -> Result<std::cmp::Ordering, ExecutionError> {
    let [a, b] = take(function, args)?;
    Ok(value(function, &a)?.cmp(&value(function, &b)?))
}

fn is_greater_than<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    boolean(compared("isGreaterThan", args)?.is_gt())
}

fn is_less_than<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    boolean(compared("isLessThan", args)?.is_lt())
}

fn compare_to<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    owned(CelInt::from(compared("compareTo", args)? as i64))
}

#[cfg(test)]
mod tests {
    use crate::cel_k8s::test_support::{all_errors, all_true};

    #[test]
    fn a_memory_limit_compares_with_a_written_quantity() {
        all_true(&[
            "quantity(object.spec.containers[0].resources.limits.memory).isLessThan(quantity('1Gi'))",
            "quantity(object.spec.containers[0].resources.limits.cpu).compareTo(quantity('0.5')) == 0",
            "quantity('150Mi').isGreaterThan(quantity('100Mi'))",
            "!quantity('50Mi').isGreaterThan(quantity('100Mi'))",
            "quantity('50M').compareTo(quantity('50Mi')) == -1",
            "quantity('50Mi').compareTo(quantity('50M')) == 1",
            "quantity('200M') == quantity('0.2G')",
            "quantity('1') != quantity('2')",
        ]);
    }

    #[test]
    fn parsing_accepts_what_the_api_server_accepts() {
        all_true(&[
            "isQuantity('1.3G') && isQuantity('1.3Gi') && isQuantity('10000k')",
            "!isQuantity('1,3G') && !isQuantity('200K') && !isQuantity('Three') && !isQuantity('Mi')",
            "!isQuantity('') && !isQuantity(' 1')",
        ]);
        all_errors(
            &[
                "quantity('200K').sign() == 1",
                "quantity('Three') == quantity('1')",
            ],
            "not a quantity",
        );
    }

    #[test]
    fn integers_and_floats_convert_without_surprises() {
        all_true(&[
            "quantity('50000000G').isInteger()",
            "quantity('50k').asInteger() == 50000",
            "!quantity('1.5').isInteger()",
            "!quantity('99999999999999G').isInteger()",
            "quantity('50k').sub(20000).asApproximateFloat() == 30000.0",
            "quantity('1500m').asApproximateFloat() == 1.5",
        ]);
        all_errors(
            &[
                "quantity('99999999999999G').asInteger() > 0",
                "quantity('100m').asInteger() == 0",
            ],
            "not a whole number",
        );
    }

    #[test]
    fn quantities_past_the_engine_range_are_errors_not_wrong_numbers() {
        // The API server holds any size; this engine stops near 1.7e29.
        all_errors(
            &["!quantity('9999999999999999999999999999999999999G').isInteger()"],
            "too large",
        );
        all_true(&["!isQuantity('9999999999999999999999999999999999999G')"]);
    }

    #[test]
    fn arithmetic_takes_quantities_and_ints() {
        all_true(&[
            "quantity('50k').add(quantity('20k')) == quantity('70k')",
            "quantity('50k').add(20) == quantity('50020')",
            "quantity('50k').sub(quantity('20k')) == quantity('30k')",
            "quantity('50k').sub(20000) == quantity('30k')",
            "quantity('50k').add(20).sub(quantity('100k')).sub(-50000) == quantity('20')",
            "quantity('-1').sign() == -1 && quantity('0').sign() == 0 && sign(quantity('3m')) == 1",
        ]);
        all_errors(
            &[
                "quantity('100000000000000000000000000000').add(quantity('100000000000000000000000000000')).sign() == 1",
            ],
            "too large",
        );
    }

    #[test]
    fn a_quantity_survives_being_a_variable() {
        use crate::cel::{
            CelBindings, CelCheck, CelExpression, CelValidation, CelVerdict, NamedExpression,
        };
        let pod = serde_json::json!({"kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "resources": {"limits": {"memory": "2Gi"}}}]}});
        let bindings = CelBindings::for_input(&crate::EvalInput::for_resource(&pod));
        let compiled = |s: &str| CelExpression::compile(s).unwrap();
        let check = CelCheck {
            variables: vec![NamedExpression {
                name: "memory".into(),
                expression: compiled("quantity(object.spec.containers[0].resources.limits.memory)"),
            }],
            validations: vec![CelValidation {
                expression: compiled("variables.memory.isLessThan(quantity('1Gi'))"),
                message: None,
                message_expression: Some(compiled(
                    "'memory ' + string(variables.memory.asInteger()) + ' is over 1Gi'",
                )),
            }],
            ..CelCheck::default()
        };
        assert_eq!(
            check.evaluate(&bindings),
            CelVerdict::Fail("memory 2147483648 is over 1Gi".into())
        );
    }

    #[test]
    fn wrong_argument_types_are_errors() {
        all_errors(&["quantity(1) == quantity('1')"], "");
        all_errors(&["quantity('1').isLessThan(1)"], "");
        all_errors(&["quantity('1').add('1') == quantity('2')"], "");
    }
}
