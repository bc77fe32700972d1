//! The replicated state machine: `Command`s in, `Response`s out, applied in
//! log order, deterministically, on every member.
//!
//! From the bottom up: `state` is the replicated state in memory (the MVCC
//! history of every key, events, members; `Revision`, `MemberInfo`); `kv`
//! the types clients see (keys, ranges, results, `Rejection`, the `Reads`
//! contract); `history` reads over a state (current, at a past revision,
//! watch events); `batch` the writes; `txn` transactions; `command` the data
//! that goes through Raft; `apply` one command, deterministically and
//! infallibly; `kv_store` the shared handle readers and the adapter hold;
//! `validate` what makes a client write well-formed; `auth` users, roles
//! and permissions, `authorize` which caller may run what. `state_machine` is the
//! openraft adapter and the only part that can fail (disk): it persists the
//! state as snapshots (`snapshot_file`, one file replaced whole). The store
//! never calls the node or the server.

mod apply;
mod auth;
mod authorize;
mod batch;
mod command;
mod history;
mod kv;
mod kv_store;
mod snapshot_file;
mod state;
mod state_machine;
mod txn;
mod validate;

pub use auth::{
    valid_perm_range, AuthCommand, AuthError, AuthState, Need, PermKind, Permission, Role, User,
    ROOT,
};
pub use authorize::{check_command, check_lease_keys, check_read, check_txn as check_txn_auth};
pub use batch::{WriteBatch, Writer};
pub use command::{Command, Response, ALARM_CORRUPT, ALARM_NOSPACE};
pub use history::{Event, EventKind, KeyScan};
pub use kv::{KeyRange, KeyValue, RangeQuery, RangeResult, Rejection, SortOrder, SortTarget};
pub use kv_store::{fnv1a_of, KvStore};
pub use state::{
    Lease, LeaseClock, LeaseId, MemberInfo, Revision, State, Version, Versions, INITIAL_REVISION,
    VERSION_OVERHEAD,
};

/// The directory, in a data dir, that holds the latest snapshot.
pub const SNAPSHOT_DIR: &str = "snapshot";
pub use state_machine::{applied_of, seed_snapshot, SnapshotBuilder, StateMachine};
pub use txn::{
    apply as apply_txn, compare_one, is_read_only as txn_is_read_only, Compare, CompareResult,
    CompareTarget, OpResult, Txn, TxnOp, TxnResult,
};
pub use validate::{
    check_key, check_lease_grant, check_member_info, check_txn, check_write, Limits, MAX_TXN_DEPTH,
    TOKEN_KEY_BYTES,
};

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod tests;
