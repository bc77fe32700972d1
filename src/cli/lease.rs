//! `kvctl lease`, `kvctl lock` and `kvctl elect`, printed like etcdctl's.
//!
//! `lock` and `elect` hold a lease of their own, kept alive in the
//! background, and use etcd's lock and election services: `lock NAME
//! COMMAND...` runs the command while it holds the lock (as etcdctl does,
//! with `ETCD_LOCK_KEY` and `ETCD_LOCK_REV` set), `elect NAME PROPOSAL`
//! campaigns and leads until Ctrl-C, `elect --listen NAME` prints each
//! leader.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::args::{parse_lease_id, ElectArgs, Format, LeaseCommand, LockArgs};
use crate::client::Client;
use crate::pb;
use crate::pb::lease_client::LeaseClient;
use crate::pb::v3electionpb::election_client::ElectionClient;
use crate::pb::v3lockpb::lock_client::LockClient;

/// etcdctl's flattened JSON for lease replies: the header's fields, then
/// the reply's.
fn flat_json(header: &Option<pb::ResponseHeader>, rest: serde_json::Value) -> String {
    let h = header.unwrap_or_default();
    let mut v = json!({
        "cluster_id": h.cluster_id,
        "member_id": h.member_id,
        "revision": h.revision,
        "raft_term": h.raft_term,
    });
    if let (Some(m), Some(r)) = (v.as_object_mut(), rest.as_object()) {
        m.extend(r.clone());
    }
    v.to_string() + "\n"
}

/// Runs `kvctl lease ...`; returns what to print. Keep-alive prints as it
/// goes.
pub async fn lease(
    client: &mut Client,
    cmd: &LeaseCommand,
    format: Format,
) -> anyhow::Result<String> {
    let json = format == Format::Json;
    Ok(match cmd {
        LeaseCommand::Grant { ttl } => {
            let resp = client
                .lease_grant(pb::LeaseGrantRequest { ttl: *ttl, id: 0 })
                .await?;
            if json {
                flat_json(&resp.header, json!({"ID": resp.id, "TTL": resp.ttl}))
            } else {
                format!("lease {:016x} granted with TTL({}s)\n", resp.id, resp.ttl)
            }
        }
        LeaseCommand::Revoke { id } => {
            let id = parse_lease_id(id).map_err(anyhow::Error::msg)?;
            let resp = client.lease_revoke(pb::LeaseRevokeRequest { id }).await?;
            if json {
                flat_json(&resp.header, json!({}))
            } else {
                format!("lease {id:016x} revoked\n")
            }
        }
        LeaseCommand::Timetolive { id, keys } => {
            let id = parse_lease_id(id).map_err(anyhow::Error::msg)?;
            let req = pb::LeaseTimeToLiveRequest { id, keys: *keys };
            let resp = client.lease_time_to_live(req).await?;
            if json {
                let keys: Vec<String> = resp
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                flat_json(
                    &resp.header,
                    json!({"ID": resp.id, "TTL": resp.ttl, "granted-ttl": resp.granted_ttl, "keys": keys}),
                )
            } else if resp.ttl == -1 {
                format!("lease {id:016x} already expired\n")
            } else {
                let mut out = format!(
                    "lease {id:016x} granted with TTL({}s), remaining({}s)",
                    resp.granted_ttl, resp.ttl
                );
                if *keys {
                    let keys: Vec<String> = resp
                        .keys
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    out += &format!(", attached keys([{}])", keys.join(" "));
                }
                out + "\n"
            }
        }
        LeaseCommand::List => {
            let resp = client.lease_leases().await?;
            if json {
                let ids: Vec<serde_json::Value> =
                    resp.leases.iter().map(|l| json!({"ID": l.id})).collect();
                flat_json(&resp.header, json!({"leases": ids}))
            } else {
                let mut out = format!("found {} leases\n", resp.leases.len());
                for l in &resp.leases {
                    out += &format!("{:016x}\n", l.id);
                }
                out
            }
        }
        LeaseCommand::KeepAlive { id, once } => {
            let id = parse_lease_id(id).map_err(anyhow::Error::msg)?;
            let channel = client.any_channel().await?;
            keep_alive_printing(channel, id, *once, json).await?;
            String::new()
        }
    })
}

fn keep_alive_line(resp: &pb::LeaseKeepAliveResponse, json: bool) -> String {
    if json {
        flat_json(&resp.header, json!({"ID": resp.id, "TTL": resp.ttl}))
    } else {
        format!("lease {:016x} keepalived with TTL({})\n", resp.id, resp.ttl)
    }
}

