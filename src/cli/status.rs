//! `kvctl endpoint status [--watch]`: every endpoint's Raft status, once or
//! refreshed, with a line at each leader change saying how long the cluster
//! had no leader. This is how a user watches a re-election.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::args::{Format, StatusArgs};
use super::output::{self, EndpointStatus};
use crate::client::{Dial, StatusProbe};
use crate::pb;

/// Leader changes kept on screen in `--watch` mode.
const SHOWN_EVENTS: usize = 10;

async fn poll(probes: &mut [StatusProbe]) -> Vec<EndpointStatus> {
    let results = futures::future::join_all(probes.iter_mut().map(|p| async move {
        let status = p.status().await.map_err(|e| e.to_string());
        EndpointStatus {
            endpoint: p.endpoint().to_string(),
            status,
        }
    }))
    .await;
    results
}

/// The leader as the reachable members see it: a member that reports itself
/// as leader, the one with the highest term if several do.
fn cluster_leader(rows: &[EndpointStatus]) -> Option<(u64, u64)> {
    rows.iter()
        .filter_map(|r| r.status.as_ref().ok())
        .filter(|s| output::is_leader(s))
        .max_by_key(|s: &&pb::StatusResponse| s.raft_term)
        .map(|s| (s.leader, s.raft_term))
}

/// Follows the leader across polls and describes each change.
#[derive(Default)]
struct LeaderTracker {
    current: Option<(u64, u64)>,
    /// The last leader seen, for "old -> new".
    last_leader: Option<u64>,
    /// When the cluster was first seen without a leader.
    leaderless_since: Option<Instant>,
    started: bool,
}

impl LeaderTracker {
    /// Takes one observation; returns a line to print if the leader changed.
    fn observe(&mut self, leader: Option<(u64, u64)>, now: Instant) -> Option<String> {
        let first = !self.started;
        self.started = true;
        if leader == self.current && !first {
            return None;
        }
        let line = match leader {
            None => {
                self.leaderless_since.get_or_insert(now);
                match self.current {
                    Some((old, term)) => {
                        format!("leader {old} lost (term {term}); the cluster has no leader")
                    }
                    None => "the cluster has no leader".to_string(),
                }
            }
            Some((new, term)) => {
                let gap = self
                    .leaderless_since
                    .take()
                    .map(|since| now.duration_since(since));
                let from = self
                    .last_leader
                    .map_or_else(|| "none".to_string(), |l| l.to_string());
                match (first, gap) {
                    (true, _) => format!("leader is {new} (term {term})"),
                    (false, Some(gap)) => format!(
                        "leader changed: {from} -> {new} (term {term}) after {:.2}s without a leader",
                        gap.as_secs_f64()
                    ),
                    (false, None) => format!("leader changed: {from} -> {new} (term {term})"),
                }
            }
        };
        if let Some((l, _)) = leader {
            self.last_leader = Some(l);
        }
        self.current = leader;
        Some(line)
    }
}

/// `HH:MM:SS.mmm` in UTC.
fn clock() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}

/// Runs `endpoint status`; returns whether every endpoint answered.
pub async fn run(
    endpoints: &[String],
    dial: &Dial,
    format: Format,
    args: &StatusArgs,
) -> anyhow::Result<bool> {
    // A status poll must not hang on a paused node for long.
    let probe_dial = Dial {
        connect_timeout: dial.connect_timeout.min(Duration::from_secs(1)),
        command_timeout: dial.command_timeout.min(Duration::from_secs(1)),
        tls: dial.tls.clone(),
        credentials: dial.credentials.clone(),
    };
    let mut probes = endpoints
        .iter()
        .map(|e| StatusProbe::new(e, if args.watch { &probe_dial } else { dial }))
        .collect::<Result<Vec<_>, _>>()?;
    if !args.watch {
        let rows = poll(&mut probes).await;
        print!("{}", output::endpoint_status(&rows, format));
        let mut all_ok = true;
        for r in &rows {
            if let Err(e) = &r.status {
                eprintln!("Failed to get the status of endpoint {} ({e})", r.endpoint);
                all_ok = false;
            }
        }
        return Ok(all_ok);
    }
    watch(&mut probes, format, args.interval).await
}

async fn watch(
    probes: &mut [StatusProbe],
    format: Format,
    interval: Duration,
) -> anyhow::Result<bool> {
    let redraw = std::io::stdout().is_terminal();
    let mut tracker = LeaderTracker::default();
    let mut events: Vec<String> = Vec::new();
    let mut table_printed = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(true),
        }
        let rows = poll(probes).await;
        let event = tracker.observe(cluster_leader(&rows), Instant::now());
        let mut out = std::io::stdout().lock();
        if redraw {
            if let Some(e) = event {
                events.push(format!("{} {e}", clock()));
                if events.len() > SHOWN_EVENTS {
                    events.remove(0);
                }
            }
            let mut screen = String::from("\x1b[H\x1b[2J");
            screen.push_str(&format!(
                "{} every {:?}, Ctrl-C to stop\n",
                clock(),
                interval
            ));
            screen.push_str(&output::endpoint_status(&rows, format));
            screen.push_str("\nleader changes:\n");
            for e in &events {
                screen.push_str(&format!("  {e}\n"));
            }
            write!(out, "{screen}")?;
        } else {
            // Line mode (not a terminal): the table once, then one line per
            // leader change.
            if !table_printed {
                write!(out, "{}", output::endpoint_status(&rows, format))?;
                table_printed = true;
            }
            if let Some(e) = event {
                writeln!(out, "{} {e}", clock())?;
            }
        }
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_a_re_election() {
        let mut t = LeaderTracker::default();
        let t0 = Instant::now();
        assert_eq!(t.observe(Some((1, 2)), t0).unwrap(), "leader is 1 (term 2)");
        assert_eq!(t.observe(Some((1, 2)), t0), None);
        assert!(t
            .observe(None, t0 + Duration::from_millis(100))
            .unwrap()
            .contains("leader 1 lost"));
        assert_eq!(t.observe(None, t0 + Duration::from_millis(300)), None);
        let line = t
            .observe(Some((3, 3)), t0 + Duration::from_millis(1600))
            .unwrap();
        assert_eq!(
            line,
            "leader changed: 1 -> 3 (term 3) after 1.50s without a leader"
        );
        // A change seen with no leaderless poll in between.
        let line = t
            .observe(Some((2, 4)), t0 + Duration::from_millis(1700))
            .unwrap();
        assert_eq!(line, "leader changed: 3 -> 2 (term 4)");
    }

    #[test]
    fn starts_without_a_leader() {
        let mut t = LeaderTracker::default();
        let t0 = Instant::now();
        assert_eq!(t.observe(None, t0).unwrap(), "the cluster has no leader");
        let line = t
            .observe(Some((2, 1)), t0 + Duration::from_millis(500))
            .unwrap();
        assert_eq!(
            line,
            "leader changed: none -> 2 (term 1) after 0.50s without a leader"
        );
    }
}
