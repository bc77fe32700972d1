//! Forwarding on a follower: many client writes become one call to the
//! leader.
//!
//! The forwarder queues writes while up to `MAX_IN_FLIGHT` calls are out
//! (`batching::run`), then sends everything queued for the same leader in
//! one call, so under load the leader decodes, schedules and answers one
//! call for many writes; it proposes them through its group commit and
//! answers each in order. With little load a write waits for nothing.
//!
//! A call that fails as a whole fails every write in it the same way: if it
//! could not be sent, all are retryable; if it was lost in flight, each write
//! may or may not have been applied.

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::batching::{self, Limits};
use super::to_leader::{self, ForwardRequest, PeerError};
use crate::error::{Error, Result};
use crate::raft::{NodeId, PeerClients, Raft};
use crate::store::{Command, Response};

/// Calls to the leader out at once.
const MAX_IN_FLIGHT: usize = 4;
/// Most writes in one call.
const MAX_BATCH: usize = 2048;
/// A call stops taking writes once their encoding passes this; the write
/// that crosses it still joins.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

struct Pending {
    leader: NodeId,
    cmd: Command,
    deadline: Instant,
    reply: oneshot::Sender<Result<Response>>,
}

/// A follower's path to the leader for writes. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Pending>,
}

impl Forwarder {
    /// Starts forwarding over `peers` for member `me`, finding members'
    /// addresses in `raft`.
    pub fn start(me: NodeId, raft: Raft, peers: PeerClients) -> Forwarder {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 2);
        let limits = Limits {
            in_flight: MAX_IN_FLIGHT,
            max_items: MAX_BATCH,
            max_bytes: MAX_BATCH_BYTES,
        };
        tokio::spawn(batching::run(
            rx,
            limits,
            |p: &Pending| crate::codec::encoded_len(&p.cmd),
            // One call goes to one leader.
            |a, b| a.leader == b.leader,
            move |batch| {
                let (raft, peers) = (raft.clone(), peers.clone());
                async move { send(me, &raft, &peers, batch).await }
            },
        ));
        Forwarder { tx }
    }

    /// Has `leader` propose `cmd` (with others); returns what applying it
    /// produced. `deadline` bounds the call it travels in.
    pub async fn forward(
        &self,
        leader: NodeId,
        cmd: Command,
        deadline: Instant,
    ) -> Result<Response> {
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            leader,
            cmd,
            deadline,
            reply,
        };
        self.tx.send(pending).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }
}

async fn send(me: NodeId, raft: &Raft, peers: &PeerClients, batch: Vec<Pending>) {
    let leader = batch[0].leader;
    // The call lasts as long as its most patient write; the others stop
    // waiting at their own deadlines.
    let deadline = batch
        .iter()
        .map(|p| p.deadline)
        .max()
        .expect("invariant: a batch is never empty");
    let (cmds, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let request = ForwardRequest { from: me, cmds };
    match to_leader::send_writes(raft, peers, leader, &request, deadline).await {
        Ok(results) => {
            let mut results = results.into_iter();
            for reply in replies {
                // A missing answer is a broken leader: the write may have
                // been applied.
                let result = results
                    .next()
                    .unwrap_or(Err(PeerError::Lost))
                    .map_err(Error::from);
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let e = PeerError::from(&e);
            for reply in replies {
                let _ = reply.send(Err(Error::from(e.clone())));
            }
        }
    }
}