/// Keeps lease `id` alive on `channel`, a third of its TTL apart, printing
/// each renewal, until it expires (or once).
async fn keep_alive_printing(
    channel: crate::client::Conn,
    id: i64,
    once: bool,
    json: bool,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::LeaseKeepAliveRequest { id }).await?;
    let mut responses = LeaseClient::new(channel)
        .lease_keep_alive(ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        let resp = tokio::select! {
            m = responses.message() => m?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(resp) = resp else {
            return Ok(());
        };
        if resp.ttl <= 0 {
            if once {
                anyhow::bail!("etcdserver: requested lease not found");
            }
            if !json {
                println!("lease {id:016x} expired or revoked.");
            }
            return Ok(());
        }
        print!("{}", keep_alive_line(&resp, json));
        if once {
            return Ok(());
        }
        let wait = Duration::from_millis((resp.ttl.max(1) as u64 * 1000) / 3);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        tx.send(pb::LeaseKeepAliveRequest { id }).await?;
    }
}

/// A lease of `ttl` seconds kept alive in the background for as long as
/// the returned handle lives.
struct Session {
    id: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn start(client: &mut Client, ttl: i64) -> anyhow::Result<Session> {
        let grant = client
            .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
            .await?;
        let (id, ttl) = (grant.id, grant.ttl);
        let channel = client.any_channel().await?;
        let keeper = tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(1);
            let Ok(responses) = LeaseClient::new(channel)
                .lease_keep_alive(ReceiverStream::new(rx))
                .await
            else {
                return;
            };
            let mut responses = responses.into_inner();
            loop {
                if tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                    return;
                }
                match responses.message().await {
                    Ok(Some(r)) if r.ttl > 0 => {}
                    _ => return,
                }
                tokio::time::sleep(Duration::from_millis(ttl.max(1) as u64 * 1000 / 3)).await;
            }
        });
        Ok(Session { id, keeper })
    }

    async fn end(self, client: &mut Client) {
        self.keeper.abort();
        let _ = client
            .lease_revoke(pb::LeaseRevokeRequest { id: self.id })
            .await;
    }
}

/// Runs `kvctl lock`; returns the exit code to end with.
pub async fn lock(client: &mut Client, a: &LockArgs) -> anyhow::Result<u8> {
    let session = Session::start(client, a.ttl).await?;
    let mut locks = LockClient::new(client.any_channel().await?);
    let req = pb::v3lockpb::LockRequest {
        name: a.name.clone().into_bytes(),
        lease: session.id,
    };
    let locked = tokio::select! {
        r = locks.lock(req) => r?.into_inner(),
        _ = tokio::signal::ctrl_c() => {
            session.end(client).await;
            return Ok(0);
        }
    };
    let key = String::from_utf8_lossy(&locked.key).into_owned();
    let code = if a.command.is_empty() {
        println!("{key}");
        let _ = tokio::signal::ctrl_c().await;
        0
    } else {
        let rev = locked.header.map_or(0, |h| h.revision);
        let status = tokio::process::Command::new(&a.command[0])
            .args(&a.command[1..])
            .env("ETCD_LOCK_KEY", &key)
            .env("ETCD_LOCK_REV", rev.to_string())
            .status()
            .await
            .with_context(|| format!("running {}", a.command[0]))?;
        status.code().map_or(1, |c| c as u8)
    };
    let _ = client
        .delete_range(pb::DeleteRangeRequest {
            key: locked.key,
            ..Default::default()
        })
        .await;
    session.end(client).await;
    Ok(code)
}

/// Runs `kvctl elect`.
pub async fn elect(client: &mut Client, a: &ElectArgs) -> anyhow::Result<()> {
    let channel = client.any_channel().await?;
    let mut election = ElectionClient::new(channel);
    let print = |kv: &pb::KeyValue| {
        println!(
            "{}\n{}",
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value)
        )
    };
    if a.listen {
        let req = pb::v3electionpb::LeaderRequest {
            name: a.name.clone().into_bytes(),
        };
        let mut leaders = election.observe(req).await?.into_inner();
        loop {
            let message = tokio::select! {
                m = leaders.message() => m?,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match message.and_then(|m| m.kv) {
                Some(kv) => print(&kv),
                None => return Ok(()),
            }
        }
    }
    let proposal = a
        .proposal
        .clone()
        .context("a PROPOSAL is needed to campaign (or --listen)")?;
    let session = Session::start(client, a.ttl).await?;
    let req = pb::v3electionpb::CampaignRequest {
        name: a.name.clone().into_bytes(),
        lease: session.id,
        value: proposal.clone().into_bytes(),
    };
    let won = tokio::select! {
        r = election.campaign(req) => r?.into_inner(),
        _ = tokio::signal::ctrl_c() => {
            session.end(client).await;
            return Ok(());
        }
    };
    let leader = won.leader.context("no leader key in the answer")?;
    print(&pb::KeyValue {
        key: leader.key.clone(),
        value: proposal.into_bytes(),
        ..Default::default()
    });
    let _ = tokio::signal::ctrl_c().await;
    let _ = election
        .resign(pb::v3electionpb::ResignRequest {
            leader: Some(leader),
        })
        .await;
    session.end(client).await;
    Ok(())
}
