//! Automatic compaction, as etcd's `--auto-compaction-mode`: the leader
//! proposes `Compact` so history stays bounded under a steady write load.
//!
//! - `revision`: keep the last `retention` revisions. Checked every second;
//!   compacts once at least `retention` more revisions can go, so each
//!   compaction drops a worthwhile batch.
//! - `periodic`: keep the history of the last `retention` of time. Every
//!   tenth of that, compacts to the revision current one retention ago.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::node::Node;
use crate::store::{Command, Response, Revision};

/// What `--auto-compaction-mode` and `--auto-compaction-retention` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this many revisions.
    Revision(i64),
    /// Keep this much time.
    Periodic(Duration),
}

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
        let (Ok(current), Ok(compacted)) = (store.revision(), store.compacted()) else {
            continue;
        };
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

/// Parses `--auto-compaction-retention` for `mode`: a revision count, or a
/// duration (`30m`, `1h`, `90s`; a bare number means hours, as in etcd).
/// "0" turns auto-compaction off.
pub fn parse(mode: &str, retention: &str) -> Result<Option<AutoCompaction>, String> {
    let retention = retention.trim();
    match mode {
        "revision" => {
            let n: i64 = retention.parse().map_err(|_| {
                format!("--auto-compaction-retention {retention:?} is not a revision count")
            })?;
            if n < 0 {
                return Err("--auto-compaction-retention must not be negative".into());
            }
            Ok((n > 0).then_some(AutoCompaction::Revision(n)))
        }
        "periodic" => {
            let (number, unit) = retention.split_at(
                retention
                    .find(|c: char| c.is_alphabetic())
                    .unwrap_or(retention.len()),
            );
            let n: f64 = number.parse().map_err(|_| {
                format!(
                    "--auto-compaction-retention {retention:?} is not a duration like 30m or 1h"
                )
            })?;
            let secs = match unit {
                "" | "h" => n * 3600.0,
                "m" => n * 60.0,
                "s" => n,
                "ms" => n / 1000.0,
                _ => {
                    return Err(format!(
                        "--auto-compaction-retention {retention:?}: unknown unit {unit:?}"
                    ))
                }
            };
            if secs < 0.0 {
                return Err("--auto-compaction-retention must not be negative".into());
            }
            Ok((secs > 0.0).then(|| AutoCompaction::Periodic(Duration::from_secs_f64(secs))))
        }
        other => Err(format!(
            "--auto-compaction-mode {other:?}: use revision or periodic"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retention_like_etcd() {
        assert_eq!(
            parse("revision", "1000"),
            Ok(Some(AutoCompaction::Revision(1000)))
        );
        assert_eq!(parse("revision", "0"), Ok(None));
        assert_eq!(
            parse("periodic", "1"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(3600))))
        );
        assert_eq!(
            parse("periodic", "30m"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(1800))))
        );
        assert_eq!(parse("periodic", "0"), Ok(None));
        assert!(parse("revision", "1h").is_err());
        assert!(parse("periodic", "5x").is_err());
        assert!(parse("weekly", "1").is_err());
    }
}
