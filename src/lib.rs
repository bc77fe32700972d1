//! raftkv: a key-value store that keeps one consistent copy of its data on a
//! cluster with Raft, and speaks etcd's v3 gRPC API.
//!
//! # The map
//!
//! ```text
//! bin/kvd.rs, bin/kvctl.rs  composition roots: flags -> config -> logging -> node, its tasks
//! config        a leaf: NodeConfig (plain data, validate), NodeId, modes and their parsers
//! error         the crate's Error and Result; what each failure is, never a Status
//! codec         the one binary encoding (postcard), with bounded nesting
//! pb            generated protobuf code: etcd's API (pb::*) and ours (pb::peer)
//! transport     what every outbound connection shares (connect errors)
//! tls           peer TLS: certificates, server and client configs, name checks
//! metrics       the Prometheus metrics, under etcd's names
//! disk          the sled database (vote, purge point, identity) and its fsync
//! server/       the gRPC and HTTP front ends, one file per etcd service, thin;
//!               one client port for gRPC and HTTP (http.rs: health, probes,
//!               metrics, version; gateway.rs etcd's JSON API); authority.rs fixes etcdctl 3.4's HTTP/2
//!               :authority; peer.rs the peer service; status.rs the ONLY
//!               Error -> Status mapping
//! node/         a running member, like etcd's etcdserver: the write path
//!               (group commit, forwarding), the read path (ReadIndex),
//!               startup, identity, status (its mod.rs tells the paths in prose)
//! compactor     auto-compaction: proposes Compact through the node, as leader
//! raft/         consensus: openraft's config and start, the log (wal, log_store),
//!               the peer network, admission of peers' messages (inbound)
//! store/        the replicated state machine, in memory and infallible; validate.rs
//!               what makes a write well-formed; state_machine.rs the openraft adapter
//! backup/       etcd's snapshot format (bbolt, etcd's buckets, the SHA-256 trailer)
//!               to and from the store's state; pure
//! client        kvctl's etcd client with endpoint failover
//! cli/          kvctl: arguments, one file per command family, printers,
//!               the interactive shell
//! ```
//!
//! Arrows point down: `server` -> `node` -> `raft` -> `store`, each also using
//! the leaves (`config`, `error`, `codec`, `pb`, `metrics`, `disk`, `tls`,
//! `transport`). The one file that looks back, `store/state_machine.rs`,
//! names openraft's types through `raft/types.rs` (a leaf of `raft`). No
//! module imports a module that imports it back; `cli` uses only `client`
//! and `pb`.
//!
//! # A Put, and a linearizable Range
//!
//! 1. `server::kv` checks the request (`store::check_write`, the rules a
//!    follower's forwarded writes get too) and turns it into a
//!    `store::Command`.
//! 2. `node` commits it (`node/writes.rs`): on the leader through group
//!    commit, on a follower by forwarding it to the leader over the peer
//!    port. A Range instead waits for a read index confirmed by a quorum and
//!    for this member to apply up to it (`node/reads.rs`).
//! 3. `raft` (openraft) appends the command to a majority's durable log
//!    (`raft/log_store.rs` over segment files, fsynced) and commits it.
//! 4. `store::StateMachine` applies committed commands in log order
//!    (`store/apply.rs`) and returns a `store::Response`, which travels
//!    back up; the Range reads the applied state (`store::KvStore`).
//!
//! # Not implemented yet
//!
//! - `MoveLeader` (openraft 0.9 has no leadership transfer).
//! - The JSON gateway's auth routes (they come with authentication).
//! - TLS and authentication on the client port.

pub mod backup;
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
