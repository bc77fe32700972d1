//! The nemesis: faults on a seeded schedule. It kills nodes (the leader in
//! particular) and restarts them, pauses them past the election timeout,
//! cuts a node off from its peers while it runs, splits the cluster with the
//! old leader in the minority, and restarts the whole cluster at once. It
//! damages a follower's disk as a crash can: the data dir wiped (the member
//! rejoins with `--initial-cluster-state existing`) or its last log record
//! torn. It replaces a follower with a new member (remove, add a learner
//! on a fresh disk, promote). And an intruder floods every peer port with
//! forged messages. Peer
//! traffic goes through a `proxy::Link` per direction of every peer pair, so
//! partitions need no kernel support.

use std::collections::BTreeMap;
use std::time::Duration;

use raftkv::client::{Dial, StatusProbe};
use tokio::sync::watch;
use tokio::time::Instant;

use super::history::Clock;
use super::proxy::Link;
use super::rng::Rng;
use crate::cluster::TestCluster;

/// The proxied peer network: one link per (from, to) pair of node indexes.
pub struct Net {
    links: BTreeMap<(usize, usize), Link>,
}

impl Net {
    /// Puts a proxy on every peer link of a planned (not yet launched)
    /// cluster and points each node's peer dialing at its proxies.
    pub async fn wire(cluster: &mut TestCluster) -> Net {
        let n = cluster.nodes.len();
        let mut links = BTreeMap::new();
        for from in 0..n {
            let mut overrides = Vec::new();
            for to in (0..n).filter(|&to| to != from) {
                let link = Link::start(cluster.nodes[to].peer_addr.clone()).await;
                overrides.push(format!("{}={}", cluster.nodes[to].peer_addr, link.listen));
                links.insert((from, to), link);
            }
            cluster.nodes[from].extra_args =
                vec!["--peer-dial-override".into(), overrides.join(",")];
        }
        Net { links }
    }

    /// Cuts every link between `a` and `b`, both directions.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        for (&(from, to), link) in &self.links {
            if (a.contains(&from) && b.contains(&to)) || (b.contains(&from) && a.contains(&to)) {
                link.set_cut(true);
            }
        }
    }

    pub fn heal(&self) {
        self.links.values().for_each(|l| l.set_cut(false));
    }

    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.links[&(from, to)].is_cut()
    }
}

