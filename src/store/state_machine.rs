//! openraft's state-machine and snapshot interfaces over `KvStore`.
//!
//! The only store file that knows about openraft. Applies each group of
//! committed entries in one `WriteBatch` together with the last applied log
//! id. The state lives in memory and is made durable as snapshots, in a
//! file of their own (`snapshot_file.rs`): the Raft log (synced before
//! anything is acknowledged) holds every entry after the last snapshot, and
//! on restart the state machine starts from that snapshot while openraft
//! re-applies the entries after it. A snapshot is on disk, synced, before
//! openraft hears of it (and may purge the log behind it).
//!
//! A data dir that still keeps its snapshot in sled's `snapshot` tree (as
//! older builds wrote it) has it moved into the file when opened (synced
//! first, then the tree emptied).

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};

use super::apply;
use super::command::Response;
use super::kv_store::KvStore;
use super::snapshot_file::SnapshotFile;
use super::state::{Revision, State};
use crate::codec;
use crate::disk::Disk;
use crate::metrics::Metrics;
use crate::raft::typ::{
    Entry, LogId, Membership, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use crate::raft::TypeConfig;
use tokio::sync::watch;

/// Where snapshots were kept before they had their own file.
const SNAPSHOT_TREE: &str = "snapshot";
const SNAPSHOT_META_KEY: &str = "meta";
const SNAPSHOT_DATA_KEY: &str = "data";
const APPLIED_META: &str = "applied";
const MEMBERSHIP_META: &str = "membership";

/// The replicated state machine of one node.
pub struct StateMachine {
    kv: KvStore,
    snapshots: SnapshotFile,
    metrics: Arc<Metrics>,
    /// The applied store revision, for watchers.
    revision: watch::Sender<Revision>,
}

impl StateMachine {
    /// Opens the state machine whose snapshots live in `dir`: the state of
    /// its last snapshot, if any. A snapshot still in `disk`'s sled tree
    /// from an older data dir moves into `dir` first.
    pub fn open(disk: &Disk, dir: &Path, metrics: Arc<Metrics>) -> crate::Result<Self> {
        let snapshots = SnapshotFile::open(dir)?;
        let mut stored = snapshots.load()?;
        let tree = disk.db().open_tree(SNAPSHOT_TREE)?;
        if stored.is_none() {
            if let (Some(meta), Some(data)) =
                (tree.get(SNAPSHOT_META_KEY)?, tree.get(SNAPSHOT_DATA_KEY)?)
            {
                snapshots.save(&meta, &data)?;
                stored = Some((meta.to_vec(), data.to_vec()));
            }
        }
        if !tree.is_empty() {
            // The file holds this snapshot (or a newer one) now.
            tree.clear()?;
            disk.sync_blocking()?;
        }
        let state = match stored {
            Some((_, data)) => State::decode(&data)?,
            None => State::default(),
        };
        let (revision, _) = watch::channel(state.revision);
        Ok(StateMachine {
            kv: KvStore::new(state),
            snapshots,
            metrics,
            revision,
        })
    }

    /// A read handle on the applied state.
    pub fn store(&self) -> KvStore {
        self.kv.clone()
    }

    /// The applied store revision, updated after every applied batch.
    pub fn revisions(&self) -> watch::Receiver<Revision> {
        self.revision.subscribe()
    }

    fn publish_revision(&self) {
        self.revision.send_replace(self.kv.revision());
    }

    fn read_applied(&self) -> crate::Result<(Option<LogId>, StoredMembership)> {
        applied_at(|name| self.kv.meta(name))
    }

    fn apply_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> crate::Result<Vec<Response>> {
        let mut batch = self.kv.batch();
        let mut last_applied = None;
        let mut membership = None;
        let mut responses = Vec::new();
        for entry in entries {
            last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Applied {
                    revision: batch.revision(),
                },
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    Response::Applied {
                        revision: batch.revision(),
                    }
                }
                EntryPayload::Normal(cmd) => {
                    apply::apply_in_term(&mut batch, cmd, Some(entry.log_id.leader_id.term))
                }
            };
            responses.push(response);
        }
        if last_applied.is_some() {
            batch.set_meta(APPLIED_META, codec::encode(&last_applied)?);
        }
        if let Some(m) = membership {
            batch.set_meta(MEMBERSHIP_META, codec::encode(&m)?);
        }
        // Readers see the whole batch from here on.
        drop(batch);
        self.publish_revision();
        Ok(responses)
    }

    fn read_snapshot(&self) -> crate::Result<Option<Snapshot>> {
        let Some((meta, data)) = self.snapshots.load()? else {
            return Ok(None);
        };
        let meta: SnapshotMeta = codec::decode(&meta)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }

    async fn install(&mut self, meta: &SnapshotMeta, data: Vec<u8>) -> crate::Result<()> {
        let mut state = State::decode(&data)?;
        state
            .meta
            .insert(APPLIED_META.into(), codec::encode(&meta.last_log_id)?);
        state.meta.insert(
            MEMBERSHIP_META.into(),
            codec::encode(&meta.last_membership)?,
        );
        let data = state.encode()?;
        save_snapshot(&self.snapshots, meta, data).await?;
        self.kv.restore(state);
        self.publish_revision();
        self.metrics.snapshots_installed.inc();
        tracing::info!(snapshot = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }
}

