//! API tokens, stored beside the log (they are configuration, not history:
//! rebuild and export leave them alone).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Ledger, LedgerError};
use crate::auth::{new_secret, parse_token_name, scopes_text, secret_hash, Scope, TokenError, TokenInfo, TokenRow};

/// Bumped whenever this process creates or revokes a token, so that a server
/// in the same process sees the change at its next request; changes made by
/// another process (`runledger token …`) are seen within the servers' refresh
/// interval.
static TOKENS_CHANGED: AtomicU64 = AtomicU64::new(0);

pub fn tokens_generation() -> u64 {
    TOKENS_CHANGED.load(Ordering::Acquire)
}

impl Ledger {
    /// Creates a token; returns its secret, which is not stored anywhere.
    pub async fn create_token(&self, name: &str, scopes: &[Scope]) -> Result<String, TokenError> {
        let name = parse_token_name(name).map_err(TokenError::Invalid)?;
        if scopes.is_empty() {
            return Err(TokenError::Invalid(format!(
                "give at least one scope: {}",
                Scope::names()
            )));
        }
        let secret = new_secret();
        let (hash, scopes) = (secret_hash(&secret), scopes_text(scopes));
        match self {
            Self::Sqlite(l) => l.insert_token(name, hash, scopes).await?,
            Self::Postgres(l) => l.insert_token(name, hash, scopes).await?,
        }
        TOKENS_CHANGED.fetch_add(1, Ordering::AcqRel);
        Ok(secret)
    }

    pub async fn revoke_token(&self, name: &str) -> Result<(), TokenError> {
        match self {
            Self::Sqlite(l) => l.revoke_token(name.to_owned()).await?,
            Self::Postgres(l) => l.revoke_token(name.to_owned()).await?,
        }
        TOKENS_CHANGED.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Every token ever created, revoked ones included, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, LedgerError> {
        self.token_rows()
            .await?
            .iter()
            .map(|row| row.info().map_err(LedgerError::Storage))
            .collect()
    }

    /// The stored rows, with the secrets' hashes.
    pub async fn token_rows(&self) -> Result<Vec<TokenRow>, LedgerError> {
        match self {
            Self::Sqlite(l) => l.token_rows().await,
            Self::Postgres(l) => l.token_rows().await,
        }
    }
}
