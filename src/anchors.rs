//! Anchoring the log's head outside the database (see `runledger_events::anchor`):
//! where the anchors file is, the key, the start-up refusal of a log behind
//! its anchors, `verify`'s check, and the task that writes anchors while the
//! server runs. The task follows the log's head (the same wake-up the
//! followers use) and writes from its own task, so no append ever waits for
//! the anchors file's fsync.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use runledger_events::anchor::{Anchor, AnchorKey, AnchorLog, AnchorReport, AnchorWriter, Fault};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ledger::{DatabaseUrl, Ledger, LedgerError};

const HEAD_SQL: &str = "SELECT COALESCE(MAX(position), 0) FROM events";
/// Anchored positions looked up per query.
const HASHES_PER_READ: usize = 1000;

/// Where anchors are kept and the key they are signed with.
#[derive(Args, Debug, Clone, Default)]
pub struct AnchorArgs {
    /// The anchors file (append-only JSON lines). Default: beside a SQLite
    /// database (`<db>.anchors`); for PostgreSQL
    /// `./runledger-<database>.<schema>.anchors` in the working directory.
    #[arg(long = "anchors", env = "RUNLEDGER_ANCHORS")]
    pub path: Option<PathBuf>,
    /// A file holding the key anchors are signed and checked with
    /// (HMAC-SHA256, at least 16 bytes; trailing white space is ignored).
    /// Keep it outside the database's reach. Without a key anchors are
    /// written unsigned.
    #[arg(long, env = "RUNLEDGER_ANCHOR_KEY_FILE", conflicts_with = "anchor_key")]
    pub anchor_key_file: Option<PathBuf>,
    /// The key itself. Prefer `--anchor-key-file`: a command line is visible
    /// to every user of the machine.
    #[arg(long, env = "RUNLEDGER_ANCHOR_KEY", hide_env_values = true)]
    pub anchor_key: Option<String>,
}

/// The anchors file of one ledger and its key.
#[derive(Debug, Clone)]
pub struct Anchoring {
    pub path: PathBuf,
    pub key: Option<AnchorKey>,
}

impl Anchoring {
    pub async fn resolve(args: &AnchorArgs, url: &DatabaseUrl, ledger: &Ledger) -> anyhow::Result<Self> {
        let key = match (&args.anchor_key_file, &args.anchor_key) {
            (Some(file), _) => Some(AnchorKey::from_file(file).map_err(anyhow::Error::msg)?),
            (None, Some(secret)) => Some(AnchorKey::new(secret.as_bytes()).map_err(anyhow::Error::msg)?),
            (None, None) => None,
        };
        let path = match (&args.path, url) {
            (Some(path), _) => path.clone(),
            (None, DatabaseUrl::Sqlite(db)) => {
                let mut name = db.as_os_str().to_owned();
                name.push(".anchors");
                PathBuf::from(name)
            }
            (None, DatabaseUrl::Postgres(_)) => {
                let Ledger::Postgres(l) = ledger else {
                    anyhow::bail!("a PostgreSQL URL opened another kind of ledger");
                };
                // One database can hold several ledgers, one per schema.
                let (database, schema): (String, String) =
                    sqlx::query_as("SELECT current_database(), current_schema()")
                        .fetch_one(l.pool())
                        .await?;
                PathBuf::from(format!(
                    "runledger-{}.{}.anchors",
                    file_safe(&database),
                    file_safe(&schema)
                ))
            }
        };
        Ok(Self { path, key })
    }

    /// The anchors file as it is now; `None` when there is none.
    pub async fn read(&self) -> anyhow::Result<Option<AnchorLog>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || AnchorLog::read(&path))
            .await?
            .map_err(|e| anyhow::anyhow!("anchors file {}: {e}", self.path.display()))
    }

    /// Refuses a log behind its last trusted anchor: shorter than it, or
    /// with another hash at its position; with a key, also an anchors file
    /// holding a line the key did not sign. Returns that anchor's position (0
    /// without one). `doing` names what is refused ("start", "rebuild").
    pub async fn refuse_behind(&self, ledger: &Ledger, doing: &str) -> anyhow::Result<i64> {
        let Some(log) = self.read().await? else {
            return Ok(0);
        };
        let path = self.path.display();
        // Someone without the key wrote to the anchors file: evidence of
        // tampering, however the log looks.
        if let Some(key) = &self.key {
            if let Some((line, anchor)) = log.anchors.iter().find(|(_, a)| !a.is_signed_by(key)) {
                let fault = Fault::Forged {
                    line: *line,
                    position: anchor.position,
                    unsigned: anchor.hmac.is_none(),
                };
                anyhow::bail!(
                    "refusing to {doing}: {path}: {fault}. If the anchors were written before this key was \
                     configured, or with another key, move {path} aside. `runledger verify` checks every anchor."
                );
            }
        }
        let Some((line, last)) = log.last(self.key.as_ref()).cloned() else {
            return Ok(0);
        };
        let head = head_position(ledger).await?;
        let hashes = hashes_at(ledger, &[last.position]).await?;
        let one = AnchorLog {
            anchors: vec![(line, last.clone())],
            unreadable: Vec::new(),
        };
        if let Some(fault) = one.check(self.key.as_ref(), head, &hashes).faults.first() {
            anyhow::bail!(
                "refusing to {doing}: the log is behind its anchors file {path}: {fault}. Restore the database \
                 from a backup taken at or after that anchor; if the ledger was replaced on purpose, move {path} \
                 aside. `runledger verify` checks every anchor."
            );
        }
        Ok(last.position)
    }

    /// Checks the log against every anchor. Read the anchors before the log
    /// (`read`), so that no anchor written meanwhile is newer than the log
    /// read.
    pub async fn check(&self, ledger: &Ledger, log: &AnchorLog) -> anyhow::Result<AnchorReport> {
        let head = head_position(ledger).await?;
        let mut positions: Vec<i64> = log
            .anchors
            .iter()
            .map(|(_, a)| a.position)
            .filter(|p| (1..=head).contains(p))
            .collect();
        positions.sort_unstable();
        positions.dedup();
        let hashes = hashes_at(ledger, &positions).await?;
        Ok(log.check(self.key.as_ref(), head, &hashes))
    }
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn head_position(ledger: &Ledger) -> Result<i64, LedgerError> {
    match ledger {
        Ledger::Sqlite(l) => l.count(HEAD_SQL).await,
        Ledger::Postgres(l) => l.count(HEAD_SQL).await,
    }
}

