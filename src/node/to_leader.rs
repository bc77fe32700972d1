//! Reaching the leader: a follower's calls to the leader's peer service
//! (forwarded writes, read-index requests, lease calls, membership changes,
//! hashes), the leader's own read index, the messages those calls carry,
//! and `PeerError`, the failures that travel back over them.
//!
//! A call that could not be sent at all (the connection was refused) is
//! `LeaderUnreachable`, safe to retry; one that was sent and then lost is
//! `LeaderLost` or `Timeout`, because the leader may have acted on it.

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::codec;
use crate::error::{Error, MemberRefusal, Result};
use crate::pb::peer::peer_client::PeerClient;
use crate::pb::peer::Payload;
use crate::raft::{NodeId, PeerClients, Raft, ReadFloor};
use crate::store::{Command, LeaseId, Response, Revision};
use crate::transport::is_connect_error;

/// Failures a peer reports back over `Forward` and `ReadIndex`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerError {
    NotLeader,
    NoLeader,
    Timeout,
    Stopped,
    /// The caller's own next hop could not be reached (nothing was sent).
    Unreachable(String),
    /// A call was lost in flight.
    Lost,
    /// The leader refused the write as malformed (its limits may differ
    /// from this member's); the message says why.
    Invalid(String),
    Other(String),
    /// The leader refused a membership change.
    Member(MemberRefusal),
}

impl From<&Error> for PeerError {
    fn from(e: &Error) -> Self {
        match e {
            Error::NotLeader => PeerError::NotLeader,
            Error::NoLeader => PeerError::NoLeader,
            Error::Timeout => PeerError::Timeout,
            Error::Stopped => PeerError::Stopped,
            Error::LeaderUnreachable(why) => PeerError::Unreachable(why.clone()),
            Error::LeaderLost => PeerError::Lost,
            Error::Member(r) => PeerError::Member(*r),
            Error::EmptyKey
            | Error::RequestTooLarge
            | Error::TooManyOps
            | Error::TxnTooDeep { .. }
            | Error::DuplicateKey
            | Error::NotAClientWrite(_)
            | Error::InvalidMember(_)
            | Error::NotAMember(_) => PeerError::Invalid(e.to_string()),
            other => PeerError::Other(other.to_string()),
        }
    }
}

impl From<PeerError> for Error {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::NotLeader => Error::NotLeader,
            PeerError::NoLeader => Error::NoLeader,
            PeerError::Timeout => Error::Timeout,
            PeerError::Unreachable(why) => Error::LeaderUnreachable(why),
            // The leader stopped or the call was lost mid-request: a write
            // may have been committed.
            PeerError::Stopped | PeerError::Lost => Error::LeaderLost,
            PeerError::Invalid(msg) => Error::RefusedByLeader(msg),
            PeerError::Other(msg) => Error::LeaderFailed(msg),
            PeerError::Member(r) => Error::Member(r),
        }
    }
}

/// A client for member `id`'s peer service, at its address in the Raft
/// membership.
fn peer_client(raft: &Raft, peers: &PeerClients, id: NodeId) -> Result<PeerClient<Channel>> {
    let addr = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    };
    let addr =
        addr.ok_or_else(|| Error::LeaderUnreachable(format!("node {id} is not a member")))?;
    peers
        .get(id, &addr)
        .map_err(|e| Error::LeaderUnreachable(e.to_string()))
}

fn peer_request(data: Vec<u8>, deadline: Instant) -> tonic::Request<Payload> {
    let mut request = tonic::Request::new(Payload { data });
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    request
}

/// Maps a failed call to the leader: retryable only if nothing was sent.
fn call_failure(status: &tonic::Status) -> Error {
    if is_connect_error(status) {
        return Error::LeaderUnreachable(status.message().to_string());
    }
    match status.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Error::Timeout,
        _ => Error::LeaderLost,
    }
}

/// What a follower sends the leader: writes its clients made, and who it
/// is (a follower may announce only itself as a member).
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardRequest {
    pub from: NodeId,
    pub cmds: Vec<Command>,
}

/// What the leader answers for each forwarded write, in order.
pub type ForwardResults = Vec<std::result::Result<Response, PeerError>>;

/// Hands `request`'s writes to the leader to propose in one call; returns
/// what applying each produced. An error fails the whole call (see
/// `call_failure`).
pub async fn send_writes(
    raft: &Raft,
    peers: &PeerClients,
    leader: NodeId,
    request: &ForwardRequest,
    deadline: Instant,
) -> Result<ForwardResults> {
    let mut client = peer_client(raft, peers, leader)?;
    let reply = client
        .forward(peer_request(codec::encode(request)?, deadline))
        .await
        .map_err(|s| call_failure(&s))?;
    Ok(codec::decode(&reply.into_inner().data)?)
}

