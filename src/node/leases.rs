//! A member's lease operations: granting and revoking go through Raft like
//! any write; keeping a lease alive and asking its time left are the
//! leader's (`lessor.rs`), so a follower asks the leader over the peer port.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use tokio::time::Instant;

use super::to_leader::{self, LeaseAnswer, LeaseCall};
use super::Node;
use crate::error::{Error, Result};
use crate::store::{check_lease_grant, Command, LeaseId, Rejection, Response, Revision};

/// How many ids the member picks for a grant before it gives up (a clash
/// of random 63-bit ids is all but impossible).
const ID_TRIES: usize = 3;

/// A lease as `LeaseTimeToLive` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Seconds left, truncated.
    pub remaining: i64,
    /// The TTL it was granted.
    pub granted: i64,
    /// The keys attached to it.
    pub keys: Vec<Vec<u8>>,
}

/// A random positive lease id, different for every call.
fn pick_id(me: u64) -> LeaseId {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(me);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let id = (h.finish() >> 1) as i64;
    id.max(1)
}

/// The least TTL a lease is granted, in seconds: etcd's, one and a half
/// election timeouts rounded up, so a lease outlives an election.
pub(super) fn min_lease_ttl(election_timeout: std::time::Duration) -> i64 {
    let ms = election_timeout.as_millis() * 3 / 2;
    i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX).max(1)
}

impl Node {
    /// The least TTL a lease is granted, in seconds (`min_lease_ttl`).
    pub fn min_lease_ttl(&self) -> i64 {
        min_lease_ttl(self.election_timeout)
    }

    /// Grants a lease for `ttl` seconds (raised to the minimum) with `id`,
    /// or an id this member picks if `id` is 0, on behalf of `who`.
    /// Returns the id, the TTL and the revision.
    pub async fn grant_lease(
        &self,
        who: Option<&str>,
        id: LeaseId,
        ttl: i64,
    ) -> Result<(LeaseId, i64, Revision)> {
        let ttl = ttl.max(self.min_lease_ttl());
        for _ in 0..ID_TRIES {
            let chosen = if id == 0 { pick_id(self.id) } else { id };
            check_lease_grant(chosen, ttl)?;
            match self
                .write_as(who, Command::LeaseGrant { id: chosen, ttl })
                .await?
            {
                Response::LeaseGranted { id, ttl, revision } => return Ok((id, ttl, revision)),
                Response::Rejected(Rejection::LeaseExists) if id == 0 => continue,
                Response::Rejected(r) => return Err(r.into()),
                other => return Err(Error::UnexpectedResponse(format!("{other:?}"))),
            }
        }
        Err(Error::LeaseExists)
    }

    /// Revokes lease `id` on behalf of `who`, deleting its keys; the
    /// revision after.
    pub async fn revoke_lease(&self, who: Option<&str>, id: LeaseId) -> Result<Revision> {
        match self.write_as(who, Command::LeaseRevoke { id }).await? {
            Response::LeaseRevoked { revision } => Ok(revision),
            Response::Rejected(r) => Err(r.into()),
            other => Err(Error::UnexpectedResponse(format!("{other:?}"))),
        }
    }

    /// Renews lease `id` (on the leader, wherever it is asked); its TTL, or
    /// 0 if it does not exist.
    pub async fn keep_lease_alive(&self, id: LeaseId) -> Result<i64> {
        match self.ask_leader(LeaseCall::KeepAlive(id)).await? {
            LeaseAnswer::Renewed { ttl } => Ok(ttl),
            other => Err(Error::UnexpectedResponse(format!("{other:?}"))),
        }
    }

    /// Lease `id`'s time left (asked of the leader), TTL and keys; `None`
    /// if it does not exist.
    pub async fn lease_status(&self, id: LeaseId) -> Result<Option<LeaseStatus>> {
        let LeaseAnswer::TimeLeft(answer) = self.ask_leader(LeaseCall::TimeLeft(id)).await? else {
            return Err(Error::UnexpectedResponse("not a time left".into()));
        };
        let Some((left_ms, granted)) = answer else {
            return Ok(None);
        };
        // The keys as this member has applied them.
        let keys = self
            .store
            .lease(id)
            .map(|l| l.keys.into_iter().collect())
            .unwrap_or_default();
        Ok(Some(LeaseStatus {
            remaining: left_ms / 1000,
            granted,
            keys,
        }))
    }

    /// Every lease's id.
    pub fn lease_ids(&self) -> Vec<LeaseId> {
        self.store.leases().into_keys().collect()
    }

    /// Asks the leader `call`: this member if it leads, else over the peer
    /// port. Waits for a leader until the request timeout. A call lost with
    /// its leader is asked again of the next: renewing a lease or asking
    /// its time twice does no harm.
    async fn ask_leader(&self, call: LeaseCall) -> Result<LeaseAnswer> {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let answer = if leader == self.id {
                self.answer_lease_call(call).await
            } else {
                to_leader::ask_lease(&self.raft, &self.peers, leader, call, deadline).await
            };
            match answer {
                Err(Error::NotLeader | Error::LeaderUnreachable(_) | Error::LeaderLost)
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(super::writes::RETRY_BACKOFF).await
                }
                other => return other,
            }
        }
    }

    /// Answers `call` as the leader (for itself, or a follower over the
    /// peer port). A lease this member has not applied yet is looked for
    /// again after a read barrier: it may have been granted just now.
    pub async fn answer_lease_call(&self, call: LeaseCall) -> Result<LeaseAnswer> {
        if !self.is_leader() {
            return Err(Error::NotLeader);
        }
        let id = match call {
            LeaseCall::KeepAlive(id) | LeaseCall::TimeLeft(id) => id,
        };
        if self.store.lease(id).is_none() {
            self.read_barrier().await?;
        }
        let Some(lease) = self.store.lease(id) else {
            return Ok(match call {
                LeaseCall::KeepAlive(_) => LeaseAnswer::Renewed { ttl: 0 },
                LeaseCall::TimeLeft(_) => LeaseAnswer::TimeLeft(None),
            });
        };
        self.lessor.sync(Some(self.term()), &self.store);
        Ok(match call {
            LeaseCall::KeepAlive(_) => {
                // A leader cut off from the others must not renew: a new
                // leader may already keep the lease's time. Renew only with
                // a quorum's word fresh, after a round to get one if need be.
                if !self.leads_confirmed() {
                    self.read_barrier().await?;
                    if !self.leads_confirmed() {
                        return Err(Error::NotLeader);
                    }
                }
                let renewed = self.lessor.renew(id, lease.ttl);
                LeaseAnswer::Renewed {
                    ttl: if renewed { lease.ttl } else { 0 },
                }
            }
            LeaseCall::TimeLeft(_) => {
                let left = self.lessor.time_left(id).map(|d| d.as_millis() as i64);
                LeaseAnswer::TimeLeft(left.map(|ms| (ms, lease.ttl)))
            }
        })
    }
}
