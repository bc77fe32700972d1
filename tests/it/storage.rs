//! openraft's own storage conformance suite against our log store (segment
//! files, with the vote in sled) and state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use raftkv::disk::Disk;
use raftkv::metrics::Metrics;
use raftkv::raft::typ::StorageError;
use raftkv::raft::{LogStore, TypeConfig};
use raftkv::store::StateMachine;
use tempfile::TempDir;

struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = Disk::open(&dir.path().join("db")).expect("open sled");
        let metrics = Arc::new(Metrics::new());
        let log = LogStore::open(&disk, &dir.path().join("log"), metrics.clone())
            .expect("open log store");
        let sm = StateMachine::open(&disk, &dir.path().join("snapshot"), metrics)
            .expect("open state machine");
        Ok((dir, log, sm))
    }
}

/// Scenario: every case of `openraft::testing::Suite` (log state, vote,
/// append/truncate/purge, membership from log and state machine, snapshots)
/// on a fresh sled database each.
#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(SledStoreBuilder).expect("openraft storage suite");
}
