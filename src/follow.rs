//! Following the log. Each node keeps one tail: a follower task, woken by
//! the ledger's head (the writer's commits, or other nodes' NOTIFY), reads
//! new events once and keeps the most recent ones in a bounded ring.
//! Subscribers read by position from the ring, or from the log when their
//! position is older than the ring, so a thousand subscribers cost one query
//! per commit, a slow subscriber costs at most one page, and nothing a
//! subscriber does can hold up a writer. With no subscriber the follower
//! reads nothing (each read parses and serializes every event): it only
//! moves past the head, and a subscriber that comes reads what it needs
//! from the log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use runledger_projections::{LogEntry, LogFilter};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ledger::{Ledger, LedgerError};

const FOLLOW_PAGE: i64 = 1000;

/// A log entry ready to send: its envelope is serialized once, however many
/// subscribers receive it.
#[derive(Debug)]
pub struct Frame {
    pub entry: LogEntry,
    pub json: String,
}

impl Frame {
    fn new(entry: LogEntry) -> Arc<Self> {
        let json = serde_json::to_string(&entry.envelope).expect("envelopes serialize");
        Arc::new(Self { entry, json })
    }

    pub fn position(&self) -> i64 {
        self.entry.envelope.position
    }
}

pub struct LogTail {
    ledger: Arc<Ledger>,
    ring: RwLock<VecDeque<Arc<Frame>>>,
    capacity: usize,
    cached: watch::Sender<i64>,
    /// Live subscriptions: the follower reads ahead only for them.
    subscribers: AtomicUsize,
}

impl LogTail {
    /// Starts following from the current head; stops on `shutdown`.
    pub fn start(ledger: Arc<Ledger>, capacity: usize, shutdown: CancellationToken) -> Arc<Self> {
        let head = *ledger.head().borrow();
        let tail = Arc::new(Self {
            ledger,
            ring: RwLock::new(VecDeque::with_capacity(capacity.min(65_536))),
            capacity: capacity.max(1),
            cached: watch::channel(head).0,
            subscribers: AtomicUsize::new(0),
        });
        tokio::spawn(follow(tail.clone(), shutdown));
        tail
    }

    /// The position up to which the tail has read the log; it changes when
    /// new events are available.
    pub fn position(&self) -> watch::Receiver<i64> {
        self.cached.subscribe()
    }

    /// The last position committed, as far as this node knows (at least
    /// every write it has acknowledged).
    pub fn head(&self) -> i64 {
        *self.ledger.head().borrow()
    }

    /// Up to `limit` events after `after`, in position order: from the ring
    /// while it holds them, then from the log. With `fresh` (queries), the log
    /// is asked whenever the ring cannot fill the page, so a query sees every
    /// commit of any node. Without it (subscribers), the log is asked only
    /// for positions older than the ring; newer ones wait for the tail, so N
    /// subscribers cost one query per commit, not N.
    pub async fn read(&self, after: i64, limit: usize, fresh: bool) -> Result<Vec<Arc<Frame>>, LedgerError> {
        let (mut page, covered) = {
            let ring = self.ring.read().expect("ring lock");
            match ring.front() {
                Some(first) if after.saturating_add(1) >= first.position() => {
                    let skip = usize::try_from(after.saturating_add(1) - first.position()).unwrap_or(usize::MAX);
                    (ring.iter().skip(skip).take(limit).cloned().collect::<Vec<_>>(), true)
                }
                Some(_) => (Vec::new(), false),
                None => (Vec::new(), after >= *self.cached.borrow()),
            }
        };
        if page.len() < limit && (fresh || !covered) {
            let served = page.last().map_or(after, |f| f.position());
            let more = self.ledger.read_log(served, (limit - page.len()) as i64).await?;
            page.extend(more.into_iter().map(Frame::new));
        }
        Ok(page)
    }

    /// Nobody is following: forget the ring and stand at `head`, so that a
    /// subscriber reads anything before it from the log (the ring and the
    /// position change together, under the ring's lock).
    fn skip_to(&self, head: i64) {
        let mut ring = self.ring.write().expect("ring lock");
        ring.clear();
        self.cached.send_replace(head);
    }

    fn push(&self, page: Vec<LogEntry>) {
        let mut ring = self.ring.write().expect("ring lock");
        for entry in page {
            // Keep the ring contiguous: a gap would mean a missed read.
            if let Some(last) = ring.back() {
                if entry.envelope.position != last.position() + 1 {
                    ring.clear();
                }
            }
            ring.push_back(Frame::new(entry));
            if ring.len() > self.capacity {
                ring.pop_front();
            }
        }
    }
}

