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
        t if crate::RUN_EVENT_TYPES.contains(&t) => 1,
        _ => 0,
    }
}

/// One step from `version` to `version + 1` of `event_type`. Each schema
/// change of a type adds an arm here and bumps `current_version`.
fn step(event_type: &str, version: i32, _data: Value) -> Result<Value, UpcastError> {
    Err(UpcastError::NoStep {
        event_type: event_type.to_owned(),
        version,
    })
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
}
