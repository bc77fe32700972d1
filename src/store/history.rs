//! Reads over the state: ranges of the current state, ranges as of a past
//! revision (the MVCC history), and the change events watches replay.
//! Plain functions over `&State`, so reads under the store's read lock and
//! reads inside a write batch (which see the batch's own changes) are one
//! code path.

use super::kv::{KeyValue, RangeQuery, RangeResult, Reads, Rejection};
use super::state::{LeaseId, Revision, State, Version};

/// One key's current version, if present.
pub(super) fn get_current(st: &State, key: &[u8]) -> Option<KeyValue> {
    st.current(key)
        .map(|(c, value)| KeyValue::from_current(key, &c, value))
}

/// A range with etcd's semantics: of the current state, or as of
/// `q.revision` (see `read_at`); a revision not reached yet is refused.
pub(super) fn read(st: &State, q: &RangeQuery) -> std::result::Result<RangeResult, Rejection> {
    if q.revision > st.revision {
        return Err(Rejection::FutureRevision);
    }
    if q.revision > 0 && q.revision < st.revision {
        return read_at(st, q);
    }
    Ok(read_current(st, q))
}

/// A range of the current state.
pub(super) fn read_current(st: &State, q: &RangeQuery) -> RangeResult {
    let Some(bounds) = q.range.bounds() else {
        return RangeResult::default();
    };
    let fetch = q.fetch();
    let mut kvs = Vec::new();
    let mut count = 0;
    for (key, versions) in st.history.range::<[u8], _>(bounds) {
        let Some((c, value)) = versions.current() else {
            continue;
        };
        count += 1;
        if q.count_only || fetch.is_some_and(|n| kvs.len() >= n) {
            continue;
        }
        kvs.push(KeyValue::from_current(key, &c, value));
    }
    q.shape(kvs, count)
}

/// A range as of `q.revision`: each key's latest version at or before that
/// revision, unless it was a delete. Fails for a revision compacted away or
/// not reached yet.
pub(super) fn read_at(st: &State, q: &RangeQuery) -> std::result::Result<RangeResult, Rejection> {
    if q.revision > st.revision {
        return Err(Rejection::FutureRevision);
    }
    if q.revision < st.compacted {
        return Err(Rejection::Compacted);
    }
    let Some(bounds) = q.range.bounds() else {
        return Ok(RangeResult::default());
    };
    let fetch = q.fetch();
    let mut kvs = Vec::new();
    let mut count = 0;
    for (key, versions) in st.history.range::<[u8], _>(bounds) {
        let Some((rev, version @ Version::Put { .. })) = versions.at_or_before(q.revision) else {
            continue;
        };
        count += 1;
        if q.count_only || fetch.is_some_and(|n| kvs.len() >= n) {
            continue;
        }
        kvs.extend(put_pair(key, rev, version));
    }
    Ok(q.shape(kvs, count))
}

/// The pair `key` held from revision `rev`, if that version was a put.
fn put_pair(key: &[u8], rev: Revision, version: &Version) -> Option<KeyValue> {
    match version {
        Version::Put {
            create_revision,
            version,
            value,
            lease,
        } => Some(KeyValue {
            key: key.to_vec(),
            create_revision: *create_revision,
            mod_revision: rev,
            version: *version,
            value: value.clone(),
            lease: *lease,
        }),
        Version::Delete => None,
    }
}

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

/// Bytes an event costs beyond its key and value, for `events`' budget.
const EVENT_OVERHEAD: usize = 32;

/// The changes at revisions `from..=until` that `wanted` picks (by key and
/// kind), in revision order, and the newest revision read: whole revisions,
/// until about `max_bytes` of keys and values are read. Only the changes
/// picked are copied.
pub(super) fn events(
    st: &State,
    from: Revision,
    until: Revision,
    max_bytes: usize,
    wanted: impl Fn(&[u8], EventKind) -> bool,
) -> (Vec<Event>, Option<Revision>) {
    let mut events: Vec<Event> = Vec::new();
    let mut bytes = 0;
    let mut last_rev = None;
    if until < from {
        return (events, None);
    }
    for (&(rev, _sub), key) in st.events.range((from, 0)..=(until, u32::MAX)) {
        if bytes >= max_bytes && last_rev != Some(rev) {
            break;
        }
        last_rev = Some(rev);
        bytes += EVENT_OVERHEAD + key.len();
        let Some(version) = st.history.get(key).and_then(|v| v.get(rev)) else {
            continue;
        };
        let kind = match version {
            Version::Put { .. } => EventKind::Put,
            Version::Delete => EventKind::Delete,
        };
        if !wanted(key, kind) {
            continue;
        }
        let event = match put_pair(key, rev, version) {
            Some(kv) => Event {
                kind: EventKind::Put,
                kv,
            },
            None => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.clone(),
                    create_revision: 0,
                    mod_revision: rev,
                    version: 0,
                    value: Vec::new(),
                    lease: 0,
                },
            },
        };
        bytes += event.kv.value.len();
        events.push(event);
    }
    (events, last_rev)
}

/// How far `changed_keys` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyScan {
    /// Every change up to this revision was seen.
    pub through: Revision,
    /// Changes from `from` on were compacted away before they were seen:
    /// which keys changed there is unknown.
    pub gap: bool,
}

/// Calls `f` with the revision and key of every change at revisions
/// `>= from`, in revision order: whole revisions, until about `max_changes`
/// were seen. Copies nothing.
pub(super) fn changed_keys(
    st: &State,
    from: Revision,
    max_changes: usize,
    mut f: impl FnMut(Revision, &[u8]),
) -> KeyScan {
    let gap = from < st.compacted;
    let mut last_rev = None;
    for (seen, (&(rev, _sub), key)) in st.events.range((from, 0)..).enumerate() {
        if seen >= max_changes && last_rev != Some(rev) {
            // `rev` is not read: everything before it was.
            return KeyScan {
                through: rev.saturating_sub(1),
                gap,
            };
        }
        last_rev = Some(rev);
        f(rev, key);
    }
    KeyScan {
        through: st.revision.max(from.saturating_sub(1)),
        gap,
    }
}

/// `key` as it was just before `revision`, if it existed then and that
/// version has not been compacted away.
pub(super) fn version_before(st: &State, key: &[u8], revision: Revision) -> Option<KeyValue> {
    let (rev, version) = st.history.get(key).and_then(|v| v.before(revision))?;
    put_pair(key, rev, version)
}

impl Reads for State {
    fn get(&self, key: &[u8]) -> Option<KeyValue> {
        get_current(self, key)
    }

    fn range(&self, q: &RangeQuery) -> Result<RangeResult, Rejection> {
        read(self, q)
    }

    fn has_lease(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }
}
