//! Bulk operations: one command per selected run (or per task, for rerun),
//! all in one transaction, every event carrying the operation's id. The
//! selection and the loop are written once; each backend supplies the
//! transaction.

use std::collections::{BTreeMap, HashSet};

use runledger_events::{Metadata, Reason, Timestamp};
use runledger_projections::{Candidates, RunFilter, RunQuery, RunState};
use serde::Serialize;
use uuid::Uuid;

use super::execute::{execute, ExecError, RunStore};
use super::{Ledger, LedgerError};
use crate::commands::{decide, Action, Command, CommandError, Loaded, Outcome, RetryAction, RunCommand};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkKind {
    Delete,
    Restore,
    Cancel,
    Retry,
    DlqReplay,
    Rerun,
}

impl BulkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Restore => "restore",
            Self::Cancel => "cancel",
            Self::Retry => "retry",
            Self::DlqReplay => "dlq_replay",
            Self::Rerun => "rerun",
        }
    }

    /// The command applied to each selected run (for rerun: to each task's
    /// most recent selected run).
    fn action(self, reason: &Option<String>) -> Action {
        let why = Reason { reason: reason.clone() };
        let retry = |action| Action::Retry {
            action,
            reason: reason.clone(),
            payload: None,
        };
        match self {
            Self::Delete => Action::Delete(why),
            Self::Restore => Action::Restore(why),
            Self::Cancel => Action::Cancel(why),
            Self::Retry => retry(RetryAction::Retry),
            Self::DlqReplay => retry(RetryAction::DlqReplay),
            Self::Rerun => retry(RetryAction::Rerun),
        }
    }

    /// The runs a selection by filter chooses among: those this kind of call
    /// can change, so that `selected` and a dry run's count are what it acts
    /// on. A rerun can start from any run the filter shows.
    pub fn candidates(self) -> Option<Candidates> {
        match self {
            Self::Delete => Some(Candidates::Live),
            Self::Restore => Some(Candidates::Deleted),
            Self::Cancel => Some(Candidates::Unfinished),
            Self::Retry => Some(Candidates::Ended),
            Self::DlqReplay => Some(Candidates::DeadLettered),
            Self::Rerun => None,
        }
    }
}

/// Which runs a bulk call is about, parsed once at the boundary
/// (`Selector::parse`). Explicit ids are each acted on (or reported); a
/// filter selects among the runs the call can change (`BulkKind::candidates`).
#[derive(Clone, Debug, PartialEq)]
pub enum Selector {
    /// These runs (deduplicated, in the order given).
    Ids(Vec<Uuid>),
    /// Every run the filter matches (at `as_of`, when the call is pinned),
    /// except these.
    Match { filter: RunFilter, except: Vec<Uuid> },
}

#[derive(Clone, Debug)]
pub struct BulkCall {
    pub kind: BulkKind,
    pub selection: Selector,
    /// Select the runs that matched at this position instead of now.
    pub as_of: Option<i64>,
    pub dry_run: bool,
    pub reason: Option<String>,
    /// The most runs one call may select.
    pub cap: usize,
    /// The selector as the caller gave it, kept with the operation.
    pub selector: serde_json::Value,
}

/// What one selected run (for rerun: one task) came to.
#[derive(Debug)]
pub struct RunResult {
    pub run_id: Uuid,
    /// `None` in a dry run: the command would apply.
    pub outcome: Result<Option<Outcome>, CommandError>,
}

