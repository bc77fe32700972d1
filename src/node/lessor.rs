//! The leader's lease clock: when each lease expires, kept in memory.
//!
//! Leases live in the replicated state (their TTL, their keys, and how long
//! each had left at its last checkpoint); deadlines do not: only the leader
//! keeps time, as in etcd. It renews a lease on a keep-alive without a Raft
//! proposal, proposes `LeaseRevoke` once a deadline passes, and proposes
//! `LeaseCheckpoint`s at a bounded rate so that a new leader, or a cluster
//! restarted whole, carries on with the time each lease had left rather
//! than a fresh TTL (etcd's default resets them).
//!
//! Every member notes when it applied each checkpoint (`Lease::recorded_at`),
//! so the time left counts down from then on its own clock. A member that
//! becomes leader gives each lease the deadline its last checkpoint implies,
//! but never less than the minimum TTL from the start of its term: that is
//! what a client needs to find the new leader and renew. So a lease whose
//! holder died expires within its TTL plus an election, and one kept alive
//! through a leader change does not expire. A lease is checkpointed when
//! its deadline moved away from what its record implies (after a renewal),
//! and once a second otherwise, so that a cluster restarted whole, whose
//! members replay the records, adds at most about a second to a lease.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::status::leader_of;
use super::Node;
use crate::store::{Command, KvStore, LeaseId, Response};

/// How often the lessor looks for expired leases.
const TICK: Duration = Duration::from_millis(100);
/// How often the leader checkpoints leases' time left.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// Most leases in one checkpoint: the rest wait for the next ones.
const MAX_CHECKPOINT: usize = 1000;
/// A lease whose recorded deadline is this close to the leader's needs no
/// checkpoint...
const CHECKPOINT_SLACK: Duration = Duration::from_millis(250);
/// ...unless its record is older than this. Members count a record's time
/// left from when they applied it, and a cluster restarted whole applies
/// its log again: the time since the last record is what a restart adds
/// to a lease.
const RECORD_REFRESH: Duration = Duration::from_secs(1);

/// Deadlines while this member leads.
#[derive(Default)]
struct Clock {
    /// The term the deadlines are for: this member led in it when it set
    /// them.
    term: Option<u64>,
    /// When this member saw itself lead in that term.
    term_started: Option<Instant>,
    /// The store's lease set they were synced with.
    synced: Option<u64>,
    deadlines: HashMap<LeaseId, Instant>,
    /// Leases whose revocation was proposed and not yet answered.
    revoking: HashSet<LeaseId>,
}

/// The leader's lease clock. Cheap to share.
pub struct Lessor {
    /// The least time a lease gets on a new leader.
    min_ttl: Duration,
    clock: Mutex<Clock>,
}