/// The last log id applied to a state and the membership it holds, from
/// the metadata `meta` reads.
fn applied_at(
    meta: impl Fn(&str) -> Option<Vec<u8>>,
) -> crate::Result<(Option<LogId>, StoredMembership)> {
    let applied = match meta(APPLIED_META) {
        Some(raw) => codec::decode(&raw)?,
        None => None,
    };
    let membership = match meta(MEMBERSHIP_META) {
        Some(raw) => codec::decode(&raw)?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// The last log id applied to `state` (a captured copy) and the
/// membership it holds: where in the log a backup of it was taken.
pub fn applied_of(state: &State) -> crate::Result<(Option<LogId>, StoredMembership)> {
    applied_at(|name| state.meta.get(name).cloned())
}

/// Seeds the snapshot directory `dir` of a new data dir with `state` (a
/// restored backup) as the state at `log_id`, with `membership`. The
/// member starts from it as from any snapshot, its log empty after it.
pub fn seed_snapshot(
    dir: &Path,
    mut state: State,
    log_id: LogId,
    membership: Membership,
) -> crate::Result<()> {
    let membership = StoredMembership::new(Some(log_id), membership);
    state
        .meta
        .insert(APPLIED_META.into(), codec::encode(&Some(log_id))?);
    state
        .meta
        .insert(MEMBERSHIP_META.into(), codec::encode(&membership)?);
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: membership,
        snapshot_id: format!("restored-{}", log_id.index),
    };
    SnapshotFile::open(dir)?.save(&codec::encode(&meta)?, &state.encode()?)
}

/// Stores a snapshot durably (off the async threads) and hands its data
/// back. A stored snapshot that covers more of the log stays: a snapshot
/// built from an older state can finish after a newer one was installed.
async fn save_snapshot(
    file: &SnapshotFile,
    meta: &SnapshotMeta,
    data: Vec<u8>,
) -> crate::Result<Vec<u8>> {
    let last = meta.last_log_id;
    let meta = codec::encode(meta)?;
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        let newer = |stored: &[u8]| {
            codec::decode::<SnapshotMeta>(stored).is_ok_and(|s| s.last_log_id > last)
        };
        file.save_unless(&meta, &data, newer).map(|_| data)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn sm_error(e: crate::Error) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snapshot_error(e: crate::Error) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.read_applied()
            .map_err(|e| StorageIOError::read_state_machine(&e).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.apply_entries(entries).map_err(sm_error)
    }

    /// Encodes the state here, while no entry is being applied, so the
    /// snapshot is consistent; saving happens in the builder.
    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let captured = self
            .read_applied()
            .and_then(|(applied, membership)| Ok((applied, membership, self.kv.encode()?)));
        SnapshotBuilder {
            snapshots: self.snapshots.clone(),
            metrics: self.metrics.clone(),
            started: Instant::now(),
            captured: Some(captured),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.install(meta, snapshot.into_inner())
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.read_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

/// A consistent capture of the state: last applied log id, membership, and
/// the encoded state.
type Captured = (Option<LogId>, StoredMembership, Vec<u8>);

/// Turns a captured copy of the state into a stored snapshot.
pub struct SnapshotBuilder {
    snapshots: SnapshotFile,
    metrics: Arc<Metrics>,
    /// When the state was captured: the start of the build.
    started: Instant,
    captured: Option<crate::Result<Captured>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let captured = self
            .captured
            .take()
            .ok_or_else(|| snapshot_error(crate::Error::SnapshotBuilderReused))?;
        let (applied, membership, data) = captured.map_err(snapshot_error)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let snapshot_id = match &applied {
            Some(id) => format!("{}-{}-{nanos}", id.leader_id.term, id.index),
            None => format!("0-0-{nanos}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        // The snapshot must be on disk before openraft purges the log
        // behind it: this returns once it is synced.
        let data = save_snapshot(&self.snapshots, &meta, data)
            .await
            .map_err(snapshot_error)?;
        self.metrics
            .snapshot_save
            .observe(self.started.elapsed().as_secs_f64());
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Command;

    /// A state with one key, and snapshot metadata naming log index 7.
    fn a_snapshot() -> (SnapshotMeta, Vec<u8>) {
        let kv = KvStore::default();
        let mut batch = kv.batch();
        apply::apply(
            &mut batch,
            Command::Put {
                lease: Some(0),
                key: b"moved".to_vec(),
                value: Some(b"yes".to_vec()),
                must_exist: false,
                prev_kv: false,
            },
        );
        drop(batch);
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 7)),
            last_membership: StoredMembership::default(),
            snapshot_id: "1-7-0".into(),
        };
        (meta, kv.encode().unwrap())
    }

    #[test]
    fn a_snapshot_kept_in_sled_moves_to_its_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, data) = a_snapshot();
        {
            // As an older build left it.
            let disk = Disk::open(&dir.path().join("db")).unwrap();
            let tree = disk.db().open_tree(SNAPSHOT_TREE).unwrap();
            tree.insert(SNAPSHOT_META_KEY, codec::encode(&meta).unwrap())
                .unwrap();
            tree.insert(SNAPSHOT_DATA_KEY, data.clone()).unwrap();
            disk.sync_blocking().unwrap();
        }
        for _ in 0..2 {
            let disk = Disk::open(&dir.path().join("db")).unwrap();
            let metrics = Arc::new(Metrics::new());
            let sm = StateMachine::open(&disk, &dir.path().join("snap"), metrics).unwrap();
            assert_eq!(sm.store().get(b"moved").unwrap().value, b"yes");
            let current = sm.read_snapshot().unwrap().expect("a snapshot");
            assert_eq!(current.meta, meta);
            assert_eq!(current.snapshot.into_inner(), data);
            assert!(disk.db().open_tree(SNAPSHOT_TREE).unwrap().is_empty());
        }
        let (stored_meta, stored) = SnapshotFile::open(&dir.path().join("snap"))
            .unwrap()
            .load()
            .unwrap()
            .unwrap();
        assert_eq!(codec::decode::<SnapshotMeta>(&stored_meta).unwrap(), meta);
        assert_eq!(stored, data);
    }
}
