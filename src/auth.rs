//! API tokens and their scopes. A token is a name, a set of scopes and a
//! secret; only the SHA-256 of the secret is stored, so the secret is shown
//! once, when the token is created, and never again.

use std::fmt;

use runledger_events::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What a token may do. `runs:admin` includes `runs:write`, which includes
/// `runs:read`; `ledger:read` stands alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Scope {
    /// List and read runs, tasks, a run's events and history.
    #[serde(rename = "runs:read")]
    RunsRead,
    /// Report on runs (executors and schedulers) and operate them: create,
    /// start, end, cancel, retry, rerun…
    #[serde(rename = "runs:write")]
    RunsWrite,
    /// Delete and restore runs, and bulk operations.
    #[serde(rename = "runs:admin")]
    RunsAdmin,
    /// The global event log and every live stream.
    #[serde(rename = "ledger:read")]
    LedgerRead,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::RunsRead, Scope::RunsWrite, Scope::RunsAdmin, Scope::LedgerRead];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunsRead => "runs:read",
            Self::RunsWrite => "runs:write",
            Self::RunsAdmin => "runs:admin",
            Self::LedgerRead => "ledger:read",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| format!("unknown scope {text:?}; expected one of: {}", Self::names()))
    }

    pub fn names() -> String {
        Self::ALL.map(Scope::as_str).join(", ")
    }

    /// Whether holding `self` allows what `required` allows.
    pub fn covers(self, required: Scope) -> bool {
        use Scope::*;
        match required {
            RunsRead => matches!(self, RunsRead | RunsWrite | RunsAdmin),
            RunsWrite => matches!(self, RunsWrite | RunsAdmin),
            RunsAdmin => self == RunsAdmin,
            LedgerRead => self == LedgerRead,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A comma-separated scope list; at least one, no repeats, sorted.
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let scope = Scope::parse(item)?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(format!("give at least one scope: {}", Scope::names()));
    }
    scopes.sort();
    Ok(scopes)
}

pub fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// The actor of every event appended while the API runs open (no tokens).
pub const ANONYMOUS: &str = "anonymous";

/// The actor of every event the ledger appends by itself (deadlines).
pub const SYSTEM: &str = "system";

/// A token's name: the actor of every event it appends.
/// `^[a-zA-Z0-9._:@-]{1,64}$`, and neither `anonymous` nor `system`.
pub fn parse_token_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 64 {
        return Err(format!(
            "a token name must be 1 to 64 characters long, got {}",
            text.len()
        ));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')))
    {
        return Err(format!(
            "a token name may contain only letters, digits, '.', '_', '-', ':' and '@', found {bad:?}"
        ));
    }
    if text == ANONYMOUS {
        return Err(format!(
            "{ANONYMOUS:?} is the actor of the open API; choose another name"
        ));
    }
    // An event by `system` must be the ledger's own, never a caller's.
    if text == SYSTEM {
        return Err(format!(
            "{SYSTEM:?} is the actor of the ledger's own events; choose another name"
        ));
    }
    Ok(text.to_owned())
}

/// Secrets start with this, so that they are recognisable in a leak scan.
pub const SECRET_PREFIX: &str = "rl_";

/// A new secret: the prefix and 256 random bits in hex.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

/// What is stored in place of a secret. The secrets are random and long, so
/// one SHA-256 is enough: there is nothing to guess a dictionary from.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A token as `token list` shows it (never with its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A stored token row, as both backends read it.
pub struct TokenRow {
    pub name: String,
    pub secret_sha256: String,
    pub scopes: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl TokenRow {
    pub fn info(&self) -> Result<TokenInfo, String> {
        let time = |t: &str| Timestamp::parse(t).map_err(|e| format!("token {}: bad time {t:?}: {e}", self.name));
        Ok(TokenInfo {
            name: self.name.clone(),
            scopes: parse_scopes(&self.scopes).map_err(|e| format!("token {}: {e}", self.name))?,
            created_at: time(&self.created_at)?,
            revoked_at: self.revoked_at.as_deref().map(time).transpose()?,
        })
    }
}

pub const TOKENS_SQL: &str =
    "SELECT name, secret_sha256, scopes, created_at, revoked_at FROM api_tokens ORDER BY created_at, name";
pub const TOKEN_EXISTS_SQL: &str = "SELECT COUNT(*) FROM api_tokens WHERE name = $1";
pub const INSERT_TOKEN_SQL: &str =
    "INSERT INTO api_tokens (name, secret_sha256, scopes, created_at) VALUES ($1, $2, $3, $4)";
/// Binds the time, then the name (SQLite numbers parameters in the order they
/// appear).
pub const REVOKE_TOKEN_SQL: &str = "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named {0:?} exists already (names are never reused, even after revoking)")]
    NameTaken(String),
    #[error("no active token is named {0:?}")]
    NoSuchToken(String),
    #[error("{0}")]
    Invalid(String),
    #[error("storage: {0}")]
    Storage(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_cover() {
        assert_eq!(
            parse_scopes("runs:write, ledger:read,runs:write").unwrap(),
            vec![Scope::RunsWrite, Scope::LedgerRead]
        );
        assert!(parse_scopes("").is_err());
        assert!(parse_scopes("runs:delete").unwrap_err().contains("runs:admin"));
        assert!(Scope::RunsAdmin.covers(Scope::RunsRead));
        assert!(Scope::RunsWrite.covers(Scope::RunsRead));
        assert!(!Scope::RunsWrite.covers(Scope::RunsAdmin));
        assert!(!Scope::RunsAdmin.covers(Scope::LedgerRead));
        assert!(!Scope::LedgerRead.covers(Scope::RunsRead));
    }

    #[test]
    fn names_and_secrets() {
        assert!(parse_token_name("scheduler-1@eu:prod").is_ok());
        assert!(parse_token_name("anonymous").is_err());
        assert!(parse_token_name("system").is_err());
        assert!(parse_token_name("").is_err());
        assert!(parse_token_name("a b").is_err());
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(secret_hash(&a).len(), 64);
        assert_ne!(secret_hash(&a), secret_hash(&b));
    }
}
