//! The lease workload: holders that grant a lease, attach a key to it,
//! keep it alive for a while through random nodes, then stop (as a holder
//! that dies), and the checks on what happened to their keys:
//!
//! - a lease whose keep-alives were answered never expires early: its key
//!   is never seen gone before the last answered renewal was sent plus the
//!   TTL (less the checkpoint lag, `EARLY_SLACK`);
//! - no key outlives its lease by more than the TTL plus what faults can
//!   hold an election up (`LATE_ALLOWANCE`) after the last renewal was
//!   answered, and `PER_LEADER_CHANGE` more for every leader change since:
//!   each new leader gives every lease at least the minimum TTL from when
//!   it took over, so that a live holder can find it and renew. Only a read
//!   that began after that bound and found the key counts: a cluster that
//!   cannot answer proves nothing either way.

use std::time::Duration;

use raftkv::pb;
use raftkv::pb::kv_client::KvClient;
use raftkv::pb::lease_client::LeaseClient;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::rng::Rng;

/// The holders' lease TTL, in seconds.
const TTL: u64 = 3;
/// How much earlier than the last renewal plus the TTL a lease may be seen
/// expired: a new leader carries on from a checkpoint up to a renewal old.
const EARLY_SLACK: Duration = Duration::from_millis(1200);
/// How much later than the last answered renewal plus the TTL its key may
/// still be there: the nemesis holds a fault up to 4 s, an election takes a
/// second or two, and a new leader gives every lease at least the minimum
/// TTL.
const LATE_ALLOWANCE: Duration = Duration::from_secs(10);
/// What each further leader change may add: a fault held up to 4 s, an
/// election, and the minimum TTL (2 s) from the new leader's start.
const PER_LEADER_CHANGE: Duration = Duration::from_secs(8);
/// Each request's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What a lease holder saw, and what was wrong with it.
#[derive(Debug, Default)]
pub struct LeaseLog {
    pub leases: usize,
    pub renewals: usize,
    pub expiries: usize,
    pub violations: Vec<String>,
}

fn channel(endpoint: &str) -> Channel {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("valid endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(CALL_TIMEOUT)
        .connect_lazy()
}

/// One keep-alive of `id` through `ch`: `Some(ttl)` if answered.
async fn keep_alive_once(ch: Channel, id: i64) -> Option<i64> {
    let call = async {
        let req = tokio_stream::once(pb::LeaseKeepAliveRequest { id });
        let mut responses = LeaseClient::new(ch)
            .lease_keep_alive(req)
            .await
            .ok()?
            .into_inner();
        responses.message().await.ok()?.map(|r| r.ttl)
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .ok()
        .flatten()
}

/// Whether `key` is there, read linearizably through `ch`, if answered.
async fn present(ch: Channel, key: &str) -> Option<bool> {
    let req = pb::RangeRequest {
        key: key.into(),
        ..Default::default()
    };
    let mut client = KvClient::new(ch);
    let resp = tokio::time::timeout(CALL_TIMEOUT, client.range(req))
        .await
        .ok()?
        .ok()?;
    Some(!resp.into_inner().kvs.is_empty())
}

/// A lease of `TTL` granted through `ch`, if answered.
async fn grant(ch: Channel) -> Option<i64> {
    let req = pb::LeaseGrantRequest {
        ttl: TTL as i64,
        id: 0,
    };
    let mut client = LeaseClient::new(ch);
    let resp = tokio::time::timeout(CALL_TIMEOUT, client.lease_grant(req)).await;
    Some(resp.ok()?.ok()?.into_inner().id)
}

/// Puts `key` on `lease` through `ch`; whether it was answered OK.
async fn put_leased(ch: Channel, key: &str, lease: i64) -> bool {
    let req = pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"held".to_vec(),
        lease,
        ..Default::default()
    };
    let mut client = KvClient::new(ch);
    matches!(
        tokio::time::timeout(CALL_TIMEOUT, client.put(req)).await,
        Ok(Ok(_))
    )
}

/// Runs lease holder `id` until `stop`, through random nodes of
/// `endpoints`.
pub async fn holder(
    id: usize,
    endpoints: Vec<String>,
    seed: u64,
    leader_changes: watch::Receiver<usize>,
    stop: watch::Receiver<bool>,
) -> LeaseLog {
    let channels: Vec<Channel> = endpoints.iter().map(|e| channel(e)).collect();
    let mut rng = Rng::new(seed);
    let mut log = LeaseLog::default();
    let mut n = 0;
    while !*stop.borrow() {
        let Some(lease) = grant(channels[rng.below(channels.len())].clone()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // Renewals count from the grant's sending at the latest, and run
        // out no later than the TTL after the last answer.
        let mut last_sent = Instant::now();
        let mut last_answered = Instant::now();
        let mut changes_then = *leader_changes.borrow();
        n += 1;
        let key = format!("lease/{id}/{n}");
        if !put_leased(channels[rng.below(channels.len())].clone(), &key, lease).await {
            continue;
        }
        log.leases += 1;
        // Keep it alive for a while, a third of the TTL apart.
        let hold_until = Instant::now() + Duration::from_millis(rng.range(1000, 7000));
        let mut expired = false;
        while Instant::now() < hold_until && !*stop.borrow() {
            let sent = Instant::now();
            match keep_alive_once(channels[rng.below(channels.len())].clone(), lease).await {
                Some(ttl) if ttl > 0 => {
                    last_sent = sent;
                    last_answered = Instant::now();
                    changes_then = *leader_changes.borrow();
                    log.renewals += 1;
                }
                Some(_) => {
                    let early = last_sent + Duration::from_secs(TTL) - EARLY_SLACK;
                    if Instant::now() < early {
                        log.violations.push(format!(
                            "lease {lease:016x} of {key} expired {:?} before its renewal ran out",
                            early - Instant::now()
                        ));
                    }
                    expired = true;
                    break;
                }
                None => {}
            }
            tokio::time::sleep_until(sent + Duration::from_millis(TTL * 1000 / 3)).await;
        }
        // The holder dies: its key must go, but not early.
        let early = last_sent + Duration::from_secs(TTL) - EARLY_SLACK;
        let late = last_answered + Duration::from_secs(TTL) + LATE_ALLOWANCE;
        // Past this, a cluster that cannot answer is the nemesis's doing,
        // not the lease's; the check gives up on this key.
        let give_up = late + Duration::from_secs(120);
        loop {
            let asked = Instant::now();
            let answer = present(channels[rng.below(channels.len())].clone(), &key).await;
            let changes = leader_changes.borrow().saturating_sub(changes_then);
            let allowed = late + PER_LEADER_CHANGE * changes.saturating_sub(1) as u32;
            match answer {
                Some(false) => {
                    // Seen gone by now, so it expired before now.
                    let seen = Instant::now();
                    if seen < early && !expired {
                        log.violations.push(format!(
                            "{key} was gone {:?} before its lease's renewal ran out",
                            early - seen
                        ));
                    }
                    log.expiries += 1;
                    break;
                }
                Some(true) if asked > allowed => {
                    log.violations.push(format!(
                        "{key} outlived its lease {lease:016x} by {:?} more than allowed \
                         ({LATE_ALLOWANCE:?}, {changes} leader changes since its last renewal)",
                        asked - allowed
                    ));
                    break;
                }
                _ if asked > give_up => break,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    log
}
