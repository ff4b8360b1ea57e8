use std::fmt;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision, written as fixed-width RFC 3339
/// (`2026-11-23T14:36:27.123456Z`) so that text order is time order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().trunc_subsecs(6))
    }

    pub fn from_micros(micros: i64) -> Option<Self> {
        DateTime::from_timestamp_micros(micros).map(Self)
    }

    pub fn as_micros(&self) -> i64 {
        self.0.timestamp_micros()
    }

    /// Parses any RFC 3339 time; precision below a microsecond is dropped.
    pub fn parse(text: &str) -> Result<Self, chrono::ParseError> {
        DateTime::parse_from_rfc3339(text).map(|t| Self(t.with_timezone(&Utc).trunc_subsecs(6)))
    }

    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// `secs` seconds after `self`; `None` past the representable range.
    pub fn plus_secs(&self, secs: i64) -> Option<Timestamp> {
        chrono::TimeDelta::try_seconds(secs)
            .and_then(|d| self.0.checked_add_signed(d))
            .map(Self)
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn millis_since(&self, earlier: &Timestamp) -> i64 {
        (self.0 - earlier.0).num_milliseconds()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_text_sorts_like_time() {
        let a = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let b = Timestamp::parse("2026-01-01T00:00:00.5+00:00").unwrap();
        assert_eq!(a.to_rfc3339(), "2026-01-01T00:00:00.000000Z");
        assert!(a.to_rfc3339() < b.to_rfc3339());
        assert_eq!(Timestamp::from_micros(b.as_micros()), Some(b));
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t = Timestamp::parse("2026-01-01T02:00:00+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00.000000Z");
    }
}
