//! What goes through Raft: `Command`s in, `Response`s out.
//!
//! Every change to the replicated state is one `Command` variant, proposed by
//! the leader and applied in log order on every member. Outcomes such as "the
//! key did not exist" or "that revision was compacted" are `Response` data,
//! never errors, so applying a command is deterministic.

use serde::{Deserialize, Serialize};

use super::auth::AuthCommand;
use super::kv::{KeyRange, KeyValue, Rejection};
use super::state::{LeaseId, MemberInfo, Revision};
use super::txn::{CompareTarget, Txn, TxnOp, TxnResult};

/// A change to the replicated state.
///
/// Variants are encoded by position: new ones go at the end, and a variant
/// whose layout changed keeps its old layout under another name (`...V1`),
/// so every log entry ever written still reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A put as written before leases: applied as a `Put` with lease 0.
    PutV1 {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        must_exist: bool,
        prev_kv: bool,
    },
    /// Delete `key`, or every key in `[key, range_end)` (see `kv::KeyRange`).
    DeleteRange {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        range_end: Vec<u8>,
        /// Return the deleted pairs.
        prev_kv: bool,
    },
    /// A transaction, applied atomically as one revision.
    Txn(Txn),
    /// Drop the history before `revision`.
    Compact { revision: Revision },
    /// Several commands in one Raft entry (group commit), applied in order,
    /// each as if it were an entry of its own. Only the leader's proposer
    /// makes one, never of batches; decoding bounds the nesting.
    Batch(#[serde(deserialize_with = "crate::codec::nested")] Vec<Command>),
    /// A member announces its name and client URLs, as etcd members publish
    /// their attributes. Does not change the key-value revision.
    PublishMember { id: u64, info: MemberInfo },
    /// Set `key` to `value`, creating it if absent. With `value: None` the
    /// key keeps its value (etcd's `ignore_value`) and must exist. `lease`
    /// attaches it to a lease (0: to none); `None` keeps its lease (etcd's
    /// `ignore_lease`; the key must exist).
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        lease: Option<LeaseId>,
        /// The key must already exist (etcd's `ignore_value`/`ignore_lease`).
        must_exist: bool,
        /// Return the previous key-value pair, if any.
        prev_kv: bool,
    },
    /// Grant lease `id` (chosen by the client or the leader) for `ttl`
    /// seconds. Does not change the key-value revision.
    LeaseGrant { id: LeaseId, ttl: i64 },
    /// Revoke lease `id`: every key attached to it is deleted, at one
    /// revision. The leader proposes this when a lease expires.
    LeaseRevoke { id: LeaseId },
    /// Record how long each of these leases has left (milliseconds), so a
    /// new leader carries on from there. Unknown leases are skipped.
    LeaseCheckpoint { remaining_ms: Vec<(LeaseId, i64)> },
    /// Lease `id` expired on the clock of the leader of `term`: revoke it
    /// as `LeaseRevoke` does, but only if this entry was proposed in
    /// `term`. A member that led in `term` and lost the lead may propose it
    /// late (or forward it) from a clock that no longer counts; then it
    /// changes nothing.
    LeaseExpire { id: LeaseId, term: u64 },
    /// Raise (`activate`) or clear an alarm of etcd's type `alarm` for
    /// `member`. While a NOSPACE alarm is raised, commands that add data
    /// (`adds_data`) are refused.
    Alarm {
        activate: bool,
        member: u64,
        alarm: i32,
    },
    /// A change to users, roles or whether auth is on (needs `root` when
    /// auth is on). Does not change the key-value revision.
    Auth(AuthCommand),
    /// A client's write on behalf of `user` (`None`: a caller without a
    /// token or certificate): applied as `cmd` only if the auth state of
    /// this point in the log allows it (`authorize`). Every write a client
    /// asks for comes wrapped so; the members' own bookkeeping does not.
    AsUser {
        user: Option<String>,
        #[serde(deserialize_with = "crate::codec::nested")]
        cmd: Box<Command>,
    },
}

/// etcd's alarm types (`etcdserverpb.AlarmType`).
pub const ALARM_NOSPACE: i32 = 1;
pub const ALARM_CORRUPT: i32 = 2;

impl Command {
    /// Whether a client asked for it (what a CORRUPT alarm stops): not
    /// the members' own bookkeeping, nor alarms (disarming must work).
    pub fn is_client_write(&self) -> bool {
        match self {
            Command::Put { .. }
            | Command::PutV1 { .. }
            | Command::DeleteRange { .. }
            | Command::Txn(_)
            | Command::Compact { .. }
            | Command::LeaseGrant { .. }
            | Command::LeaseRevoke { .. } => true,
            Command::Batch(cmds) => cmds.iter().any(Command::is_client_write),
            Command::AsUser { cmd, .. } => cmd.is_client_write(),
            // Auth changes must work to mend things.
            Command::Auth(_) => false,
            Command::LeaseCheckpoint { .. }
            | Command::LeaseExpire { .. }
            | Command::PublishMember { .. }
            | Command::Alarm { .. } => false,
        }
    }

