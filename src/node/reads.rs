//! The read path: a linearizable read waits for a read index confirmed by
//! the leader with a quorum (rounds shared by every read waiting, see
//! `read_index.rs`), then for this member to apply up to it, and reads
//! locally.

use tokio::time::Instant;

use super::writes::{Attempts, RETRY_BACKOFF};
use super::Node;
use crate::error::{Error, Result};
use crate::store::{Rejection, Revision, Txn, TxnResult};

impl Node {
    /// Returns once this member's applied state includes every write
    /// committed before the call: after it, a local read is linearizable.
    pub async fn read_barrier(&self) -> Result<()> {
        let deadline = Instant::now() + self.request_timeout;
        let state = std::sync::Mutex::new(Attempts::default());
        let attempts = || state.lock().unwrap_or_else(|e| e.into_inner());
        let attempt = async {
            loop {
                let leader = self.wait_for_leader(deadline).await?;
                attempts().start(leader);
                match self.reads.get().await.map_err(Error::from) {
                    Ok(index) => return self.wait_applied(index).await,
                    Err(e) if e.is_retryable() => {
                        attempts().failed(&e);
                        tokio::time::sleep(RETRY_BACKOFF).await
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::time::timeout_at(deadline, attempt)
            .await
            .unwrap_or_else(|_| Err(attempts().deadline_error()))
    }

    /// Runs a transaction that only reads against this member's applied
    /// state, without proposing it; returns the revision it read at, or
    /// `None` if the transaction writes (it needs a proposal).
    pub fn read_only_txn(
        &self,
        txn: &Txn,
    ) -> Option<(Revision, std::result::Result<TxnResult, Rejection>)> {
        self.store.read_txn(txn)
    }

    /// The read index this member, as leader, confirms for a follower's
    /// read; rounds are shared with the leader's own reads.
    pub async fn read_index(&self) -> Result<u64> {
        if !self.is_leader() {
            return Err(Error::NotLeader);
        }
        self.reads.get().await.map_err(Error::from)
    }

    async fn wait_applied(&self, index: u64) -> Result<()> {
        if self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .is_some_and(|l| l.index >= index)
        {
            return Ok(());
        }
        self.raft
            .wait(None)
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|_| Error::Stopped)
    }
}
