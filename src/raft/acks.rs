//! When each follower last acknowledged this leader: the clock behind the
//! leader's side of the disruptive-server rule (`inbound`).
//!
//! openraft's `millis_since_quorum_ack` metric is computed when metrics are
//! published, which an idle leader rarely does, so it goes stale. Here each
//! AppendEntries reply that accepts the leader's vote is stamped as it
//! arrives (`network`), and the quorum's time is read off the stamps on
//! demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::typ::{Membership, Vote};
use super::NodeId;

/// Per-follower acknowledgements of this member's leadership. Cheap to
/// clone; clones share the record.
#[derive(Clone, Default)]
pub struct Acks {
    seen: Arc<Mutex<HashMap<NodeId, (Vote, Instant)>>>,
}

impl Acks {
    /// `follower` accepted an AppendEntries sent with `vote`, just now.
    pub fn record(&self, follower: NodeId, vote: Vote) {
        self.lock().insert(follower, (vote, Instant::now()));
    }

    /// Whether every quorum of `membership`'s configurations acknowledged
    /// `me` leading with `vote` within `within`: a majority of each, counting
    /// `me`.
    pub fn quorum_within(
        &self,
        me: NodeId,
        vote: &Vote,
        membership: &Membership,
        within: Duration,
    ) -> bool {
        let seen = self.lock();
        let fresh = |id: &NodeId| {
            *id == me
                || seen
                    .get(id)
                    .is_some_and(|(v, at)| v == vote && at.elapsed() < within)
        };
        membership.get_joint_config().iter().all(|voters| {
            let acked = voters.iter().filter(|id| fresh(id)).count();
            acked * 2 > voters.len()
        })
    }

    /// Whether `follower` acknowledged this member leading with `vote`
    /// within `within`.
    pub fn acked_within(&self, follower: NodeId, vote: &Vote, within: Duration) -> bool {
        self.lock()
            .get(&follower)
            .is_some_and(|(v, at)| v == vote && at.elapsed() < within)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, (Vote, Instant)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn a_quorum_of_fresh_acks_for_this_vote() {
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], ());
        let vote = Vote::new_committed(4, 1);
        let acks = Acks::default();
        let ms = Duration::from_millis(500);
        assert!(!acks.quorum_within(1, &vote, &membership, ms));
        acks.record(2, Vote::new_committed(3, 1));
        assert!(
            !acks.quorum_within(1, &vote, &membership, ms),
            "an older term"
        );
        acks.record(3, vote);
        assert!(acks.quorum_within(1, &vote, &membership, ms));
        assert!(!acks.quorum_within(1, &vote, &membership, Duration::ZERO));
    }
}
