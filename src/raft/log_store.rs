//! The Raft log, vote and commit point in sled: openraft's `RaftLogStorage`.
//!
//! Consensus data only; the key-value state lives in `store/`. Log entries are
//! keyed by their index in big-endian so sled's order is log order. A vote or
//! a batch of appended entries is synced to disk (`Disk::sync`: sled's flush
//! plus fsync) before openraft hears it is durable (one sync per batch, not
//! per entry).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};

use super::typ::{Entry, LogId, LogState, StorageError, Vote};
use super::TypeConfig;
use crate::codec;
use crate::disk::Disk;
use crate::metrics::Metrics;

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";

/// The log store. Clones share the same trees; a clone serves as openraft's
/// log reader for replication.
#[derive(Clone)]
pub struct LogStore {
    disk: Disk,
    log: sled::Tree,
    meta: sled::Tree,
    metrics: Arc<Metrics>,
}

impl LogStore {
    /// Opens (or creates) the log trees on `disk`.
    pub fn open(disk: &Disk, metrics: Arc<Metrics>) -> crate::Result<Self> {
        Ok(LogStore {
            disk: disk.clone(),
            log: disk.db().open_tree(LOG_TREE)?,
            meta: disk.db().open_tree(META_TREE)?,
            metrics,
        })
    }

    /// Makes everything written so far durable (see `Disk::sync`), timing
    /// it.
    async fn flush(&self) -> crate::Result<()> {
        let started = Instant::now();
        self.disk.sync().await?;
        self.metrics
            .wal_fsync
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> crate::Result<Option<T>> {
        match self.meta.get(key)? {
            Some(raw) => Ok(Some(codec::decode(&raw)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> crate::Result<()> {
        self.meta.insert(key, codec::encode(value)?)?;
        Ok(())
    }

    /// If the stored vote says this member, `me`, led when it stopped: that
    /// term and the index of its last log entry. openraft resumes such a
    /// member as leader of the same term, and until its log is committed
    /// again it does not know how far it had committed (see `ReadFloor`).
    pub fn resumed_leadership(&self, me: u64) -> crate::Result<Option<(u64, u64)>> {
        let Some(vote) = self.read_meta::<Vote>(VOTE_KEY)? else {
            return Ok(None);
        };
        if !vote.committed || vote.leader_id.node_id != me {
            return Ok(None);
        }
        let last = self.last_entry_id()?.or(self.last_purged()?);
        Ok(Some((vote.leader_id.term, last.map_or(0, |l| l.index))))
    }

    fn last_purged(&self) -> crate::Result<Option<LogId>> {
        self.read_meta(PURGED_KEY)
    }

    fn last_entry_id(&self) -> crate::Result<Option<LogId>> {
        match self.log.last()? {
            Some((_, raw)) => Ok(Some(codec::decode::<Entry>(&raw)?.log_id)),
            None => Ok(None),
        }
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> crate::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (&start, &end)
        {
            if s > e {
                return Ok(Vec::new());
            }
        }
        self.log
            .range((start, end))
            .map(|item| {
                let (_, raw) = item?;
                Ok(codec::decode(&raw)?)
            })
            .collect()
    }

    /// Removes entries with index `>= from` (`from = 0` removes all).
    fn remove_from(&self, from: u64) -> crate::Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(index_key(from)..).keys() {
            batch.remove(key?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    /// Removes entries with index `<= upto`.
    fn remove_upto(&self, upto: u64) -> crate::Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(..=index_key(upto)).keys() {
            batch.remove(key?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    fn append_entries(&self, entries: impl IntoIterator<Item = Entry>) -> crate::Result<()> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.log_id.index), codec::encode(&entry)?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_err(e: crate::Error) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: crate::Error) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(range).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last_purged_log_id = self.last_purged().map_err(read_err)?;
        // After a crash mid-purge, entries behind the purge point may remain.
        let last_log_id =
            std::cmp::max(self.last_entry_id().map_err(read_err)?, last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let res: crate::Result<()> = async {
            self.write_meta(VOTE_KEY, vote)?;
            self.flush().await
        }
        .await;
        res.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE_KEY)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: losing it only means re-applying from an older point.
        self.metrics
            .committed_index
            .set(committed.map_or(0, |c| c.index) as i64);
        self.write_meta(COMMITTED_KEY, &committed)
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId>>(COMMITTED_KEY)
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.append_entries(entries).map_err(write_err)?;
        // One flush for the whole batch; only then is it durable.
        let flushed = self.flush().await.map_err(std::io::Error::other);
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_from(log_id.index).map_err(write_err)?;
        self.flush().await.map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves extra
        // entries behind it, never a gap.
        self.write_meta(PURGED_KEY, &log_id).map_err(write_err)?;
        self.flush().await.map_err(write_err)?;
        self.remove_upto(log_id.index).map_err(write_err)?;
        Ok(())
    }
}
