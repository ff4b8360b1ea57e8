//! Integer fields of request bodies accept any JSON number with no fraction:
//! JSON (and JSON Schema's `integer`) does not tell `3` from `3.0`, and some
//! encoders write every number as a float.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};

struct Whole<T>(PhantomData<T>);

impl<T: TryFrom<i64>> Whole<T> {
    fn from_i64<E: de::Error>(v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &"an integer in range"))
    }
}

impl<'de, T: TryFrom<i64>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Self::from_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        let v = i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &"an integer in range"))?;
        Self::from_i64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // Within ±2^53 every whole float is exactly the integer it prints as.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() == 0.0 && v.abs() <= EXACT {
            Self::from_i64(v as i64)
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        }
    }
}

struct MaybeWhole<T>(PhantomData<T>);

impl<'de, T: TryFrom<i64>> Visitor<'de> for MaybeWhole<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        whole(d).map(Some)
    }
}

/// `#[serde(deserialize_with = "whole")]`
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(Whole(PhantomData))
}

/// `#[serde(default, deserialize_with = "maybe_whole")]`
pub fn maybe_whole<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_option(MaybeWhole(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        #[serde(deserialize_with = "super::whole")]
        n: i64,
        #[serde(default, deserialize_with = "super::maybe_whole")]
        m: Option<i32>,
    }

    fn parse(text: &str) -> Result<Body, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_any_spelling_are_integers() {
        assert_eq!(parse(r#"{"n": 3}"#), Ok(Body { n: 3, m: None }));
        assert_eq!(parse(r#"{"n": 3.0, "m": -2.0}"#), Ok(Body { n: 3, m: Some(-2) }));
        assert_eq!(parse(r#"{"n": 1e3, "m": null}"#), Ok(Body { n: 1000, m: None }));
        assert!(parse(r#"{"n": 3.5}"#).unwrap_err().contains("expected an integer"));
        assert!(parse(r#"{"n": "3"}"#).unwrap_err().contains("expected an integer"));
        assert!(parse(r#"{"n": 1, "m": 3000000000}"#).unwrap_err().contains("in range"));
        assert!(parse(r#"{"n": 1e300}"#).is_err());
        assert!(parse(r#"{}"#).unwrap_err().contains("missing field `n`"));
    }
}
