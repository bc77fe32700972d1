//! The corruption check, on by default (etcd keeps it experimental): the
//! leader periodically compares its key-value hash at its current revision
//! with every other member's at the same revision (asked over the peer
//! port). A member whose hash differs while its compaction point is the
//! same holds different data: the leader raises a CORRUPT alarm for it
//! through Raft, names it in its log, and from then on every member
//! refuses client writes ("etcdserver: corrupt cluster") until an operator
//! has rebuilt that member and disarmed the alarm.
//!
//! At start-up, before it serves, a member compares its own hash at its
//! applied revision with the other members' at that revision. If more of
//! those that answer (at the same compaction point) differ from it than
//! agree, it is the odd one out: it refuses to start and says how to
//! rebuild it. If fewer do, it starts and names them (the leader's check
//! raises their alarm). Members that do not answer within
//! `STARTUP_WAIT` (down, or starting themselves) are left out, and a
//! member that holds nothing yet skips the check.

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
/// How long the start-up check waits for the other members' answers.
/// Members that are up answer in milliseconds; one that is starting too
/// (a whole cluster restarted) has its port open but does not answer yet.
const STARTUP_WAIT: Duration = Duration::from_millis(1500);

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

    /// The start-up check (see the module doc).
    pub(super) async fn check_at_startup(&self) -> Result<()> {
        let revision = self.store.revision();
        if revision == crate::store::INITIAL_REVISION {
            // Nothing written yet (a new member): nothing to compare.
            return Ok(());
        }
        let mine = self.hash_at(revision).await?;
        let asks = self.other_members().into_iter().map(|id| async move {
            let asked = to_leader::ask_hash(&self.raft, &self.peers, id, revision);
            (id, tokio::time::timeout(STARTUP_WAIT, asked).await)
        });
        let (mut agree, mut differ) = (Vec::new(), Vec::new());
        for (id, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Ok(theirs)) if theirs.compacted == mine.compacted => {
                    if theirs.hash == mine.hash {
                        agree.push(id);
                    } else {
                        differ.push((id, theirs.hash));
                    }
                }
                _ => {}
            }
        }
        if differ.is_empty() {
            tracing::info!(revision, agree = ?agree, "start-up corruption check passed");
            return Ok(());
        }
        if differ.len() > agree.len() {
            return Err(Error::DataDir(format!(
                "corruption check at start-up: this member's data at revision {revision} (hash \
                 {:#x}) differs from member(s) {} while {} agree; it does not serve. Rebuild it: \
                 remove it and add a new member, or wipe its data dir and start it with \
                 --initial-cluster-state existing",
                mine.hash,
                differ
                    .iter()
                    .map(|(id, hash)| format!("{id:x} (hash {hash:#x})"))
                    .collect::<Vec<_>>()
                    .join(", "),
                agree.len()
            )));
        }
        tracing::error!(
            revision,
            differ = ?differ,
            agree = ?agree,
            "corruption check at start-up: some members' data differs from this member's and \
             the others'; the leader's check will raise their CORRUPT alarm"
        );
        Ok(())
    }

    /// Every other member of the membership this member knows.
    fn other_members(&self) -> Vec<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.id)
            .collect()
    }

    /// One round of the check, as leader: the members found to differ.
    async fn check_members(&self) -> Result<Vec<u64>> {
        let revision = self.store.revision();
        let mine = self.hash_at(revision).await?;
        let mut differ = Vec::new();
        for id in self.other_members() {
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
