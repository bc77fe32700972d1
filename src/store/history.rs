//! Reads over stored entries: ranges of the current state, ranges as of a
//! past revision (MVCC history), and the change events watches replay.
//!
//! The range readers take the tree entries as an iterator, so the same code
//! serves `KvStore` (the committed tree) and a `WriteBatch` (the tree with
//! its pending changes on top).

use super::command::Rejection;
use super::kv::{KeyValue, KvStore, RangeQuery, RangeResult};
use super::layout::{
    event_key, history_key, parse_event_key, parse_history_key, Current, Revision, Version, EVENTS,
};
use crate::codec;
use crate::error::Result;

/// Tree entries in key order.
pub(super) trait Entries: Iterator<Item = Result<(Self::Key, Self::Value)>> {
    type Key: AsRef<[u8]>;
    type Value: AsRef<[u8]>;
}

impl<I, K, V> Entries for I
where
    I: Iterator<Item = Result<(K, V)>>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    type Key = K;
    type Value = V;
}

/// A range of the current state, from its `k` entries in key order.
pub(super) fn read_current(q: &RangeQuery, entries: impl Entries) -> Result<RangeResult> {
    let fetch = q.fetch();
    let mut kvs = Vec::new();
    let mut count = 0;
    for item in entries {
        let (k, raw) = item?;
        count += 1;
        if q.count_only || fetch.is_some_and(|n| kvs.len() >= n) {
            continue;
        }
        let current: Current = codec::decode(raw.as_ref())?;
        kvs.push(KeyValue::from_current(k.as_ref()[1..].to_vec(), current));
    }
    Ok(q.shape(kvs, count))
}

/// A range as of `q.revision`, from `h` entries in (key, revision) order:
/// each key's latest version at or before that revision, unless it was a
/// delete. Fails for a revision compacted away or not reached yet.
pub(super) fn read_at(
    q: &RangeQuery,
    revision: Revision,
    compacted: Revision,
    entries: impl Entries,
) -> Result<std::result::Result<RangeResult, Rejection>> {
    if q.revision > revision {
        return Ok(Err(Rejection::FutureRevision));
    }
    if q.revision < compacted {
        return Ok(Err(Rejection::Compacted));
    }
    let mut kvs = Vec::new();
    // The latest version seen of the key being scanned.
    let mut latest: Option<(Vec<u8>, Revision, Version)> = None;
    let flush = |latest: Option<(Vec<u8>, Revision, Version)>, kvs: &mut Vec<KeyValue>| {
        if let Some((
            key,
            rev,
            Version::Put {
                create_revision,
                version,
                value,
            },
        )) = latest
        {
            if q.range.contains(&key) {
                kvs.push(KeyValue {
                    key,
                    create_revision,
                    mod_revision: rev,
                    version,
                    value,
                });
            }
        }
    };
    for item in entries {
        let (k, raw) = item?;
        let Some((key, rev)) = parse_history_key(k.as_ref()) else {
            continue;
        };
        if rev > q.revision {
            continue;
        }
        if latest.as_ref().is_some_and(|(last, _, _)| *last != key) {
            flush(latest.take(), &mut kvs);
        }
        latest = Some((key, rev, codec::decode(raw.as_ref())?));
    }
    flush(latest, &mut kvs);
    let count = kvs.len() as i64;
    Ok(Ok(q.shape(kvs, count)))
}

/// Bytes an event costs beyond its key and value, for `events`' budget.
const EVENT_OVERHEAD: usize = 32;

/// What a watch sees of one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a put, the key's new version; for a delete, just the key and the
    /// revision of the delete.
    pub kv: KeyValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

impl KvStore {
    /// The changes at revisions `>= from`, in revision order: whole
    /// revisions, until about `max_bytes` of keys and values are read.
    pub fn events(&self, from: Revision, max_bytes: usize) -> Result<Vec<Event>> {
        let mut events: Vec<Event> = Vec::new();
        let mut bytes = 0;
        let mut last_rev = None;
        for item in self.tree.range(event_key(from, 0)..vec![EVENTS + 1]) {
            let (k, key) = item?;
            let Some((rev, _sub)) = parse_event_key(&k) else {
                continue;
            };
            if bytes >= max_bytes && last_rev != Some(rev) {
                break;
            }
            last_rev = Some(rev);
            let raw = self.tree.get(history_key(&key, rev))?;
            let Some(raw) = raw else { continue };
            let event = match codec::decode::<Version>(&raw)? {
                Version::Put {
                    create_revision,
                    version,
                    value,
                } => Event {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key: key.to_vec(),
                        create_revision,
                        mod_revision: rev,
                        version,
                        value,
                    },
                },
                Version::Delete => Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: key.to_vec(),
                        create_revision: 0,
                        mod_revision: rev,
                        version: 0,
                        value: Vec::new(),
                    },
                },
            };
            bytes += EVENT_OVERHEAD + event.kv.key.len() + event.kv.value.len();
            events.push(event);
        }
        Ok(events)
    }

    /// `key` as it was just before `revision`, if it existed then and that
    /// version has not been compacted away.
    pub fn version_before(&self, key: &[u8], revision: Revision) -> Result<Option<KeyValue>> {
        let Some(item) = self
            .tree
            .range(history_key(key, 0)..history_key(key, revision))
            .next_back()
        else {
            return Ok(None);
        };
        let (k, raw) = item?;
        let Some((_, rev)) = parse_history_key(&k) else {
            return Ok(None);
        };
        Ok(match codec::decode::<Version>(&raw)? {
            Version::Put {
                create_revision,
                version,
                value,
            } => Some(KeyValue {
                key: key.to_vec(),
                create_revision,
                mod_revision: rev,
                version,
                value,
            }),
            Version::Delete => None,
        })
    }
}
