//! Input types that parse: a value of one of these types is valid, so nothing
//! downstream checks the string again.

use std::fmt;

/// `^[a-zA-Z0-9._-]{1,100}$`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskName(String);

/// What [`TaskName::parse`] accepts, as the OpenAPI document states it.
pub const TASK_NAME_PATTERN: &str = "^[a-zA-Z0-9._-]{1,100}$";

impl TaskName {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 100 {
            return Err(format!("must be 1 to 100 characters long, got {}", text.len()));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "may contain only letters, digits, '.', '_' and '-', found {bad:?}"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Free-form identifiers (project, idempotency key, tag keys…): non-empty,
/// bounded, no control characters.
pub fn short_text(text: &str, max: usize) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_follow_the_documented_pattern() {
        let documented =
            jsonschema::validator_for(&serde_json::json!({ "pattern": TASK_NAME_PATTERN })).expect("pattern");
        for ok in ["a", "nightly-report_v2.1", &"x".repeat(100)] {
            assert!(TaskName::parse(ok).is_ok(), "{ok}");
            assert!(documented.is_valid(&ok.into()), "{ok}");
        }
        for bad in ["", "has space", "slash/es", "ünï", "a\n", &"x".repeat(101)] {
            assert!(TaskName::parse(bad).is_err(), "{bad}");
            assert!(!documented.is_valid(&bad.into()), "{bad}");
        }
    }

    #[test]
    fn short_text_refuses_empty_long_and_control() {
        assert!(short_text("ok", 5).is_ok());
        assert!(short_text("", 5).is_err());
        assert!(short_text("toolong", 5).is_err());
        assert!(short_text("a\nb", 5).is_err());
    }
}
