//! Consensus wiring: turns a `NodeConfig` into openraft's `Config`, opens the
//! log store, starts the Raft instance and forms a new cluster.
//!
//! Layers: `log_store` keeps the Raft log (in `wal` segment files) and the
//! vote (in sled), `network` sends Raft RPCs to peers and stamps their
//! acknowledgements (`acks`), `inbound` admits or refuses peers' messages
//! before openraft sees them, `types` names openraft's generics. The state
//! machine lives in `crate::store`.
//!
//! Bootstrap: every node of a new cluster is started with the same
//! `--initial-cluster` and calls `initialize` with exactly that membership,
//! which openraft allows (identical configs agree). A node whose data dir
//! already holds Raft state is initialized and ignores `--initial-cluster`;
//! one that joins a running cluster never initializes (`crate::bootstrap`
//! decides which).
//!
//! Caveats: membership changes (adding or removing nodes) are not exposed.

mod acks;
mod inbound;
mod log_store;
mod network;
mod read_floor;
mod types;
mod wal;

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::error::InitializeError;
use openraft::{BasicNode, SnapshotPolicy};

pub use acks::Acks;
pub use inbound::{Inbound, MAX_INDEX, MAX_TERM};
pub use log_store::LogStore;
pub use network::{PeerClients, PeerNetwork, APPEND_BATCH_BYTES, SNAPSHOT_CHUNK_BYTES};
pub use read_floor::{own_read_index, ReadFloor};
pub use types::{typ, MemberAddr, NodeId, Raft, TypeConfig};

use crate::config::NodeConfig;
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::StateMachine;

/// The Raft log's directory inside the data dir.
pub const RAFT_LOG_DIR: &str = "raft-log";

/// openraft's configuration for `cfg`, with etcd's meaning of
/// `--election-timeout` `t`: a follower that stops hearing from its leader
/// campaigns after `t` to `1.5 t`; and a snapshot every `--snapshot-count`
/// entries.
///
/// openraft's follower waits `lease + e` before campaigning, where `lease` is
/// `election_timeout_max` (during which it also refuses to vote for anyone
/// else) and `e` is drawn once per node from `[min, max)`. With
/// `min = t/4, max = 3t/4` that is `[t, 1.5 t)`, and the lease has expired
/// on the other followers by then, so the first candidate can win.
pub fn raft_config(cfg: &NodeConfig) -> Result<openraft::Config> {
    let heartbeat = cfg.heartbeat_interval.as_millis() as u64;
    let election = cfg.election_timeout.as_millis() as u64;
    let config = openraft::Config {
        cluster_name: "raftkv".into(),
        heartbeat_interval: heartbeat,
        election_timeout_min: election / 4,
        election_timeout_max: election * 3 / 4,
        // A snapshot chunk is a few MiB; give it far more than a heartbeat.
        install_snapshot_timeout: (election * 4).max(2000),
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_count),
        // Keep some entries behind a snapshot so a follower that is only a
        // little behind catches up from the log, not a whole snapshot.
        max_in_snapshot_log_to_keep: cfg.snapshot_count / 2,
        ..Default::default()
    };
    config
        .validate()
        .map_err(|e| Error::Config(crate::config::ConfigError(e.to_string())))
}

/// Starts this node's Raft instance over `disk` and, if the node has no Raft
/// state yet and `form` says so, forms the cluster named by
/// `--initial-cluster` (otherwise it waits for a leader to send it the
/// log). Also returns the read floor for a leadership resumed at startup.
pub async fn start(
    cfg: &NodeConfig,
    form: bool,
    disk: &Disk,
    sm: StateMachine,
    peers: PeerClients,
    acks: Acks,
    metrics: Arc<Metrics>,
) -> Result<(Raft, ReadFloor)> {
    let config = Arc::new(raft_config(cfg)?);
    let log_store = LogStore::open(disk, &cfg.data_dir.join(RAFT_LOG_DIR), metrics.clone())?;
    let floor = ReadFloor::new(log_store.resumed_leadership(cfg.id)?);
    let network = PeerNetwork::new(peers, acks, metrics);
    let raft = Raft::new(cfg.id, config, network, log_store, sm)
        .await
        .map_err(|e| Error::RaftStart(e.to_string()))?;

    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| Error::RaftStart(e.to_string()))?;
    if initialized {
        tracing::info!("resuming from existing data dir; --initial-cluster is ignored");
    } else if !form {
        tracing::info!("joining a running cluster: waiting for the leader to send the log");
    } else {
        let members: BTreeMap<NodeId, BasicNode> = cfg
            .initial_cluster
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        tracing::info!(?members, "forming a new cluster");
        match raft.initialize(members).await {
            Ok(()) => {}
            // Another path got there first; the membership is the same.
            Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(Error::RaftStart(e.to_string())),
        }
    }
    Ok((raft, floor))
}
