//! Anchors: checkpoints of the log's head (position, hash, time) kept outside
//! the database, one JSON line each in an append-only file.
//!
//! The hash chain alone cannot show that the tail was cut off, nor that an
//! event was edited and every hash after it recomputed (the algorithm is
//! public). An anchor records what the log was at a position; a log shorter
//! than an anchor, or with another hash there, was truncated or re-sealed.
//! With a key only its holder can write an anchor (HMAC-SHA256), so whoever
//! can edit the database and the anchors file still cannot make them agree.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Timestamp;

/// What is signed is versioned, so the format can change without an old
/// signature ever verifying a new meaning.
const SIGNED_PREFIX: &str = "runledger-anchor-v1";

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// One checkpoint of the head, as written to the anchors file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub position: i64,
    /// The hash of the event at `position`.
    pub hash: String,
    /// When the anchor was written (RFC 3339).
    pub at: String,
    /// HMAC-SHA256 over the fields above, hex; absent when written without a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<String>,
}

impl Anchor {
    /// An anchor of the event at `position` with `hash`, written now, signed
    /// when there is a key.
    pub fn new(position: i64, hash: String, key: Option<&AnchorKey>) -> Self {
        let mut anchor = Self {
            position,
            hash,
            at: Timestamp::now().to_rfc3339(),
            hmac: None,
        };
        anchor.hmac = key.map(|k| hex::encode(k.mac(&anchor).finalize().into_bytes()));
        anchor
    }

    fn signed_text(&self) -> String {
        format!("{SIGNED_PREFIX}:{}:{}:{}", self.position, self.hash, self.at)
    }

    /// Whether `key` signed this anchor (constant-time comparison).
    pub fn is_signed_by(&self, key: &AnchorKey) -> bool {
        let Some(Ok(tag)) = self.hmac.as_deref().map(hex::decode) else {
            return false;
        };
        key.mac(self).verify_slice(&tag).is_ok()
    }
}

/// The secret anchors are signed with. It never appears in `Debug`.
#[derive(Clone)]
pub struct AnchorKey(Vec<u8>);

impl fmt::Debug for AnchorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnchorKey(..)")
    }
}

impl AnchorKey {
    /// A key of at least `MIN_KEY_BYTES` bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, String> {
        let bytes = bytes.into();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "an anchor key of {} bytes is too short: it needs at least {MIN_KEY_BYTES} \
                 (e.g. `head -c 32 /dev/urandom | base64 > anchor.key`)",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    /// The contents of `path`, without trailing white space (a newline left
    /// by an editor is not part of the key).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let mut bytes = std::fs::read(path).map_err(|e| format!("anchor key file {}: {e}", path.display()))?;
        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
            bytes.pop();
        }
        Self::new(bytes).map_err(|e| format!("anchor key file {}: {e}", path.display()))
    }

    fn mac(&self, anchor: &Anchor) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(anchor.signed_text().as_bytes());
        mac
    }
}

/// The anchors file as read: every anchor with its line number, and the
/// lines that hold none (a write torn by a crash).
#[derive(Clone, Debug, Default)]
pub struct AnchorLog {
    pub anchors: Vec<(usize, Anchor)>,
    pub unreadable: Vec<usize>,
}

