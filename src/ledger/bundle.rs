//! A run's debug bundle, as far as the log is concerned: the run's events in
//! the stored form, checked against the hash chain, and loaded into an empty
//! ledger for offline inspection.
//!
//! One run's events are a subset of the log, not a contiguous chain, so they
//! cannot keep their positions and hashes in another (gap-free) log. Import
//! re-seals them in order as positions 1..n with a new chain, keeping every
//! other field; the original positions and hashes stay in the bundle file.

use std::collections::{HashMap, HashSet};

use runledger_events::chain::GENESIS_HASH;
use runledger_events::{run_stream_id, EventEnvelope, Sealed, Sealer};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{EventsQuery, Ledger, LedgerError};

/// The `format` of a debug bundle document.
pub const BUNDLE_FORMAT: &str = "runledger.debug-bundle";
/// The `version` of the bundle document this build writes and reads.
pub const BUNDLE_VERSION: u32 = 1;

/// Whether a run's events verify against the hash chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    pub verified: bool,
    /// Events examined, the failing one included; checking stops at the
    /// first failure.
    pub events_checked: i64,
    pub first_failure: Option<VerificationFailure>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerificationFailure {
    /// The log position of the first event that does not verify.
    pub position: i64,
    pub reason: String,
}

/// Checks one run's events, in stream order: each event's stored fields and
/// `prev_hash` must hash to its stored `hash`, the stream versions must run
/// 1, 2, 3… in increasing positions, and each event must be linked into the
/// log: its `prev_hash` is the hash of the event at the position before it,
/// and the event after it (if any) names its hash as `prev_hash`.
///
/// `log` holds the log's events next to the run's (at p - 1 and p + 1);
/// `None` checks offline, where only links between the run's own
/// consecutive positions can be seen.
pub fn verify_run_events(
    stream_id: &str,
    events: &[EventEnvelope],
    log: Option<&HashMap<i64, EventEnvelope>>,
) -> Verification {
    let mut checked = 0;
    for (i, e) in events.iter().enumerate() {
        checked += 1;
        if let Some(reason) = fault(stream_id, events, i, log) {
            return Verification {
                verified: false,
                events_checked: checked,
                first_failure: Some(VerificationFailure {
                    position: e.position,
                    reason,
                }),
            };
        }
    }
    Verification {
        verified: true,
        events_checked: checked,
        first_failure: None,
    }
}

fn fault(
    stream_id: &str,
    events: &[EventEnvelope],
    i: usize,
    log: Option<&HashMap<i64, EventEnvelope>>,
) -> Option<String> {
    let e = &events[i];
    let before = i.checked_sub(1).map(|b| &events[b]);
    let after = events.get(i + 1);
    if e.stream_id != stream_id {
        return Some(format!("the event belongs to {}, not to {stream_id}", e.stream_id));
    }
    if e.stream_version != i as i64 + 1 {
        return Some(format!(
            "expected stream version {}, found {}: an event of the run was removed or reordered",
            i + 1,
            e.stream_version
        ));
    }
    if before.is_some_and(|b| b.position >= e.position) {
        return Some("positions do not increase along the stream: events were reordered".to_owned());
    }
    if !Sealed::from_envelope(e.clone()).hash_matches() {
        return Some("the stored fields do not match the event's hash: the event was altered".to_owned());
    }
    let at = |position: i64, run_event: Option<&EventEnvelope>| -> Option<Option<EventEnvelope>> {
        match run_event.filter(|r| r.position == position) {
            Some(r) => Some(Some(r.clone())),
            None => log.map(|l| l.get(&position).cloned()),
        }
    };
    if e.position == 1 {
        if e.prev_hash != GENESIS_HASH {
            return Some("the first event of the log does not start from the genesis hash".to_owned());
        }
    } else {
        match at(e.position - 1, before) {
            Some(Some(previous)) if previous.hash != e.prev_hash => {
                return Some(format!(
                    "prev_hash does not match the hash of the event at position {}: events were removed, reordered or altered",
                    e.position - 1
                ));
            }
            Some(None) => {
                return Some(format!(
                    "there is no event at position {}, before this one: an event was removed",
                    e.position - 1
                ));
            }
            _ => {}
        }
    }
    if let Some(Some(next)) = at(e.position + 1, after) {
        if next.prev_hash != e.hash {
            return Some(format!(
                "the event at position {} does not name this event's hash as prev_hash: this event was altered (its hash recomputed) or the log was reordered",
                e.position + 1
            ));
        }
    }
    None
}

/// Events per read of a run's stream.
const PAGE: i64 = 10_000;
/// Positions per read of the events next to a run's.
const NEIGHBOURS_PER_READ: usize = 1_000;

impl Ledger {
    /// All of the run's events in the stored form (the form the hash covers),
    /// oldest first; `None` when the run does not exist.
    pub async fn run_events_stored(&self, run_id: Uuid) -> Result<Option<Vec<EventEnvelope>>, LedgerError> {
        let mut all = Vec::new();
        loop {
            let query = EventsQuery {
                run_id,
                after_version: all.last().map_or(0, |e: &EventEnvelope| e.stream_version),
                limit: PAGE,
                types: Vec::new(),
            };
            let page = match self {
                Self::Sqlite(l) => l.run_events(query).await?,
                Self::Postgres(l) => l.run_events(query).await?,
            };
            let Some(page) = page else { return Ok(None) };
            let full = page.len() as i64 == PAGE;
            all.extend(page);
            if !full {
                return Ok(Some(all));
            }
        }
    }

