//! Parsing CEL: expressions, named expressions (`variables`,
//! `matchConditions`, `celPreconditions`), validations and `validate.cel`
//! blocks, compiled once at load.

use serde_json::Value;

use crate::cel::{CelCheck, CelExpression, CelValidation, NamedExpression};
use crate::error::PolicyError;
use crate::spec::*;

impl Parser<'_> {
    /// Compiles one CEL expression; a syntax error names where it is.
    pub(crate) fn expression(
        &self,
        value: &Value,
        what: &str,
    ) -> Result<CelExpression, PolicyError> {
        let source = value
            .as_str()
            .ok_or_else(|| self.invalid(&format!("{what} must be a string")))?;
        CelExpression::compile(source)
            .map_err(|e| self.invalid(&format!("{what} does not compile: {e}")))
    }

    /// `[{name, expression}]` lists: variables, matchConditions,
    /// celPreconditions.
    pub(crate) fn named_expressions(
        &self,
        value: &Value,
        what: &str,
    ) -> Result<Vec<NamedExpression>, PolicyError> {
        let mut out = Vec::new();
        for item in self.array(value, what)? {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| self.invalid(&format!("each {what} entry needs a name")))?;
            let expression = item
                .get("expression")
                .ok_or_else(|| self.invalid(&format!("{what}[{name}] needs an expression")))?;
            out.push(NamedExpression {
                name: name.to_string(),
                expression: self.expression(expression, &format!("{what}[{name}].expression"))?,
            });
        }
        Ok(out)
    }

    /// `validations` / `validate.cel.expressions` entries.
    pub(crate) fn cel_validations(
        &self,
        value: &Value,
        what: &str,
    ) -> Result<Vec<CelValidation>, PolicyError> {
        let mut out = Vec::new();
        for (index, item) in self.array(value, what)?.iter().enumerate() {
            let map = self.object(item, what)?;
            for key in map.keys() {
                match key.as_str() {
                    "expression" | "message" | "messageExpression" | "reason" => {}
                    other => return Err(self.unsupported(&format!("{what}.{other}"))),
                }
            }
            let expression = map
                .get("expression")
                .ok_or_else(|| self.invalid(&format!("{what}[{index}] needs an expression")))?;
            out.push(CelValidation {
                expression: self.expression(expression, &format!("{what}[{index}].expression"))?,
                message: map
                    .get("message")
                    .and_then(Value::as_str)
                    .map(|m| m.trim_end().to_string()),
                message_expression: map
                    .get("messageExpression")
                    .map(|e| self.expression(e, &format!("{what}[{index}].messageExpression")))
                    .transpose()?,
            });
        }
        Ok(out)
    }

    /// `validate.cel`. Parameter resources (`paramKind`/`paramRef`) need a
    /// parameter object per binding, which a policy file alone does not
    /// carry: refused, not guessed.
    pub(crate) fn cel(&self, value: &Value) -> Result<CelCheck, PolicyError> {
        let map = self.object(value, "validate.cel")?;
        let mut check = CelCheck::default();
        for (key, entry) in map {
            match key.as_str() {
                "expressions" => {
                    check.validations = self.cel_validations(entry, "validate.cel.expressions")?
                }
                "variables" => {
                    check.variables = self.named_expressions(entry, "validate.cel.variables")?
                }
                // Audit annotations annotate the audit event; they never
                // change a verdict.
                "auditAnnotations" => {}
                other => return Err(self.unsupported(&format!("validate.cel.{other}"))),
            }
        }
        if check.validations.is_empty() {
            return Err(self.invalid("validate.cel needs at least one expression"));
        }
        Ok(check)
    }
}