#[derive(Debug)]
pub struct BulkReport {
    /// `None` for a dry run, which writes nothing.
    pub operation_id: Option<Uuid>,
    /// The log position the selection was taken at.
    pub as_of: i64,
    /// Runs selected (known ones).
    pub selected: usize,
    /// Given ids that name no run.
    pub unknown_ids: Vec<Uuid>,
    /// Runs (for rerun: tasks) the call changed, or would change.
    pub affected: usize,
    pub results: Vec<RunResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("the selection has {selected} runs, more than the {cap} one call may change; narrow the filter")]
    TooMany { selected: i64, cap: usize },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl BulkCall {
    /// The selection, once the backend has counted (and, when few enough,
    /// listed) what the filter matches.
    pub(super) fn query(&self) -> Option<RunQuery> {
        match &self.selection {
            Selector::Ids(_) => None,
            Selector::Match { filter, .. } => Some(RunQuery {
                filter: RunFilter {
                    candidates: self.kind.candidates(),
                    ..filter.clone()
                },
                as_of: self.as_of,
                ..RunQuery::default()
            }),
        }
    }

    /// The most ids a filter may match for the call to stay under the cap.
    pub(super) fn max_matches(&self) -> usize {
        match &self.selection {
            Selector::Ids(_) => self.cap,
            Selector::Match { except, .. } => self.cap + except.len(),
        }
    }

    /// The selected ids: `matched` is what the backend's `select` returned
    /// for `query()` (ignored for an ids selection).
    pub(super) fn resolve(&self, matched: Option<(i64, Option<Vec<Uuid>>)>) -> Result<Vec<Uuid>, BulkError> {
        let ids = match (&self.selection, matched) {
            (Selector::Ids(ids), _) => {
                let mut seen = HashSet::new();
                ids.iter().copied().filter(|id| seen.insert(*id)).collect()
            }
            (Selector::Match { except, .. }, Some((_, Some(ids)))) => {
                let except: HashSet<&Uuid> = except.iter().collect();
                ids.into_iter().filter(|id| !except.contains(id)).collect::<Vec<_>>()
            }
            (Selector::Match { .. }, Some((count, None))) => {
                return Err(BulkError::TooMany {
                    selected: count,
                    cap: self.cap,
                })
            }
            (Selector::Match { .. }, None) => Vec::new(),
        };
        if ids.len() > self.cap {
            return Err(BulkError::TooMany {
                selected: ids.len() as i64,
                cap: self.cap,
            });
        }
        Ok(ids)
    }
}

/// Runs the call over `ids` against `store`, inside the backend's
/// transaction whose log head was `head`, and reports it.
pub(super) fn report(
    store: &mut impl RunStore,
    call: &BulkCall,
    ids: &[Uuid],
    metadata: &Metadata,
    operation_id: Option<Uuid>,
    head: i64,
) -> Result<BulkReport, BulkError> {
    let (results, unknown_ids) = apply(store, call, ids, metadata).map_err(|e| match e {
        ExecError::Command(e) => BulkError::Ledger(LedgerError::Command(e)),
        ExecError::Storage(e) => BulkError::Ledger(LedgerError::Storage(e)),
    })?;
    Ok(BulkReport {
        operation_id,
        as_of: call.as_of.unwrap_or(head),
        selected: ids.len() - unknown_ids.len(),
        unknown_ids,
        affected: results.iter().filter(|r| r.outcome.is_ok()).count(),
        results,
    })
}

/// Runs the call over `ids` against `store`. A refused run is a result, not
/// a failure of the call: each command refuses before it writes, so the
/// others go on. Returns the results and the unknown ids.
fn apply(
    store: &mut impl RunStore,
    call: &BulkCall,
    ids: &[Uuid],
    metadata: &Metadata,
) -> Result<(Vec<RunResult>, Vec<Uuid>), ExecError> {
    let mut results = Vec::with_capacity(ids.len());
    let mut unknown = Vec::new();
    let targets = match call.kind {
        BulkKind::Rerun => latest_per_task(store, ids, &mut unknown)?,
        _ => ids.to_vec(),
    };
    let action = call.kind.action(&call.reason);
    let commands = targets.into_iter().map(|run_id| {
        let command = Command::Run(RunCommand {
            run_id,
            expected_version: None,
            action: action.clone(),
        });
        (run_id, command)
    });
    for (run_id, command) in commands {
        let outcome = if call.dry_run {
            would_apply(store, &command)?
        } else {
            match execute(store, &command, metadata) {
                Ok(outcome) => Ok(Some(outcome)),
                Err(ExecError::Command(e)) => Err(e),
                Err(storage) => return Err(storage),
            }
        };
        if matches!(&outcome, Err(e) if e.is_not_found()) {
            unknown.push(run_id);
            continue;
        }
        results.push(RunResult { run_id, outcome });
    }
    Ok((results, unknown))
}

/// Whether the command would be accepted now, without writing.
fn would_apply(
    store: &mut impl RunStore,
    command: &Command,
) -> Result<Result<Option<Outcome>, CommandError>, ExecError> {
    let Command::Run(cmd) = command else {
        return Ok(Ok(None));
    };
    let loaded = Loaded {
        target: store.load_run(cmd.run_id).map_err(ExecError::Storage)?,
        ..Loaded::default()
    };
    Ok(decide(command, &loaded).map(|_| None))
}

/// A rerun makes one new run per task behind the selection, from the task's
/// most recent selected run (its payload, project, tags and limits).
fn latest_per_task(store: &mut impl RunStore, ids: &[Uuid], unknown: &mut Vec<Uuid>) -> Result<Vec<Uuid>, ExecError> {
    let mut latest: BTreeMap<String, RunState> = BTreeMap::new();
    for id in ids {
        let Some(run) = store.load_run(*id).map_err(ExecError::Storage)? else {
            unknown.push(*id);
            continue;
        };
        match latest.get(&run.task_name) {
            Some(kept) if (kept.created_at, kept.id) >= (run.created_at, run.id) => {}
            _ => {
                latest.insert(run.task_name.clone(), run);
            }
        }
    }
    Ok(latest.into_values().map(|run| run.id).collect())
}

