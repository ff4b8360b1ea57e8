//! The payload filter: runs whose payload contains a JSON object, with
//! PostgreSQL's `@>` semantics on both backends. PostgreSQL answers it from
//! a GIN index on `run_payloads`. SQLite has no such index: `run_payload_terms`
//! holds hashes of each payload's terms (a scalar, or an object or array, at
//! a path of object keys), which give the candidates — a payload that
//! contains the needle has every term the needle has — and `contains`,
//! registered as the SQL function `payload_contains`, decides exactly. Both
//! tables are written when a run is created: a payload never changes.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Whether `haystack` contains `needle` as PostgreSQL's `jsonb @> jsonb`
/// decides: an object contains an object whose every key it has with a
/// contained value; an array contains an array whose every element is
/// contained in one of its elements; scalars contain equal scalars
/// (numbers compare by value, `1` and `1.0` alike). At the top level only,
/// an array also contains a scalar it holds.
pub fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::Array(items), n) if !n.is_array() && !n.is_object() => items.iter().any(|i| scalar_eq(i, n)),
        _ => deep_contains(haystack, needle),
    }
}

fn deep_contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::Object(h), Value::Object(n)) => {
            n.iter().all(|(k, nv)| h.get(k).is_some_and(|hv| deep_contains(hv, nv)))
        }
        (Value::Array(h), Value::Array(n)) => n.iter().all(|nv| {
            h.iter().any(|hv| match nv {
                Value::Array(_) | Value::Object(_) => deep_contains(hv, nv),
                _ => scalar_eq(hv, nv),
            })
        }),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
        (h, n) => scalar_eq(h, n),
    }
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_text(x) == number_text(y),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
        _ => a == b,
    }
}

/// A number's value as text, the same for every spelling of it.
fn number_text(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && f.abs() < 9.2e18 {
        (f as i64).to_string()
    } else {
        f.to_string()
    }
}

/// The hashed terms of a JSON value: every scalar, object and array in it,
/// each at its path of object keys (array elements share their array's
/// path, since containment does not care where in an array a match is).
pub fn terms(value: &Value) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    collect(value, &mut Vec::new(), &mut out);
    out
}

fn collect<'a>(value: &'a Value, path: &mut Vec<&'a str>, out: &mut BTreeSet<i64>) {
    out.insert(term(path, value));
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                path.push(k);
                collect(v, path, out);
                path.pop();
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, path, out)),
        _ => {}
    }
}

fn term(path: &[&str], value: &Value) -> i64 {
    use sha2::{Digest, Sha256};
    let kind = match value {
        Value::Object(_) => "o".to_owned(),
        Value::Array(_) => "a".to_owned(),
        Value::Null => "z".to_owned(),
        Value::Bool(b) => format!("b{b}"),
        Value::Number(n) => format!("n{}", number_text(n)),
        Value::String(s) => format!("s{s}"),
    };
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(path).expect("a path of strings serializes"));
    hash.update([0]);
    hash.update(kind.as_bytes());
    let digest = hash.finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The most terms of a needle a query looks up; the exact check covers the
/// rest.
const MAX_NEEDLE_TERMS: usize = 8;

/// The terms a query of `needle` (an object) looks up, most selective
/// first: scalars before containers, and the whole object (which every
/// object payload has) only when the needle has nothing else.
pub fn needle_terms(needle: &Map<String, Value>) -> Vec<i64> {
    let mut scalars = Vec::new();
    let mut containers = Vec::new();
    needle_walk(
        &Value::Object(needle.clone()),
        &mut Vec::new(),
        &mut scalars,
        &mut containers,
    );
    let root = containers.remove(0);
    let mut seen = BTreeSet::new();
    let mut out: Vec<i64> = scalars
        .into_iter()
        .chain(containers)
        .filter(|t| seen.insert(*t))
        .collect();
    if out.is_empty() {
        out.push(root);
    }
    out.truncate(MAX_NEEDLE_TERMS);
    out
}

fn needle_walk<'a>(value: &'a Value, path: &mut Vec<&'a str>, scalars: &mut Vec<i64>, containers: &mut Vec<i64>) {
    match value {
        Value::Object(map) => {
            containers.push(term(path, value));
            for (k, v) in map {
                path.push(k);
                needle_walk(v, path, scalars, containers);
                path.pop();
            }
        }
        Value::Array(items) => {
            containers.push(term(path, value));
            items.iter().for_each(|v| needle_walk(v, path, scalars, containers));
        }
        _ => scalars.push(term(path, value)),
    }
}

/// Registers `payload_contains(haystack, needle)` (JSON texts; false when
/// the haystack is not JSON) on a SQLite connection, once.
pub fn register_sqlite(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    if conn.prepare_cached("SELECT payload_contains(NULL, '{}')").is_ok() {
        return Ok(());
    }
    conn.create_scalar_function(
        "payload_contains",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let needle = ctx.get_or_create_aux(1, |v| -> Result<Value, serde_json::Error> {
                serde_json::from_str(v.as_str().unwrap_or("null"))
            })?;
            let Ok(Some(text)) = ctx.get_raw(0).as_str_or_null() else {
                return Ok(false);
            };
            Ok(serde_json::from_str::<Value>(text).is_ok_and(|h| contains(&h, &needle)))
        },
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn containment_follows_postgres() {
        let h =
            json!({"customer": "acme", "n": 1, "tags": ["a", "b", {"x": [1, 2]}], "nested": {"k": null, "t": true}});
        for (needle, expected) in [
            (json!({}), true),
            (json!({"customer": "acme"}), true),
            (json!({"customer": "ACME"}), false),
            (json!({"n": 1.0}), true),
            (json!({"n": "1"}), false),
            (json!({"tags": ["b"]}), true),
            (json!({"tags": "b"}), false),
            (json!({"tags": [{"x": [2]}]}), true),
            (json!({"tags": [{"x": 2}]}), false),
            (json!({"nested": {"k": null}}), true),
            (json!({"nested": {"t": false}}), false),
            (json!({"nested": {}}), true),
            (json!({"missing": null}), false),
        ] {
            assert_eq!(contains(&h, &needle), expected, "{needle}");
        }
        assert!(contains(&json!(["a", 1]), &json!(1)));
        assert!(!contains(&json!({"a": ["x"]}), &json!({"a": "x"})));
    }

    #[test]
    fn a_contained_needle_has_only_terms_of_the_payload() {
        let h = json!({"customer": "acme", "tags": ["a", {"x": [1, 2]}], "nested": {"k": null}});
        let all = terms(&h);
        for needle in [
            json!({"customer": "acme"}),
            json!({"tags": [{"x": [2.0]}]}),
            json!({"nested": {}}),
            json!({}),
        ] {
            assert!(contains(&h, &needle));
            let map = needle.as_object().unwrap();
            for t in needle_terms(map) {
                assert!(all.contains(&t), "{needle}");
            }
        }
    }
}
