//! The read-index fix for a leadership resumed at startup: `ReadFloor`, and
//! `own_read_index`, the read index this member confirms as leader.
//!
//! openraft resumes a member whose stored vote is its own committed vote as
//! leader of the same term, without a new no-op entry, so its read index
//! (the larger of its commit index and its first entry of the term) can lie
//! behind writes it acknowledged before it stopped: it would serve reads from
//! before them. Any such write is in its log, so reads in that term wait for
//! the last entry it had at startup to be applied.

use super::typ::{CheckIsLeaderError, RaftError};
use super::Raft;
use crate::error::{Error, Result};

/// The least read index a member that resumed leadership at startup may
/// use while it still leads in that term (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadFloor {
    resumed: Option<(u64, u64)>,
}

impl ReadFloor {
    /// `resumed`: the term this member led at startup and its last log
    /// index then, if it did.
    pub fn new(resumed: Option<(u64, u64)>) -> Self {
        ReadFloor { resumed }
    }

    fn apply(&self, term: u64, index: u64) -> u64 {
        match self.resumed {
            Some((t, last)) if t == term => index.max(last),
            _ => index,
        }
    }
}

/// This member's read index if it leads: confirms leadership with a quorum,
/// then returns the index reads must wait for.
pub async fn own_read_index(raft: &Raft, floor: ReadFloor) -> Result<u64> {
    let term = raft.metrics().borrow().current_term;
    match raft.get_read_log_id().await {
        Ok((read_log_id, _applied)) => {
            let index = read_log_id.map_or(0, |id| id.index);
            // Terms only grow: the same term before and after means the
            // confirmation happened in it.
            if raft.metrics().borrow().current_term == term {
                Ok(floor.apply(term, index))
            } else {
                Ok(index)
            }
        }
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => Err(Error::NotLeader),
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => Err(Error::NotLeader),
        Err(RaftError::Fatal(_)) => Err(Error::Stopped),
    }
}