impl AnchorLog {
    /// Reads `path`; `None` when there is no such file.
    pub fn read(path: &Path) -> std::io::Result<Option<Self>> {
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut log = Self::default();
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Anchor>(line) {
                Ok(anchor) => log.anchors.push((i + 1, anchor)),
                Err(_) => log.unreadable.push(i + 1),
            }
        }
        Ok(Some(log))
    }

    /// The anchors to trust: all of them without a key; with one, only
    /// those it signed.
    pub fn authentic<'a>(&'a self, key: Option<&'a AnchorKey>) -> impl Iterator<Item = &'a (usize, Anchor)> + 'a {
        self.anchors
            .iter()
            .filter(move |(_, a)| key.is_none_or(|k| a.is_signed_by(k)))
    }

    /// The trusted anchor of the highest position.
    pub fn last<'a>(&'a self, key: Option<&'a AnchorKey>) -> Option<&'a (usize, Anchor)> {
        self.authentic(key).max_by_key(|(_, a)| a.position)
    }

    /// Checks the log against every anchor: `head` is the log's last
    /// position, `hash_at` its hashes at the anchored positions.
    pub fn check(&self, key: Option<&AnchorKey>, head: i64, hash_at: &HashMap<i64, String>) -> AnchorReport {
        let mut faults = Vec::new();
        if let Some(key) = key {
            for (line, anchor) in &self.anchors {
                if !anchor.is_signed_by(key) {
                    faults.push(Fault::Forged {
                        line: *line,
                        position: anchor.position,
                        unsigned: anchor.hmac.is_none(),
                    });
                }
            }
        }
        let mut trusted: Vec<&(usize, Anchor)> = self.authentic(key).collect();
        trusted.sort_by_key(|(line, a)| (a.position, *line));
        if let Some((line, anchor)) = trusted.last().filter(|(_, a)| a.position > head) {
            faults.push(Fault::Truncated {
                head,
                line: *line,
                anchor: anchor.clone(),
            });
        }
        let mut last_match = None;
        for (line, anchor) in trusted.iter().filter(|(_, a)| a.position <= head) {
            match hash_at.get(&anchor.position) {
                Some(found) if *found == anchor.hash => last_match = Some(anchor.position),
                Some(found) => {
                    faults.push(Fault::Resealed {
                        line: *line,
                        anchor: anchor.clone(),
                        found: found.clone(),
                        last_match,
                    });
                    break;
                }
                // A position missing inside the log is the chain walk's to report.
                None => {}
            }
        }
        AnchorReport {
            anchors: self.anchors.len(),
            trusted: trusted.len(),
            last: trusted.last().map(|(_, a)| a.clone()),
            unreadable: self.unreadable.clone(),
            faults,
        }
    }
}

/// What checking the log against its anchors found.
#[derive(Clone, Debug)]
pub struct AnchorReport {
    /// Anchors in the file.
    pub anchors: usize,
    /// Anchors trusted (all without a key; the validly signed ones with one).
    pub trusted: usize,
    /// The trusted anchor of the highest position.
    pub last: Option<Anchor>,
    /// Lines that hold no anchor (torn writes); they prove nothing either way.
    pub unreadable: Vec<usize>,
    pub faults: Vec<Fault>,
}

/// A disagreement between the log and its anchors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// With a key: an anchor it did not sign (someone else wrote the line).
    Forged { line: usize, position: i64, unsigned: bool },
    /// The log ends before an anchored position: its tail was removed.
    Truncated { head: i64, line: usize, anchor: Anchor },
    /// The event at an anchored position has another hash: an event at or
    /// before it was altered and the chain recomputed.
    Resealed {
        line: usize,
        anchor: Anchor,
        found: String,
        /// The highest anchored position that still agrees.
        last_match: Option<i64>,
    },
}

impl Fault {
    /// The position the fault is first visible at.
    pub fn position(&self) -> i64 {
        match self {
            Self::Forged { position, .. } => *position,
            Self::Truncated { head, .. } => head + 1,
            Self::Resealed { anchor, .. } => anchor.position,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forged {
                line,
                position,
                unsigned,
            } => write!(
                f,
                "forged anchor on line {line} (position {position}): {}; the anchors file was written by someone without the key",
                if *unsigned { "it is not signed" } else { "its signature does not verify with this key" }
            ),
            Self::Truncated { head, line, anchor } => write!(
                f,
                "truncated at position {}: the log ends at position {head}, but the anchor on line {line} \
                 (written {}) records position {}: events {}..={} at least were removed",
                head + 1,
                anchor.at,
                anchor.position,
                head + 1,
                anchor.position
            ),
            Self::Resealed {
                line,
                anchor,
                found,
                last_match,
            } => write!(
                f,
                "re-sealed at position {}: the anchor on line {line} (written {}) records hash {}, the log has {}: \
                 an event at positions {}..={} was altered and the chain recomputed",
                anchor.position,
                anchor.at,
                anchor.hash,
                found,
                last_match.map_or(1, |p| p + 1),
                anchor.position
            ),
        }
    }
}

