//! Key-value types as clients see them (keys, ranges, range options and
//! results) and `KvStore`, the shared handle on the in-memory state: reads
//! of the current state, members, metadata, snapshots. Reads at past
//! revisions and watch events are in `history.rs`; writes in `batch.rs`.
//!
//! Pure storage logic: no Raft, no async. Readers take the state's read
//! lock only for the read itself; one batch of applied entries takes the
//! write lock, so a reader sees a batch entirely or not at all.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};

use super::batch::WriteBatch;
use super::command::{MemberInfo, Rejection};
use super::history::{get_current, read};
use super::state::{Current, Revision, State};
use crate::error::Result;

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
}

impl KeyValue {
    pub(super) fn from_current(key: &[u8], c: &Current, value: &[u8]) -> Self {
        KeyValue {
            key: key.to_vec(),
            create_revision: c.create_revision,
            mod_revision: c.mod_revision,
            version: c.version,
            value: value.to_vec(),
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

/// The shared handle on the state: reads, and the entry point for writes.
/// Cheap to clone; every clone sees the same state.
#[derive(Clone, Default)]
pub struct KvStore {
    state: Arc<RwLock<State>>,
}

impl KvStore {
    /// A store holding `state`.
    pub fn new(state: State) -> Self {
        KvStore {
            state: Arc::new(RwLock::new(state)),
        }
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .expect("invariant: state lock is never poisoned")
    }

    /// The current store revision.
    pub fn revision(&self) -> Result<Revision> {
        Ok(self.read().revision)
    }

    /// The revision history was compacted at; 0 if never.
    pub fn compacted(&self) -> Result<Revision> {
        Ok(self.read().compacted)
    }

    /// How many keys the store holds.
    pub fn key_count(&self) -> Result<i64> {
        Ok(self.read().live as i64)
    }

    /// How many key versions the history holds (bounded by compaction).
    pub fn version_count(&self) -> Result<i64> {
        Ok(self.read().versions as i64)
    }

    /// One key's current version, if present.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        Ok(get_current(&self.read(), key))
    }

    /// Reads a range with etcd's semantics for limit, count, sorting and
    /// filters: of the current state, or as of `q.revision` (see
    /// `history::read_at`).
    pub fn range(&self, q: &RangeQuery) -> Result<std::result::Result<RangeResult, Rejection>> {
        Ok(read(&self.read(), q))
    }

    /// A hash over every key with its value and revisions as of `revision`
    /// (0: now), not members or metadata: equal on members whose key-value
    /// state was equal then.
    pub fn hash(&self, revision: Revision) -> Result<std::result::Result<u32, Rejection>> {
        let all = RangeQuery {
            revision,
            ..RangeQuery::new(KeyRange::new(&[0], &[0]))
        };
        let kvs = match self.range(&all)? {
            Ok(r) => r.kvs,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let mut hash = FNV_OFFSET;
        for kv in kvs {
            for part in [&kv.key, &kv.value] {
                hash = fnv1a(hash, &(part.len() as u64).to_be_bytes());
                hash = fnv1a(hash, part);
            }
            for n in [kv.create_revision, kv.mod_revision, kv.version] {
                hash = fnv1a(hash, &n.to_be_bytes());
            }
        }
        Ok(Ok((hash >> 32) as u32 ^ hash as u32))
    }

    /// Every member's published attributes.
    pub fn members(&self) -> Result<BTreeMap<u64, MemberInfo>> {
        Ok(self.read().members.clone())
    }

    /// A metadata entry written with `WriteBatch::set_meta`.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read().meta.get(name).cloned())
    }

    /// Starts a group of changes, holding the write lock until `commit`.
    pub fn batch(&self) -> Result<WriteBatch<'_>> {
        Ok(WriteBatch::new(
            self.state
                .write()
                .expect("invariant: state lock is never poisoned"),
        ))
    }

    /// Runs a transaction that only reads against the applied state, under
    /// the read lock; returns the revision it read at. `None` if `txn`
    /// writes (those go through Raft).
    pub fn read_txn(
        &self,
        txn: &super::txn::Txn,
    ) -> Option<(
        Revision,
        std::result::Result<super::txn::TxnResult, Rejection>,
    )> {
        let st = self.read();
        super::txn::read_only(&st, txn).map(|result| (st.revision, result))
    }

    /// The whole state, encoded for a snapshot. Encoded under the read
    /// lock rather than copied first: encoding is quicker than a deep copy
    /// and needs only the encoded bytes beside the state, not a second
    /// state.
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(crate::codec::encode(&*self.read())?)
    }

    /// Replaces the whole state, from a snapshot.
    pub fn restore(&self, state: State) {
        *self
            .state
            .write()
            .expect("invariant: state lock is never poisoned") = state;
    }
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

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a, continued from `hash`.
pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a_of(bytes: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, bytes)
}
