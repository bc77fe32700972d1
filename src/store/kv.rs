//! The store's bottom-level types, as clients see them: keys and ranges,
//! range options and results, why a command changed nothing, and `Reads`,
//! what a transaction needs to read (from the applied state, or from a
//! revision being written). The handle on the state is `kv_store.rs`.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::state::{Current, LeaseId, Revision};

/// A key with its value and etcd's metadata, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
    /// Revision of the key's last put.
    pub mod_revision: Revision,
    /// 1 at creation, +1 per put.
    pub version: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The lease the key is attached to; 0 if none.
    pub lease: LeaseId,
}

impl KeyValue {
    pub(super) fn from_current(key: &[u8], c: &Current, value: &[u8]) -> Self {
        KeyValue {
            key: key.to_vec(),
            create_revision: c.create_revision,
            mod_revision: c.mod_revision,
            version: c.version,
            value: value.to_vec(),
            lease: c.lease,
        }
    }
}

/// Bounds over keys.
pub(super) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// A set of keys named the way etcd's requests name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRange {
    /// Exactly one key.
    Single(Vec<u8>),
    /// Keys `>= start` and, if `end` is set, `< end`.
    Span {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    /// Every key that starts with `prefix` (etcd's `--prefix`).
    pub fn prefix(prefix: &[u8]) -> Self {
        // The end is the prefix with its last byte below 0xff bumped and
        // what follows dropped; with none, there is no end.
        let end = prefix
            .iter()
            .rposition(|&b| b < 0xff)
            .map(|i| [&prefix[..i], &[prefix[i] + 1]].concat());
        KeyRange::Span {
            start: prefix.to_vec(),
            end,
        }
    }

    /// etcd's rules: an empty `range_end` means just `key`; `"\0"` means every
    /// key `>= key`; anything else means `[key, range_end)`, which is empty
    /// when `range_end <= key`.
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::Span {
                start: key.to_vec(),
                end: None,
            },
            end => KeyRange::Span {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k == key,
            KeyRange::Span { start, end } => {
                key >= start.as_slice() && end.as_ref().is_none_or(|e| key < e.as_slice())
            }
        }
    }

    /// The same set as bounds over keys, or `None` if it is empty.
    pub(super) fn bounds(&self) -> Option<KeyBounds<'_>> {
        match self {
            KeyRange::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeyRange::Span { start, end } => {
                let upper = match end {
                    Some(end) if end <= start => return None,
                    Some(end) => Bound::Excluded(end.as_slice()),
                    None => Bound::Unbounded,
                };
                Some((Bound::Included(start.as_slice()), upper))
            }
        }
    }
}

/// Order of a range's results (etcd's `SortOrder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

/// Field a range's results are sorted by (etcd's `SortTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A read of a key range with etcd's `RangeRequest` options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeQuery {
    pub range: KeyRange,
    /// Read the state as of this revision; 0 means the current state.
    pub revision: Revision,
    /// At most this many pairs; 0 means no limit.
    pub limit: i64,
    pub keys_only: bool,
    pub count_only: bool,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Bounds on the returned pairs' revisions; 0 means unbounded. They
    /// filter `kvs` but not `count`, as in etcd.
    pub min_mod_revision: Revision,
    pub max_mod_revision: Revision,
    pub min_create_revision: Revision,
    pub max_create_revision: Revision,
}

impl RangeQuery {
    /// A plain read of `range`: current state, no limit, sorting or filters.
    pub fn new(range: KeyRange) -> Self {
        RangeQuery {
            range,
            revision: 0,
            limit: 0,
            keys_only: false,
            count_only: false,
            sort_order: SortOrder::None,
            sort_target: SortTarget::Key,
            min_mod_revision: 0,
            max_mod_revision: 0,
            min_create_revision: 0,
            max_create_revision: 0,
        }
    }

    fn has_filters(&self) -> bool {
        self.min_mod_revision != 0
            || self.max_mod_revision != 0
            || self.min_create_revision != 0
            || self.max_create_revision != 0
    }

    fn keeps(&self, kv: &KeyValue) -> bool {
        let within = |v: Revision, min: Revision, max: Revision| {
            (min == 0 || v >= min) && (max == 0 || v <= max)
        };
        within(
            kv.mod_revision,
            self.min_mod_revision,
            self.max_mod_revision,
        ) && within(
            kv.create_revision,
            self.min_create_revision,
            self.max_create_revision,
        )
    }

