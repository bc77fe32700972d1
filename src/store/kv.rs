//! The replicated state as stored on disk: keys with etcd's per-key revision
//! data, the cluster-wide revision, member attributes, and a few metadata
//! entries, all in one sled tree so one batch changes them atomically.
//!
//! Pure storage logic: no Raft, no async. `state_machine.rs` drives it with a
//! `WriteBatch` per group of log entries; the gRPC services read through
//! `KvStore` directly. Tree layout:
//!
//! | tree key            | value                           |
//! |---------------------|---------------------------------|
//! | `k` + user key      | `Record` (value and revisions)  |
//! | `mrevision`         | the store revision, i64 BE      |
//! | `mkeys`             | the number of keys, i64 BE      |
//! | `mmember/` + id BE  | `MemberInfo`                    |
//! | `m` + other name    | metadata owned by the caller    |

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::command::{MemberInfo, Rejection};
use crate::codec;
use crate::error::Result;

/// etcd's cluster-wide revision: starts at 1, +1 per write that changes a key.
pub type Revision = i64;

/// The revision of a store nobody has written to.
pub const INITIAL_REVISION: Revision = 1;

const TREE: &str = "state";
const KEY_PREFIX: u8 = b'k';
/// The first tree key after every user key.
const KEY_PREFIX_END: u8 = KEY_PREFIX + 1;
const META_PREFIX: u8 = b'm';
const REVISION_META: &str = "revision";
const KEY_COUNT_META: &str = "keys";
const MEMBER_META: &str = "member/";

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

/// What is stored for a key: everything but the key itself.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    value: Vec<u8>,
}

impl Record {
    fn into_kv(self, key: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value,
        }
    }
}

/// Bounds over tree keys.
type TreeBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// A set of keys named the way etcd's requests name them.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// The same set as bounds over tree keys, or `None` if it is empty.
    fn tree_bounds(&self) -> Option<TreeBounds> {
        match self {
            KeyRange::Single(key) => {
                let k = tree_key(key);
                Some((Bound::Included(k.clone()), Bound::Included(k)))
            }
            KeyRange::Span { start, end } => {
                let upper = match end {
                    Some(end) if end <= start => return None,
                    Some(end) => Bound::Excluded(tree_key(end)),
                    None => Bound::Excluded(vec![KEY_PREFIX_END]),
                };
                Some((Bound::Included(tree_key(start)), upper))
            }
        }
    }
}

/// Order of a range's results (etcd's `SortOrder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

/// Field a range's results are sorted by (etcd's `SortTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A read of a key range with etcd's `RangeRequest` options.
#[derive(Debug, Clone)]
pub struct RangeQuery {
    pub range: KeyRange,
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
    /// A plain read of `range`: no limit, no sorting, no filters.
    pub fn new(range: KeyRange) -> Self {
        RangeQuery {
            range,
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
}

/// The answer to a `RangeQuery`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
    tree: sled::Tree,
}

impl KvStore {
    /// Opens (or creates) the state tree in `db`.
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(KvStore {
            tree: db.open_tree(TREE)?,
        })
    }

    /// The current store revision.
    pub fn revision(&self) -> Result<Revision> {
        Ok(match self.tree.get(meta_key(REVISION_META))? {
            Some(bytes) => decode_i64(&bytes),
            None => INITIAL_REVISION,
        })
    }

    /// How many keys the store holds.
    pub fn key_count(&self) -> Result<i64> {
        Ok(self
            .tree
            .get(meta_key(KEY_COUNT_META))?
            .map_or(0, |b| decode_i64(&b)))
    }

