//! Parsing `mutate` blocks: `patchStrategicMerge`, `patchesJson6902` and
//! `foreach`; existing-resource mutation is refused here.

use serde_json::Value;

use crate::error::PolicyError;
use crate::spec::*;
use crate::variables::Template;

impl Parser<'_> {
    /// `mutate`: exactly one of `patchStrategicMerge`, `patchesJson6902`,
    /// `foreach`. Mutating existing resources (`targets`,
    /// `mutateExistingOnPolicyUpdate`) needs the cluster's objects, which an
    /// admission request or a test file does not carry: refused.
    pub(crate) fn mutation(&self, value: &Value) -> Result<Mutation, PolicyError> {
        let map = self.object(value, "mutate")?;
        let mut found = Vec::new();
        for (key, entry) in map {
            match key.as_str() {
                "patchStrategicMerge" => {
                    found.push(self.strategic_merge(entry, "mutate.patchStrategicMerge")?)
                }
                "patchesJson6902" => found.push(self.json6902(entry, "mutate.patchesJson6902")?),
                "foreach" => found.push(Mutation::Foreach(
                    self.foreach_mutations(entry, "mutate.foreach")?,
                )),
                other => return Err(self.unsupported(&format!("mutate.{other}"))),
            }
        }
        self.exactly_one_mutation(found, "mutate")
    }

    pub(crate) fn exactly_one_mutation(
        &self,
        mut found: Vec<Mutation>,
        what: &str,
    ) -> Result<Mutation, PolicyError> {
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(self.invalid(&format!(
                "{what} needs one of patchStrategicMerge, patchesJson6902, foreach"
            ))),
            _ => Err(self.invalid(&format!(
                "{what} has more than one of patchStrategicMerge, patchesJson6902, foreach"
            ))),
        }
    }

    pub(crate) fn strategic_merge(
        &self,
        value: &Value,
        what: &str,
    ) -> Result<Mutation, PolicyError> {
        match value {
            Value::Object(_) => Ok(Mutation::StrategicMerge(Template::new(value.clone()))),
            _ => Err(self.invalid(&format!("{what} must be a map"))),
        }
    }

    /// The text is parsed only after substitution; a patch without
    /// variables is parsed here too, so a typo fails the load, not every
    /// request.
    pub(crate) fn json6902(&self, value: &Value, what: &str) -> Result<Mutation, PolicyError> {
        let text = value
            .as_str()
            .ok_or_else(|| self.invalid(&format!("{what} must be a string")))?;
        if !text.contains("{{") {
            crate::json6902::parse(text).map_err(|e| self.invalid(&format!("{what}: {e}")))?;
        }
        Ok(Mutation::Json6902(text.to_string()))
    }

    pub(crate) fn foreach_mutations(
        &self,
        value: &Value,
        what: &str,
    ) -> Result<Vec<ForeachMutation>, PolicyError> {
        let mut list = Vec::new();
        for entry in self.array(value, what)? {
            let map = self.object(entry, what)?;
            let mut found = Vec::new();
            for (key, item) in map {
                match key.as_str() {
                    "list" | "context" | "preconditions" | "order" => {}
                    "patchStrategicMerge" => found
                        .push(self.strategic_merge(item, &format!("{what}.patchStrategicMerge"))?),
                    "patchesJson6902" => {
                        found.push(self.json6902(item, &format!("{what}.patchesJson6902"))?)
                    }
                    "foreach" => found.push(Mutation::Foreach(
                        self.foreach_mutations(item, &format!("{what}.foreach"))?,
                    )),
                    other => return Err(self.unsupported(&format!("{what}.{other}"))),
                }
            }
            let mutation = self.exactly_one_mutation(found, what)?;
            let list_expression = map
                .get("list")
                .and_then(Value::as_str)
                .ok_or_else(|| self.invalid(&format!("{what} needs a list")))?
                .to_string();
            crate::jmespath::compile_check(&list_expression)
                .map_err(|e| self.invalid(&e.to_string()))?;
            let order = match map.get("order") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) if text == "Ascending" => Some(ForeachOrder::Ascending),
                Some(Value::String(text)) if text == "Descending" => Some(ForeachOrder::Descending),
                Some(other) => {
                    return Err(self.invalid(&format!(
                        "{what}.order must be Ascending or Descending, not {other}"
                    )));
                }
            };
            list.push(ForeachMutation {
                list: list_expression,
                context: self.context(map.get("context"), &format!("{what}.context"))?,
                preconditions: map
                    .get("preconditions")
                    .map(|v| self.conditions(v, &format!("{what}.preconditions")))
                    .transpose()?,
                order,
                mutation,
            });
        }
        Ok(list)
    }
}
