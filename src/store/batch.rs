//! Writes to the replicated state: a `WriteBatch` stages the changes of a
//! group of log entries on top of the stored tree and commits them in one
//! atomic sled batch; a `Writer` is one revision's worth of changes (a put,
//! a delete, a whole transaction) inside it.
//!
//! Every change of a key at revision `rev` updates its current version, adds
//! a version to the history and an event at `rev.sub` (see `layout.rs`), so
//! reads at past revisions and watches see exactly what was applied.

use std::collections::BTreeMap;

use super::command::{MemberInfo, Rejection};
use super::history::{read_at, read_current};
use super::kv::{
    KeyRange, KeyValue, KvStore, RangeQuery, RangeResult, TreeBounds, COMPACTED_META,
    KEY_COUNT_META, MEMBER_META, REVISION_META, VERSIONS_META,
};
use super::layout::{
    current_key, encode_i64, event_key, history_key, meta_key, parse_event_key, parse_history_key,
    Current, Revision, Version, EVENTS, HISTORY,
};
use crate::codec;
use crate::error::Result;

/// Changes staged on top of a `KvStore`. Reads through the batch see its own
/// earlier writes, so several commands can share one batch.
pub struct WriteBatch<'a> {
    store: &'a KvStore,
    /// Tree key to new value, `None` for a removal.
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    revision: Revision,
    compacted: Revision,
    keys: i64,
    versions: i64,
}

impl<'a> WriteBatch<'a> {
    pub(super) fn new(store: &'a KvStore) -> Result<Self> {
        Ok(WriteBatch {
            store,
            pending: BTreeMap::new(),
            revision: store.revision()?,
            compacted: store.compacted()?,
            keys: store.key_count()?,
            versions: store.version_count()?,
        })
    }

    /// The revision including this batch's changes so far.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Starts the changes of one new revision.
    pub fn write(&mut self) -> Writer<'_, 'a> {
        let rev = self.revision + 1;
        Writer {
            batch: self,
            rev,
            sub: 0,
        }
    }

    fn get_raw(&self, tree_key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(match self.pending.get(tree_key) {
            Some(v) => v.clone(),
            None => self.store.tree.get(tree_key)?.map(|v| v.to_vec()),
        })
    }

    /// Stored entries in `bounds` with this batch's changes applied.
    fn merged(&self, bounds: TreeBounds) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut found = BTreeMap::new();
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
        Ok(found)
    }

    /// Drops history below `revision`: reads before it fail from now on,
    /// and each key keeps the version current at `revision` (if it existed
    /// then). etcd's `Compact`; it does not change the revision.
    pub fn compact(&mut self, revision: Revision) -> Result<std::result::Result<(), Rejection>> {
        if revision <= self.compacted {
            return Ok(Err(Rejection::Compacted));
        }
        if revision > self.revision {
            return Ok(Err(Rejection::FutureRevision));
        }
        let history = self.merged((
            std::ops::Bound::Included(vec![HISTORY]),
            std::ops::Bound::Excluded(vec![HISTORY + 1]),
        ))?;
        // For each key, the versions at or before `revision`, oldest first:
        // all but the newest go (reads at `revision` need only that one), and
        // the newest too if it is a delete from before `revision` (a delete
        // at `revision` stays: a watch from there must see it).
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        let mut run: Vec<(Vec<u8>, Revision, bool)> = Vec::new();
        let mut run_key: Option<Vec<u8>> = None;
        let close = |run: &mut Vec<(Vec<u8>, Revision, bool)>, doomed: &mut Vec<Vec<u8>>| {
            if let Some((newest, rev, is_delete)) = run.pop() {
                doomed.extend(run.drain(..).map(|(k, _, _)| k));
                if is_delete && rev < revision {
                    doomed.push(newest);
                }
            }
        };
        for (tk, raw) in &history {
            let Some((key, rev)) = parse_history_key(tk) else {
                continue;
            };
            if run_key.as_ref() != Some(&key) {
                close(&mut run, &mut doomed);
                run_key = Some(key);
            }
            if rev <= revision {
                let is_delete = matches!(codec::decode::<Version>(raw)?, Version::Delete);
                run.push((tk.clone(), rev, is_delete));
            }
        }
        close(&mut run, &mut doomed);
        self.versions -= doomed.len() as i64;
        for tk in doomed {
            self.pending.insert(tk, None);
        }
        let events = self.merged((
            std::ops::Bound::Included(vec![EVENTS]),
            std::ops::Bound::Excluded(event_key(revision, 0)),
        ))?;
        for tk in events.into_keys() {
            if parse_event_key(&tk).is_some() {
                self.pending.insert(tk, None);
            }
        }
        self.compacted = revision;
        Ok(Ok(()))
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

    /// Applies the batch atomically: readers and a crash see all of it or
    /// none. Durable only once the database is flushed.
    pub fn commit(self) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(meta_key(REVISION_META), encode_i64(self.revision));
        batch.insert(meta_key(COMPACTED_META), encode_i64(self.compacted));
        batch.insert(meta_key(KEY_COUNT_META), encode_i64(self.keys));
        batch.insert(meta_key(VERSIONS_META), encode_i64(self.versions));
        for (k, v) in self.pending {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.store.tree.apply_batch(batch)?;
        Ok(())
    }
}

