//! A process outside the cluster that speaks the peer protocol: forged Raft
//! messages and forwarded writes, each of which must change nothing (no
//! data, no term, no leader) while the cluster keeps serving.

use std::time::Duration;

use openraft::{CommittedLeaderId, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote};
use raftkv::codec;
use raftkv::node::{ForwardRequest, ForwardResults, PeerError};
use raftkv::pb;
use raftkv::pb::cluster_client::ClusterClient;
use raftkv::pb::peer::peer_client::PeerClient;
use raftkv::pb::peer::Payload;
use raftkv::raft::typ::{
    AppendEntriesRequest, Entry, InstallSnapshotRequest, RaftError, VoteRequest, VoteResponse,
};
use raftkv::store::{Command, MemberInfo};
use tonic::transport::Channel;
use tonic::Code;

use crate::cluster::{scrape, Options, TestCluster};
use crate::requests::{all_keys, get_value, put_req};

/// A member id no cluster here has.
pub(crate) const STRANGER: u64 = 99;

/// An attacker's connection to node `i`'s peer port.
pub(crate) async fn peer(cluster: &TestCluster, i: usize) -> PeerClient<Channel> {
    peer_at(&cluster.nodes[i].peer_addr)
        .await
        .expect("connect to a peer port")
}

/// An attacker's connection to the peer port at `addr`.
pub(crate) async fn peer_at(addr: &str) -> Result<PeerClient<Channel>, tonic::transport::Error> {
    Ok(PeerClient::connect(format!("http://{addr}"))
        .await?
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX))
}

pub(crate) fn payload<T: serde::Serialize>(value: &T) -> Payload {
    Payload {
        data: codec::encode(value).expect("encode"),
    }
}

pub(crate) fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

pub(crate) fn heartbeat(term: u64, leader: u64) -> AppendEntriesRequest {
    AppendEntriesRequest {
        vote: Vote::new_committed(term, leader),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    }
}

pub(crate) fn put_entry(term: u64, leader: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, leader, index),
        payload: EntryPayload::Normal(Command::Put {
            lease: Some(0),
            key: b"forged".to_vec(),
            value: Some(b"by an outsider".to_vec()),
            must_exist: false,
            prev_kv: false,
        }),
    }
}

/// Expects a refusal with one of `codes`.
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>, codes: &[Code]) {
    match result {
        Ok(reply) => panic!("{what}: accepted ({reply:?})"),
        Err(status) => assert!(
            codes.contains(&status.code()),
            "{what}: {:?} {}",
            status.code(),
            status.message()
        ),
    }
}

/// (leader, term) as every running node reports it; all must agree.
async fn leader_and_term(cluster: &TestCluster) -> (u64, u64) {
    let mut seen = Vec::new();
    for i in 0..cluster.nodes.len() {
        let s = cluster.status(i).await.expect("every node answers Status");
        seen.push((s.leader, s.raft_term));
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "nodes disagree: {seen:?}"
    );
    seen[0]
}