/// The operation record: `operations` then one `operation_runs` row per
/// changed run. Placeholders for both backends.
pub const INSERT_OPERATION_SQL: &str = "INSERT INTO operations \
     (id, kind, actor, request_id, selector, as_of, selected, affected, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub const INSERT_OPERATION_RUN_SQL: &str =
    "INSERT INTO operation_runs (operation_id, seq, run_id, new_run_id) VALUES ($1, $2, $3, $4)";

/// The `operation_runs` rows of a report: each changed run, and the run it
/// made (retry, rerun).
pub(super) fn changed_runs(results: &[RunResult]) -> Vec<(String, Option<String>)> {
    results
        .iter()
        .filter_map(|r| match &r.outcome {
            Ok(Some(Outcome::Retried { new_run, .. })) => Some((r.run_id.to_string(), Some(new_run.id.to_string()))),
            Ok(Some(_)) => Some((r.run_id.to_string(), None)),
            _ => None,
        })
        .collect()
}

/// A stored operation, for `GET /api/operations/{id}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OperationRecord {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// delete, restore, cancel, retry, dlq_replay or rerun.
    pub kind: String,
    /// The token (or `anonymous`) that ran it.
    pub actor: String,
    pub request_id: Option<String>,
    /// The selector as given.
    pub selector: serde_json::Value,
    /// The log position the selection was taken at.
    pub as_of: i64,
    pub selected: i64,
    pub affected: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The changed runs (a page of them), with the run each one made.
    pub runs: Vec<OperationRun>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OperationRun {
    #[schema(value_type = String, format = Uuid)]
    pub run_id: Uuid,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub new_run_id: Option<Uuid>,
}

pub const OPERATION_SQL: &str = "SELECT id, kind, actor, request_id, selector, as_of, selected, affected, created_at \
     FROM operations WHERE id = $1";
pub const OPERATION_RUNS_SQL: &str =
    "SELECT run_id, new_run_id FROM operation_runs WHERE operation_id = $1 ORDER BY seq LIMIT $2 OFFSET $3";

impl Ledger {
    /// Runs a bulk call in one transaction (a dry run writes nothing).
    pub async fn bulk(&self, call: BulkCall, mut metadata: Metadata) -> Result<BulkReport, BulkError> {
        let operation_id = (!call.dry_run).then(Uuid::now_v7);
        metadata.operation_id = operation_id.map(|id| id.to_string());
        match self {
            Self::Sqlite(l) => l.bulk(call, metadata, operation_id).await,
            Self::Postgres(l) => l.bulk(call, metadata, operation_id).await,
        }
    }

    /// An operation and a page of the runs it changed.
    pub async fn operation(&self, id: Uuid, limit: i64, offset: i64) -> Result<Option<OperationRecord>, LedgerError> {
        match self {
            Self::Sqlite(l) => l.operation(id, limit, offset).await,
            Self::Postgres(l) => l.operation(id, limit, offset).await,
        }
    }
}

/// The columns of an `operations` row, as both backends read them.
#[derive(sqlx::FromRow)]
pub(super) struct OperationRow {
    pub id: String,
    pub kind: String,
    pub actor: String,
    pub request_id: Option<String>,
    pub selector: String,
    pub as_of: i64,
    pub selected: i64,
    pub affected: i64,
    pub created_at: String,
}

impl OperationRow {
    pub fn into_record(self, runs: Vec<(String, Option<String>)>) -> Result<OperationRecord, LedgerError> {
        let bad = |what: &str| LedgerError::Storage(format!("operation {}: unreadable {what}", self.id));
        let uuid = |text: &str| text.parse::<Uuid>().map_err(|_| bad("id"));
        Ok(OperationRecord {
            id: uuid(&self.id)?,
            kind: self.kind.clone(),
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
            selector: serde_json::from_str(&self.selector).map_err(|_| bad("selector"))?,
            as_of: self.as_of,
            selected: self.selected,
            affected: self.affected,
            created_at: Timestamp::parse(&self.created_at).map_err(|_| bad("time"))?,
            runs: runs
                .iter()
                .map(|(run, new_run)| {
                    Ok(OperationRun {
                        run_id: uuid(run)?,
                        new_run_id: new_run.as_deref().map(uuid).transpose()?,
                    })
                })
                .collect::<Result<_, LedgerError>>()?,
        })
    }
}
