//! Changing who is in the cluster, as etcd's `Cluster` service does:
//! adding a member (a learner, or a voter at once), promoting a learner,
//! removing a member, moving a member to a new peer address.
//!
//! Only the leader changes the membership, through openraft's joint
//! consensus, one change at a time; a follower hands a change to the leader
//! over the peer port. The leader applies etcd's checks first: a voter is
//! added or removed only if enough started members remain for a quorum,
//! and a learner is promoted only once its log is within a tenth of the
//! leader's. A removed member learns it from its own applied membership or
//! from the leader telling it, and stops (`Node::removed`).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tokio::time::Instant;

use super::status::leader_of;
use super::to_leader::{self, MemberChange, RemovedNotice};
use super::Node;
use crate::config::{check_host_port, normalize_addr};
use crate::error::{Error, MemberRefusal, Result};
use crate::raft::{MemberAddr, NodeId};

/// A learner is in sync when its log reaches this share of the leader's
/// (etcd's rule).
const IN_SYNC_SHARE: f64 = 0.9;

/// The peer address in etcd's peer URLs (`http://host:port`): raftkv
/// members have one.
pub fn peer_addr_of(urls: &[String]) -> Result<String> {
    let [url] = urls else {
        return Err(Error::Member(MemberRefusal::BadUrls));
    };
    let addr = normalize_addr(url.trim());
    check_host_port(&addr).map_err(|_| Error::Member(MemberRefusal::BadUrls))?;
    Ok(addr)
}

/// A fresh member id: random, nonzero, not in `taken` (as etcd's, never
/// reused in practice, so a removed member cannot come back as a new one).
fn pick_member_id(taken: &BTreeSet<NodeId>) -> NodeId {
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        // Up to 2^53: exact as a JSON number, for tools that read one.
        let id = h.finish() >> 11;
        if id != 0 && !taken.contains(&id) {
            return id;
        }
    }
}

/// Maps openraft's refusal of a change.
fn refused(e: RaftError<NodeId, ClientWriteError<NodeId, MemberAddr>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Error::NotLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => Error::Member(MemberRefusal::InProgress),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::LearnerNotFound(_),
        )) => Error::Member(MemberRefusal::NotFound),
        RaftError::APIError(e) => Error::ProposalRefused(e.to_string()),
        RaftError::Fatal(_) => Error::Stopped,
    }
}

impl Node {
    /// Makes `change`: on this member if it leads, else on the leader.
    /// Returns the id of the member it concerns (a new member's).
    pub async fn change_members(&self, change: MemberChange) -> Result<NodeId> {
        let deadline = Instant::now() + self.request_timeout;
        let leader = self.wait_for_leader(deadline).await?;
        if leader == self.id {
            return self.lead_member_change(change).await;
        }
        to_leader::ask_member_change(&self.raft, &self.peers, leader, &change, deadline).await
    }