/// The changes of one revision: every key it changes gets that revision,
/// in order (`rev.sub`). Reads through it see its own earlier changes.
pub struct Writer<'b, 'a> {
    batch: &'b mut WriteBatch<'a>,
    rev: Revision,
    /// Changes made so far.
    sub: u32,
}

impl Writer<'_, '_> {
    /// One key's current version, including this revision's changes.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.batch.get_raw(&current_key(key))? {
            Some(raw) => Ok(Some(KeyValue::from_current(
                key.to_vec(),
                codec::decode(&raw)?,
            ))),
            None => Ok(None),
        }
    }

    /// A range of the current state including this revision's changes so
    /// far, or as of `q.revision` (which must precede this revision).
    pub fn range(&self, q: &RangeQuery) -> Result<std::result::Result<RangeResult, Rejection>> {
        let base = self.batch.revision;
        if q.revision > 0 && q.revision < base {
            let entries = match q.range.history_bounds(q.revision) {
                Some(b) => self.batch.merged(b)?,
                None => BTreeMap::new(),
            };
            return read_at(q, base, self.batch.compacted, entries.into_iter().map(Ok));
        }
        if q.revision > base {
            return Ok(Err(Rejection::FutureRevision));
        }
        let entries = match q.range.current_bounds() {
            Some(b) => self.batch.merged(b)?,
            None => BTreeMap::new(),
        };
        read_current(q, entries.into_iter().map(Ok)).map(Ok)
    }

    fn record(&mut self, key: &[u8], version: &Version) -> Result<()> {
        let b = &mut *self.batch;
        b.pending
            .insert(history_key(key, self.rev), Some(codec::encode(version)?));
        b.pending
            .insert(event_key(self.rev, self.sub), Some(key.to_vec()));
        b.versions += 1;
        self.sub += 1;
        Ok(())
    }

    /// Sets `key` to `value` (`None`: keep its value) and returns the
    /// previous pair. Changes nothing and returns a `Rejection` if
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
        let current = Current {
            create_revision: prev.as_ref().map_or(self.rev, |p| p.create_revision),
            mod_revision: self.rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
        };
        let version = Version::Put {
            create_revision: current.create_revision,
            version: current.version,
            value: current.value.clone(),
        };
        self.record(key, &version)?;
        self.batch
            .pending
            .insert(current_key(key), Some(codec::encode(&current)?));
        if prev.is_none() {
            self.batch.keys += 1;
        }
        Ok(Ok(prev))
    }

    /// Deletes every key in `range`; returns the deleted pairs in key order.
    pub fn delete_range(&mut self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        let Some(bounds) = range.current_bounds() else {
            return Ok(Vec::new());
        };
        let found = self.batch.merged(bounds)?;
        let mut deleted = Vec::with_capacity(found.len());
        for (tk, raw) in found {
            let key = tk[1..].to_vec();
            self.record(&key, &Version::Delete)?;
            self.batch.pending.insert(tk, None);
            self.batch.keys -= 1;
            deleted.push(KeyValue::from_current(key, codec::decode(&raw)?));
        }
        Ok(deleted)
    }

    /// Ends the revision: the store's revision moves to it if anything
    /// changed. Returns the store revision after.
    pub fn finish(self) -> Revision {
        if self.sub > 0 {
            self.batch.revision = self.rev;
        }
        self.batch.revision
    }
}
