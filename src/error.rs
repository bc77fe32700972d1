//! The crate's error type. Every failure a client can see is a variant here;
//! `server::status` turns each into the gRPC code and message etcd uses.
//!
//! Business outcomes (a key that is absent, a delete that matched nothing) are
//! not errors: they are data in the store's responses.

use crate::codec::CodecError;
use crate::config::ConfigError;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the leader refused a membership change, in etcd's words.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error,
)]
pub enum MemberRefusal {
    #[error("etcdserver: member not found")]
    NotFound,
    #[error("etcdserver: given member URLs are invalid")]
    BadUrls,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    /// openraft changes the membership one change at a time.
    #[error("raftkv: another membership change is in progress; retry")]
    InProgress,
    #[error("raftkv: the cluster's last voter cannot be removed")]
    LastVoter,
}

/// Every way a raftkv operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request named no key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// The encoded request is over `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A lease id that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant of a lease id already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A lock contender's lease expired before it got the lock.
    #[error("mutex: session is expired")]
    SessionExpired,
    /// A proclamation by a leadership that no longer leads.
    #[error("election: not leader")]
    ElectionNotLeader,
    /// An election nobody leads.
    #[error("election: no leader")]
    ElectionNoLeader,
    /// A lease TTL over etcd's limit (9,000,000,000 s).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A read or compaction below the compacted revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A transaction with more operations than `--max-txn-ops`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// Transactions nested deeper than `max` levels.
    #[error("raftkv: transactions nested deeper than {max} levels")]
    TxnTooDeep { max: usize },
    /// A forwarded write that no client could have sent (`what` it was).
    #[error("raftkv: a {0} is not a client write")]
    NotAClientWrite(&'static str),
    /// A member announced attributes outside the limits.
    #[error("raftkv: invalid member announcement: {0}")]
    InvalidMember(&'static str),
    /// The leader refused a forwarded write as malformed; its message.
    #[error("{0}")]
    RefusedByLeader(String),
    /// A peer's certificate fails `--peer-cert-allowed-cn/-hostname`.
    #[error("raftkv: peer certificate refused: {0}")]
    PeerCertificate(String),
    /// A peer message that contradicts itself or Raft's rules.
    #[error("raftkv: refused peer message: {0}")]
    BadPeerMessage(String),
    /// A vote or another leader's message while this member's leader
    /// (`{0}`) is known to lead.
    #[error("raftkv: refused: member {0} leads and was heard from just now")]
    LeaderLeaseHeld(u64),
    /// A peer message claiming to come from a node outside the membership.
    #[error("raftkv: node {0} is not a member of this cluster")]
    NotAMember(u64),
    /// A write that adds data while the space quota is exceeded (a NOSPACE
    /// alarm is raised).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A client write while members' data differ (a CORRUPT alarm).
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// An alarm type etcd does not have.
    #[error("raftkv: unknown alarm type")]
    UnknownAlarm,
    /// A request raftkv cannot serve, and why.
    #[error("raftkv: {0}")]
    Unsupported(&'static str),
    /// A membership change the leader refused.
    #[error(transparent)]
    Member(MemberRefusal),
    /// This member was removed from its cluster.
    #[error("raftkv: this member ({0}) was removed from the cluster")]
    Removed(u64),
    /// A transaction that writes a key twice in one branch.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A read at a revision the store has not reached.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The cluster has no leader, and none appeared before the deadline.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// This node is not the leader (or stopped being it) and did not propose
    /// the request; it is safe to retry on the leader.
    #[error("etcdserver: leader changed")]
    NotLeader,
    /// The leader could not be reached at all; nothing was sent.
    #[error("etcdserver: leader unreachable: {0}")]
    LeaderUnreachable(String),
    /// The request was proposed (or a leader asked) but no answer came in time;
    /// a write may or may not have been applied.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The leader handling a forwarded write went away mid-request; the write
    /// may or may not have been applied.
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    LeaderLost,
    /// This node is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A part of etcd's API raftkv does not serve yet.
    #[error("raftkv: {0} is not implemented yet")]
    Unimplemented(&'static str),
    /// The node's configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The on-disk store failed.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// Stored or received bytes could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A backup (snapshot file) is damaged or not one raftkv reads.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// The data directory belongs to another node or is damaged.
    #[error("data dir: {0}")]
    DataDir(String),
    /// The member cannot go on (its Raft core stopped on a disk failure,
    /// an entry it cannot apply): the process ends with it.
    #[error("fatal: {0}")]
    Fatal(String),
    /// The Raft instance could not be started (or the cluster formed).
    #[error("starting raft: {0}")]
    RaftStart(String),
    /// Raft refused a proposal for a reason other than leadership.
    #[error("raft refused the proposal: {0}")]
    ProposalRefused(String),
    /// The leader answered a forwarded call with a failure of its own.
    #[error("the leader failed: {0}")]
    LeaderFailed(String),
    /// Applying a command produced a response of another kind: a bug.
    #[error("raftkv: unexpected response from the state machine: {0}")]
    UnexpectedResponse(String),
    /// An append that does not follow the log's last entry: a bug.
    #[error("raft log: appending entry {index} after entry {last} (truncate first)")]
    LogOutOfOrder { index: u64, last: u64 },
    /// A snapshot builder was asked for a second snapshot: a bug.
    #[error("a snapshot builder was used twice")]
    SnapshotBuilderReused,
    /// Authentication or authorization failed, or an auth change could not
    /// be made (etcd's messages).
    #[error(transparent)]
    Auth(#[from] crate::store::AuthError),
    /// An I/O failure outside the store (listeners, files).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether the request certainly had no effect, so it can be retried
    /// elsewhere without risking a duplicate write.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NotLeader | Error::LeaderUnreachable(_))
    }
}
