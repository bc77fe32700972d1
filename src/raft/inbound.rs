//! Inbound Raft messages: every AppendEntries, Vote and InstallSnapshot a
//! peer sends is admitted here before openraft sees it.
//!
//! openraft trusts what it is handed: a term of 2^64-1 is stored, learned by
//! the leader and overflows at the next election (a panic on every member,
//! at every restart), and a vote or entries from anyone are acted on. So a
//! message is refused, changing nothing, when:
//!
//! - its sender (the candidate, or the leader) is not a voter in this
//!   member's view of the membership (before this member knows one: not in
//!   `--initial-cluster`), or is this member itself; a leader this member
//!   knows (from `--initial-cluster` or as a learner) in a term later than
//!   the one that view was written in is let through, since the view may
//!   be older than its promotion;
//! - its term is at or above `MAX_TERM`, or more than `MAX_TERM_JUMP` above
//!   this member's (no run of elections gets there in a lifetime);
//! - its log ids contradict it (an entry from a later term than the leader's,
//!   indexes that do not follow one another or reach `MAX_INDEX`, a leader's
//!   vote not committed);
//! - while this member has heard from its leader within half an election
//!   timeout (or, as leader, from a quorum), it carries any vote other than
//!   that leader's. This is Raft's rule against disruptive servers (thesis
//!   4.2.3), as etcd applies it with CheckQuorum, and costs nothing
//!   legitimate: no follower campaigns before a whole election timeout
//!   without a leader. A member that was cut off still rejoins: the leader
//!   learns its higher term from the member's replies, not its requests.
//! - a snapshot chunk would leave a hole (openraft seeks to whatever offset
//!   it is given and writes there, so a huge offset is a huge allocation).
//!
//! Without peer TLS any process that reaches the peer port can still claim
//! to be a member; with `--peer-client-cert-auth` only members' certificates
//! connect at all (see `server::peer_tls`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::raft::AppendEntriesResponse;
use openraft::ServerState;

use super::typ::{
    AppendEntriesRequest, InstallSnapshotRequest, InstallSnapshotResponse, LogId, RaftMetrics,
    Vote, VoteRequest, VoteResponse,
};
use super::{Acks, NodeId, Raft};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Terms at or above this are refused anywhere they appear: far beyond any
/// real cluster's, far enough below `u64::MAX` that adding one never
/// overflows.
pub const MAX_TERM: u64 = 1 << 62;
/// The most a message's term may be ahead of this member's.
pub const MAX_TERM_JUMP: u64 = 1 << 32;
/// Log indexes at or above this are refused: openraft counts on the next
/// index after any it is given.
pub const MAX_INDEX: u64 = 1 << 62;

/// The leader this follower last heard from, and when.
#[derive(Clone, Copy)]
struct Contact {
    vote: Vote,
    at: Instant,
}

/// Admission control in front of openraft's message handlers.
pub struct Inbound {
    raft: Raft,
    me: NodeId,
    /// Who may lead before this member knows any membership.
    bootstrap: BTreeSet<NodeId>,
    /// Half the election timeout: how long a leader's word holds.
    quiet: Duration,
    contact: Mutex<Option<Contact>>,
    /// The snapshot being received: its id and how many bytes arrived.
    receiving: Mutex<Option<(String, u64)>>,
    /// Followers' acknowledgements, while this member leads.
    acks: Acks,
    metrics: Arc<Metrics>,
}

fn bad(why: String) -> Error {
    Error::BadPeerMessage(why)
}

/// A term no message may carry, relative to this member's `current`.
fn check_term(term: u64, current: u64) -> Result<()> {
    if term >= MAX_TERM || term > current.saturating_add(MAX_TERM_JUMP) {
        return Err(bad(format!(
            "term {term} is out of range (this member is in term {current})"
        )));
    }
    Ok(())
}

/// A log id a message carries must be from no later term than the
/// sender's, and its index in range.
fn check_log_id(log_id: Option<&LogId>, term: u64, what: &str) -> Result<()> {
    match log_id {
        Some(id) if id.leader_id.term > term => Err(bad(format!(
            "{what} {id} is from a term after the sender's ({term})"
        ))),
        Some(id) if id.index >= MAX_INDEX => {
            Err(bad(format!("{what} {id} has an index out of range")))
        }
        _ => Ok(()),
    }
}