    /// The effective order: a non-key target with no order sorts ascending.
    fn effective_order(&self) -> SortOrder {
        if self.sort_order == SortOrder::None && self.sort_target != SortTarget::Key {
            SortOrder::Ascend
        } else {
            self.sort_order
        }
    }

    /// How many pairs in key order a reader must collect: all of them when
    /// sorting or filtering, else one more than the limit (to know `more`).
    pub(super) fn fetch(&self) -> Option<usize> {
        let read_all = self.effective_order() != SortOrder::None || self.has_filters();
        (self.limit > 0 && !read_all).then_some(self.limit as usize + 1)
    }

    /// Filters, sorts and cuts `kvs` (in key order, as collected per
    /// `fetch`) into the answer, with `count` keys in the range.
    pub(super) fn shape(&self, mut kvs: Vec<KeyValue>, count: i64) -> RangeResult {
        let mut result = RangeResult {
            kvs: Vec::new(),
            count,
            more: false,
        };
        if self.count_only {
            return result;
        }
        kvs.retain(|kv| self.keeps(kv));
        sort(&mut kvs, self.sort_target, self.effective_order());
        if self.limit > 0 && kvs.len() > self.limit as usize {
            kvs.truncate(self.limit as usize);
            result.more = true;
        }
        if self.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        result.kvs = kvs;
        result
    }
}

/// The answer to a `RangeQuery`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Keys in the range, whatever the limit and filters.
    pub count: i64,
    /// Whether the limit left pairs out.
    pub more: bool,
}

fn sort(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    match (target, order) {
        (_, SortOrder::None) | (SortTarget::Key, SortOrder::Ascend) => return,
        (SortTarget::Key, SortOrder::Descend) => kvs.reverse(),
        (SortTarget::Version, _) => kvs.sort_by_key(|kv| kv.version),
        (SortTarget::Create, _) => kvs.sort_by_key(|kv| kv.create_revision),
        (SortTarget::Mod, _) => kvs.sort_by_key(|kv| kv.mod_revision),
        (SortTarget::Value, _) => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if order == SortOrder::Descend && target != SortTarget::Key {
        kvs.reverse();
    }
}

/// Why a command changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The key had to exist and did not.
    KeyNotFound,
    /// A read or compaction at a revision already compacted away.
    Compacted,
    /// A read or compaction at a revision the store has not reached.
    FutureRevision,
    /// A lease that does not exist (a put attaching to it, a revoke).
    LeaseNotFound,
    /// A grant of a lease id already in use.
    LeaseExists,
    /// A write that adds data while the NOSPACE alarm is raised.
    NoSpace,
    /// A client write while the CORRUPT alarm is raised.
    Corrupt,
    /// An auth change that cannot be made, or a write its caller may not
    /// make.
    Auth(super::auth::AuthError),
}

impl From<Rejection> for crate::error::Error {
    /// The error a client sees for a command the state machine refused.
    fn from(r: Rejection) -> Self {
        use crate::error::Error;
        match r {
            Rejection::KeyNotFound => Error::KeyNotFound,
            Rejection::Compacted => Error::Compacted,
            Rejection::FutureRevision => Error::FutureRevision,
            Rejection::LeaseNotFound => Error::LeaseNotFound,
            Rejection::LeaseExists => Error::LeaseExists,
            Rejection::NoSpace => Error::NoSpace,
            Rejection::Corrupt => Error::Corrupt,
            Rejection::Auth(e) => Error::Auth(e),
        }
    }
}

/// What choosing a transaction's branches needs to read: the state as a
/// `Writer` sees it (with its revision's changes so far), or the applied
/// state itself for a transaction that only reads.
pub trait Reads {
    /// One key's current version.
    fn get(&self, key: &[u8]) -> Option<KeyValue>;
    /// A range with etcd's semantics (see `history::read`).
    fn range(&self, q: &RangeQuery) -> Result<RangeResult, Rejection>;
    /// Whether lease `id` exists.
    fn has_lease(&self, id: LeaseId) -> bool;
}