    /// Whether it can add data to the store (etcd's quota cost): puts,
    /// transactions with a put in either branch, lease grants. What a
    /// NOSPACE alarm refuses; deletes, compaction and revokes free space.
    pub fn adds_data(&self) -> bool {
        match self {
            Command::Put { .. } | Command::PutV1 { .. } | Command::LeaseGrant { .. } => true,
            Command::Txn(txn) => txn_puts(txn),
            Command::Batch(cmds) => cmds.iter().any(Command::adds_data),
            Command::AsUser { cmd, .. } => cmd.adds_data(),
            _ => false,
        }
    }

    /// How many key and value bytes the command carries: what
    /// `--max-request-bytes` bounds, and what bounds batches.
    pub fn payload_size(&self) -> usize {
        match self {
            Command::Put { key, value, .. } | Command::PutV1 { key, value, .. } => {
                key.len() + value.as_ref().map_or(0, Vec::len)
            }
            Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => 16,
            Command::LeaseExpire { .. } => 16,
            Command::Alarm { .. } => 16,
            Command::LeaseCheckpoint { remaining_ms } => 16 * remaining_ms.len(),
            Command::DeleteRange { key, range_end, .. } => key.len() + range_end.len(),
            Command::Txn(txn) => txn_size(txn),
            Command::Compact { .. } => 8,
            Command::Batch(cmds) => cmds.iter().map(Command::payload_size).sum(),
            Command::PublishMember { info, .. } => {
                info.name.len() + info.client_urls.iter().map(String::len).sum::<usize>()
            }
            Command::Auth(a) => crate::codec::encoded_len(a),
            Command::AsUser { user, cmd } => {
                user.as_ref().map_or(0, String::len) + cmd.payload_size()
            }
        }
    }
}

fn txn_puts(txn: &Txn) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        TxnOp::Put { .. } | TxnOp::PutV1 { .. } => true,
        TxnOp::Txn(inner) => txn_puts(inner),
        TxnOp::Range(_) | TxnOp::DeleteRange { .. } => false,
    })
}

fn range_size(range: &KeyRange) -> usize {
    match range {
        KeyRange::Single(key) => key.len(),
        KeyRange::Span { start, end } => start.len() + end.as_ref().map_or(0, Vec::len),
    }
}

fn txn_size(txn: &Txn) -> usize {
    let compares: usize = txn
        .compare
        .iter()
        .map(|c| {
            range_size(&c.range)
                + match &c.target {
                    CompareTarget::Value(v) => v.len(),
                    _ => 8,
                }
        })
        .sum();
    let ops: usize = txn
        .success
        .iter()
        .chain(&txn.failure)
        .map(|op| match op {
            TxnOp::Range(q) => range_size(&q.range),
            TxnOp::Put { key, value, .. } | TxnOp::PutV1 { key, value, .. } => {
                key.len() + value.as_ref().map_or(0, Vec::len)
            }
            TxnOp::DeleteRange { range, .. } => range_size(range),
            TxnOp::Txn(inner) => txn_size(inner),
        })
        .sum();
    compares + ops
}

/// The result of applying one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A `Put` was applied at `revision`.
    Put {
        revision: Revision,
        prev_kv: Option<KeyValue>,
    },
    /// A `DeleteRange` removed `deleted` keys; `revision` is the new revision
    /// if it removed any, else the unchanged current one.
    DeleteRange {
        revision: Revision,
        deleted: i64,
        prev_kvs: Vec<KeyValue>,
    },
    /// A `Txn` ran; `revision` is the store revision after it.
    Txn {
        revision: Revision,
        result: TxnResult,
    },
    /// History before `compacted` is gone; `revision` is the current one.
    Compacted { revision: Revision },
    /// The command was valid but could not apply to the current state; it
    /// changed nothing.
    Rejected(Rejection),
    /// The responses to a `Batch`'s commands, in order.
    Batch(#[serde(deserialize_with = "crate::codec::nested")] Vec<Response>),
    /// An entry that does not touch keys (a member announcement, a Raft
    /// membership or blank entry); `revision` is the current revision.
    Applied { revision: Revision },
    /// Lease `id` was granted for `ttl` seconds; `revision` is the current
    /// one.
    LeaseGranted {
        id: LeaseId,
        ttl: i64,
        revision: Revision,
    },
    /// A lease was revoked and its keys deleted; `revision` is the one they
    /// were deleted at (or the current one if it had none).
    LeaseRevoked { revision: Revision },
}
