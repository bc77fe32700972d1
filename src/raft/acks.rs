//! When each follower last acknowledged this leader: the clock behind the
//! leader's side of the disruptive-server rule (`inbound`).
//!
//! openraft's `millis_since_quorum_ack` metric is computed when metrics are
//! published, which an idle leader rarely does, so it goes stale. Here each
//! AppendEntries reply that accepts the leader's vote is recorded (`network`)
//! and the quorum's time is read off the records on demand.
//!
//! A record bears the time its request was *sent*, not when the reply came:
//! a follower that accepted the request did so after it was sent, and votes
//! for no one else for an election timeout from then. A reply that comes
//! late (a leader paused, or a slow network) must not make an old word look
//! fresh: a leader paused past an election would otherwise believe, when it
//! resumes, that a quorum still follows it, and renew leases the new leader
//! keeps the time of.

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
    /// `follower` accepted an AppendEntries sent with `vote` at `sent`.
    /// Replies may come back out of order: a record only moves forward.
    pub fn record(&self, follower: NodeId, vote: Vote, sent: Instant) {
        let mut seen = self.lock();
        match seen.get_mut(&follower) {
            Some((v, at)) if *v == vote => *at = (*at).max(sent),
            _ => {
                seen.insert(follower, (vote, sent));
            }
        }
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
        acks.record(2, Vote::new_committed(3, 1), Instant::now());
        assert!(
            !acks.quorum_within(1, &vote, &membership, ms),
            "an older term"
        );
        acks.record(3, vote, Instant::now());
        assert!(acks.quorum_within(1, &vote, &membership, ms));
        assert!(!acks.quorum_within(1, &vote, &membership, Duration::ZERO));
    }

    #[test]
    fn an_ack_counts_from_when_its_request_was_sent() {
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], ());
        let vote = Vote::new_committed(4, 1);
        let acks = Acks::default();
        let ms = Duration::from_millis(500);
        let now = Instant::now();
        // A reply that took a second to come back (its leader was paused)
        // vouches for nothing now.
        acks.record(2, vote, now - Duration::from_secs(1));
        assert!(!acks.quorum_within(1, &vote, &membership, ms));
        assert!(!acks.acked_within(2, &vote, ms));
        // A later request's reply counts...
        acks.record(2, vote, now);
        assert!(acks.quorum_within(1, &vote, &membership, ms));
        // ...and an earlier one's, come back after it, does not undo it.
        acks.record(2, vote, now - Duration::from_secs(1));
        assert!(acks.acked_within(2, &vote, ms));
        // A new vote starts afresh.
        let next = Vote::new_committed(5, 1);
        acks.record(2, next, now - Duration::from_secs(1));
        assert!(!acks.acked_within(2, &next, ms));
    }
}