/// A lease question only the leader can answer: it keeps leases' time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum LeaseCall {
    /// Renew the lease; the answer is its TTL (0 if it does not exist).
    KeepAlive(LeaseId),
    /// How long the lease has left, in milliseconds, and its TTL; `None`
    /// if it does not exist.
    TimeLeft(LeaseId),
}

/// The leader's answer to a `LeaseCall`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum LeaseAnswer {
    Renewed { ttl: i64 },
    TimeLeft(Option<(i64, i64)>),
}

/// Asks the leader a `LeaseCall`.
pub async fn ask_lease(
    raft: &Raft,
    peers: &PeerClients,
    leader: NodeId,
    call: LeaseCall,
    deadline: Instant,
) -> Result<LeaseAnswer> {
    let mut client = peer_client(raft, peers, leader)?;
    let reply = client
        .lease(peer_request(codec::encode(&call)?, deadline))
        .await
        .map_err(|s| call_failure(&s))?;
    let answer: std::result::Result<LeaseAnswer, PeerError> =
        codec::decode(&reply.into_inner().data)?;
    answer.map_err(Error::from)
}

/// One read-index round for member `me`: its own if it leads, else the
/// leader's, asked over the peer port.
pub async fn read_index_round(
    raft: &Raft,
    peers: &PeerClients,
    me: NodeId,
    floor: ReadFloor,
    deadline: Instant,
) -> std::result::Result<u64, PeerError> {
    let leader = raft
        .metrics()
        .borrow()
        .current_leader
        .ok_or(PeerError::NoLeader)?;
    let result = if leader == me {
        crate::raft::own_read_index(raft, floor).await
    } else {
        async {
            let mut client = peer_client(raft, peers, leader)?;
            let reply = client
                .read_index(peer_request(Vec::new(), deadline))
                .await
                .map_err(|s| call_failure(&s))?;
            let result: std::result::Result<u64, PeerError> =
                codec::decode(&reply.into_inner().data)?;
            result.map_err(Error::from)
        }
        .await
    };
    result.map_err(|e| PeerError::from(&e))
}

/// One membership change, as a client asked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// A new member at peer address `addr`, a learner or a voter.
    Add { addr: String, learner: bool },
    /// A learner becomes a voter.
    Promote(NodeId),
    /// A member leaves.
    Remove(NodeId),
    /// A member's peer address changes.
    Update { id: NodeId, addr: String },
}

/// A member's hash at a revision, and its compaction point (hashes of
/// members compacted differently are not compared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashAt {
    pub hash: u32,
    pub compacted: Revision,
}

/// Asks the leader to make a membership change; returns the id of the
/// member it concerns.
pub async fn ask_member_change(
    raft: &Raft,
    peers: &PeerClients,
    leader: NodeId,
    change: &MemberChange,
    deadline: Instant,
) -> Result<NodeId> {
    let mut client = peer_client(raft, peers, leader)?;
    let reply = client
        .members(peer_request(codec::encode(change)?, deadline))
        .await
        .map_err(|s| call_failure(&s))?;
    let answer: std::result::Result<NodeId, PeerError> = codec::decode(&reply.into_inner().data)?;
    answer.map_err(Error::from)
}

/// What the leader tells a member it removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemovedNotice {
    pub cluster_id: u64,
    /// The removed member.
    pub removed: NodeId,
    /// The leader that removed it.
    pub by: NodeId,
}

/// Tells member `id`, at `addr`, that it was removed (best effort: a
/// member that never hears it keeps campaigning in vain, refused by every
/// member, until it is stopped).
pub async fn tell_removed(
    peers: &PeerClients,
    id: NodeId,
    addr: &str,
    notice: &RemovedNotice,
) -> Result<()> {
    let mut client = peers
        .get(id, addr)
        .map_err(|e| Error::LeaderUnreachable(e.to_string()))?;
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    client
        .removed(peer_request(codec::encode(notice)?, deadline))
        .await
        .map_err(|s| call_failure(&s))?;
    Ok(())
}

/// Asks member `id` for its key-value hash at `revision`.
pub async fn ask_hash(
    raft: &Raft,
    peers: &PeerClients,
    id: NodeId,
    revision: Revision,
) -> Result<HashAt> {
    let mut client = peer_client(raft, peers, id)?;
    let deadline = Instant::now() + std::time::Duration::from_secs(3);
    let reply = client
        .hash_kv(peer_request(codec::encode(&revision)?, deadline))
        .await
        .map_err(|s| call_failure(&s))?;
    let answer: std::result::Result<HashAt, PeerError> = codec::decode(&reply.into_inner().data)?;
    answer.map_err(Error::from)
}
