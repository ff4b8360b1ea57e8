//! Reading a run's details (checkpoints, log lines, usage, tool calls,
//! outputs) and relations, with the SQL the projections crate writes once
//! for both backends.

use runledger_projections::details::UsageTotals;
use runledger_projections::{RunState, SqlQuery};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{Ledger, LedgerError};

/// Reads answered from one snapshot of the projections.
pub struct DetailReads {
    /// When set, nothing is read unless this run exists.
    pub run_id: Option<Uuid>,
    /// A query whose first column is text (a record, or a run's state).
    pub texts: Option<SqlQuery>,
    /// Queries of `usage_totals_sql`.
    pub totals: Vec<SqlQuery>,
}

#[derive(Default)]
pub struct DetailAnswers {
    pub texts: Vec<String>,
    pub totals: Vec<Vec<UsageTotals>>,
}

fn decode<T: DeserializeOwned>(texts: &[String]) -> Result<Vec<T>, LedgerError> {
    texts
        .iter()
        .map(|t| serde_json::from_str(t).map_err(|e| LedgerError::Storage(format!("a stored detail: {e}"))))
        .collect()
}

impl Ledger {
    /// `None` when `reads.run_id` names a run that does not exist.
    pub async fn read_details(&self, reads: DetailReads) -> Result<Option<DetailAnswers>, LedgerError> {
        match self {
            Self::Sqlite(l) => l.read_details(reads).await,
            Self::Postgres(l) => l.read_details(reads).await,
        }
    }

    /// The records of `query` (one run's details, decoded), or `None` when
    /// the run does not exist.
    pub async fn run_records<T: DeserializeOwned>(
        &self,
        run_id: Uuid,
        query: SqlQuery,
    ) -> Result<Option<Vec<T>>, LedgerError> {
        let reads = DetailReads {
            run_id: Some(run_id),
            texts: Some(query),
            totals: Vec::new(),
        };
        match self.read_details(reads).await? {
            Some(answers) => decode(&answers.texts).map(Some),
            None => Ok(None),
        }
    }

    /// Decodes stored records or states.
    pub fn decode_texts<T: DeserializeOwned>(texts: &[String]) -> Result<Vec<T>, LedgerError> {
        decode(texts)
    }

    /// The runs of the retry/continuation chain `run_id` is in, root first
    /// (empty when the run does not exist).
    pub async fn lineage(&self, run_id: Uuid) -> Result<Vec<RunState>, LedgerError> {
        let reads = DetailReads {
            run_id: None,
            texts: Some(SqlQuery {
                sql: runledger_projections::details::LINEAGE_SQL.to_owned(),
                args: vec![runledger_projections::Arg::Text(run_id.to_string())],
            }),
            totals: Vec::new(),
        };
        let answers = self.read_details(reads).await?.unwrap_or_default();
        answers
            .texts
            .iter()
            .map(|t| {
                runledger_projections::read_state(t).map_err(|e| LedgerError::Storage(format!("a stored run: {e}")))
            })
            .collect()
    }
}