impl Lessor {
    /// A lessor whose leases get at least `min_ttl` seconds on a new leader.
    pub fn new(min_ttl: i64) -> Lessor {
        Lessor {
            min_ttl: Duration::from_secs(min_ttl.max(0) as u64),
            clock: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the deadlines in line with `store` for a member that leads in
    /// `term` (`None`: it does not lead, and keeps no deadlines). A lease
    /// new to the clock gets the deadline its record implies, but no less
    /// than the minimum TTL from the start of the term.
    pub fn sync(&self, term: Option<u64>, store: &KvStore) {
        let mut clock = self.lock();
        let Some(term) = term else {
            *clock = Clock::default();
            return;
        };
        if clock.term != Some(term) {
            *clock = Clock {
                term: Some(term),
                term_started: Some(Instant::now()),
                ..Clock::default()
            };
        }
        let (version, leases) = store.lease_clocks();
        if clock.synced == Some(version) {
            return;
        }
        let floor = clock.term_started.unwrap_or_else(Instant::now) + self.min_ttl;
        let mut deadlines = HashMap::with_capacity(leases.len());
        for lease in leases {
            let deadline = clock
                .deadlines
                .get(&lease.id)
                .copied()
                .unwrap_or_else(|| Instant::from_std(lease.deadline).max(floor));
            deadlines.insert(lease.id, deadline);
        }
        clock.revoking.retain(|id| deadlines.contains_key(id));
        clock.deadlines = deadlines;
        clock.synced = Some(version);
    }

    /// Renews lease `id` for `ttl` seconds from now, if this member keeps
    /// its time; returns whether it did.
    pub fn renew(&self, id: LeaseId, ttl: i64) -> bool {
        let mut clock = self.lock();
        if clock.revoking.contains(&id) {
            return false;
        }
        match clock.deadlines.get_mut(&id) {
            Some(deadline) => {
                *deadline = Instant::now() + Duration::from_millis(ttl.max(0) as u64 * 1000);
                true
            }
            None => false,
        }
    }

    /// How long lease `id` has left, if this member keeps its time.
    pub fn time_left(&self, id: LeaseId) -> Option<Duration> {
        let clock = self.lock();
        clock
            .deadlines
            .get(&id)
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Leases whose deadline passed and whose revocation is not under way;
    /// they are marked as under way.
    fn expired(&self) -> Vec<LeaseId> {
        let mut clock = self.lock();
        let now = Instant::now();
        let due: Vec<LeaseId> = clock
            .deadlines
            .iter()
            .filter(|(id, d)| **d <= now && !clock.revoking.contains(id))
            .map(|(id, _)| *id)
            .collect();
        clock.revoking.extend(due.iter().copied());
        due
    }

    fn revoked(&self, id: LeaseId) {
        self.lock().revoking.remove(&id);
    }

    /// The time left of the leases whose record is furthest off the
    /// clock's deadline or oldest, at most `MAX_CHECKPOINT` of them: a
    /// lease needs a checkpoint when a renewal moved its deadline away from
    /// the record (by more than `CHECKPOINT_SLACK`), or when its record is
    /// older than `RECORD_REFRESH` and it has time left, `now`.
    fn checkpoints(&self, store: &KvStore, now: Instant) -> Vec<(LeaseId, i64)> {
        let clock = self.lock();
        let (_, leases) = store.lease_clocks();
        let mut stale: Vec<(Duration, LeaseId, i64)> = leases
            .into_iter()
            .filter_map(|lease| {
                let deadline = *clock.deadlines.get(&lease.id)?;
                let recorded = Instant::from_std(lease.deadline);
                let off = deadline
                    .saturating_duration_since(recorded)
                    .max(recorded.saturating_duration_since(deadline));
                let age = now.saturating_duration_since(Instant::from_std(lease.recorded_at));
                let left = deadline.saturating_duration_since(now);
                let due = off > CHECKPOINT_SLACK || (age > RECORD_REFRESH && !left.is_zero());
                let left = i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
                due.then_some((off.max(age), lease.id, left))
            })
            .collect();
        stale.sort_unstable_by(|a, b| b.cmp(a));
        stale
            .into_iter()
            .take(MAX_CHECKPOINT)
            .map(|(_, id, left)| (id, left))
            .collect()
    }
}

/// The term this member leads in, if it does.
fn leading_term(node: &Node) -> Option<u64> {
    let metrics = node.raft.metrics();
    let m = metrics.borrow();
    (leader_of(&m) == Some(node.id)).then_some(m.current_term)
}

/// Keeps the lease clock while this member leads: syncs it with the
/// state, revokes what expired, checkpoints at a bounded rate. Runs until
/// the node stops.
pub(super) async fn run(node: Arc<Node>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = Instant::now();
    loop {
        ticker.tick().await;
        if !node.is_running() {
            return;
        }
        let term = leading_term(&node);
        node.lessor.sync(term, &node.store);
        let Some(term) = term else { continue };
        for id in node.lessor.expired() {
            let node = node.clone();
            tokio::spawn(async move {
                // Fenced by the term: if this member no longer leads in it
                // by the time the entry is proposed, it changes nothing.
                match node.propose(Command::LeaseExpire { id, term }).await {
                    Ok(Response::LeaseRevoked { revision }) => {
                        tracing::info!(lease = %format!("{id:016x}"), revision, "lease expired")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "revoking an expired lease; will retry"),
                }
                node.lessor.revoked(id);
            });
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            last_checkpoint = Instant::now();
            let remaining_ms = node.lessor.checkpoints(&node.store, Instant::now());
            if !remaining_ms.is_empty() {
                let cmd = Command::LeaseCheckpoint { remaining_ms };
                if let Err(e) = node.propose(cmd).await {
                    tracing::debug!(error = %e, "checkpointing leases; will retry");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(leases: &[(LeaseId, i64)]) -> KvStore {
        let s = KvStore::default();
        {
            let mut b = s.batch();
            for (id, ttl) in leases {
                b.grant(*id, *ttl).expect("a new lease");
            }
        }
        s
    }

    fn left(lessor: &Lessor, id: LeaseId) -> Duration {
        lessor.time_left(id).expect("a deadline")
    }

    #[test]
    fn a_new_leader_carries_on_with_the_recorded_time_but_at_least_the_minimum() {
        let s = store_with(&[(1, 60), (2, 60)]);
        s.batch().checkpoint(1, 30_000);
        s.batch().checkpoint(2, 500);
        let lessor = Lessor::new(2);
        lessor.sync(Some(3), &s);
        let one = left(&lessor, 1);
        assert!(
            one <= Duration::from_secs(30) && one > Duration::from_secs(29),
            "{one:?}"
        );
        let two = left(&lessor, 2);
        assert!(
            two <= Duration::from_secs(2) && two > Duration::from_millis(1900),
            "{two:?}"
        );
        // Not leading forgets every deadline.
        lessor.sync(None, &s);
        assert_eq!(lessor.time_left(1), None);
    }

    #[test]
    fn the_recorded_time_counts_down_from_when_it_was_applied() {
        let s = store_with(&[(1, 60)]);
        s.batch().checkpoint(1, 10_000);
        std::thread::sleep(Duration::from_millis(300));
        let lessor = Lessor::new(1);
        lessor.sync(Some(1), &s);
        let one = left(&lessor, 1);
        assert!(
            one <= Duration::from_millis(9_700),
            "not a fresh 10 s: {one:?}"
        );
        // Nothing moved: nothing to checkpoint.
        assert!(lessor.checkpoints(&s, Instant::now()).is_empty());
    }

    #[test]
    fn a_renewal_is_checkpointed_and_then_nothing_is() {
        let s = store_with(&[(1, 60), (2, 60)]);
        s.batch().checkpoint(1, 5_000);
        let lessor = Lessor::new(1);
        lessor.sync(Some(1), &s);
        assert!(lessor.checkpoints(&s, Instant::now()).is_empty());
        assert!(lessor.renew(1, 60));
        let cps = lessor.checkpoints(&s, Instant::now());
        assert_eq!(cps.len(), 1, "{cps:?}");
        assert_eq!(cps[0].0, 1);
        assert!(cps[0].1 > 59_000, "{cps:?}");
        let mut b = s.batch();
        for (id, ms) in cps {
            b.checkpoint(id, ms);
        }
        drop(b);
        assert!(lessor.checkpoints(&s, Instant::now()).is_empty());
    }

    #[test]
    fn an_old_record_is_refreshed_while_the_lease_has_time_left() {
        let s = store_with(&[(1, 60), (2, 60)]);
        s.batch().checkpoint(2, 500);
        let lessor = Lessor::new(0);
        lessor.sync(Some(1), &s);
        let now = Instant::now();
        assert!(lessor.checkpoints(&s, now).is_empty());
        let later = now + RECORD_REFRESH + Duration::from_millis(500);
        let cps = lessor.checkpoints(&s, later);
        assert_eq!(cps.len(), 1, "lease 2 has no time left to record: {cps:?}");
        assert_eq!(cps[0].0, 1);
        assert!(
            (58_000..=58_500).contains(&cps[0].1),
            "the time left then: {cps:?}"
        );
    }

    #[test]
    fn expired_leases_are_handed_out_once() {
        let s = store_with(&[(1, 60)]);
        s.batch().checkpoint(1, 0);
        let lessor = Lessor::new(0);
        lessor.sync(Some(1), &s);
        assert_eq!(lessor.expired(), vec![1]);
        assert!(lessor.expired().is_empty(), "its revocation is under way");
        assert!(!lessor.renew(1, 60), "no renewal while it is revoked");
        lessor.revoked(1);
        assert!(lessor.renew(1, 60));
        assert!(lessor.expired().is_empty());
    }

    #[test]
    fn a_new_term_starts_afresh() {
        let s = store_with(&[(1, 60)]);
        let lessor = Lessor::new(1);
        lessor.sync(Some(1), &s);
        assert!(lessor.renew(1, 60));
        s.batch().checkpoint(1, 3_000);
        // Still leading in term 1: the renewal's deadline holds.
        lessor.sync(Some(1), &s);
        assert!(left(&lessor, 1) > Duration::from_secs(59));
        // Leading again in a later term: from the record.
        lessor.sync(Some(2), &s);
        assert!(left(&lessor, 1) <= Duration::from_secs(3));
    }
}
