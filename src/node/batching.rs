//! The batching loop behind group commit (`proposer`) and forwarding
//! (`forwarder`).
//!
//! Items queue while up to `in_flight` batches are out. When a slot frees,
//! the first waiting item and everything queued behind it (up to
//! `max_items`, roughly `max_bytes`, and while `same_batch` holds) become one
//! batch, handed to `send` on a task of its own. Under load a batch holds
//! hundreds of items; with little load an item waits for nothing.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

/// How big batches get and how many are out at once.
pub struct Limits {
    pub in_flight: usize,
    pub max_items: usize,
    /// Roughly: the item that crosses it still joins.
    pub max_bytes: usize,
}

/// Runs until `rx` closes.
pub async fn run<T, F, Fut>(
    mut rx: mpsc::Receiver<T>,
    limits: Limits,
    size: impl Fn(&T) -> usize,
    same_batch: impl Fn(&T, &T) -> bool,
    mut send: F,
) where
    T: Send + 'static,
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(limits.in_flight));
    // An item that could not join the last batch.
    let mut carried: Option<T> = None;
    loop {
        let first = match carried.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        // Wait for a slot first: items arriving meanwhile join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = size(&first);
        let mut batch = vec![first];
        while batch.len() < limits.max_items && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(item) if same_batch(&batch[0], &item) => {
                    bytes += size(&item);
                    batch.push(item);
                }
                Ok(item) => {
                    carried = Some(item);
                    break;
                }
                Err(_) => break,
            }
        }
        let sent = send(batch);
        tokio::spawn(async move {
            sent.await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items queued while the only slot is taken leave as one batch, split
    /// where `same_batch` says and where `max_items` is reached.
    #[tokio::test]
    async fn queued_items_leave_together_within_limits() {
        let (tx, rx) = mpsc::channel(64);
        let (out_tx, mut out) = mpsc::unbounded_channel();
        let (gate_tx, gate) = tokio::sync::watch::channel(false);
        let limits = Limits {
            in_flight: 1,
            max_items: 3,
            max_bytes: usize::MAX,
        };
        tokio::spawn(run(
            rx,
            limits,
            |_: &(u8, u32)| 1,
            |a, b| a.0 == b.0,
            move |batch: Vec<(u8, u32)>| {
                let (out_tx, mut gate) = (out_tx.clone(), gate.clone());
                async move {
                    out_tx.send(batch).unwrap();
                    // Hold the slot until the test opens the gate.
                    let _ = gate.wait_for(|open| *open).await;
                }
            },
        ));
        tx.send((0, 0)).await.unwrap();
        assert_eq!(out.recv().await.unwrap(), vec![(0, 0)]);
        for item in [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (0, 6)] {
            tx.send(item).await.unwrap();
        }
        gate_tx.send(true).unwrap();
        assert_eq!(out.recv().await.unwrap(), vec![(0, 1), (0, 2), (0, 3)]);
        assert_eq!(out.recv().await.unwrap(), vec![(0, 4)]);
        assert_eq!(out.recv().await.unwrap(), vec![(1, 5)]);
        assert_eq!(out.recv().await.unwrap(), vec![(0, 6)]);
    }
}
