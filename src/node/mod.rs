//! A running member, like etcd's `etcdserver`: the request path between the
//! gRPC services above and Raft and the store below. The composition root
//! (`bin/kvd.rs`) starts it; nothing below imports it.
//!
//! # Writes
//!
//! A service hands `Node::write` a checked `Command` (`writes.rs`). On the
//! leader it goes to the `Proposer` (`proposer.rs`), which commits
//! everything that queued while earlier entries were in flight as one Raft
//! entry (group commit, `batching.rs`): one fsync per member for hundreds of
//! writes under load, no wait with little load. On a follower it goes to
//! the `Forwarder` (`forwarder.rs`), which sends the writes it holds to the
//! leader many per call over the long-lived peer channel
//! (`to_leader.rs`); the leader checks them as the client API does and
//! proposes them through its own group commit. Either way the write is
//! answered with what applying it produced, once this member has applied it
//! too (its catch-up), so a serializable read or a watch sent here next
//! sees it. A write is retried, on a new leader, only when it certainly had
//! no effect (not proposed, or the leader could not be reached); one that
//! may have been applied is reported as a timeout, never sent twice.
//!
//! # Reads
//!
//! A linearizable read (`reads.rs`) needs a read index: the leader's commit
//! point, confirmed with a quorum after the read arrived (ReadIndex). Reads
//! that arrive while a round runs share the next one (`read_index.rs`); a
//! follower's round is one call to the leader. The read then waits for this
//! member to apply up to the index and reads its own state. A serializable
//! read skips the round. While there is no leader, both wait for one until
//! the request timeout.
//!
//! # Leases
//!
//! Granting and revoking are writes. Only the leader keeps leases' time
//! (`lessor.rs`): it renews them on keep-alives without a proposal, revokes
//! what expires through Raft, and checkpoints the time left so a new leader
//! carries on from it; a follower asks the leader (`leases.rs`).
//!
//! # The rest
//!
//! `member.rs` is the member and how it starts; `membership.rs` how the
//! leader adds, promotes, moves and removes members; `corruption.rs` the
//! leader's periodic comparison of members' data; `backup.rs` backups of
//! the state and data dirs restored from one; `bootstrap.rs` how a member
//! on an empty data dir joins or forms its cluster; `identity.rs` what the
//! data dir says it is; `status.rs` what it reports; `watchers.rs` which
//! watch streams a change concerns, so a write wakes only those.

mod auth;
mod backup;
mod batching;
mod bootstrap;
mod corruption;
mod forwarder;
mod identity;
mod leases;
mod lessor;
mod member;
mod membership;
mod proposer;
mod read_index;
mod reads;
mod recipes;
mod status;
mod to_leader;
mod watchers;
mod writes;

pub use backup::{restore, RestoreTarget};
pub use bootstrap::ClusterInfo;
pub use leases::LeaseStatus;
pub use member::{peer_message_limit, Node};
pub use membership::peer_addr_of;
pub use recipes::Leadership;
pub use status::{leader_of, MemberView, NodeStatus};
pub use to_leader::{
    ForwardRequest, ForwardResults, HashAt, LeaseAnswer, LeaseCall, MemberChange, PeerError,
    RemovedNotice,
};
pub use watchers::{Subscription, Wake, Watchers};