impl Inbound {
    /// Admission for member `me` of `raft`; `bootstrap` are the
    /// `--initial-cluster` ids, `election_timeout` the configured one,
    /// `acks` what the network saw of followers. Refusals are counted in
    /// `metrics`.
    pub fn new(
        raft: Raft,
        me: NodeId,
        bootstrap: BTreeSet<NodeId>,
        election_timeout: Duration,
        acks: Acks,
        metrics: Arc<Metrics>,
    ) -> Self {
        Inbound {
            raft,
            me,
            bootstrap,
            quiet: election_timeout / 2,
            contact: Mutex::new(None),
            receiving: Mutex::new(None),
            acks,
            metrics,
        }
    }

    /// Counts a refused message of `rpc` and logs why.
    fn refused(&self, rpc: &str, e: Error) -> Error {
        self.metrics.peer_refused.with_label_values(&[rpc]).inc();
        tracing::debug!(rpc, error = %e, "refused a peer message");
        e
    }

    /// The sender of a message carrying `vote` must be a voter other than
    /// this member, and its term in range. A leader's message (`leads`) is
    /// also taken from a sender this member knows (from `--initial-cluster`,
    /// or as a learner) but whose membership does not list as a voter, if
    /// the leader's term is later than the entry that membership came
    /// from: this member's view is older than the leader's (a member that
    /// joined and replays the log from its start, or one that was down
    /// while the leader was promoted), and only the leader can bring it up
    /// to date.
    fn check_sender(&self, m: &RaftMetrics, vote: &Vote, leads: bool) -> Result<()> {
        let sender = vote.leader_id.node_id;
        let membership = m.membership_config.membership();
        let voter = if membership.nodes().next().is_none() {
            self.bootstrap.contains(&sender)
        } else {
            membership.voter_ids().any(|id| id == sender)
        };
        let view_term = m
            .membership_config
            .log_id()
            .as_ref()
            .map_or(0, |id| id.leader_id.term);
        let known = self.bootstrap.contains(&sender) || membership.get_node(&sender).is_some();
        let stale_view = leads && known && vote.leader_id.term > view_term;
        if !(voter || stale_view) || sender == self.me {
            return Err(Error::NotAMember(sender));
        }
        check_term(vote.leader_id.term, m.current_term)
    }

    /// The disruptive-server rule: while the leader's word holds, only its
    /// own vote gets through.
    fn check_lease(&self, m: &RaftMetrics, vote: &Vote) -> Result<()> {
        let leading_with_quorum = m.state == ServerState::Leader
            && self.acks.quorum_within(
                self.me,
                &m.vote,
                m.membership_config.membership(),
                self.quiet,
            );
        if leading_with_quorum && *vote != m.vote {
            return Err(Error::LeaderLeaseHeld(m.id));
        }
        let contact = *self.contact.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = contact {
            if c.at.elapsed() < self.quiet && *vote != c.vote && m.vote == c.vote {
                return Err(Error::LeaderLeaseHeld(c.vote.leader_id.node_id));
            }
        }
        Ok(())
    }

    fn heard_from_leader(&self, vote: Vote) {
        *self.contact.lock().unwrap_or_else(|e| e.into_inner()) = Some(Contact {
            vote,
            at: Instant::now(),
        });
    }

    fn check_vote(&self, req: &VoteRequest) -> Result<()> {
        let m = self.raft.metrics().borrow().clone();
        self.check_sender(&m, &req.vote, false)?;
        if req.vote.committed {
            return Err(bad("a vote request with a committed vote".into()));
        }
        check_log_id(
            req.last_log_id.as_ref(),
            req.vote.leader_id.term,
            "last log id",
        )?;
        self.check_lease(&m, &req.vote)
    }

