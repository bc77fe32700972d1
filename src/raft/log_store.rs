//! The Raft log, vote and commit point: openraft's `RaftLogStorage`.
//!
//! Consensus data only; the key-value state lives in `store/`. Entries live
//! in our own segment files (`wal.rs`): an append is one write and one
//! `fdatasync`, done before openraft hears it is durable (one sync per batch,
//! not per entry). The vote, commit point and purge point are small and rare
//! and live in sled, synced through `Disk::sync`.
//!
//! A data dir whose log is still in sled (as older builds wrote it) is
//! migrated on open: the entries are copied to the segment files and
//! synced, a marker is recorded, then the old tree is dropped.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};

use super::typ::{Entry, LogId, LogState, StorageError, Vote};
use super::wal::Wal;
use super::TypeConfig;
use crate::codec;
use crate::disk::Disk;
use crate::metrics::Metrics;

/// Where the log lived before it moved to `wal.rs`; read only to migrate.
const OLD_LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";
/// Present once the log is in `wal.rs` files (see `migrate`).
const LOG_IN_WAL_KEY: &str = "log_in_wal";

/// The log store. Clones share the same log; a clone serves as openraft's
/// log reader for replication.
#[derive(Clone)]
pub struct LogStore {
    disk: Disk,
    wal: Arc<Wal>,
    meta: sled::Tree,
    metrics: Arc<Metrics>,
}

impl LogStore {
    /// Opens (or creates) the log in directory `dir` and its metadata on
    /// `disk`.
    pub fn open(disk: &Disk, dir: &Path, metrics: Arc<Metrics>) -> crate::Result<Self> {
        let meta = disk.db().open_tree(META_TREE)?;
        let purged: Option<LogId> = match meta.get(PURGED_KEY)? {
            Some(raw) => Some(codec::decode(&raw)?),
            None => None,
        };
        let wal = Wal::open(dir, purged.map(|p| p.index))?;
        migrate(disk, &meta, &wal, purged)?;
        Ok(LogStore {
            disk: disk.clone(),
            wal: Arc::new(wal),
            meta,
            metrics,
        })
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
        let Some(vote) = self.read_vote_checked()? else {
            return Ok(None);
        };
        if !vote.committed || vote.leader_id.node_id != me {
            return Ok(None);
        }
        let last = self.wal.last_log_id().or(self.last_purged()?);
        Ok(Some((vote.leader_id.term, last.map_or(0, |l| l.index))))
    }

    /// The stored vote, refused if its term is out of range (a data dir
    /// written while the peer port let such a term in): openraft would
    /// overflow it at the next election.
    fn read_vote_checked(&self) -> crate::Result<Option<Vote>> {
        let vote: Option<Vote> = self.read_meta(VOTE_KEY)?;
        if let Some(vote) = vote.filter(|v| v.leader_id.term >= super::MAX_TERM) {
            return Err(crate::Error::DataDir(format!(
                "the stored vote {vote} has a term out of range; rebuild this member \
                 on an empty data dir with --initial-cluster-state existing"
            )));
        }
        Ok(vote)
    }

    fn last_purged(&self) -> crate::Result<Option<LogId>> {
        self.read_meta(PURGED_KEY)
    }
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
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.wal.read(start, end).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last_purged_log_id = self.last_purged().map_err(read_err)?;
        // The log is empty up to a purge point past its end after a
        // snapshot was installed.
        let last_log_id = std::cmp::max(self.wal.last_log_id(), last_purged_log_id);
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
            self.disk.sync().await
        }
        .await;
        res.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_vote_checked()
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
        let committed = self
            .read_meta::<Option<LogId>>(COMMITTED_KEY)
            .map_err(read_err)?
            .flatten();
        // Opening may have cut a torn record the cluster had committed
        // (the disk lost a synced write): entries up to the log's end are
        // still committed ones, and the leader sends the rest again.
        let last = std::cmp::max(
            self.wal.last_log_id(),
            self.last_purged().map_err(read_err)?,
        );
        Ok(match (committed, last) {
            (Some(c), Some(l)) if c.index > l.index => {
                tracing::warn!(committed = %c, last = %l, "the raft log ends before its commit point; catching up from the leader");
                Some(l)
            }
            (Some(_), None) => None,
            (committed, _) => committed,
        })
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
        let file = self.wal.append(entries).map_err(write_err)?;
        // One sync for the whole batch; only then is it durable.
        let started = Instant::now();
        let synced = tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.metrics
            .wal_fsync
            .observe(started.elapsed().as_secs_f64());
        callback.log_io_completed(synced);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal.truncate(log_id.index).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves extra
        // entries behind it, never a gap.
        self.write_meta(PURGED_KEY, &log_id).map_err(write_err)?;
        self.disk.sync().await.map_err(write_err)?;
        self.wal.purge(log_id.index).map_err(write_err)?;
        tracing::info!(upto = log_id.index, "purged the Raft log behind a snapshot");
        Ok(())
    }
}

