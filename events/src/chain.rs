//! Canonical encoding of an envelope and the SHA-256 hash chain over it.
//!
//! The hash of an event covers every envelope field and the previous event's
//! hash, so altering, removing or reordering any stored event breaks the chain
//! at that position.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event in the log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// JSON with object keys sorted and no insignificant white space, so the same
/// value always encodes to the same bytes whatever map order produced it.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).expect("a string always serializes"));
}

/// The fields of an envelope as they are stored, data and metadata already in
/// canonical JSON.
pub struct HashInput<'a> {
    pub position: i64,
    pub event_id: &'a str,
    pub stream_id: &'a str,
    pub stream_version: i64,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub data: &'a str,
    pub metadata: &'a str,
    pub recorded_at: &'a str,
    pub prev_hash: &'a str,
}

impl HashInput<'_> {
    /// The canonical encoding is a JSON array of the fields in a fixed order.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"[");
        hasher.update(self.position.to_string());
        for text in [self.event_id, self.stream_id] {
            hasher.update(b",");
            hasher.update(serde_json::to_string(text).expect("string"));
        }
        hasher.update(b",");
        hasher.update(self.stream_version.to_string());
        hasher.update(b",");
        hasher.update(serde_json::to_string(self.event_type).expect("string"));
        hasher.update(b",");
        hasher.update(self.schema_version.to_string());
        hasher.update(b",");
        hasher.update(self.data);
        hasher.update(b",");
        hasher.update(self.metadata);
        for text in [self.recorded_at, self.prev_hash] {
            hasher.update(b",");
            hasher.update(serde_json::to_string(text).expect("string"));
        }
        hasher.update(b"]");
        hex::encode(hasher.finalize())
    }
}

/// What a full pass over the log found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Events checked.
    pub events: i64,
    /// The last position checked.
    pub head: i64,
    /// The first position where the chain breaks, and why.
    pub first_break: Option<(i64, String)>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Checks stored events one at a time, in position order.
#[derive(Debug)]
pub struct ChainWalk {
    expected_position: i64,
    prev: String,
    events: i64,
    first_break: Option<(i64, String)>,
}

impl Default for ChainWalk {
    fn default() -> Self {
        Self {
            expected_position: 1,
            prev: GENESIS_HASH.to_owned(),
            events: 0,
            first_break: None,
        }
    }
}

impl ChainWalk {
    /// Checks the next stored event; false once the chain is broken.
    pub fn step(&mut self, stored: &HashInput<'_>, hash: &str) -> bool {
        let fault = if stored.position != self.expected_position {
            Some(format!(
                "expected position {}, found {}: an event was removed",
                self.expected_position, stored.position
            ))
        } else if stored.prev_hash != self.prev {
            Some("prev_hash does not match the previous event's hash: events were removed or reordered".to_owned())
        } else if stored.hash() != hash {
            Some("the stored fields do not match the event's hash: the event was altered".to_owned())
        } else {
            None
        };
        if let Some(reason) = fault {
            self.first_break = Some((self.expected_position.min(stored.position), reason));
            return false;
        }
        self.events += 1;
        self.expected_position += 1;
        self.prev = hash.to_owned();
        true
    }

    pub fn report(self) -> ChainReport {
        let head = self.expected_position - 1;
        ChainReport {
            events: self.events,
            head,
            first_break: self.first_break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": null, "c": "x"}], "x": 2.5}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":2.5,"y":[1,{"c":"x","d":null}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_round_trips_floats_exactly() {
        let v = json!({"f": 0.1f64 + 0.2f64, "e": 1e300, "n": -0.0});
        let text = canonical_json(&v);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(canonical_json(&back), text);
    }

    fn input(prev: &str) -> HashInput<'_> {
        HashInput {
            position: 1,
            event_id: "e",
            stream_id: "run-1",
            stream_version: 1,
            event_type: "run.created",
            schema_version: 1,
            data: "{}",
            metadata: r#"{"actor":"anonymous"}"#,
            recorded_at: "2026-01-01T00:00:00.000000Z",
            prev_hash: prev,
        }
    }

    #[test]
    fn every_field_and_the_previous_hash_change_the_hash() {
        let base = input(GENESIS_HASH).hash();
        assert_eq!(base.len(), 64);
        assert_ne!(base, input("ff").hash());
        let moved = HashInput {
            position: 2,
            ..input(GENESIS_HASH)
        };
        assert_ne!(base, moved.hash());
        let edited = HashInput {
            data: r#"{"a":1}"#,
            ..input(GENESIS_HASH)
        };
        assert_ne!(base, edited.hash());
    }
}
