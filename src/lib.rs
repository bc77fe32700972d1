//! raftkv: a key-value store that keeps one consistent copy of its data on a
//! cluster with Raft, and speaks etcd's v3 gRPC API.
//!
//! # Architecture
//!
//! Data flows one way:
//!
//! 1. `server` receives etcd gRPC requests and validates them (the rules
//!    for a write are `store::check_write`'s, which the leader applies to
//!    forwarded writes too).
//! 2. `node` routes them: writes are proposed through Raft on the leader
//!    (a follower's `forwarder` sends them to the leader over the peer
//!    port, many per call; the leader's `proposer` commits many per entry);
//!    linearizable reads first pass a read barrier (ReadIndex).
//! 3. `raft` (openraft) replicates the `store::Command` to a majority's
//!    durable log (`raft::LogStore`: segment files, fsynced; the vote in
//!    sled through `disk`) and commits it. Peers' messages pass
//!    `raft::Inbound` before openraft sees them; `tls` secures the peer
//!    port.
//! 4. `store` applies committed commands in log order to the state machine
//!    (keys with etcd's revision data, in memory, made durable by the log
//!    and snapshots in sled) and returns a
//!    `store::Response`, which travels back up to the client.
//!
//! `bootstrap` decides how a member on an empty data dir starts (form a
//! cluster, or join a running one). `client` is a small etcd API client
//! with endpoint failover, used by `kvctl` (`cli`) and the tests. `metrics`
//! holds the Prometheus metrics that `server` exposes on `/metrics` next to
//! `/health`.
//!
//! # Not implemented yet
//!
//! - `Lease` (and so keys that expire): it answers `UNIMPLEMENTED`.
//! - Membership changes (`MemberAdd` and friends), `Snapshot`, `MoveLeader`.

pub mod cli;
pub mod client;
pub mod codec;
pub mod compactor;
pub mod config;
pub mod disk;
pub mod error;
pub mod metrics;
pub mod node;
pub mod pb;
pub mod raft;
pub mod server;
pub mod store;
pub mod tls;
pub mod transport;

pub use config::NodeConfig;
pub use error::{Error, Result};
