//! An intruder on the peer network, for the nemesis: a process outside the
//! cluster that floods every member's peer port with forged messages from a
//! non-member (votes, heartbeats with a term of 2^64-1, entries, forwarded
//! deletes of every key, a batch nested 4,000 deep). Every one must be
//! refused; any that is not is reported, and fails the campaign.

use std::time::Duration;

use openraft::Vote;
use raftkv::raft::typ::{AppendEntriesRequest, VoteRequest};
use raftkv::store::Command;
use tokio::time::Instant;

use crate::hostile::{
    forward, heartbeat, log_id, nested_batch, payload, peer_at, put_entry, STRANGER,
};

/// What a flood did.
#[derive(Debug, Default)]
pub struct Flood {
    /// Forged messages sent (and answered: calls that could not connect,
    /// to a node that is down, are not counted).
    pub sent: usize,
    /// The forged messages that were accepted: must stay empty.
    pub accepted: Vec<String>,
}

/// One round of forgeries to the peer port at `addr`, claiming `member`
/// (a real member's id) where a term alone must be refused.
async fn round(addr: &str, member: u64, flood: &mut Flood) {
    let Ok(mut p) = peer_at(addr).await else {
        return;
    };
    let term = 1 << 40;
    let mut note = |what: &str, accepted: bool| {
        flood.sent += 1;
        if accepted {
            flood.accepted.push(format!("{addr}: {what}"));
        }
    };
    let vote = |candidate, term| VoteRequest {
        vote: Vote::new(term, candidate),
        last_log_id: Some(log_id(term, candidate, u64::MAX >> 1)),
    };
    let r = p.vote(payload(&vote(STRANGER, term))).await;
    note("a stranger's vote", r.is_ok());
    let r = p.vote(payload(&vote(member, u64::MAX))).await;
    note("a vote at term 2^64-1", r.is_ok());
    let r = p
        .append_entries(payload(&heartbeat(u64::MAX, member)))
        .await;
    note("a heartbeat at term 2^64-1", r.is_ok());
    let r = p.append_entries(payload(&heartbeat(term, STRANGER))).await;
    note("a stranger's heartbeat", r.is_ok());
    let entries = AppendEntriesRequest {
        entries: vec![put_entry(term, STRANGER, 0)],
        ..heartbeat(term, STRANGER)
    };
    let r = p.append_entries(payload(&entries)).await;
    note("a stranger's entries", r.is_ok());
    let everything = Command::DeleteRange {
        key: vec![0],
        range_end: vec![0],
        prev_kv: false,
    };
    let r = p.forward(forward(STRANGER, vec![everything])).await;
    note("a stranger's forwarded delete of every key", r.is_ok());
    let r = p.forward(nested_batch(member as u8, 4000)).await;
    note("a batch nested 4,000 deep", r.is_ok());
}

/// Floods `addrs` (every member's peer port; `member` is one member's id)
/// until `until`, a round to each every 50 ms.
pub async fn flood(addrs: Vec<String>, member: u64, until: Instant) -> Flood {
    let mut flood = Flood::default();
    while Instant::now() < until {
        for addr in &addrs {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), round(addr, member, &mut flood)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flood
}
