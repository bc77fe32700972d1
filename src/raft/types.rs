//! openraft's type configuration for raftkv, and short aliases for the
//! generic openraft types. This is the only file that spells out openraft's
//! type parameters; everything else uses these names.

use std::io::Cursor;

use crate::store::{Command, Response};

pub use crate::config::NodeId;

/// A member's address as Raft knows it: its advertised peer address
/// (openraft's `Node`).
pub type MemberAddr = openraft::BasicNode;

openraft::declare_raft_types!(
    /// raftkv's openraft type configuration: client commands in, store
    /// responses out, snapshots as in-memory buffers.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = MemberAddr,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A running Raft instance.
pub type Raft = openraft::Raft<TypeConfig>;

/// Aliases for openraft's generic types, instantiated for raftkv.
pub mod typ {
    use super::{MemberAddr, NodeId, TypeConfig};

    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type LogState = openraft::LogState<TypeConfig>;
    pub type Membership = openraft::Membership<NodeId, MemberAddr>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, MemberAddr>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberAddr>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, MemberAddr>;

    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, MemberAddr, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, MemberAddr>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, MemberAddr>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;

    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
}
