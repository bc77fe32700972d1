//! Watchers for a campaign: each watches every key from the first revision,
//! through faults, re-creating its watch on another node from the last
//! revision it saw + 1 whenever its stream breaks or goes quiet. Afterwards
//! `check` holds what each saw against the history: every revision once, in
//! order, with no gap, each event matching the write that made it, and the
//! final state of the events equal to the final reads.

use std::collections::BTreeMap;
use std::time::Duration;

use raftkv::pb;
use raftkv::pb::watch_client::WatchClient;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::history::{Kind, Op, Outcome};

/// One change a watcher saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub key: String,
    pub revision: i64,
    pub delete: bool,
    pub value: String,
}

/// What one watcher saw.
#[derive(Debug, Serialize)]
pub struct WatchLog {
    pub watcher: usize,
    /// Times its watch was re-created.
    pub restarts: usize,
    pub events: Vec<Seen>,
}

/// How long a stream may be silent before the watcher tries another node.
const QUIET: Duration = Duration::from_secs(3);

/// Watches until it has seen `target` (once that is set), re-creating the
/// watch as needed. Gives up 30 s after the target is set.
pub async fn run(
    id: usize,
    endpoints: Vec<String>,
    mut target: watch::Receiver<Option<i64>>,
) -> WatchLog {
    let mut log = WatchLog {
        watcher: id,
        restarts: 0,
        events: Vec::new(),
    };
    let mut next = 1;
    let mut node = id;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let done = |next: i64, target: &watch::Receiver<Option<i64>>| {
            target.borrow().is_some_and(|t| next > t)
        };
        if done(next, &target) || deadline.is_some_and(|d| tokio::time::Instant::now() > d) {
            return log;
        }
        let endpoint = &endpoints[node % endpoints.len()];
        node += 1;
        let Ok(endpoint) = Endpoint::from_shared(format!("http://{endpoint}")) else {
            return log;
        };
        let channel = endpoint
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let (tx, rx) = mpsc::channel(1);
        let create = pb::WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: next,
            ..Default::default()
        };
        let _ = tx
            .send(pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
            })
            .await;
        let opened = tokio::time::timeout(
            QUIET,
            WatchClient::new(channel).watch(ReceiverStream::new(rx)),
        )
        .await;
        let Ok(Ok(stream)) = opened else {
            log.restarts += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        loop {
            if done(next, &target) {
                return log;
            }
            let message = tokio::select! {
                m = tokio::time::timeout(QUIET, stream.message()) => m,
                _ = target.changed() => {
                    deadline.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(30));
                    continue;
                }
            };
            let Ok(Ok(Some(resp))) = message else { break };
            if resp.canceled {
                break;
            }
            for e in resp.events {
                let kv = e.kv.unwrap_or_default();
                next = kv.mod_revision + 1;
                log.events.push(Seen {
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    revision: kv.mod_revision,
                    delete: e.r#type == pb::mvccpb::event::EventType::Delete as i32,
                    value: String::from_utf8_lossy(&kv.value).into_owned(),
                });
            }
        }
        // The stream broke, was canceled or went quiet: try the next node.
        log.restarts += 1;
        drop(tx);
    }
}

