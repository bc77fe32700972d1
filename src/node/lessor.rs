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
//! A member that becomes leader starts every lease at the time it had left
//! when last checkpointed, but never below the minimum TTL: that is what a
//! client needs to find the new leader and renew. So a lease whose holder
//! died expires within its TTL plus an election, and one kept alive through
//! a leader change does not expire.

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
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// Most leases in one checkpoint: the rest wait for the next ones.
const MAX_CHECKPOINT: usize = 1000;
/// A lease whose recorded time left is this close to the truth needs no
/// checkpoint.
const CHECKPOINT_SLACK_MS: i64 = 500;

/// Deadlines while this member leads.
#[derive(Default)]
struct Clock {
    /// The term the deadlines are for: this member led in it when it set
    /// them.
    term: Option<u64>,
    /// The store's lease set they were synced with.
    synced: Option<u64>,
    deadlines: HashMap<LeaseId, Instant>,
    /// Leases whose revocation was proposed and not yet answered.
    revoking: HashSet<LeaseId>,
}

/// The leader's lease clock. Cheap to share.
pub struct Lessor {
    /// The least time a lease gets on a new leader, in milliseconds.
    min_ttl_ms: i64,
    clock: Mutex<Clock>,
}

impl Lessor {
    /// A lessor whose leases get at least `min_ttl` seconds on a new leader.
    pub fn new(min_ttl: i64) -> Lessor {
        Lessor {
            min_ttl_ms: min_ttl.saturating_mul(1000),
            clock: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the deadlines in line with `store` for a member that leads in
    /// `term` (`None`: it does not lead, and keeps no deadlines). A new
    /// term starts every lease afresh at its recorded time left (at least
    /// the minimum TTL); within a term, new leases start at theirs.
    pub fn sync(&self, term: Option<u64>, store: &KvStore) {
        let mut clock = self.lock();
        let Some(term) = term else {
            *clock = Clock::default();
            return;
        };
        if clock.term != Some(term) {
            *clock = Clock {
                term: Some(term),
                ..Clock::default()
            };
        }
        let (version, leases) = store.lease_clocks();
        if clock.synced == Some(version) {
            return;
        }
        let now = Instant::now();
        let fresh = clock.deadlines.is_empty() && clock.synced.is_none();
        let mut deadlines = HashMap::with_capacity(leases.len());
        for (id, _ttl, remaining_ms) in leases {
            let deadline = clock.deadlines.get(&id).copied().unwrap_or_else(|| {
                let ms = if fresh {
                    remaining_ms.max(self.min_ttl_ms)
                } else {
                    remaining_ms
                };
                now + Duration::from_millis(ms.max(0) as u64)
            });
            deadlines.insert(id, deadline);
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

    /// The time left of the leases whose recorded time left is furthest
    /// from it, at most `MAX_CHECKPOINT` of them.
    fn checkpoints(&self, store: &KvStore) -> Vec<(LeaseId, i64)> {
        let clock = self.lock();
        let now = Instant::now();
        let (_, leases) = store.lease_clocks();
        let mut stale: Vec<(i64, LeaseId, i64)> = leases
            .into_iter()
            .filter_map(|(id, _ttl, recorded)| {
                let left = clock.deadlines.get(&id)?.saturating_duration_since(now);
                let left = i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
                let off = (left - recorded).abs();
                (off > CHECKPOINT_SLACK_MS).then_some((off, id, left))
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
        if term.is_none() {
            continue;
        }
        for id in node.lessor.expired() {
            let node = node.clone();
            tokio::spawn(async move {
                match node.write(Command::LeaseRevoke { id }).await {
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
            let remaining_ms = node.lessor.checkpoints(&node.store);
            if !remaining_ms.is_empty() {
                let cmd = Command::LeaseCheckpoint { remaining_ms };
                if let Err(e) = node.write(cmd).await {
                    tracing::debug!(error = %e, "checkpointing leases; will retry");
                }
            }
        }
    }
}