    /// Makes `change` as the leader, or refuses it.
    pub async fn lead_member_change(&self, change: MemberChange) -> Result<NodeId> {
        // A forwarded change crossed the peer port: check it again.
        if let MemberChange::Add { addr, .. } | MemberChange::Update { addr, .. } = &change {
            check_host_port(addr).map_err(|_| Error::Member(MemberRefusal::BadUrls))?;
        }
        let m = self.raft.metrics().borrow().clone();
        if leader_of(&m) != Some(self.id) {
            return Err(Error::NotLeader);
        }
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, String> = membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let addr_taken =
            |addr: &str, except: NodeId| nodes.iter().any(|(id, a)| *id != except && a == addr);
        match change {
            MemberChange::Add { addr, learner } => {
                if addr_taken(&addr, 0) {
                    return Err(Error::Member(MemberRefusal::PeerUrlExists));
                }
                if !learner {
                    let mut after = voters.clone();
                    after.insert(NodeId::MAX);
                    self.check_started_quorum(&m.vote, &after)?;
                }
                let taken = nodes.keys().copied().collect();
                let id = pick_member_id(&taken);
                let node = MemberAddr { addr: addr.clone() };
                self.raft
                    .add_learner(id, node, false)
                    .await
                    .map_err(refused)?;
                tracing::info!(member = id, %addr, learner, "added a member");
                if !learner {
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(refused)?;
                }
                Ok(id)
            }
            MemberChange::Promote(id) => {
                if voters.contains(&id) {
                    return Err(Error::Member(MemberRefusal::NotLearner));
                }
                if !nodes.contains_key(&id) {
                    return Err(Error::Member(MemberRefusal::NotFound));
                }
                let leader_last = m.last_log_index.unwrap_or(0);
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map_or(0, |log_id| log_id.index);
                if (matched as f64) < (leader_last as f64) * IN_SYNC_SHARE {
                    return Err(Error::Member(MemberRefusal::LearnerNotReady));
                }
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(refused)?;
                tracing::info!(member = id, "promoted a learner");
                Ok(id)
            }
            MemberChange::Remove(id) => {
                let Some(addr) = nodes.get(&id).cloned() else {
                    return Err(Error::Member(MemberRefusal::NotFound));
                };
                let change = if voters.contains(&id) {
                    let mut after = voters.clone();
                    after.remove(&id);
                    if after.is_empty() {
                        return Err(Error::Member(MemberRefusal::LastVoter));
                    }
                    self.check_started_quorum(&m.vote, &after)?;
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                self.raft
                    .change_membership(change, false)
                    .await
                    .map_err(refused)?;
                tracing::info!(member = id, "removed a member");
                if id != self.id {
                    let notice = RemovedNotice {
                        cluster_id: self.cluster_id,
                        removed: id,
                        by: self.id,
                    };
                    let peers = self.peers.clone();
                    tokio::spawn(async move {
                        if let Err(e) = to_leader::tell_removed(&peers, id, &addr, &notice).await {
                            tracing::info!(member = id, error = %e, "could not tell a removed member; it will be refused by every member");
                        }
                    });
                }
                Ok(id)
            }
            MemberChange::Update { id, addr } => {
                if !nodes.contains_key(&id) {
                    return Err(Error::Member(MemberRefusal::NotFound));
                }
                if addr_taken(&addr, id) {
                    return Err(Error::Member(MemberRefusal::PeerUrlExists));
                }
                let node = MemberAddr { addr: addr.clone() };
                self.raft
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), false)
                    .await
                    .map_err(refused)?;
                tracing::info!(member = id, %addr, "updated a member's peer address");
                Ok(id)
            }
        }
    }

    /// Refuses a change that would leave `after`'s voters without a quorum
    /// of started members: ones that published their attributes and
    /// answered this leader lately (or this member). A member not yet
    /// added (`NodeId::MAX`) has not started.
    fn check_started_quorum(
        &self,
        vote: &crate::raft::typ::Vote,
        after: &BTreeSet<NodeId>,
    ) -> Result<()> {
        let published = self.store.members();
        let started = after
            .iter()
            .filter(|id| {
                **id == self.id
                    || (published.get(id).is_some_and(|p| !p.client_urls.is_empty())
                        && self
                            .acks
                            .acked_within(**id, vote, self.election_timeout * 2))
            })
            .count();
        if started < after.len() / 2 + 1 {
            return Err(Error::Member(MemberRefusal::NotEnoughStarted));
        }
        Ok(())
    }

    /// Takes the leader's word that this member was removed: it stops.
    pub fn hear_removed(&self, notice: RemovedNotice) -> Result<()> {
        if notice.cluster_id != self.cluster_id || notice.removed != self.id {
            return Err(Error::BadPeerMessage(format!(
                "a removal notice for member {} of cluster {:x}",
                notice.removed, notice.cluster_id
            )));
        }
        if !self.is_member(notice.by) || notice.by == self.id {
            return Err(Error::NotAMember(notice.by));
        }
        tracing::warn!(
            leader = notice.by,
            "the leader removed this member from the cluster"
        );
        self.removed.send_replace(true);
        Ok(())
    }

    /// Records in the data dir that this member was removed, so that it
    /// refuses to start on it again.
    pub async fn record_removed(&self) -> Result<()> {
        super::identity::record_removed(&self.disk).await
    }

    /// Resolves once this member knows it was removed from the cluster:
    /// its applied membership no longer has it (after having had it), or
    /// the leader said so. Never resolves once the Raft core stopped.
    pub async fn removed(&self) -> Error {
        let mut told = self.removed.subscribe();
        let mut metrics = self.raft.metrics();
        let mut was_member = false;
        loop {
            {
                let m = metrics.borrow_and_update();
                let stored = &m.membership_config;
                let has_me = stored.membership().get_node(&self.id).is_some();
                let applied = stored.log_id().is_some() && stored.log_id() <= &m.last_applied;
                was_member |= has_me;
                if (was_member && applied && !has_me) || *told.borrow_and_update() {
                    return Error::Removed(self.id);
                }
            }
            tokio::select! {
                // The Raft core stopped: that is `failed`'s to report (a
                // stopped member must never be taken for a removed one,
                // whose data dir is marked never to serve again).
                changed = metrics.changed() => if changed.is_err() {
                    return std::future::pending().await;
                },
                _ = told.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_name_one_address() {
        assert_eq!(
            peer_addr_of(&["http://127.0.0.1:42380".into()]).unwrap(),
            "127.0.0.1:42380"
        );
        assert_eq!(
            peer_addr_of(&["10.0.0.4:2380".into()]).unwrap(),
            "10.0.0.4:2380"
        );
        for bad in [
            vec![],
            vec!["http://a:1".to_string(), "http://b:2".to_string()],
            vec!["http://nohost".to_string()],
            vec!["http://h:notaport".to_string()],
        ] {
            assert!(
                matches!(
                    peer_addr_of(&bad),
                    Err(Error::Member(MemberRefusal::BadUrls))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn member_ids_are_fresh() {
        let taken = BTreeSet::from([1, 2, 3]);
        let a = pick_member_id(&taken);
        let b = pick_member_id(&taken);
        assert!(a != 0 && !taken.contains(&a) && a < 1 << 53);
        assert_ne!(a, b);
    }
}