async fn follow(tail: Arc<LogTail>, shutdown: CancellationToken) {
    let mut head = tail.ledger.head();
    let mut last = *tail.cached.borrow();
    loop {
        while tail.subscribers.load(Ordering::Acquire) == 0 {
            let now = *head.borrow_and_update();
            if now > last {
                tail.skip_to(now);
                last = now;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = head.changed() => if changed.is_err() { return },
            }
        }
        loop {
            match tail.ledger.read_log(last, FOLLOW_PAGE).await {
                Ok(page) => {
                    let n = page.len() as i64;
                    if let Some(end) = page.last().map(|e| e.envelope.position) {
                        tail.push(page);
                        last = end;
                        tail.cached.send_replace(last);
                    }
                    if n < FOLLOW_PAGE {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "reading the log for followers failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = head.wait_for(|h| *h > last) => if changed.is_err() { return },
        }
    }
}

/// When a subscription ends by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    Forever,
    /// After this run's `run.ended`.
    RunEnded(uuid::Uuid),
}

/// One subscriber: a cursor into the log and a filter. It only ever moves
/// its cursor over events it has read, so resuming from any delivered
/// position neither skips nor repeats.
pub struct Subscription {
    tail: Arc<LogTail>,
    cursor: i64,
    filter: LogFilter,
    until: Until,
    buffer: VecDeque<Arc<Frame>>,
    position: watch::Receiver<i64>,
    shutdown: CancellationToken,
    /// The run ended at this time: what was appended with its run.ended
    /// (a run.dead_lettered, say) is still delivered, then the stream stops.
    ending: Option<runledger_events::Timestamp>,
    /// Nothing more will be delivered once the buffer is empty.
    closing: bool,
    done: bool,
}

const SUBSCRIBER_PAGE: usize = 500;

impl Drop for Subscription {
    fn drop(&mut self) {
        self.tail.subscribers.fetch_sub(1, Ordering::AcqRel);
        ::metrics::gauge!("runledger_sse_clients").decrement(1.0);
    }
}

impl Subscription {
    pub fn new(tail: Arc<LogTail>, after: i64, filter: LogFilter, until: Until, shutdown: CancellationToken) -> Self {
        let position = tail.position();
        tail.subscribers.fetch_add(1, Ordering::AcqRel);
        ::metrics::gauge!("runledger_sse_clients").increment(1.0);
        Self {
            tail,
            cursor: after,
            filter,
            until,
            buffer: VecDeque::new(),
            position,
            shutdown,
            ending: None,
            closing: false,
            done: false,
        }
    }

    /// The subscribed run already ended at `at` (before the subscription's
    /// start): deliver only what remains of that append, then stop.
    pub fn ended_at(&mut self, at: runledger_events::Timestamp) {
        self.ending = Some(at);
    }

    /// The next matching event; `None` when the subscription ends (shutdown,
    /// or `until` reached).
    pub async fn next(&mut self) -> Option<Result<Arc<Frame>, LedgerError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(entry) = self.buffer.pop_front() {
                return Some(Ok(entry));
            }
            if self.closing {
                self.done = true;
                return None;
            }
            let page = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                page = self.tail.read(self.cursor, SUBSCRIBER_PAGE, false) => page,
            };
            match page {
                Err(err) => return Some(Err(err)),
                Ok(page) if !page.is_empty() => {
                    for frame in page {
                        let e = &frame.entry.envelope;
                        let own = matches!(self.until, Until::RunEnded(run) if e.stream_id == runledger_events::run_stream_id(&run));
                        // The end of the subscribed run ends the stream, filtered
                        // or not, after the rest of the append that ended it: an
                        // append's events have consecutive positions, so the first
                        // event that is not this run's at the same time closes it.
                        if self.ending.is_some_and(|at| !(own && at == e.recorded_at)) {
                            self.closing = true;
                            break;
                        }
                        if own && e.event_type == "run.ended" {
                            self.ending = Some(e.recorded_at);
                        }
                        self.cursor = frame.position();
                        if self.filter.matches(&frame.entry) {
                            self.buffer.push_back(frame);
                        }
                    }
                }
                // Caught up after run.ended: its append is complete.
                Ok(_) if self.ending.is_some() => self.closing = true,
                Ok(_) => {
                    let cursor = self.cursor;
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        changed = self.position.wait_for(|p| *p > cursor) => if changed.is_err() { return None },
                    }
                }
            }
        }
    }
}
