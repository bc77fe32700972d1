//! ReadIndex batching: one leadership confirmation serves every
//! linearizable read waiting for it.
//!
//! A read must be ordered after a confirmation round that *started* after
//! the read arrived. So reads queue; when no round is running, one starts
//! for everything queued, and reads arriving during it wait for the next.
//! On a follower the round is one `ReadIndex` call to the leader, so the
//! leader also sees one call per round, not one per read.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::to_leader::PeerError;

type Waiter = oneshot::Sender<Result<u64, PeerError>>;

/// Shares read-index rounds among concurrent readers. Cheap to clone.
#[derive(Clone)]
pub struct ReadIndex {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl ReadIndex {
    /// Starts the loop; `round` runs one confirmation and returns the index.
    pub fn start<F, Fut>(round: F) -> ReadIndex
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, PeerError>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let result = round().await;
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        });
        ReadIndex { tx }
    }

    /// The read index of a round that started after this call.
    pub async fn get(&self) -> Result<u64, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| PeerError::Stopped)?;
        rx.await.map_err(|_| PeerError::Stopped)?
    }
}
