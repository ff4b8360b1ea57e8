//! The JSON of `runs.state`: a run without the fields that still hold the
//! value a new run starts with (`RunState::empty`): absent options, `false`,
//! zero, empty strings, lists and maps, which are most of a typical run's
//! fields. Reading puts them back while the stored text is decoded, so a
//! stored state costs what a whole one costs to read.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::RunState;

/// `runs.state` for `s`: its fields that differ from a new run's.
pub fn stored_state(s: &RunState) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(s)?;
    if let Value::Object(fields) = &mut value {
        fields.retain(|name, v| EMPTY.values.get(name) != Some(v));
    }
    serde_json::to_string(&value)
}

/// The run `text` holds, as `stored_state` wrote it (or whole, as older
/// versions wrote it): a field it leaves out has a new run's value.
pub fn read_state(text: &str) -> Result<RunState, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let state = RunState::deserialize(FillEmpty(&mut de))?;
    de.end()?;
    Ok(state)
}

/// Each field of a new run: as JSON, to compare with, and as text, to
/// decode where a stored state leaves the field out.
struct EmptyFields {
    values: Map<String, Value>,
    texts: Vec<(String, String)>,
}

static EMPTY: std::sync::LazyLock<EmptyFields> = std::sync::LazyLock::new(|| {
    let values = match serde_json::to_value(RunState::empty(uuid::Uuid::nil())) {
        Ok(Value::Object(fields)) => fields,
        _ => unreachable!("a run is a JSON object"),
    };
    let texts = values.iter().map(|(name, v)| (name.clone(), v.to_string())).collect();
    EmptyFields { values, texts }
});

/// A deserializer of a JSON object that, after the object's own members,
/// hands its visitor every field of a new run the object lacks.
struct FillEmpty<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for FillEmpty<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(FillVisitor(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(FillVisitor(visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

struct FillVisitor<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for FillVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Filled {
            map,
            seen: vec![false; EMPTY.texts.len()],
            stored_done: false,
            next_empty: 0,
        })
    }
}

/// The stored members, then the missing ones.
struct Filled<A> {
    map: A,
    /// Which of `EMPTY.texts` the stored object has.
    seen: Vec<bool>,
    stored_done: bool,
    /// Where the search for the next missing field goes on; once the stored
    /// members are done, the value to hand out is `EMPTY.texts[next_empty - 1]`.
    next_empty: usize,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Filled<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        if !self.stored_done {
            if let Some(Key(name)) = self.map.next_key::<Key<'de>>()? {
                if let Some(i) = EMPTY.texts.iter().position(|(n, _)| *n == name) {
                    self.seen[i] = true;
                }
                return seed.deserialize(name.as_ref().into_deserializer()).map(Some);
            }
            self.stored_done = true;
        }
        while self.next_empty < self.seen.len() {
            let i = self.next_empty;
            self.next_empty += 1;
            if !self.seen[i] {
                return seed
                    .deserialize(EMPTY.texts[i].0.as_str().into_deserializer())
                    .map(Some);
            }
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        if !self.stored_done {
            return self.map.next_value_seed(seed);
        }
        let text = &EMPTY.texts[self.next_empty - 1].1;
        seed.deserialize(&mut serde_json::Deserializer::from_str(text))
            .map_err(de::Error::custom)
    }
}

/// A member's name, borrowed from the stored text where it can be.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_state_leaves_out_empty_fields_and_reads_back_whole() {
        let mut run = RunState::empty(uuid::Uuid::now_v7());
        run.task_name = "t".into();
        let bare = stored_state(&run).unwrap();
        for empty in ["null", "false", ":0", "[]", "{}", "\"project\""] {
            assert!(!bare.contains(empty), "{empty} in {bare}");
        }
        assert_eq!(read_state(&bare).unwrap(), run);
        assert_eq!(
            read_state(&serde_json::to_string(&run).unwrap()).unwrap(),
            run,
            "a whole state reads too"
        );
        run.exit_code = Some(0);
        run.debug_mode = true;
        run.chunks = 3;
        run.tags.insert("env".into(), String::new());
        run.depends_on.push(uuid::Uuid::nil());
        run.payload = Some(serde_json::json!({"a": null, "b": [null], "c": false, "d": 0, "e": {}}));
        run.error = Some(String::new());
        let full = stored_state(&run).unwrap();
        assert_eq!(
            read_state(&full).unwrap(),
            run,
            "set fields and nulls inside values stay"
        );
    }

    #[test]
    fn a_stored_state_that_is_not_a_run_is_an_error() {
        let run = stored_state(&RunState::empty(uuid::Uuid::now_v7())).unwrap();
        assert!(read_state(&format!("{run} trailing")).is_err());
        assert!(read_state(r#"{"status": "no such status"}"#).is_err());
        assert!(read_state(r#"{"id": 3}"#).is_err());
        assert!(read_state("[]").is_err());
    }
}
