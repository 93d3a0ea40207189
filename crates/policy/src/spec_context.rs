//! Parsing a rule's `context` entries (`variable`, `configMap`,
//! `apiCall`) into [`crate::spec::ContextEntry`]s; what the engine cannot
//! read is refused here, naming the construct.

use serde_json::Value;

use crate::error::PolicyError;
use crate::spec::*;

impl Parser<'_> {
    pub(crate) fn context(
        &self,
        value: Option<&Value>,
        what: &str,
    ) -> Result<Vec<ContextEntry>, PolicyError> {
        let Some(value) = value else {
            return Ok(Vec::new());
        };
        let mut entries = Vec::new();
        for entry in self.array(value, what)? {
            let map = self.object(entry, what)?;
            let name = map
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| self.invalid("context entry needs a name"))?
                .to_string();
            let mut sources = Vec::new();
            for (key, raw) in map {
                match key.as_str() {
                    "name" => {}
                    "variable" => sources.push(ContextSource::Variable(
                        self.context_variable(raw, &format!("{what}[{name}].variable"))?,
                    )),
                    "configMap" => sources
                        .push(self.context_config_map(raw, &format!("{what}[{name}].configMap"))?),
                    "apiCall" => sources.push(ContextSource::ApiCall(
                        self.context_api_call(raw, &format!("{what}[{name}].apiCall"))?,
                    )),
                    // `globalReference` needs GlobalContextEntry resources and
                    // `imageRegistry` registry access: neither exists here.
                    other => return Err(self.unsupported(&format!("{what}[{name}].{other}"))),
                }
            }
            let source = match sources.len() {
                1 => sources.remove(0),
                0 => {
                    return Err(self.invalid(&format!(
                        "context entry {name} has no variable, configMap or apiCall"
                    )));
                }
                _ => {
                    return Err(self.invalid(&format!(
                        "context entry {name} has more than one of variable, configMap, apiCall"
                    )));
                }
            };
            entries.push(ContextEntry { name, source });
        }
        Ok(entries)
    }

    pub(crate) fn context_variable(
        &self,
        raw: &Value,
        what: &str,
    ) -> Result<ContextVariable, PolicyError> {
        let variable = self.object(raw, what)?;
        for key in variable.keys() {
            match key.as_str() {
                "jmesPath" | "value" | "default" => {}
                other => return Err(self.unsupported(&format!("{what}.{other}"))),
            }
        }
        let jmes_path = variable
            .get("jmesPath")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(expression) = &jmes_path {
            crate::jmespath::compile_check(expression).map_err(|e| self.invalid(&e.to_string()))?;
        }
        Ok(ContextVariable {
            jmes_path,
            value: variable.get("value").cloned(),
            default: variable.get("default").cloned(),
        })
    }

    pub(crate) fn context_config_map(
        &self,
        raw: &Value,
        what: &str,
    ) -> Result<ContextSource, PolicyError> {
        let map = self.object(raw, what)?;
        for key in map.keys() {
            match key.as_str() {
                "name" | "namespace" => {}
                other => return Err(self.unsupported(&format!("{what}.{other}"))),
            }
        }
        let text = |key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let name = text("name");
        if name.is_empty() {
            return Err(self.invalid(&format!("{what} needs a name")));
        }
        Ok(ContextSource::ConfigMap {
            name,
            namespace: text("namespace"),
        })
    }

    pub(crate) fn context_api_call(&self, raw: &Value, what: &str) -> Result<ApiCall, PolicyError> {
        let map = self.object(raw, what)?;
        // Only reads: a POST (with `data`) can change the cluster with the
        // operator's identity, and its answer could not be cached.
        if let Some(method) = map.get("method")
            && !method
                .as_str()
                .is_some_and(|m| m.eq_ignore_ascii_case("GET"))
        {
            let method = method.as_str().unwrap_or("?");
            return Err(self.unsupported(&format!("{what}.method={method}")));
        }
        for key in map.keys() {
            match key.as_str() {
                "urlPath" | "jmesPath" | "default" | "method" => {}
                // `service` calls leave the cluster (any URL): not served.
                other => return Err(self.unsupported(&format!("{what}.{other}"))),
            }
        }
        let url_path = map
            .get("urlPath")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if url_path.is_empty() {
            return Err(self.invalid(&format!("{what} needs a urlPath")));
        }
        let jmes_path = map
            .get("jmesPath")
            .and_then(Value::as_str)
            .filter(|expression| !expression.is_empty())
            .map(str::to_string);
        if let Some(expression) = jmes_path.as_deref().filter(|e| !e.contains("{{")) {
            crate::jmespath::compile_check(expression).map_err(|e| self.invalid(&e.to_string()))?;
        }
        Ok(ApiCall {
            url_path,
            jmes_path,
            default: map.get("default").cloned(),
        })
    }
}