/// Checks one watcher's events against the history; `last` is the final
/// revision every node converged to. One line per problem.
pub fn check(log: &WatchLog, history: &[Op], last: i64) -> Vec<String> {
    let mut problems = Vec::new();
    let who = format!("watcher {}", log.watcher);
    // Keys the history knows (others, like the lease holders', are checked
    // by their own workload).
    let known: std::collections::BTreeSet<&str> =
        history.iter().map(|op| op.key.as_str()).collect();
    // Every write of the key-value workers changes one key; a lease's
    // revocation deletes its keys at one revision. So every revision from 2
    // (the first write) to `last` has one event, or several deletes of
    // leased keys.
    let revisions: Vec<i64> = log.events.iter().map(|e| e.revision).collect();
    let shared = |w: &[Seen]| {
        w[0].revision == w[1].revision
            && w.iter()
                .all(|e| e.delete && !known.contains(e.key.as_str()))
    };
    if let Some(w) = log
        .events
        .windows(2)
        .find(|w| w[1].revision < w[0].revision || (w[1].revision == w[0].revision && !shared(w)))
    {
        problems.push(format!(
            "{who}: revision {} came after {} (out of order or twice)",
            w[1].revision, w[0].revision
        ));
    }
    let mut distinct = revisions.clone();
    distinct.dedup();
    let expected: Vec<i64> = (2..=last).collect();
    if distinct != expected {
        let missing: Vec<i64> = expected
            .iter()
            .filter(|r| !revisions.contains(r))
            .take(5)
            .copied()
            .collect();
        problems.push(format!(
            "{who}: saw events at {} revisions for revisions 2..={last}; first missing: {missing:?}",
            distinct.len()
        ));
    }
    // Each event matches the acknowledged write at its revision, if any,
    // and writes a value some write on that key wrote.
    let mut writes_at: BTreeMap<i64, &Op> = BTreeMap::new();
    let mut written: BTreeMap<(&str, &str), ()> = BTreeMap::new();
    for op in history {
        let acked = op.outcome == Outcome::Ok;
        match op.kind {
            Kind::Put | Kind::Cas if op.outcome != Outcome::Fail => {
                written.insert(
                    (op.key.as_str(), op.value.as_deref().unwrap_or_default()),
                    (),
                );
                if acked && (op.kind == Kind::Put || op.swapped == Some(true)) {
                    writes_at.extend(op.revision.map(|r| (r, op)));
                }
            }
            Kind::Delete if acked && op.deleted == Some(true) => {
                writes_at.extend(op.revision.map(|r| (r, op)));
            }
            _ => {}
        }
    }
    for e in &log.events {
        if let Some(op) = writes_at.get(&e.revision) {
            let matches = op.key == e.key
                && match op.kind {
                    Kind::Delete => e.delete,
                    _ => !e.delete && op.value.as_deref() == Some(e.value.as_str()),
                };
            if !matches {
                problems.push(format!(
                    "{who}: event {e:?} does not match the write at its revision: {}",
                    op.describe()
                ));
            }
        }
        let known_key = known.contains(e.key.as_str());
        if known_key && !e.delete && !written.contains_key(&(e.key.as_str(), e.value.as_str())) {
            problems.push(format!(
                "{who}: event {e:?} has a value no write on that key wrote"
            ));
        }
    }
    // Replaying the events gives the state the final reads saw.
    let mut state: BTreeMap<&str, &str> = BTreeMap::new();
    for e in &log.events {
        if e.delete {
            state.remove(e.key.as_str());
        } else {
            state.insert(&e.key, &e.value);
        }
    }
    let final_worker = history.iter().map(|op| op.worker).max().unwrap_or(0);
    for op in history
        .iter()
        .filter(|op| op.worker == final_worker && op.kind == Kind::Get && op.outcome == Outcome::Ok)
    {
        let read = op.read.clone().flatten();
        if state.get(op.key.as_str()).map(|v| v.to_string()) != read {
            problems.push(format!(
                "{who}: replaying its events gives {}={:?}, the final read gave {read:?}",
                op.key,
                state.get(op.key.as_str())
            ));
        }
    }
    problems.truncate(20);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, kind: Kind, value: Option<&str>, revision: i64) -> Op {
        Op {
            worker: 0,
            node: 0,
            key: key.into(),
            kind,
            value: value.map(String::from),
            read: None,
            mod_revision: None,
            deleted: (kind == Kind::Delete).then_some(true),
            expect: None,
            swapped: None,
            revision: Some(revision),
            invoke_ns: revision as u64,
            complete_ns: revision as u64 + 1,
            outcome: Outcome::Ok,
            error: None,
        }
    }

    fn seen(key: &str, revision: i64, delete: bool, value: &str) -> Seen {
        Seen {
            key: key.into(),
            revision,
            delete,
            value: value.into(),
        }
    }

    fn history() -> Vec<Op> {
        vec![
            op("a", Kind::Put, Some("1"), 2),
            op("b", Kind::Put, Some("2"), 3),
            op("a", Kind::Delete, None, 4),
        ]
    }

    #[test]
    fn a_faithful_watch_passes() {
        let log = WatchLog {
            watcher: 0,
            restarts: 1,
            events: vec![
                seen("a", 2, false, "1"),
                seen("b", 3, false, "2"),
                seen("a", 4, true, ""),
            ],
        };
        assert_eq!(check(&log, &history(), 4), Vec::<String>::new());
    }

    #[test]
    fn a_revocation_deletes_leased_keys_at_one_revision() {
        let log = WatchLog {
            watcher: 0,
            restarts: 0,
            events: vec![
                seen("a", 2, false, "1"),
                seen("lease/0/1", 3, false, "held"),
                seen("lease/0/2", 4, false, "held"),
                seen("lease/0/1", 5, true, ""),
                seen("lease/0/2", 5, true, ""),
            ],
        };
        assert_eq!(check(&log, &history()[..1], 5), Vec::<String>::new());
        // A key the workers write is never deleted alongside another.
        let mut shared = log;
        shared.events[4] = seen("a", 5, true, "");
        assert!(check(&shared, &history()[..1], 5)
            .iter()
            .any(|p| p.contains("out of order or twice")));
    }

    #[test]
    fn gaps_duplicates_and_wrong_events_are_caught() {
        let gap = WatchLog {
            watcher: 0,
            restarts: 0,
            events: vec![seen("a", 2, false, "1"), seen("a", 4, true, "")],
        };
        assert!(check(&gap, &history(), 4)
            .iter()
            .any(|p| p.contains("first missing: [3]")));
        let twice = WatchLog {
            watcher: 0,
            restarts: 0,
            events: vec![
                seen("a", 2, false, "1"),
                seen("a", 2, false, "1"),
                seen("b", 3, false, "2"),
            ],
        };
        assert!(check(&twice, &history(), 3)
            .iter()
            .any(|p| p.contains("out of order or twice")));
        let wrong = WatchLog {
            watcher: 0,
            restarts: 0,
            events: vec![
                seen("a", 2, false, "1"),
                seen("b", 3, false, "9"),
                seen("a", 4, true, ""),
            ],
        };
        let problems = check(&wrong, &history(), 4);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("does not match the write")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("no write on that key wrote")),
            "{problems:?}"
        );
    }
}
