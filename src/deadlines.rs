//! The deadline enforcer: one task per node that ends runs whose deadline
//! (`deadline_at`, set by the fold) has passed, as ordinary `run.ended`
//! events by the actor `system`, through the same command path as `/end`
//! (so dead-lettering follows as for any end).
//!
//! Due runs are found through the `runs_deadline` index, a bounded batch at
//! a time, and each end is appended at the version the run was read at: a
//! heartbeat or an end that came meanwhile, or another node that enforced
//! the same deadline first, makes the attempt a version conflict, which is
//! skipped. Nothing is kept in memory: a node that starts (or was down while
//! deadlines passed) catches up on its first sweep.

use std::sync::Arc;
use std::time::Duration;

use runledger_events::{EndReason, Metadata, Timestamp};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::{Action, Command, CommandError, Outcome, RunCommand};
use crate::ledger::{DueRun, Ledger, LedgerError};

/// The longest the enforcer sleeps before looking again, by default: a run
/// created with a deadline sooner than the one the enforcer waits for is
/// ended at most this late.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// The ends a deadline gives: the label values of
/// `runledger_deadlines_enforced_total`.
pub const REASONS: [EndReason; 3] = [EndReason::Timeout, EndReason::Expired, EndReason::Crashed];

/// Runs ended per sweep; a full batch is followed by another at once.
const BATCH: i64 = 256;

/// Never sleep less than this between sweeps, so a deadline that cannot be
/// enforced (a storage fault) does not spin.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sweep {
    due: usize,
    ended: usize,
}

/// Starts the enforcer; it stops on `stop`.
pub fn start(ledger: Arc<Ledger>, poll: Duration, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let wait = match sweep(&ledger).await {
                Ok(s) if s.due as i64 == BATCH && s.ended > 0 => Duration::ZERO,
                Ok(_) => until_next(&ledger, poll).await,
                Err(e) => {
                    tracing::warn!(error = %e, "enforcing deadlines failed; trying again");
                    poll
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    })
}

/// How long until the earliest deadline, at most `poll`.
async fn until_next(ledger: &Ledger, poll: Duration) -> Duration {
    let next = match ledger.next_deadline().await {
        Ok(next) => next,
        Err(e) => {
            tracing::warn!(error = %e, "reading the next deadline failed");
            return poll;
        }
    };
    let Some(next) = next else { return poll };
    let micros = next.as_micros() - Timestamp::now().as_micros();
    Duration::from_micros(micros.max(0) as u64).clamp(MIN_WAIT, poll.max(MIN_WAIT))
}

/// Ends every run due now, up to a batch; the ends are submitted together
/// so that they share the writer's commits.
async fn sweep(ledger: &Ledger) -> Result<Sweep, LedgerError> {
    let now = Timestamp::now();
    let due = ledger.due_deadlines(now, BATCH).await?;
    let ends = due.iter().map(|run| enforce(ledger, *run, now));
    let results = futures_util::future::join_all(ends).await;
    let mut sweep = Sweep {
        due: due.len(),
        ended: 0,
    };
    for result in results {
        sweep.ended += usize::from(result?);
    }
    Ok(sweep)
}

/// Ends one run; `false` when the run moved on since it was read.
async fn enforce(ledger: &Ledger, run: DueRun, now: Timestamp) -> Result<bool, LedgerError> {
    let command = Command::Run(RunCommand {
        run_id: run.run_id,
        expected_version: Some(run.version),
        action: Action::EnforceDeadline { now },
    });
    match ledger.execute(command, Metadata::actor(crate::auth::SYSTEM)).await {
        Ok(outcome) => {
            let reason = match &outcome {
                Outcome::Updated(state) => state.end_reason.map(|r| r.as_str()),
                _ => None,
            };
            if let Some(reason) = reason {
                metrics::counter!("runledger_deadlines_enforced_total", "reason" => reason).increment(1);
            }
            tracing::info!(run_id = %run.run_id, end_reason = reason.unwrap_or("?"), "deadline passed: run ended");
            Ok(true)
        }
        // A heartbeat, an end or another node came first: the run is no
        // longer what was due.
        Err(LedgerError::Command(e @ (CommandError::VersionConflict { .. } | CommandError::Refused(_)))) => {
            tracing::debug!(run_id = %run.run_id, reason = %e, "deadline no longer due");
            Ok(false)
        }
        Err(LedgerError::Command(CommandError::NotFound(_))) => Ok(false),
        Err(e) => Err(e),
    }
}