/// Every key and value, read linearizably through node `i`.
async fn everything(cluster: &TestCluster, i: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut kv = cluster.kv(i).await;
    let resp = kv.range(all_keys()).await.expect("read all").into_inner();
    resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn calm() -> Options {
    // Slow elections, so nothing but an attack could change the term.
    Options {
        heartbeat_ms: 100,
        election_ms: 2000,
        ..Default::default()
    }
}

/// Scenario: with a healthy 3-node cluster holding 20 keys, an outsider
/// sends every node:
/// - an AppendEntries with term 2^64-1, as a member and as a stranger;
/// - votes for a stranger (refused), and for a member at the next term
///   (not granted: the leader leads);
/// - heartbeats at the next term claiming a member leads, 20 a second for
///   two seconds;
/// - entries from a stranger at the current term;
/// - a snapshot chunk at offset 2^40;
/// - a 64 MiB message.
///
/// Each is refused; afterwards the leader, the term and every key are as
/// before, no forged key exists, every node is up, the refusals are
/// counted in `/metrics`, and a new write commits.
#[tokio::test(flavor = "multi_thread")]
async fn forged_raft_messages_change_nothing() {
    let mut cluster = TestCluster::start_with(3, calm()).await;
    let leader = cluster.wait_leader().await;
    let mut kv = cluster.kv(0).await;
    for i in 0..20 {
        kv.put(put_req(&format!("k{i:02}"), &format!("v{i}")))
            .await
            .unwrap();
    }
    let before = everything(&cluster, 0).await;
    let (_, term) = leader_and_term(&cluster).await;
    let follower = cluster.nodes[cluster.follower_of(leader)].id;
    let invalid = [Code::InvalidArgument];
    let stranger = [Code::PermissionDenied];
    let lease = [Code::FailedPrecondition];

    for i in 0..3 {
        let me = cluster.nodes[i].id;
        // Someone this node follows or leads with: a member, not itself.
        let member = if me == leader { follower } else { leader };
        let mut p = peer(&cluster, i).await;

        for claimed in [member, STRANGER] {
            let req = heartbeat(u64::MAX, claimed);
            refused(
                "term 2^64-1",
                p.append_entries(payload(&req)).await,
                if claimed == STRANGER {
                    &stranger
                } else {
                    &invalid
                },
            );
        }
        let vote = |candidate| VoteRequest {
            vote: Vote::new(term + 1, candidate),
            last_log_id: Some(log_id(term, leader, 1_000_000)),
        };
        refused(
            "a stranger's vote",
            p.vote(payload(&vote(STRANGER))).await,
            &stranger,
        );
        let reply = p.vote(payload(&vote(member))).await.expect("a vote reply");
        let reply: Result<VoteResponse, RaftError> =
            codec::decode(&reply.into_inner().data).unwrap();
        let reply = reply.expect("a vote response");
        assert!(
            !reply.vote_granted && reply.vote.leader_id.term == term,
            "a member's vote while the leader leads: {reply:?}"
        );
        let entries = AppendEntriesRequest {
            entries: vec![put_entry(term, STRANGER, 0)],
            ..heartbeat(term, STRANGER)
        };
        refused(
            "entries from a stranger",
            p.append_entries(payload(&entries)).await,
            &stranger,
        );
        let chunk = InstallSnapshotRequest {
            vote: Vote::new_committed(term, member),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(term, member, 5)),
                last_membership: StoredMembership::default(),
                snapshot_id: "forged".into(),
            },
            offset: 1 << 40,
            data: vec![1; 16],
            done: false,
        };
        let codes = if me == leader { &lease } else { &invalid };
        refused(
            "a snapshot chunk far past its start",
            p.install_snapshot(payload(&chunk)).await,
            codes,
        );
        let huge = Payload {
            data: vec![0; 64 << 20],
        };
        refused(
            "a 64 MiB message",
            p.append_entries(huge).await,
            &[Code::OutOfRange, Code::ResourceExhausted],
        );
    }

    // Forged heartbeats: a member claims to lead the next term.
    let mut peers = Vec::new();
    for i in 0..3 {
        peers.push(peer(&cluster, i).await);
    }
    for _ in 0..40 {
        for (i, p) in peers.iter_mut().enumerate() {
            let me = cluster.nodes[i].id;
            let claimed = if me == follower { leader } else { follower };
            refused(
                "a forged heartbeat",
                p.append_entries(payload(&heartbeat(term + 1, claimed)))
                    .await,
                &lease,
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(leader_and_term(&cluster).await, (leader, term));
    for i in 0..3 {
        assert!(cluster.is_alive(i), "node {} exited", i + 1);
        assert_eq!(everything(&cluster, i).await, before, "node {}", i + 1);
        let refusals: f64 = scrape(&cluster, i)
            .iter()
            .filter(|(k, _)| k.starts_with("raftkv_peer_messages_refused_total"))
            .map(|(_, v)| v)
            .sum();
        assert!(refusals >= 40.0, "node {}: {refusals} refusals", i + 1);
    }
    let mut kv = cluster.kv(1).await;
    kv.put(put_req("after", "attacks")).await.unwrap();
    assert_eq!(
        get_value(&mut kv, "after").await.as_deref(),
        Some("attacks")
    );
}

/// `MemberList` as node `i` answers it.
async fn members(cluster: &TestCluster, i: usize) -> Vec<pb::Member> {
    ClusterClient::new(cluster.channel(i).await)
        .member_list(pb::MemberListRequest::default())
        .await
        .expect("member list")
        .into_inner()
        .members
}

pub(crate) fn forward(from: u64, cmds: Vec<Command>) -> Payload {
    payload(&ForwardRequest { from, cmds })
}

pub(crate) fn put(key: &[u8], value: &[u8]) -> Command {
    Command::Put {
        lease: Some(0),
        key: key.to_vec(),
        value: Some(value.to_vec()),
        must_exist: false,
        prev_kv: false,
    }
}

/// A `Forward` of one batch nested `levels` deep, written byte by byte as
/// an attacker would (encoding it through serde would itself recurse).
pub(crate) fn nested_batch(from: u8, levels: usize) -> Payload {
    let mut data = vec![from, 1]; // from, one command
    for _ in 0..levels {
        data.extend_from_slice(&[4, 1]); // Command::Batch of one command
    }
    data.extend_from_slice(&[3, 2]); // Command::Compact { revision: 1 }
    Payload { data }
}

/// Scenario: an outsider calls `Forward` on the leader.
/// - As a stranger: a put, a delete of every key and a compaction are
///   refused as a whole (PERMISSION_DENIED).
/// - As a member: an empty key and a 3 MiB value get the
///   client API's errors; a member announcement for another member and a
///   batch are refused; a batch nested 4,000 deep does not decode.
///
/// Afterwards every key is as before, `MemberList` is unchanged, every node
/// is up and a good write still commits.
#[tokio::test(flavor = "multi_thread")]
async fn forwarded_writes_get_the_client_checks() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let li = cluster.index_of(leader);
    let mut kv = cluster.kv(0).await;
    for i in 0..10 {
        kv.put(put_req(&format!("k{i}"), "v")).await.unwrap();
    }
    let before = everything(&cluster, li).await;
    let members_before = members(&cluster, li).await;
    let mut p = peer(&cluster, li).await;

    let whole_cluster = Command::DeleteRange {
        key: vec![0],
        range_end: vec![0],
        prev_kv: false,
    };
    for cmds in [
        vec![put(b"k0", b"stranger")],
        vec![whole_cluster],
        vec![Command::Compact { revision: 5 }],
    ] {
        refused(
            "a stranger's forwarded write",
            p.forward(forward(STRANGER, cmds)).await,
            &[Code::PermissionDenied],
        );
    }

    let member = cluster.nodes[cluster.follower_of(leader)].id;
    let other = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != member)
        .unwrap();
    let cmds = vec![
        put(b"", b"v"),
        put(b"big", &vec![b'x'; 3 << 20]),
        Command::PublishMember {
            id: other,
            info: MemberInfo {
                name: "evil".into(),
                client_urls: vec!["http://evil.example:2379".into()],
            },
        },
        Command::Batch(vec![put(b"batched", b"v")]),
    ];
    let reply = p
        .forward(forward(member, cmds))
        .await
        .expect("per-write results");
    let results: ForwardResults = codec::decode(&reply.into_inner().data).unwrap();
    let messages: Vec<String> = results
        .into_iter()
        .map(|r| match r {
            Err(PeerError::Invalid(msg)) => msg,
            other => panic!("a bad forwarded write was not refused: {other:?}"),
        })
        .collect();
    assert!(messages[0].contains("key is not provided"), "{messages:?}");
    assert!(messages[1].contains("request is too large"), "{messages:?}");
    assert!(messages[2].contains("not a client write"), "{messages:?}");
    assert!(messages[3].contains("not a client write"), "{messages:?}");

    refused(
        "a batch nested 4,000 deep",
        p.forward(nested_batch(member as u8, 4000)).await,
        &[Code::InvalidArgument],
    );

    for i in 0..3 {
        assert!(cluster.is_alive(i), "node {} exited", i + 1);
    }
    assert_eq!(everything(&cluster, li).await, before);
    assert_eq!(members(&cluster, li).await, members_before);
    let mut kv = cluster.kv(cluster.follower_of(leader)).await;
    kv.put(put_req("after", "forwarding")).await.unwrap();
    assert_eq!(
        get_value(&mut kv, "after").await.as_deref(),
        Some("forwarding")
    );
}