/// The stored hashes at `positions` (those that exist).
async fn hashes_at(ledger: &Ledger, positions: &[i64]) -> Result<HashMap<i64, String>, LedgerError> {
    let mut hashes = HashMap::with_capacity(positions.len());
    for chunk in positions.chunks(HASHES_PER_READ) {
        for e in ledger.events_at(chunk.to_vec()).await? {
            hashes.insert(e.position, e.hash);
        }
    }
    Ok(hashes)
}

/// How often the server anchors its head; 0 turns either rule off.
#[derive(Clone, Copy, Debug)]
pub struct Cadence {
    /// After this many new events.
    pub every_events: u64,
    /// After this long, when the head moved.
    pub every: Duration,
}

/// Writes anchors while the server runs, and a last one once `stop` is
/// cancelled (after the server stopped taking writes). `last` is the
/// position already anchored. The file is opened before the task starts, so
/// an unwritable place fails the start-up.
pub fn start(
    ledger: Arc<Ledger>,
    anchoring: Anchoring,
    cadence: Cadence,
    last: i64,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let writer = AnchorWriter::open(&anchoring.path)
        .map_err(|e| anyhow::anyhow!("cannot write the anchors file {}: {e}", anchoring.path.display()))?;
    let mut task = Task {
        ledger,
        key: anchoring.key,
        writer: Some(writer),
        last,
    };
    Ok(tokio::spawn(async move {
        let mut head = task.ledger.head();
        let mut timer = (!cadence.every.is_zero()).then(|| {
            let mut t = tokio::time::interval(cadence.every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let due = tokio::select! {
                _ = stop.cancelled() => break,
                // The first tick is at once: a head not yet anchored is anchored on start.
                _ = async { timer.as_mut().expect("a timer").tick().await }, if timer.is_some() => true,
                changed = head.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let moved = (*head.borrow_and_update() - task.last).max(0) as u64;
                    cadence.every_events > 0 && moved >= cadence.every_events
                }
            };
            if due && *head.borrow() > task.last {
                task.anchor().await;
            }
        }
        task.anchor().await;
    }))
}

struct Task {
    ledger: Arc<Ledger>,
    key: Option<AnchorKey>,
    /// Lent to a blocking thread while it writes.
    writer: Option<AnchorWriter>,
    last: i64,
}

impl Task {
    /// Anchors the committed head, if it moved; a failure is logged and the
    /// next anchor tries again.
    async fn anchor(&mut self) {
        if let Err(err) = self.try_anchor().await {
            metrics::counter!("runledger_anchor_failures_total").increment(1);
            tracing::error!(error = %err, "writing an anchor failed; the head is not anchored");
        }
    }

    async fn try_anchor(&mut self) -> anyhow::Result<()> {
        let position = head_position(&self.ledger).await?;
        if position <= self.last {
            return Ok(());
        }
        let Some(hash) = hashes_at(&self.ledger, &[position]).await?.remove(&position) else {
            anyhow::bail!("the head event at position {position} cannot be read");
        };
        let anchor = Anchor::new(position, hash, self.key.as_ref());
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| anyhow::anyhow!("the anchors file is not open"))?;
        let (writer, written) = tokio::task::spawn_blocking(move || {
            let written = writer.append(&anchor);
            (writer, written)
        })
        .await?;
        let path = writer.path().display().to_string();
        self.writer = Some(writer);
        written.map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        self.last = position;
        metrics::counter!("runledger_anchors_written_total").increment(1);
        tracing::debug!(position, anchors = %path, "anchored the head");
        Ok(())
    }
}
