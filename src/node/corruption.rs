//! The corruption check, on by default (etcd keeps it experimental): the
//! leader periodically compares its key-value hash at its current revision
//! with every other member's at the same revision (asked over the peer
//! port). A member whose hash differs while its compaction point is the
//! same holds different data: the leader raises a CORRUPT alarm for it
//! through Raft, names it in its log, and from then on every member
//! refuses client writes ("etcdserver: corrupt cluster") until an operator
//! has rebuilt that member and disarmed the alarm.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::status::leader_of;
use super::to_leader::{self, HashAt};
use super::Node;
use crate::error::{Error, Result};
use crate::store::{Revision, ALARM_CORRUPT};

/// How long a member waits to apply up to the revision it is asked about.
const CATCH_UP: Duration = Duration::from_secs(2);

impl Node {
    /// This member's key-value hash at `revision`, once it applied it.
    pub async fn hash_at(&self, revision: Revision) -> Result<HashAt> {
        let mut applied = self.revisions.clone();
        let deadline = Instant::now() + CATCH_UP;
        while *applied.borrow_and_update() < revision {
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::Stopped),
                Err(_) => return Err(Error::Timeout),
            }
        }
        let hash = self.store.hash(revision).map_err(Error::from)?;
        Ok(HashAt {
            hash,
            compacted: self.store.compacted(),
        })
    }

    /// One round of the check, as leader: the members found to differ.
    async fn check_members(&self) -> Result<Vec<u64>> {
        let revision = self.store.revision();
        let mine = self.hash_at(revision).await?;
        let others: Vec<u64> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| *id != self.id)
                .collect()
        };
        let mut differ = Vec::new();
        for id in others {
            let theirs = match to_leader::ask_hash(&self.raft, &self.peers, id, revision).await {
                Ok(h) => h,
                // A member that is down or behind is checked next time.
                Err(e) => {
                    tracing::debug!(member = id, error = %e, "corruption check: no hash");
                    continue;
                }
            };
            if theirs.compacted == mine.compacted && theirs.hash != mine.hash {
                tracing::error!(
                    member = id,
                    revision,
                    leader_hash = mine.hash,
                    member_hash = theirs.hash,
                    "corruption check: this member's data differs from the leader's; raising the CORRUPT alarm"
                );
                differ.push(id);
            }
        }
        Ok(differ)
    }
}

/// Runs the check every `every` while this member leads, until it stops.
pub(super) async fn run(node: Arc<Node>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !node.is_running() {
            return;
        }
        let leads = leader_of(&node.raft.metrics().borrow()) == Some(node.id);
        if !leads {
            continue;
        }
        match node.check_members().await {
            Ok(differ) => {
                let raised = node.store.alarms();
                for id in differ {
                    if raised.contains(&(id, ALARM_CORRUPT)) {
                        continue;
                    }
                    if let Err(e) = node.set_alarm(true, id, ALARM_CORRUPT).await {
                        tracing::warn!(member = id, error = %e, "raising the CORRUPT alarm");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "corruption check skipped"),
        }
    }
}