/// Index of the node that reports itself leader with the highest term.
pub async fn current_leader(cluster: &TestCluster) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for i in 0..cluster.nodes.len() {
        if let Some(s) = cluster.status(i).await {
            let me = s.header.as_ref().map_or(0, |h| h.member_id);
            if s.leader != 0 && s.leader == me && best.is_none_or(|(term, _)| s.raft_term > term) {
                best = Some((s.raft_term, i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// The faults the nemesis chooses from.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    KillLeader,
    Pause,
    Isolate,
    SplitLeaderMinority,
    RestartAll,
    WipeFollower,
    TornTail,
    Intruder,
    Replace,
}

const FAULTS: [Fault; 10] = [
    Fault::Kill,
    Fault::KillLeader,
    Fault::Pause,
    Fault::Isolate,
    Fault::SplitLeaderMinority,
    Fault::RestartAll,
    Fault::WipeFollower,
    Fault::TornTail,
    Fault::Intruder,
    Fault::Replace,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::Pause => "pause",
            Fault::Isolate => "isolate",
            Fault::SplitLeaderMinority => "split-leader-minority",
            Fault::RestartAll => "restart-all",
            Fault::WipeFollower => "wipe-follower",
            Fault::TornTail => "torn-tail",
            Fault::Intruder => "intruder",
            Fault::Replace => "replace-member",
        }
    }
}

/// Waits (up to 10 s) until every running node but `except` has applied
/// everything the leader had in its log when asked: then `except` holds
/// nothing the others lack, and losing its disk loses no acknowledged write
/// (as an operator replaces one member's disk only in a healthy cluster).
async fn others_caught_up(cluster: &TestCluster, except: usize) -> bool {
    let Some(leader) = current_leader(cluster).await else {
        return false;
    };
    let Some(target) = cluster.status(leader).await.map(|s| s.raft_index) else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut all = true;
        for i in (0..cluster.nodes.len()).filter(|&i| i != except) {
            if cluster
                .status(i)
                .await
                .is_none_or(|s| s.raft_applied_index < target)
            {
                all = false;
            }
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs faults and remembers what it did.
pub struct Nemesis {
    rng: Rng,
    /// The faults it picks from.
    faults: Vec<Fault>,
    clock: Clock,
    /// One line per action, with its time.
    pub log: Vec<String>,
    /// Faults injected, by kind.
    pub counts: BTreeMap<&'static str, usize>,
    /// Forged messages the intruder sent.
    pub forged: usize,
    /// Forged messages a member accepted: each one fails the campaign.
    pub violations: Vec<String>,
}

impl Nemesis {
    /// A nemesis picking from the faults named in `only` (all if empty).
    pub fn new(seed: u64, clock: Clock, only: &[String]) -> Self {
        for name in only {
            assert!(
                FAULTS.iter().any(|f| f.name() == name),
                "unknown fault {name:?}; faults: {:?}",
                FAULTS.map(Fault::name)
            );
        }
        let faults = FAULTS
            .into_iter()
            .filter(|f| only.is_empty() || only.iter().any(|n| n == f.name()))
            .collect();
        Nemesis {
            rng: Rng::new(seed),
            faults,
            clock,
            log: Vec::new(),
            counts: BTreeMap::new(),
            forged: 0,
            violations: Vec::new(),
        }
    }

    fn note(&mut self, what: String) {
        let line = format!("[{:>9.3}s] {what}", self.clock.now() as f64 / 1e9);
        eprintln!("nemesis {line}");
        self.log.push(line);
    }

    /// Injects faults for `duration`: a calm spell, a fault held for a while,
    /// healing, and again. Always leaves everything healed.
    pub async fn run(&mut self, cluster: &mut TestCluster, net: &Net, duration: Duration) {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            let calm = Duration::from_millis(self.rng.range(800, 2500));
            tokio::time::sleep_until((Instant::now() + calm).min(deadline)).await;
            if Instant::now() >= deadline {
                break;
            }
            let fault = self.faults[self.rng.below(self.faults.len())];
            // Longer than the election timeout, so pauses and partitions
            // cost the leader its lease.
            let hold = Duration::from_millis(self.rng.range(1200, 4000));
            *self.counts.entry(fault.name()).or_default() += 1;
            self.inject(fault, hold, cluster, net).await;
        }
    }

    async fn inject(&mut self, fault: Fault, hold: Duration, cluster: &mut TestCluster, net: &Net) {
        let n = cluster.nodes.len();
        let random = self.rng.below(n);
        let leader = match fault {
            Fault::KillLeader
            | Fault::SplitLeaderMinority
            | Fault::WipeFollower
            | Fault::TornTail
            | Fault::Replace => current_leader(cluster).await,
            _ => None,
        };
        match fault {
            Fault::Kill | Fault::KillLeader => {
                let i = leader.unwrap_or(random);
                let role = if leader == Some(i) {
                    " (the leader)"
                } else {
                    ""
                };
                self.note(format!("kill -9 node {}{role}", i + 1));
                cluster.kill(i);
                tokio::time::sleep(hold).await;
                self.note(format!("restart node {}", i + 1));
                cluster.restart(i);
            }
            Fault::Pause => {
                self.note(format!("pause (SIGSTOP) node {} for {hold:?}", random + 1));
                cluster.pause(random);
                tokio::time::sleep(hold).await;
                self.note(format!("resume (SIGCONT) node {}", random + 1));
                cluster.resume(random);
            }
            Fault::Isolate => {
                let others: Vec<usize> = (0..n).filter(|&j| j != random).collect();
                self.note(format!(
                    "isolate node {} from its peers for {hold:?}",
                    random + 1
                ));
                net.partition(&[random], &others);
                tokio::time::sleep(hold).await;
                self.note("heal the network".into());
                net.heal();
            }
            Fault::SplitLeaderMinority => {
                let old = leader.unwrap_or(random);
                let mut minority = vec![old];
                while minority.len() < (n - 1) / 2 {
                    let j = self.rng.below(n);
                    if !minority.contains(&j) {
                        minority.push(j);
                    }
                }
                let majority: Vec<usize> = (0..n).filter(|j| !minority.contains(j)).collect();
                let show = |g: &[usize]| {
                    g.iter()
                        .map(|i| (i + 1).to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                self.note(format!(
                    "split {{{}}} (old leader {}) | {{{}}} for {hold:?}",
                    show(&minority),
                    old + 1,
                    show(&majority)
                ));
                net.partition(&minority, &majority);
                tokio::time::sleep(hold).await;
                self.note("heal the network".into());
                net.heal();
            }
            Fault::RestartAll => {
                self.note("kill -9 every node, then restart them all".into());
                for i in 0..n {
                    cluster.kill(i);
                }
                for i in 0..n {
                    cluster.restart(i);
                }
            }
            Fault::WipeFollower | Fault::TornTail => {
                let Some(leader) = leader else {
                    self.note(format!("{}: skipped, no leader", fault.name()));
                    return;
                };
                let f = (leader + 1 + self.rng.below(n - 1)) % n;
                if !others_caught_up(cluster, f).await {
                    self.note(format!("{}: skipped, the others lag", fault.name()));
                    return;
                }
                cluster.kill(f);
                if matches!(fault, Fault::WipeFollower) {
                    self.note(format!(
                        "kill -9 node {}, wipe its data dir, rejoin with --initial-cluster-state existing after {hold:?}",
                        f + 1
                    ));
                    cluster.nodes[f].wipe_data_dir();
                    let existing = ["--initial-cluster-state", "existing"].map(String::from);
                    if !cluster.nodes[f].extra_args.ends_with(&existing) {
                        cluster.nodes[f].extra_args.extend(existing);
                    }
                } else {
                    let cut = self.rng.range(1, 9);
                    let segment = cluster.nodes[f].last_wal_segment();
                    let len = segment.as_ref().and_then(|s| std::fs::metadata(s).ok());
                    match (segment, len.map(|m| m.len())) {
                        (Some(segment), Some(len)) if len > 0 => {
                            self.note(format!(
                                "kill -9 node {}, cut {cut} bytes off its last log record, restart after {hold:?}",
                                f + 1
                            ));
                            let file = std::fs::OpenOptions::new().write(true).open(&segment);
                            file.and_then(|f| f.set_len(len.saturating_sub(cut)))
                                .expect("cut the log");
                        }
                        _ => self.note(format!(
                            "kill -9 node {} (its log is empty: nothing to cut), restart after {hold:?}",
                            f + 1
                        )),
                    }
                }
                tokio::time::sleep(hold).await;
                self.note(format!("restart node {}", f + 1));
                cluster.restart(f);
            }
            Fault::Replace => {
                let Some(leader) = leader else {
                    self.note("replace-member: skipped, no leader".into());
                    return;
                };
                let f = (leader + 1 + self.rng.below(n - 1)) % n;
                if let Err(e) = self.replace(cluster, f).await {
                    self.note(format!("replace-member: {e}"));
                    self.violations
                        .push(format!("replacing node {} failed: {e}", f + 1));
                }
            }
            Fault::Intruder => {
                let addrs = cluster.nodes.iter().map(|n| n.peer_addr.clone()).collect();
                self.note(format!("an intruder floods every peer port for {hold:?}"));
                let flood =
                    super::intruder::flood(addrs, cluster.nodes[0].id, Instant::now() + hold).await;
                self.note(format!(
                    "the intruder sent {} forged messages; {} accepted",
                    flood.sent,
                    flood.accepted.len()
                ));
                self.forged += flood.sent;
                self.violations.extend(
                    flood
                        .accepted
                        .into_iter()
                        .map(|what| format!("a forged message was accepted: {what}")),
                );
            }
        }
    }

    /// Replaces the member in slot `f` (a follower) as an operator would,
    /// through the API while clients write: `member remove`, its process
    /// stopped and its disk wiped, `member add --learner` at the same peer
    /// address (so the same proxies carry its traffic), the new member
    /// started with `--initial-cluster-state existing`, and promoted once
    /// it caught up. Each step retries what a client may retry until a
    /// deadline; a step that cannot be done in a healthy cluster is an
    /// error.
    async fn replace(&mut self, cluster: &mut TestCluster, f: usize) -> Result<(), String> {
        use raftkv::client::{Client, ClientError};
        use raftkv::pb;
        const STEP: Duration = Duration::from_secs(30);
        let endpoints: Vec<String> = (0..cluster.nodes.len())
            .filter(|&i| i != f)
            .map(|i| cluster.nodes[i].client_addr.clone())
            .collect();
        let dial = Dial {
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_secs(5),
            tls: None,
            credentials: None,
        };
        let mut client = Client::new(endpoints, &dial).map_err(|e| e.to_string())?;
        let message = |e: &ClientError| e.to_string();

        let old = cluster.nodes[f].id;
        self.note(format!("replace node {}: member remove {old:x}", f + 1));
        let deadline = Instant::now() + STEP;
        loop {
            match client.member_remove(old).await {
                Ok(_) => break,
                // An earlier try went through though its answer was lost.
                Err(e) if message(&e).contains("member not found") => break,
                Err(e) if Instant::now() >= deadline => return Err(format!("remove: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        cluster.kill(f);
        cluster.nodes[f].wipe_data_dir();

        let peer_url = format!("http://{}", cluster.nodes[f].peer_addr);
        let deadline = Instant::now() + STEP;
        let (new, members) = loop {
            let add = pb::MemberAddRequest {
                peer_ur_ls: vec![peer_url.clone()],
                is_learner: true,
            };
            match client.member_add(add).await {
                Ok(resp) => {
                    let id = resp.member.map(|m| m.id).ok_or("add: no member")?;
                    break (id, resp.members);
                }
                Err(e) if Instant::now() >= deadline => return Err(format!("add: {e}")),
                Err(e) if message(&e).contains("Peer URLs already exists") => {
                    // An earlier try went through: find what it added.
                    let list = client.member_list().await.map_err(|e| e.to_string())?;
                    if let Some(m) = list
                        .members
                        .iter()
                        .find(|m| m.peer_ur_ls.contains(&peer_url))
                    {
                        break (m.id, list.members.clone());
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        };
        let initial_cluster = members
            .iter()
            .filter_map(|m| {
                let url = m.peer_ur_ls.first()?;
                Some(format!("{}={}", m.id, url.trim_start_matches("http://")))
            })
            .collect::<Vec<_>>()
            .join(",");
        self.note(format!(
            "replace node {}: added learner {new:x}, started on an empty data dir",
            f + 1
        ));
        let node = &mut cluster.nodes[f];
        node.id = new;
        node.initial_cluster = Some(initial_cluster);
        let existing = ["--initial-cluster-state", "existing"].map(String::from);
        if !node.extra_args.ends_with(&existing) {
            node.extra_args.extend(existing);
        }
        cluster.restart(f);

        let deadline = Instant::now() + STEP;
        loop {
            match client.member_promote(new).await {
                Ok(_) => break,
                // An earlier try went through though its answer was lost
                // (not the refusal of a learner that is not in sync yet).
                Err(e) if message(&e).ends_with("can only promote a learner member") => break,
                Err(e) if Instant::now() >= deadline => return Err(format!("promote: {e}")),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.note(format!("replace node {}: promoted {new:x}", f + 1));
        Ok(())
    }

    /// Undoes anything still in effect: heals the network, resumes and
    /// restarts nodes.
    pub fn heal_all(&mut self, cluster: &mut TestCluster, net: &Net) {
        net.heal();
        for i in 0..cluster.nodes.len() {
            if cluster.nodes[i].is_running() {
                cluster.resume(i);
            } else {
                cluster.restart(i);
            }
        }
        self.note("healed everything".into());
    }
}

/// Polls every node's status until `stop` and counts how often a new leader
/// appears, publishing the count on `changes_seen` as it goes; returns the
/// count and the changes seen.
pub async fn watch_leaders(
    endpoints: Vec<String>,
    clock: Clock,
    changes_seen: watch::Sender<usize>,
    mut stop: watch::Receiver<bool>,
) -> (usize, Vec<String>) {
    let dial = Dial {
        connect_timeout: Duration::from_millis(300),
        command_timeout: Duration::from_millis(300),
        tls: None,
        credentials: None,
    };
    let mut probes: Vec<StatusProbe> = endpoints
        .iter()
        .map(|e| StatusProbe::new(e, &dial).expect("valid endpoint"))
        .collect();
    // The last leader seen and its term: a new id, or the same id in a
    // later term (it lost leadership and won it back), is a change.
    let mut last: Option<(u64, u64)> = None;
    let mut changes = 0;
    let mut log = Vec::new();
    loop {
        let polls = futures::future::join_all(probes.iter_mut().map(|p| p.status())).await;
        let leader = polls
            .iter()
            .flatten()
            .filter(|s| s.leader != 0 && s.header.as_ref().is_some_and(|h| h.member_id == s.leader))
            .max_by_key(|s| s.raft_term)
            .map(|s| (s.leader, s.raft_term));
        if let Some((id, term)) = leader {
            if last.is_none_or(|(last_id, last_term)| id != last_id || term > last_term) {
                if last.is_some() {
                    changes += 1;
                    changes_seen.send_replace(changes);
                }
                log.push(format!(
                    "[{:>9.3}s] leader {id} (term {term})",
                    clock.now() as f64 / 1e9
                ));
                last = Some((id, term));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return (changes, log),
        }
    }
}