/// Moves the log of a data dir from before `wal.rs` out of sled, once. An
/// earlier attempt that stopped half way is started over: the marker is
/// written only after the copied entries are synced.
fn migrate(disk: &Disk, meta: &sled::Tree, wal: &Wal, purged: Option<LogId>) -> crate::Result<()> {
    if meta.contains_key(LOG_IN_WAL_KEY)? {
        return Ok(());
    }
    let old = disk.db().open_tree(OLD_LOG_TREE)?;
    if !old.is_empty() {
        wal.truncate(0)?;
        let mut entries = Vec::new();
        for item in old.iter() {
            let (_, raw) = item?;
            let entry: Entry = codec::decode(&raw)?;
            if purged.is_none_or(|p| entry.log_id.index > p.index) {
                entries.push(entry);
            }
        }
        tracing::info!(entries = entries.len(), "moving the raft log out of sled");
        wal.append(entries)?.sync_data()?;
    }
    meta.insert(LOG_IN_WAL_KEY, &[1u8][..])?;
    disk.sync_blocking()?;
    disk.db().drop_tree(OLD_LOG_TREE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// Scenario: a data dir whose stored vote has a term out of range (as
    /// the peer port once let in): reading it fails with a message that
    /// says how to rebuild the member, instead of an overflow later.
    #[tokio::test]
    async fn a_stored_vote_out_of_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("db")).unwrap();
        let mut store =
            LogStore::open(&disk, &dir.path().join("log"), Arc::new(Metrics::new())).unwrap();
        store.save_vote(&Vote::new(7, 1)).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(7, 1)));
        store.save_vote(&Vote::new(u64::MAX, 1)).await.unwrap();
        let err = store.read_vote().await.unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        assert!(store.resumed_leadership(1).is_err());
    }

    /// Scenario: a data dir from before the log left sled (entries 1-5 in
    /// the old tree, purged up to 2). Opening it moves entries 3-5 to the new
    /// log, drops the old tree, and opening again finds the same log.
    #[tokio::test]
    async fn a_log_kept_in_sled_moves_to_the_new_log_once() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("db")).unwrap();
        let old = disk.db().open_tree(OLD_LOG_TREE).unwrap();
        for i in 1..=5u64 {
            old.insert(i.to_be_bytes(), codec::encode(&entry(i)).unwrap())
                .unwrap();
        }
        let meta = disk.db().open_tree(META_TREE).unwrap();
        meta.insert(PURGED_KEY, codec::encode(&entry(2).log_id).unwrap())
            .unwrap();
        let log_dir = dir.path().join("log");
        for _ in 0..2 {
            let mut store = LogStore::open(&disk, &log_dir, Arc::new(Metrics::new())).unwrap();
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(entry(2).log_id));
            assert_eq!(state.last_log_id, Some(entry(5).log_id));
            let got: Vec<u64> = store
                .try_get_log_entries(0..10)
                .await
                .unwrap()
                .iter()
                .map(|e| e.log_id.index)
                .collect();
            assert_eq!(got, vec![3, 4, 5]);
            assert!(!disk
                .db()
                .tree_names()
                .iter()
                .any(|n| n.as_ref() == OLD_LOG_TREE.as_bytes()));
        }
    }
}
