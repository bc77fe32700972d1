//! Automatic compaction, as etcd's `--auto-compaction-mode`: the leader
//! proposes `Compact` so history stays bounded under a steady write load.
//!
//! - `revision`: keep the last `retention` revisions. Checked every second;
//!   compacts once at least `retention` more revisions can go, so each
//!   compaction drops a worthwhile batch.
//! - `periodic`: keep the history of the last `retention` of time. Every
//!   tenth of that, compacts to the revision current one retention ago.
//!
//! Started by the composition root (`bin/kvd.rs`) next to the node; the node
//! does not know about it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::AutoCompaction;
use crate::node::Node;
use crate::store::{Command, Response, Revision};

const REVISION_CHECK: Duration = Duration::from_secs(1);

/// Runs forever; does something only while this node leads.
pub async fn run(node: Arc<Node>, mode: AutoCompaction) {
    let tick = match mode {
        AutoCompaction::Revision(_) => REVISION_CHECK,
        AutoCompaction::Periodic(window) => (window / 10).max(Duration::from_millis(100)),
    };
    let mut ticker = tokio::time::interval(tick);
    // (when, revision) samples, oldest first, for periodic mode.
    let mut samples: VecDeque<(Instant, Revision)> = VecDeque::new();
    loop {
        ticker.tick().await;
        let store = node.store();
        let (current, compacted) = (store.revision(), store.compacted());
        let target = match mode {
            AutoCompaction::Revision(keep) => {
                let target = current - keep;
                (target - compacted >= keep.max(1)).then_some(target)
            }
            AutoCompaction::Periodic(window) => {
                let now = Instant::now();
                samples.push_back((now, current));
                let mut target = None;
                while samples
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) >= window)
                {
                    target = samples.pop_front().map(|(_, rev)| rev);
                }
                target.filter(|t| *t > compacted)
            }
        };
        let Some(target) = target.filter(|t| *t > 0) else {
            continue;
        };
        if !node.is_leader() {
            continue;
        }
        match node.write(Command::Compact { revision: target }).await {
            Ok(Response::Compacted { .. }) => tracing::info!(revision = target, "auto-compacted"),
            Ok(other) => tracing::debug!(?other, "auto-compaction not applied"),
            Err(e) => tracing::warn!(error = %e, "auto-compaction failed; will retry"),
        }
    }
}