    /// One key, if present.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.tree.get(tree_key(key))? {
            Some(raw) => Ok(Some(codec::decode::<Record>(&raw)?.into_kv(key.to_vec()))),
            None => Ok(None),
        }
    }

    /// Reads a range with etcd's semantics for limit, count, sorting and
    /// filters.
    pub fn range(&self, q: &RangeQuery) -> Result<RangeResult> {
        let mut result = RangeResult::default();
        let Some(bounds) = q.range.tree_bounds() else {
            return Ok(result);
        };
        let order = q.effective_order();
        let read_all = order != SortOrder::None || q.has_filters();
        // One more than the limit tells whether there is more.
        let fetch = if q.limit > 0 && !read_all {
            Some(q.limit as usize + 1)
        } else {
            None
        };
        for item in self.tree.range(bounds) {
            let (k, raw) = item?;
            result.count += 1;
            if q.count_only || fetch.is_some_and(|n| result.kvs.len() >= n) {
                continue;
            }
            let kv = codec::decode::<Record>(&raw)?.into_kv(k[1..].to_vec());
            if q.keeps(&kv) {
                result.kvs.push(kv);
            }
        }
        sort(&mut result.kvs, q.sort_target, order);
        if q.limit > 0 && result.kvs.len() > q.limit as usize {
            result.kvs.truncate(q.limit as usize);
            result.more = true;
        }
        if q.keys_only {
            result.kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(result)
    }

    /// A hash over every key with its value and revisions (not members or
    /// metadata): equal on members whose key-value state is equal.
    pub fn hash(&self) -> Result<u32> {
        let mut hash = FNV_OFFSET;
        for item in self.tree.range(vec![KEY_PREFIX]..vec![KEY_PREFIX_END]) {
            let (k, raw) = item?;
            for part in [k.as_ref(), raw.as_ref()] {
                hash = fnv1a(hash, &(part.len() as u64).to_be_bytes());
                hash = fnv1a(hash, part);
            }
        }
        Ok((hash >> 32) as u32 ^ hash as u32)
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
        Ok(WriteBatch {
            store: self,
            pending: BTreeMap::new(),
            revision: self.revision()?,
            keys: self.key_count()?,
        })
    }

    /// Applies a batch atomically: readers and a crash see all of it or none.
    /// Durable only once the database is flushed.
    pub fn commit(&self, batch: WriteBatch<'_>) -> Result<()> {
        let mut sled_batch = sled::Batch::default();
        sled_batch.insert(
            meta_key(REVISION_META),
            batch.revision.to_be_bytes().to_vec(),
        );
        sled_batch.insert(meta_key(KEY_COUNT_META), batch.keys.to_be_bytes().to_vec());
        for (k, v) in batch.pending {
            match v {
                Some(v) => sled_batch.insert(k, v),
                None => sled_batch.remove(k),
            }
        }
        self.tree.apply_batch(sled_batch)?;
        Ok(())
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

/// Changes staged on top of a `KvStore`. Reads through the batch see its own
/// earlier writes, so several commands can share one batch.
pub struct WriteBatch<'a> {
    store: &'a KvStore,
    /// Tree key to new value, `None` for a removal.
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    revision: Revision,
    /// The number of keys including this batch's changes.
    keys: i64,
}

impl WriteBatch<'_> {
    /// The revision including this batch's changes so far.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let tk = tree_key(key);
        let raw = match self.pending.get(&tk) {
            Some(Some(raw)) => raw.clone(),
            Some(None) => return Ok(None),
            None => match self.store.tree.get(&tk)? {
                Some(raw) => raw.to_vec(),
                None => return Ok(None),
            },
        };
        Ok(Some(codec::decode::<Record>(&raw)?.into_kv(key.to_vec())))
    }

    /// Sets `key` to `value` (`None`: keep its value) at a new revision and
    /// returns the previous pair. Changes nothing and returns a `Rejection` if
    /// `must_exist` (or keeping the value) and the key is absent.
    pub fn put(
        &mut self,
        key: &[u8],
        value: Option<Vec<u8>>,
        must_exist: bool,
    ) -> Result<std::result::Result<Option<KeyValue>, Rejection>> {
        let prev = self.get(key)?;
        let value = match (value, &prev) {
            (_, None) if must_exist => return Ok(Err(Rejection::KeyNotFound)),
            (Some(v), _) => v,
            (None, Some(p)) => p.value.clone(),
            (None, None) => return Ok(Err(Rejection::KeyNotFound)),
        };
        let revision = self.revision + 1;
        let record = Record {
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
        };
        self.pending
            .insert(tree_key(key), Some(codec::encode(&record)?));
        self.revision = revision;
        if prev.is_none() {
            self.keys += 1;
        }
        Ok(Ok(prev))
    }

    /// Deletes every key in `range` at one new revision (none if nothing
    /// matched); returns the deleted pairs in key order.
    pub fn delete_range(&mut self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        let Some(bounds) = range.tree_bounds() else {
            return Ok(Vec::new());
        };
        let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for item in self.store.tree.range(bounds.clone()) {
            let (k, v) = item?;
            found.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in self.pending.range(bounds) {
            match v {
                Some(v) => found.insert(k.clone(), v.clone()),
                None => found.remove(k),
            };
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        self.revision += 1;
        self.keys -= found.len() as i64;
        let mut deleted = Vec::with_capacity(found.len());
        for (k, raw) in found {
            deleted.push(codec::decode::<Record>(&raw)?.into_kv(k[1..].to_vec()));
            self.pending.insert(k, None);
        }
        Ok(deleted)
    }

    /// Records a member's attributes; does not change the revision.
    pub fn set_member(&mut self, id: u64, info: &MemberInfo) -> Result<()> {
        let mut k = meta_key(MEMBER_META);
        k.extend_from_slice(&id.to_be_bytes());
        self.pending.insert(k, Some(codec::encode(info)?));
        Ok(())
    }

    /// Sets a metadata entry, committed with the rest of the batch.
    pub fn set_meta(&mut self, name: &str, value: Vec<u8>) {
        self.pending.insert(meta_key(name), Some(value));
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

fn tree_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(KEY_PREFIX);
    k.extend_from_slice(key);
    k
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.push(META_PREFIX);
    k.extend_from_slice(name.as_bytes());
    k
}

fn decode_i64(bytes: &[u8]) -> i64 {
    let arr: [u8; 8] = bytes
        .try_into()
        .expect("invariant: counters are stored as 8 bytes");
    i64::from_be_bytes(arr)
}

#[cfg(test)]
mod tests;
