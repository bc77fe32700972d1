//! Group commit on the leader: many client writes become one Raft entry.
//!
//! openraft 0.9 appends (and flushes) each proposal on its own before it
//! looks at the next, so one write per entry means one fsync per write. The
//! proposer instead queues writes (`batching::run`) while up to
//! `MAX_IN_FLIGHT` entries are being committed, then proposes everything
//! queued as one `Command::Batch`: under load, one fsync (on the leader and
//! on each follower) commits hundreds of writes, and with little load a
//! write waits for nothing. Each write still gets its own response, in order, and each
//! is applied as its own revision.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::batching::{self, Limits};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::raft::typ::{ClientWriteError, RaftError};
use crate::raft::Raft;
use crate::store::{Command, Response};

/// Entries being committed at once.
const MAX_IN_FLIGHT: usize = 2;
/// Most writes in one entry.
const MAX_BATCH: usize = 4096;
/// An entry stops taking writes once their encoding passes this; the write
/// that crosses it still joins, so an entry is at most this plus one write.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<Response>>,
}

/// The leader's write path. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts proposing through `raft`; times each proposal in `metrics`.
    pub fn start(raft: Raft, metrics: Arc<Metrics>) -> Proposer {
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
            |_, _| true,
            move |batch| {
                let (raft, metrics) = (raft.clone(), metrics.clone());
                async move { commit(&raft, &metrics, batch).await }
            },
        ));
        Proposer { tx }
    }

    /// Commits `cmd` (with others) and returns what applying it produced.
    pub async fn propose(&self, cmd: Command) -> Result<Response> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { cmd, reply })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Commits each of `cmds` (queued in order, so usually in one entry)
    /// and returns each one's outcome, in order.
    pub async fn propose_many(&self, cmds: Vec<Command>) -> Vec<Result<Response>> {
        let mut waiting = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            let (reply, rx) = oneshot::channel();
            let queued = self.tx.send(Pending { cmd, reply }).await.is_ok();
            waiting.push(queued.then_some(rx));
        }
        let mut results = Vec::with_capacity(waiting.len());
        for rx in waiting {
            results.push(match rx {
                Some(rx) => rx.await.unwrap_or(Err(Error::Stopped)),
                None => Err(Error::Stopped),
            });
        }
        results
    }
}

async fn commit(raft: &Raft, metrics: &Metrics, batch: Vec<Pending>) {
    let (mut cmds, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let entry = if cmds.len() == 1 {
        cmds.pop().expect("invariant: one command")
    } else {
        Command::Batch(cmds)
    };
    let started = Instant::now();
    let result = raft.client_write(entry).await;
    if result.is_ok() {
        metrics
            .proposal_duration
            .observe(started.elapsed().as_secs_f64());
    }
    match result {
        Ok(resp) => match resp.data {
            Response::Batch(responses) => {
                for (reply, r) in replies.into_iter().zip(responses) {
                    let _ = reply.send(Ok(r));
                }
            }
            single => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Ok(single));
                }
            }
        },
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(refusal(&e)));
            }
        }
    }
}

/// Why a proposal failed, for each write in it.
fn refusal(e: &RaftError<ClientWriteError>) -> Error {
    match e {
        // Refused before it was appended, or removed from the log
        // uncommitted: it had no effect.
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Error::NotLeader,
        RaftError::APIError(e) => Error::ProposalRefused(e.to_string()),
        RaftError::Fatal(_) => Error::Stopped,
    }
}
