//! Event versioning. Stored events are never rewritten: an event stored at an
//! older `schema_version` of its type is brought to the current shape here,
//! on every read, one version step at a time.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UpcastError {
    #[error("event type {0} is unknown")]
    UnknownType(String),
    #[error("{event_type} schema version {version} is newer than this build knows ({current})")]
    FromTheFuture {
        event_type: String,
        version: i32,
        current: i32,
    },
    #[error("{event_type} schema version {version} cannot be upcast")]
    NoStep { event_type: String, version: i32 },
}

/// The schema version new events of this type are written at.
pub fn current_version(event_type: &str) -> i32 {
    match event_type {
        // v2: cost in integer micro-dollars (sums are exact) and the total
        // stated, not derived by every reader.
        "run.usage_recorded" => 2,
        t if crate::RUN_EVENT_TYPES.contains(&t) => 1,
        _ => 0,
    }
}

/// One step from `version` to `version + 1` of `event_type`. Each schema
/// change of a type adds an arm here and bumps `current_version`.
fn step(event_type: &str, version: i32, data: Value) -> Result<Value, UpcastError> {
    let no_step = || UpcastError::NoStep {
        event_type: event_type.to_owned(),
        version,
    };
    match (event_type, version) {
        // v1: {provider, model, prompt_tokens, completion_tokens, cost_usd (a
        // float, optional)}; v2 adds total_tokens and replaces cost_usd with
        // cost_microusd.
        ("run.usage_recorded", 1) => {
            let Value::Object(mut fields) = data else {
                return Err(no_step());
            };
            let tokens = |fields: &serde_json::Map<String, Value>, name: &str| {
                fields.get(name).and_then(Value::as_i64).unwrap_or(0)
            };
            if !fields.contains_key("total_tokens") {
                let total = tokens(&fields, "prompt_tokens") + tokens(&fields, "completion_tokens");
                fields.insert("total_tokens".into(), total.into());
            }
            let cost_usd = fields.remove("cost_usd").and_then(|c| c.as_f64()).unwrap_or(0.0);
            let micro = (cost_usd * 1_000_000.0).round() as i64;
            fields.entry("cost_microusd").or_insert(micro.into());
            Ok(Value::Object(fields))
        }
        _ => Err(no_step()),
    }
}

pub fn upcast(event_type: &str, mut version: i32, mut data: Value) -> Result<Value, UpcastError> {
    let current = current_version(event_type);
    if current == 0 {
        return Err(UpcastError::UnknownType(event_type.to_owned()));
    }
    if version > current {
        return Err(UpcastError::FromTheFuture {
            event_type: event_type.to_owned(),
            version,
            current,
        });
    }
    while version < current {
        data = step(event_type, version, data)?;
        version += 1;
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_versions_pass_through_and_the_unknown_is_refused() {
        let data = serde_json::json!({"a": 1});
        assert_eq!(upcast("run.started", 1, data.clone()), Ok(data.clone()));
        assert!(matches!(
            upcast("run.started", 2, data.clone()),
            Err(UpcastError::FromTheFuture { .. })
        ));
        assert!(matches!(upcast("nope", 1, data), Err(UpcastError::UnknownType(_))));
    }

    #[test]
    fn usage_v1_gains_its_total_and_an_exact_cost() {
        let v1 = serde_json::json!({
            "provider": "openai", "model": "gpt", "prompt_tokens": 120, "completion_tokens": 30, "cost_usd": 0.0123456
        });
        let v2 = upcast("run.usage_recorded", 1, v1).unwrap();
        assert_eq!(
            v2,
            serde_json::json!({
                "provider": "openai", "model": "gpt", "prompt_tokens": 120, "completion_tokens": 30,
                "total_tokens": 150, "cost_microusd": 12346
            })
        );
        assert_eq!(upcast("run.usage_recorded", 2, v2.clone()), Ok(v2));
    }
}
