//! Sealing: giving new events their positions, stream versions, time and
//! place in the hash chain. Both backends' appenders seal with this, inside
//! the transaction that holds the log's write lock.

use crate::chain::{canonical_json, ChainWalk, HashInput};
use crate::{EventEnvelope, Metadata, NewEvent, Timestamp};

/// The log's head as the appender sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealer {
    pub position: i64,
    pub hash: String,
    pub recorded_at: Option<Timestamp>,
}

/// A sealed event and the exact text that is stored and hashed.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub envelope: EventEnvelope,
    pub data: String,
    pub metadata: String,
    pub recorded_at: String,
}

impl Sealed {
    /// The stored form of an envelope read back (from an export, say): the
    /// canonical text its hash was computed over.
    pub fn from_envelope(envelope: EventEnvelope) -> Self {
        let data = canonical_json(&envelope.data);
        let metadata = canonical_json(&serde_json::to_value(&envelope.metadata).expect("metadata serializes"));
        let recorded_at = envelope.recorded_at.to_rfc3339();
        Self {
            envelope,
            data,
            metadata,
            recorded_at,
        }
    }

    fn input<'a>(&'a self, event_id: &'a str) -> HashInput<'a> {
        let e = &self.envelope;
        HashInput {
            position: e.position,
            event_id,
            stream_id: &e.stream_id,
            stream_version: e.stream_version,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            data: &self.data,
            metadata: &self.metadata,
            recorded_at: &self.recorded_at,
            prev_hash: &e.prev_hash,
        }
    }

    /// Checks this event as the next link of `walk` (see `ChainWalk::step`).
    pub fn check(&self, walk: &mut ChainWalk) -> bool {
        let event_id = self.envelope.event_id.to_string();
        walk.step(&self.input(&event_id), &self.envelope.hash)
    }

    /// Whether the stored `hash` is the hash of the stored fields and
    /// `prev_hash`: false when the event was altered after it was sealed.
    pub fn hash_matches(&self) -> bool {
        let event_id = self.envelope.event_id.to_string();
        self.input(&event_id).hash() == self.envelope.hash
    }
}

impl Sealer {
    pub fn new(position: i64, hash: String, recorded_at: Option<Timestamp>) -> Self {
        Self {
            position,
            hash,
            recorded_at,
        }
    }

    /// Seals an already recorded event again as the next position of this
    /// log: everything is kept (id, stream and version, type, data, metadata,
    /// time) but its position and its place in the chain. For loading a
    /// subset of another log, such as one run's events.
    pub fn reseal(&mut self, mut envelope: EventEnvelope) -> Sealed {
        envelope.position = self.position + 1;
        envelope.prev_hash = self.hash.clone();
        let mut sealed = Sealed::from_envelope(envelope);
        let event_id = sealed.envelope.event_id.to_string();
        let hash = sealed.input(&event_id).hash();
        sealed.envelope.hash = hash.clone();
        self.position = sealed.envelope.position;
        self.hash = hash;
        self.recorded_at = Some(sealed.envelope.recorded_at);
        sealed
    }

    /// Seals `events` as the next versions of `stream_id`, whose current
    /// version is `current`.
    pub fn seal(&mut self, stream_id: &str, current: i64, events: &[NewEvent], metadata: &Metadata) -> Vec<Sealed> {
        let metadata_text = canonical_json(&serde_json::to_value(metadata).expect("metadata serializes"));
        // Time never runs backwards along the log, so a time maps to a position.
        let now = Timestamp::now();
        let recorded_at = match self.recorded_at {
            Some(last) if last > now => last,
            _ => now,
        };
        let recorded_text = recorded_at.to_rfc3339();
        let mut out = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let position = self.position + 1;
            let stream_version = current + 1 + i as i64;
            let event_id = event.event_id.to_string();
            let data_text = canonical_json(&event.data);
            let hash = HashInput {
                position,
                event_id: &event_id,
                stream_id,
                stream_version,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                data: &data_text,
                metadata: &metadata_text,
                recorded_at: &recorded_text,
                prev_hash: &self.hash,
            }
            .hash();
            let prev_hash = std::mem::replace(&mut self.hash, hash.clone());
            self.position = position;
            self.recorded_at = Some(recorded_at);
            out.push(Sealed {
                envelope: EventEnvelope {
                    position,
                    event_id: event.event_id,
                    stream_id: stream_id.to_owned(),
                    stream_version,
                    event_type: event.event_type.clone(),
                    schema_version: event.schema_version,
                    data: event.data.clone(),
                    metadata: metadata.clone(),
                    recorded_at,
                    prev_hash,
                    hash,
                },
                data: data_text,
                metadata: metadata_text.clone(),
                recorded_at: recorded_text.clone(),
            });
        }
        out
    }
}