    fn check_append(&self, req: &AppendEntriesRequest) -> Result<()> {
        let m = self.raft.metrics().borrow().clone();
        self.check_sender(&m, &req.vote, true)?;
        let term = req.vote.leader_id.term;
        if !req.vote.committed {
            return Err(bad(
                "entries from a leader whose vote is not committed".into()
            ));
        }
        check_log_id(req.prev_log_id.as_ref(), term, "previous log id")?;
        check_log_id(req.leader_commit.as_ref(), term, "commit index")?;
        let mut prev = req.prev_log_id;
        for entry in &req.entries {
            let id = entry.log_id;
            check_log_id(Some(&id), term, "entry")?;
            // Both indexes are below MAX_INDEX: no overflow.
            let expected = prev.map_or(0, |p| p.index + 1);
            if id.index != expected || prev.is_some_and(|p| p.leader_id.term > id.leader_id.term) {
                return Err(bad(format!(
                    "entry {id} does not follow {}",
                    prev.map_or("the start".to_string(), |p| p.to_string())
                )));
            }
            prev = Some(id);
        }
        self.check_lease(&m, &req.vote)
    }

    fn check_snapshot(&self, req: &InstallSnapshotRequest) -> Result<()> {
        let m = self.raft.metrics().borrow().clone();
        self.check_sender(&m, &req.vote, true)?;
        if !req.vote.committed {
            return Err(bad(
                "a snapshot from a leader whose vote is not committed".into()
            ));
        }
        let term = req.vote.leader_id.term;
        check_log_id(req.meta.last_log_id.as_ref(), term, "snapshot")?;
        check_log_id(
            req.meta.last_membership.log_id().as_ref(),
            term,
            "snapshot membership",
        )?;
        self.check_lease(&m, &req.vote)?;
        let mut receiving = self.receiving.lock().unwrap_or_else(|e| e.into_inner());
        let id = &req.meta.snapshot_id;
        let received = match &*receiving {
            Some((current, received)) if current == id => *received,
            _ => 0,
        };
        if req.offset > received {
            return Err(bad(format!(
                "snapshot chunk at byte {} of {id}, which has {received} bytes so far",
                req.offset
            )));
        }
        let end = req.offset.saturating_add(req.data.len() as u64);
        *receiving = (!req.done).then(|| (id.clone(), received.max(end)));
        Ok(())
    }

    /// An AppendEntries from the leader, if admitted.
    pub async fn append_entries(
        &self,
        req: AppendEntriesRequest,
    ) -> Result<std::result::Result<AppendEntriesResponse<NodeId>, super::typ::RaftError>> {
        self.check_append(&req)
            .map_err(|e| self.refused("append_entries", e))?;
        let vote = req.vote;
        let response = self.raft.append_entries(req).await;
        if matches!(
            response,
            Ok(AppendEntriesResponse::Success
                | AppendEntriesResponse::PartialSuccess(_)
                | AppendEntriesResponse::Conflict)
        ) {
            self.heard_from_leader(vote);
        }
        Ok(response)
    }

    /// A candidate's VoteRequest, if admitted. While this member's leader
    /// holds, the candidate gets a plain "no" (with this member's vote and
    /// a log id it holds, as openraft would answer), so it waits rather
    /// than logging an error.
    pub async fn vote(
        &self,
        req: VoteRequest,
    ) -> Result<std::result::Result<VoteResponse, super::typ::RaftError>> {
        match self.check_vote(&req) {
            Ok(()) => Ok(self.raft.vote(req).await),
            Err(Error::LeaderLeaseHeld(_)) => {
                self.metrics.peer_refused.with_label_values(&["vote"]).inc();
                let m = self.raft.metrics().borrow().clone();
                Ok(Ok(VoteResponse::new(m.vote, m.last_applied, false)))
            }
            Err(e) => Err(self.refused("vote", e)),
        }
    }

    /// A snapshot chunk from the leader, if admitted.
    pub async fn install_snapshot(
        &self,
        req: InstallSnapshotRequest,
    ) -> Result<
        std::result::Result<
            InstallSnapshotResponse,
            super::typ::RaftError<super::typ::InstallSnapshotError>,
        >,
    > {
        self.check_snapshot(&req)
            .map_err(|e| self.refused("install_snapshot", e))?;
        let vote = req.vote;
        let response = self.raft.install_snapshot(req).await;
        if response.as_ref().is_ok_and(|r| r.vote == vote) {
            self.heard_from_leader(vote);
        }
        Ok(response)
    }
}
