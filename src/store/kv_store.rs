//! `KvStore`, the shared handle on the in-memory state: every read of the
//! current state and the history, members and metadata, snapshots, and the
//! write batches that apply commands. Readers take the state's read lock
//! only for the read itself; a batch of applied entries takes the write
//! lock, so a reader sees a batch entirely or not at all. Nothing here can
//! fail but encoding a snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use super::auth::AuthState;
use super::batch::WriteBatch;
use super::history::{
    changed_keys, events, get_current, read, version_before, Event, EventKind, KeyScan,
};
use super::kv::{KeyRange, KeyValue, RangeQuery, RangeResult, Rejection};
use super::state::{Lease, LeaseClock, LeaseId, MemberInfo, Revision, State};
use super::txn::{read_only, Txn, TxnResult};

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

    /// The state under its read lock (store-internal: tests look inside).
    pub(super) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .expect("invariant: state lock is never poisoned")
    }

    /// The current store revision.
    pub fn revision(&self) -> Revision {
        self.read().revision
    }

    /// The revision history was compacted at; 0 if never.
    pub fn compacted(&self) -> Revision {
        self.read().compacted
    }

    /// How many keys the store holds.
    pub fn key_count(&self) -> i64 {
        self.read().live as i64
    }

    /// How many key versions the history holds (bounded by compaction).
    pub fn version_count(&self) -> i64 {
        self.read().versions as i64
    }

    /// One key's current version, if present.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        get_current(&self.read(), key)
    }

    /// Reads a range with etcd's semantics for limit, count, sorting and
    /// filters: of the current state, or as of `q.revision` (see
    /// `history::read_at`).
    pub fn range(&self, q: &RangeQuery) -> Result<RangeResult, Rejection> {
        read(&self.read(), q)
    }

    /// A hash over every key with its value and revisions as of `revision`
    /// (0: now), not members or metadata: equal on members whose key-value
    /// state was equal then.
    pub fn hash(&self, revision: Revision) -> Result<u32, Rejection> {
        let all = RangeQuery {
            revision,
            ..RangeQuery::new(KeyRange::new(&[0], &[0]))
        };
        let kvs = self.range(&all)?.kvs;
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
        Ok((hash >> 32) as u32 ^ hash as u32)
    }

    /// Test-only (kvd's hidden `--test-corrupt-key`): changes `key`'s
    /// current value in this member's state alone, as a disk or memory
    /// fault would, so the corruption check has something to find.
    pub fn corrupt_for_tests(&self, key: &[u8]) {
        let mut st = self
            .state
            .write()
            .expect("invariant: state lock is never poisoned");
        if let Some(versions) = st.history.get_mut(key) {
            versions.corrupt_last_value();
        }
    }

    /// Every lease, with its keys.
    pub fn leases(&self) -> BTreeMap<LeaseId, Lease> {
        self.read().leases.clone()
    }

    /// The size of the history the store holds, in bytes: every version's
    /// key and value plus a fixed overhead each. What the space quota
    /// counts, and what `Status.dbSize` reports.
    pub fn size_bytes(&self) -> u64 {
        self.read().bytes
    }

    /// Runs `f` on the auth state and the leases (whose keys some
    /// permission checks need), under the read lock.
    pub fn with_auth<R>(&self, f: impl FnOnce(&AuthState, &BTreeMap<LeaseId, Lease>) -> R) -> R {
        let st = self.read();
        f(&st.auth, &st.leases)
    }

    /// The raised alarms: (member id, etcd's alarm type).
    pub fn alarms(&self) -> Vec<(u64, i32)> {
        self.read().alarms.iter().copied().collect()
    }

    /// Every lease's record on this member's clock, and the version of the
    /// lease set (which changes with every grant and revoke).
    pub fn lease_clocks(&self) -> (u64, Vec<LeaseClock>) {
        let st = self.read();
        let now = std::time::Instant::now();
        let leases = st
            .leases
            .iter()
            .map(|(id, l)| {
                let left = std::time::Duration::from_millis(l.remaining_ms.max(0) as u64);
                let recorded_at = l.recorded_at.unwrap_or(now);
                LeaseClock {
                    id: *id,
                    recorded_at,
                    deadline: recorded_at + left,
                }
            })
            .collect();
        (st.lease_version, leases)
    }

    /// One lease, with its keys, if it exists.
    pub fn lease(&self, id: LeaseId) -> Option<Lease> {
        self.read().leases.get(&id).cloned()
    }

    /// Every member's published attributes.
    pub fn members(&self) -> BTreeMap<u64, MemberInfo> {
        self.read().members.clone()
    }

    /// A metadata entry written with `WriteBatch::set_meta`.
    pub fn meta(&self, name: &str) -> Option<Vec<u8>> {
        self.read().meta.get(name).cloned()
    }

    /// Starts a group of changes, holding the write lock until the batch is
    /// dropped: readers see the whole group or none of it.
    pub fn batch(&self) -> WriteBatch<'_> {
        WriteBatch::new(
            self.state
                .write()
                .expect("invariant: state lock is never poisoned"),
        )
    }

    /// Runs a transaction that only reads against the applied state, under
    /// the read lock; returns the revision it read at. `None` if `txn`
    /// writes (those go through Raft).
    pub fn read_txn(&self, txn: &Txn) -> Option<(Revision, Result<TxnResult, Rejection>)> {
        let st = self.read();
        read_only(&st, txn).map(|result| (st.revision, result))
    }

    /// The changes at revisions `from..=until` that `wanted` picks (by key
    /// and kind), in revision order, and the newest revision read: whole
    /// revisions, until about `max_bytes` of keys and values are read. Only
    /// the changes picked are copied.
    pub fn events(
        &self,
        from: Revision,
        until: Revision,
        max_bytes: usize,
        wanted: impl Fn(&[u8], EventKind) -> bool,
    ) -> (Vec<Event>, Option<Revision>) {
        events(&self.read(), from, until, max_bytes, wanted)
    }

    /// Calls `f`, under the read lock, with the revision and key of every
    /// change at revisions `>= from`: whole revisions, until about
    /// `max_changes` were seen. Says how far it read, and whether changes
    /// from `from` on were compacted away unseen.
    pub fn changed_keys(
        &self,
        from: Revision,
        max_changes: usize,
        f: impl FnMut(Revision, &[u8]),
    ) -> KeyScan {
        changed_keys(&self.read(), from, max_changes, f)
    }

    /// `key` as it was just before `revision`, if it existed then and that
    /// version has not been compacted away.
    pub fn version_before(&self, key: &[u8], revision: Revision) -> Option<KeyValue> {
        version_before(&self.read(), key, revision)
    }

    /// The whole state, encoded for a snapshot. Encoded under the read
    /// lock rather than copied first: encoding is quicker than a deep copy
    /// and needs only the encoded bytes beside the state, not a second
    /// state.
    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        Ok(self.read().encode()?)
    }

    /// Replaces the whole state, from a snapshot.
    pub fn restore(&self, mut state: State) {
        let mut st = self
            .state
            .write()
            .expect("invariant: state lock is never poisoned");
        // Whatever the leases were, a lease clock looks again.
        state.lease_version = st.lease_version.wrapping_add(1);
        *st = state;
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
