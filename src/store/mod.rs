//! The replicated state machine: `Command`s in, `Response`s out, applied in
//! log order, deterministically, on every member.
//!
//! `kv` is the storage logic (keys, revisions, members; no Raft), `command`
//! the data that goes through Raft, `state_machine` the openraft adapter.
//! The store never calls Raft or the server.

mod command;
mod kv;
mod state_machine;

pub use command::{Command, MemberInfo, Rejection, Response};
pub use kv::{
    fnv1a_of, KeyRange, KeyValue, KvStore, RangeQuery, RangeResult, Revision, SortOrder, SortTarget,
};
pub use state_machine::{SnapshotBuilder, StateMachine};
