//! Parsing CEL: expressions, named expressions (`variables`,
//! `matchConditions`, `celPreconditions`), validations and `validate.cel`
//! blocks, compiled once at load.

use serde_json::Value;

use crate::cel::{CelCheck, CelExpression, CelValidation, NamedExpression, ParamSource};
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

    /// `validate.cel`. Parameter resources (`paramKind` + `paramRef`) are
    /// read from the cluster at evaluation, as Kyverno does.
    pub(crate) fn cel(&self, value: &Value) -> Result<CelCheck, PolicyError> {
        let map = self.object(value, "validate.cel")?;
        let mut check = CelCheck::default();
        match (map.get("paramKind"), map.get("paramRef")) {
            (None, None) => {}
            (Some(kind), Some(reference)) => {
                check.params = Some(Box::new(self.param_source(kind, reference)?))
            }
            _ => {
                return Err(
                    self.invalid("validate.cel.paramKind and validate.cel.paramRef go together")
                );
            }
        }
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
                "paramKind" | "paramRef" => {}
                other => return Err(self.unsupported(&format!("validate.cel.{other}"))),
            }
        }
        if check.validations.is_empty() {
            return Err(self.invalid("validate.cel needs at least one expression"));
        }
        Ok(check)
    }

    fn param_source(&self, kind: &Value, reference: &Value) -> Result<ParamSource, PolicyError> {
        let kind = self.object(kind, "validate.cel.paramKind")?;
        let reference = self.object(reference, "validate.cel.paramRef")?;
        let text = |map: &serde_json::Map<String, Value>, key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(String::from)
        };
        let (Some(api_version), Some(kind_name)) = (text(kind, "apiVersion"), text(kind, "kind"))
        else {
            return Err(self.invalid("validate.cel.paramKind needs apiVersion and kind"));
        };
        for key in reference.keys() {
            match key.as_str() {
                "name" | "namespace" | "selector" | "parameterNotFoundAction" => {}
                other => return Err(self.unsupported(&format!("validate.cel.paramRef.{other}"))),
            }
        }
        let name = text(reference, "name");
        let selector = reference.get("selector").cloned();
        if name.is_some() == selector.is_some() {
            return Err(
                self.invalid("validate.cel.paramRef needs exactly one of name and selector")
            );
        }
        let deny_when_missing = match text(reference, "parameterNotFoundAction").as_deref() {
            None | Some("Deny") => true,
            Some("Allow") => false,
            Some(other) => {
                return Err(self.invalid(&format!(
                    "validate.cel.paramRef.parameterNotFoundAction {other:?} (Allow or Deny)"
                )));
            }
        };
        Ok(ParamSource {
            api_version,
            kind: kind_name,
            name,
            selector,
            namespace: text(reference, "namespace"),
            deny_when_missing,
        })
    }
}
