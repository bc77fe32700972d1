//! The replicated state, in memory: what every applied command changes and
//! every read reads. It is made durable as snapshots in sled, with the Raft
//! log holding everything after the last one (see `state_machine.rs`).
//!
//! - `current`: each live key's latest version (its revisions; the value
//!   lives in `history`, so it is kept once);
//! - `history`: every version of every key until compaction, by key then
//!   revision: the MVCC history for reads at past revisions;
//! - `events`: which key changed at each `revision.sub`, for watches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::MemberInfo;

/// etcd's cluster-wide revision: starts at 1, +1 per write that changes a key.
pub type Revision = i64;

/// The revision of a store nobody has written to.
pub const INITIAL_REVISION: Revision = 1;

/// A key's latest version, without its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
}

/// What happened to a key at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    Put {
        create_revision: Revision,
        version: i64,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete,
}

/// Everything the state machine holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub revision: Revision,
    /// History before this revision is gone; 0 if never compacted.
    pub compacted: Revision,
    pub current: BTreeMap<Vec<u8>, Current>,
    pub history: BTreeMap<Vec<u8>, BTreeMap<Revision, Version>>,
    pub events: BTreeMap<(Revision, u32), Vec<u8>>,
    pub members: BTreeMap<u64, MemberInfo>,
    /// Metadata owned by the caller (the Raft adapter's applied log id and
    /// membership), changed atomically with the rest.
    pub meta: BTreeMap<String, Vec<u8>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            revision: INITIAL_REVISION,
            compacted: 0,
            current: BTreeMap::new(),
            history: BTreeMap::new(),
            events: BTreeMap::new(),
            members: BTreeMap::new(),
            meta: BTreeMap::new(),
        }
    }
}

impl State {
    /// The value of `key`'s version at `rev`, if that was a put.
    pub fn value_at(&self, key: &[u8], rev: Revision) -> Option<&[u8]> {
        match self.history.get(key)?.get(&rev)? {
            Version::Put { value, .. } => Some(value),
            Version::Delete => None,
        }
    }
}