/// Appends anchors to their file, durably: each line is one write followed
/// by an fsync. The file is never rewritten.
#[derive(Debug)]
pub struct AnchorWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl AnchorWriter {
    /// Opens (creating) the file for appending. A last line torn by a crash
    /// is ended first, so the next anchor starts a line of its own.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let existed = path.try_exists()?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        if !existed {
            // The new file's name is durable only once its folder is synced.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::File::open(dir)?.sync_all()?;
        }
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    pub fn append(&mut self, anchor: &Anchor) -> std::io::Result<()> {
        let mut line = serde_json::to_string(anchor).expect("anchors serialize");
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AnchorKey {
        AnchorKey::new(*b"0123456789abcdef0123").unwrap()
    }

    fn log_of(anchors: &[Anchor]) -> AnchorLog {
        AnchorLog {
            anchors: anchors.iter().cloned().enumerate().map(|(i, a)| (i + 1, a)).collect(),
            unreadable: Vec::new(),
        }
    }

    fn hashes(pairs: &[(i64, &str)]) -> HashMap<i64, String> {
        pairs.iter().map(|(p, h)| (*p, h.to_string())).collect()
    }

    #[test]
    fn a_signature_covers_every_field_and_needs_the_key() {
        let k = key();
        let anchor = Anchor::new(7, "ab".repeat(32), Some(&k));
        assert!(anchor.is_signed_by(&k));
        assert!(!anchor.is_signed_by(&AnchorKey::new(*b"another key, long enough").unwrap()));
        for edited in [
            Anchor {
                position: 8,
                ..anchor.clone()
            },
            Anchor {
                hash: "cd".repeat(32),
                ..anchor.clone()
            },
            Anchor {
                at: Timestamp::now().to_rfc3339() + "x",
                ..anchor.clone()
            },
            Anchor {
                hmac: None,
                ..anchor.clone()
            },
        ] {
            assert!(!edited.is_signed_by(&k), "{edited:?}");
        }
        assert!(AnchorKey::new(*b"short").is_err());
    }

    #[test]
    fn truncation_below_an_anchor_and_another_hash_at_one_are_faults() {
        let log = log_of(&[Anchor::new(2, "h2".into(), None), Anchor::new(4, "h4".into(), None)]);
        let intact = log.check(None, 5, &hashes(&[(2, "h2"), (4, "h4")]));
        assert!(intact.faults.is_empty(), "{:?}", intact.faults);
        assert_eq!(intact.last.map(|a| a.position), Some(4));

        let cut = log.check(None, 3, &hashes(&[(2, "h2")]));
        assert!(
            matches!(cut.faults[..], [Fault::Truncated { head: 3, .. }]),
            "{:?}",
            cut.faults
        );
        assert_eq!(cut.faults[0].position(), 4);

        let resealed = log.check(None, 5, &hashes(&[(2, "h2"), (4, "x4")]));
        assert!(
            matches!(
                &resealed.faults[..],
                [Fault::Resealed {
                    last_match: Some(2),
                    ..
                }]
            ),
            "{:?}",
            resealed.faults
        );
        assert_eq!(resealed.faults[0].position(), 4);
    }

    #[test]
    fn with_a_key_only_signed_anchors_count_and_the_others_are_forged() {
        let k = key();
        let mut forged = Anchor::new(9, "h9".into(), Some(&k));
        forged.position = 90;
        let log = log_of(&[
            Anchor::new(3, "h3".into(), Some(&k)),
            Anchor::new(50, "h50".into(), None),
            forged,
        ]);
        let report = log.check(Some(&k), 10, &hashes(&[(3, "h3")]));
        assert_eq!(report.trusted, 1);
        assert_eq!(
            report.faults,
            [
                Fault::Forged {
                    line: 2,
                    position: 50,
                    unsigned: true
                },
                Fault::Forged {
                    line: 3,
                    position: 90,
                    unsigned: false
                },
            ]
        );
        assert_eq!(log.last(Some(&k)).map(|(_, a)| a.position), Some(3));
        // Without the key the same lines are taken as written.
        assert_eq!(log.last(None).map(|(_, a)| a.position), Some(90));
    }

    #[test]
    fn the_file_is_appended_to_durably_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runledger.db.anchors");
        assert!(AnchorLog::read(&path).unwrap().is_none());
        let mut writer = AnchorWriter::open(&path).unwrap();
        writer.append(&Anchor::new(1, "h1".into(), None)).unwrap();
        drop(writer);
        // A crash in the middle of a write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"position":2,"ha"#)
            .unwrap();
        let log = AnchorLog::read(&path).unwrap().unwrap();
        assert_eq!((log.anchors.len(), log.unreadable.as_slice()), (1, &[2][..]));
        let mut writer = AnchorWriter::open(&path).unwrap();
        writer.append(&Anchor::new(3, "h3".into(), None)).unwrap();
        let log = AnchorLog::read(&path).unwrap().unwrap();
        let positions: Vec<i64> = log.anchors.iter().map(|(_, a)| a.position).collect();
        assert_eq!(positions, [1, 3]);
        assert_eq!(log.unreadable, [2]);
    }
}
