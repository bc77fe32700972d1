//! Key-value types as clients see them (keys, ranges, range options and
//! results) and `KvStore`, the read side of the replicated state: current
//! reads, metadata, members, snapshots. Reads at past revisions and watch
//! events are in `history.rs`; writes in `batch.rs`. See `layout.rs` for how
//! it is stored.
//!
//! Pure storage logic: no Raft, no async.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::batch::WriteBatch;
use super::command::{MemberInfo, Rejection};
use super::history::{read_at, read_current};
use super::layout::{
    current_key, decode_i64, history_key, history_prefix, meta_key, Current, Revision, CURRENT,
    HISTORY,
};
use crate::codec;
use crate::error::Result;

/// The revision of a store nobody has written to.
pub const INITIAL_REVISION: Revision = 1;

const TREE: &str = "state";
pub(super) const REVISION_META: &str = "revision";
pub(super) const COMPACTED_META: &str = "compacted";
pub(super) const KEY_COUNT_META: &str = "keys";
pub(super) const VERSIONS_META: &str = "versions";
pub(super) const MEMBER_META: &str = "member/";

/// A key with its value and etcd's metadata, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
    /// Revision of the key's last put.
    pub mod_revision: Revision,
    /// 1 at creation, +1 per put.
    pub version: i64,
    pub value: Vec<u8>,
}

impl KeyValue {
    pub(super) fn from_current(key: Vec<u8>, c: Current) -> Self {
        KeyValue {
            key,
            create_revision: c.create_revision,
            mod_revision: c.mod_revision,
            version: c.version,
            value: c.value,
        }
    }
}

/// Bounds over tree keys.
pub(super) type TreeBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

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

    /// The same set as bounds over current-state tree keys, or `None` if it
    /// is empty.
    pub(super) fn current_bounds(&self) -> Option<TreeBounds> {
        match self {
            KeyRange::Single(key) => {
                let k = current_key(key);
                Some((Bound::Included(k.clone()), Bound::Included(k)))
            }
            KeyRange::Span { start, end } => {
                let upper = match end {
                    Some(end) if end <= start => return None,
                    Some(end) => Bound::Excluded(current_key(end)),
                    None => Bound::Excluded(vec![CURRENT + 1]),
                };
                Some((Bound::Included(current_key(start)), upper))
            }
        }
    }
}

impl KeyRange {
    /// Bounds over history tree keys for the versions of the set's keys up
    /// to `revision`, or `None` if it is empty.
    pub(super) fn history_bounds(&self, revision: Revision) -> Option<TreeBounds> {
        match self {
            KeyRange::Single(key) => Some((
                Bound::Included(history_key(key, 0)),
                Bound::Included(history_key(key, revision)),
            )),
            KeyRange::Span { start, end } => {
                let upper = match end {
                    Some(end) if end <= start => return None,
                    Some(end) => Bound::Excluded(history_prefix(end)),
                    None => Bound::Excluded(vec![HISTORY + 1]),
                };
                Some((Bound::Included(history_prefix(start)), upper))
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

/// Read access to the stored state, and the entry point for writes. Cheap to
/// clone; every clone sees the same tree.
#[derive(Clone)]
pub struct KvStore {
    pub(super) tree: sled::Tree,
}

impl KvStore {
    /// Opens (or creates) the state tree in `db`.
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(KvStore {
            tree: db.open_tree(TREE)?,
        })
    }

    pub(super) fn counter(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self
            .tree
            .get(meta_key(name))?
            .map_or(default, |b| decode_i64(&b)))
    }

    /// The current store revision.
    pub fn revision(&self) -> Result<Revision> {
        self.counter(REVISION_META, INITIAL_REVISION)
    }

    /// The revision history was compacted at; 0 if never.
    pub fn compacted(&self) -> Result<Revision> {
        self.counter(COMPACTED_META, 0)
    }

    /// How many keys the store holds.
    pub fn key_count(&self) -> Result<i64> {
        self.counter(KEY_COUNT_META, 0)
    }

    /// How many key versions the history holds (bounded by compaction).
    pub fn version_count(&self) -> Result<i64> {
        self.counter(VERSIONS_META, 0)
    }

    /// One key's current version, if present.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.tree.get(current_key(key))? {
            Some(raw) => Ok(Some(KeyValue::from_current(
                key.to_vec(),
                codec::decode(&raw)?,
            ))),
            None => Ok(None),
        }
    }

    /// Reads a range with etcd's semantics for limit, count, sorting and
    /// filters: of the current state, or as of `q.revision` (see
    /// `range_at`).
    pub fn range(&self, q: &RangeQuery) -> Result<std::result::Result<RangeResult, Rejection>> {
        let (revision, compacted) = (self.revision()?, self.compacted()?);
        if q.revision > 0 && q.revision < revision {
            let entries = q
                .range
                .history_bounds(q.revision)
                .map(|b| self.tree.range(b));
            return read_at(
                q,
                revision,
                compacted,
                entries.into_iter().flatten().map(|r| r.map_err(Into::into)),
            );
        }
        if q.revision > revision {
            return Ok(Err(Rejection::FutureRevision));
        }
        let entries = q.range.current_bounds().map(|b| self.tree.range(b));
        read_current(
            q,
            entries.into_iter().flatten().map(|r| r.map_err(Into::into)),
        )
        .map(Ok)
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
        let mut members = BTreeMap::new();
        for item in self.tree.scan_prefix(meta_key(MEMBER_META)) {
            let (k, raw) = item?;
            let id_bytes: [u8; 8] = k[k.len() - 8..]
                .try_into()
                .expect("invariant: member keys end in a u64");
            members.insert(u64::from_be_bytes(id_bytes), codec::decode(&raw)?);
        }
        Ok(members)
    }

    /// A metadata entry written with `WriteBatch::set_meta`.
    pub fn meta(&self, name: &str) -> Result<Option<sled::IVec>> {
        Ok(self.tree.get(meta_key(name))?)
    }

    /// Starts a group of changes; nothing is visible until `commit`.
    pub fn batch(&self) -> Result<WriteBatch<'_>> {
        WriteBatch::new(self)
    }

    /// Every stored pair, for a snapshot.
    pub fn export(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree
            .iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Replaces the whole state with `pairs` (from `export`) plus `meta`
    /// entries, atomically.
    pub fn import(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>, meta: &[(&str, Vec<u8>)]) -> Result<()> {
        let mut incoming: BTreeMap<Vec<u8>, Vec<u8>> = pairs.into_iter().collect();
        for (name, value) in meta {
            incoming.insert(meta_key(name), value.clone());
        }
        let mut batch = sled::Batch::default();
        for item in self.tree.iter().keys() {
            let k = item?;
            if !incoming.contains_key(k.as_ref()) {
                batch.remove(k);
            }
        }
        for (k, v) in incoming {
            batch.insert(k, v);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
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