    /// The log's events at `positions` (those that exist).
    pub async fn events_at(&self, positions: Vec<i64>) -> Result<Vec<EventEnvelope>, LedgerError> {
        match self {
            Self::Sqlite(l) => l.events_at(positions).await,
            Self::Postgres(l) => l.events_at(positions).await,
        }
    }

    /// Checks a run's stored events against the hash chain of this log (see
    /// `verify_run_events`), reading the events next to them.
    pub async fn verify_run(&self, run_id: Uuid, events: &[EventEnvelope]) -> Result<Verification, LedgerError> {
        let own: HashSet<i64> = events.iter().map(|e| e.position).collect();
        let mut wanted: Vec<i64> = events
            .iter()
            .flat_map(|e| [e.position - 1, e.position + 1])
            .filter(|p| *p >= 1 && !own.contains(p))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut log = HashMap::with_capacity(wanted.len());
        for chunk in wanted.chunks(NEIGHBOURS_PER_READ) {
            for e in self.events_at(chunk.to_vec()).await? {
                log.insert(e.position, e);
            }
        }
        Ok(verify_run_events(&run_stream_id(&run_id), events, Some(&log)))
    }

    /// Loads one run's events, taken from a bundle, into an empty ledger:
    /// they must verify (offline), then are re-sealed as positions 1..n of a
    /// new chain and imported like an export. Returns (events, runs).
    pub async fn import_run_events(
        &self,
        run_id: Uuid,
        events: Vec<EventEnvelope>,
    ) -> Result<(u64, usize), LedgerError> {
        if events.is_empty() {
            return Err(LedgerError::Storage("the bundle holds no events".into()));
        }
        let check = verify_run_events(&run_stream_id(&run_id), &events, None);
        if let Some(failure) = check.first_failure {
            return Err(LedgerError::Storage(format!(
                "the bundle's events do not verify: position {}: {}",
                failure.position, failure.reason
            )));
        }
        let mut sealer = Sealer::new(0, GENESIS_HASH.to_owned(), None);
        let resealed = events.into_iter().map(|e| sealer.reseal(e).envelope).collect();
        self.import(resealed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runledger_events::{Metadata, NewEvent};
    use serde_json::json;

    /// A log of two interleaved streams; returns it and the first stream's events.
    fn log() -> (Vec<EventEnvelope>, Vec<EventEnvelope>) {
        let mut sealer = Sealer::new(0, GENESIS_HASH.to_owned(), None);
        let mut all = Vec::new();
        for (stream, version) in [("run-a", 0), ("run-b", 0), ("run-a", 1), ("run-a", 2), ("run-b", 1)] {
            let event = NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "run.heartbeat".into(),
                schema_version: 1,
                data: json!({"n": version}),
            };
            let sealed = sealer.seal(stream, version, &[event], &Metadata::actor("t"));
            all.push(sealed[0].envelope.clone());
        }
        let a = all.iter().filter(|e| e.stream_id == "run-a").cloned().collect();
        (all, a)
    }

    fn around(all: &[EventEnvelope]) -> HashMap<i64, EventEnvelope> {
        all.iter()
            .filter(|e| e.stream_id != "run-a")
            .map(|e| (e.position, e.clone()))
            .collect()
    }

    #[test]
    fn an_intact_run_verifies_online_and_offline() {
        let (all, a) = log();
        let online = verify_run_events("run-a", &a, Some(&around(&all)));
        assert_eq!(online.first_failure, None);
        assert!(online.verified);
        assert_eq!(online.events_checked, 3);
        assert!(verify_run_events("run-a", &a, None).verified);
    }

    #[test]
    fn an_altered_event_fails_at_its_position_even_with_its_hash_recomputed() {
        let (all, mut a) = log();
        a[1].data = json!({"n": 9});
        let report = verify_run_events("run-a", &a, None);
        assert_eq!(report.first_failure.as_ref().map(|f| f.position), Some(3));
        assert!(report.first_failure.unwrap().reason.contains("altered"));

        // Recomputing its hash hides it from itself, not from its neighbours.
        let mut sealer = Sealer::new(2, a[1].prev_hash.clone(), None);
        a[1] = sealer.reseal(a[1].clone()).envelope;
        let report = verify_run_events("run-a", &a, Some(&around(&all)));
        assert_eq!(report.first_failure.map(|f| f.position), Some(3));
        assert_eq!(report.events_checked, 2);
    }

    #[test]
    fn a_removed_event_is_a_gap_in_versions() {
        let (_, mut a) = log();
        a.remove(1);
        let report = verify_run_events("run-a", &a, None);
        assert_eq!(report.first_failure.unwrap().position, 4);
    }

    #[test]
    fn resealing_keeps_every_field_but_the_place_in_the_chain() {
        let (_, a) = log();
        let mut sealer = Sealer::new(0, GENESIS_HASH.to_owned(), None);
        let resealed: Vec<EventEnvelope> = a.iter().map(|e| sealer.reseal(e.clone()).envelope).collect();
        assert_eq!(resealed.iter().map(|e| e.position).collect::<Vec<_>>(), [1, 2, 3]);
        let mut walk = runledger_events::chain::ChainWalk::default();
        for (new, old) in resealed.iter().zip(&a) {
            assert!(Sealed::from_envelope(new.clone()).check(&mut walk));
            assert_eq!(
                (&new.event_id, &new.stream_version, &new.data, &new.recorded_at),
                (&old.event_id, &old.stream_version, &old.data, &old.recorded_at)
            );
        }
    }
}
