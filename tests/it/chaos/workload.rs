//! The clients: workers doing random single-key puts, linearizable gets and
//! deletes over a small key set (so keys collide), each through a random
//! node, recording every operation.

use std::time::Duration;

use raftkv::pb;
use raftkv::pb::kv_client::KvClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::history::{Clock, Kind, Op, Outcome};
use super::rng::Rng;

/// How long a set of keys is in use before the workers move on to fresh
/// ones. Each key's history stays short, which keeps the linearizability
/// search small however long the campaign (Jepsen's "independent keys").
pub const KEY_EPOCH: Duration = Duration::from_secs(2);

/// How long a client waits for any answer before calling it unknown.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(4);

/// Clients for every node, over lazily connected channels (a dead node
/// refuses at once; a paused one times out).
pub fn clients(endpoints: &[String]) -> Vec<KvClient<Channel>> {
    endpoints
        .iter()
        .map(|e| {
            let channel = Endpoint::from_shared(format!("http://{e}"))
                .expect("valid endpoint")
                .connect_timeout(Duration::from_secs(1))
                .connect_lazy();
            KvClient::new(channel)
        })
        .collect()
}

/// Whether a failed request certainly had no effect. Anything else (a
/// timeout, a dropped connection, a leader lost mid-request) may have.
fn classify(status: &Status) -> Outcome {
    if raftkv::transport::is_connect_error(status) {
        return Outcome::Fail;
    }
    match (status.code(), status.message()) {
        // kvd answers this only when it proposed nothing.
        (Code::Unavailable, "etcdserver: no leader") => Outcome::Fail,
        (Code::InvalidArgument | Code::NotFound | Code::OutOfRange | Code::Unimplemented, _) => {
            Outcome::Fail
        }
        _ => Outcome::Info,
    }
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(CLIENT_TIMEOUT);
    r
}

/// How a get reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Linearizable,
    /// From the node's local state, possibly stale: only for showing that
    /// the checker catches stale reads.
    Serializable,
}

/// One operation to run.
#[derive(Debug, Clone)]
pub struct Call {
    pub key: String,
    pub kind: Kind,
    /// Put, Cas: the value to write.
    pub value: Option<String>,
    /// Cas: the value the key must hold (`None`: absent).
    pub expect: Option<Option<String>>,
    pub read: Read,
}

impl Call {
    pub fn get(key: &str) -> Call {
        Call {
            key: key.into(),
            kind: Kind::Get,
            value: None,
            expect: None,
            read: Read::Linearizable,
        }
    }

    pub fn put(key: &str, value: &str) -> Call {
        Call {
            key: key.into(),
            kind: Kind::Put,
            value: Some(value.into()),
            expect: None,
            read: Read::Linearizable,
        }
    }
}

/// A compare-and-swap transaction: if `key` holds `expect` (or is absent
/// for `None`), put `value`; otherwise nothing.
fn cas_request(key: &str, expect: &Option<String>, value: &str) -> pb::TxnRequest {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let compare = match expect {
        Some(v) => pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: key.into(),
            target_union: Some(TargetUnion::Value(v.clone().into_bytes())),
            range_end: vec![],
        },
        None => pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.into(),
            target_union: Some(TargetUnion::CreateRevision(0)),
            range_end: vec![],
        },
    };
    let put = pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    pb::TxnRequest {
        compare: vec![compare],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put)),
        }],
        failure: vec![],
    }
}

/// Runs one operation and records it.
pub async fn execute(
    client: &mut KvClient<Channel>,
    clock: &Clock,
    worker: usize,
    node: usize,
    call: Call,
) -> Op {
    let mut op = Op {
        worker,
        node,
        key: call.key.clone(),
        kind: call.kind,
        value: call.value.clone(),
        read: None,
        mod_revision: None,
        deleted: None,
        expect: call.expect.clone(),
        swapped: None,
        revision: None,
        invoke_ns: clock.now(),
        complete_ns: 0,
        outcome: Outcome::Ok,
        error: None,
    };
    let key = call.key.as_str();
    let result: Result<(), Status> = async {
        match call.kind {
            Kind::Put => {
                let req = pb::PutRequest {
                    key: key.into(),
                    value: call.value.unwrap_or_default().into(),
                    ..Default::default()
                };
                let resp = client.put(request(req)).await?.into_inner();
                op.revision = resp.header.map(|h| h.revision);
            }
            Kind::Get => {
                let serializable = call.read == Read::Serializable;
                let req = pb::RangeRequest {
                    key: key.into(),
                    serializable,
                    ..Default::default()
                };
                let resp = client.range(request(req)).await?.into_inner();
                op.revision = resp.header.map(|h| h.revision);
                let kv = resp.kvs.into_iter().next();
                op.mod_revision = kv.as_ref().map(|kv| kv.mod_revision);
                op.read = Some(kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()));
            }
            Kind::Delete => {
                let req = pb::DeleteRangeRequest {
                    key: key.into(),
                    ..Default::default()
                };
                let resp = client.delete_range(request(req)).await?.into_inner();
                op.revision = resp.header.map(|h| h.revision);
                op.deleted = Some(resp.deleted > 0);
            }
            Kind::Cas => {
                let expect = call.expect.clone().flatten();
                let req = cas_request(key, &expect, call.value.as_deref().unwrap_or_default());
                let resp = client.txn(request(req)).await?.into_inner();
                op.revision = resp.header.map(|h| h.revision);
                op.swapped = Some(resp.succeeded);
            }
        }
        Ok(())
    }
    .await;
    op.complete_ns = clock.now();
    if let Err(status) = result {
        op.outcome = classify(&status);
        op.error = Some(format!("{:?}: {}", status.code(), status.message()));
    }
    op
}

/// One worker: random operations on `keys` slots of the current key epoch
/// until `stop`. A compare-and-swap reads the key first and swaps from
/// what it read, so most succeed.
pub async fn worker(
    id: usize,
    endpoints: Vec<String>,
    keys: usize,
    clock: Clock,
    seed: u64,
    stop: watch::Receiver<bool>,
) -> Vec<Op> {
    let mut clients = clients(&endpoints);
    let mut rng = Rng::new(seed);
    let mut ops = Vec::new();
    let mut seq = 0;
    let mut next_value = || {
        seq += 1;
        format!("w{id}-{seq}")
    };
    while !*stop.borrow() {
        let node = rng.below(clients.len());
        let epoch = clock.now() / KEY_EPOCH.as_nanos() as u64;
        let key = format!("e{epoch}/k{}", rng.below(keys));
        let call = match rng.below(10) {
            0..=2 => Call::put(&key, &next_value()),
            3..=6 => Call::get(&key),
            7 => Call {
                kind: Kind::Delete,
                ..Call::get(&key)
            },
            _ => {
                let read = execute(&mut clients[node], &clock, id, node, Call::get(&key)).await;
                let seen = (read.outcome == Outcome::Ok).then(|| read.read.clone().flatten());
                ops.push(read);
                let Some(seen) = seen else { continue };
                Call {
                    kind: Kind::Cas,
                    expect: Some(seen),
                    ..Call::put(&key, &next_value())
                }
            }
        };
        ops.push(execute(&mut clients[node], &clock, id, node, call).await);
    }
    ops
}

/// After healing: a linearizable read of every key, retried through the
/// nodes in turn until one answers (every attempt is recorded).
pub async fn final_reads(
    endpoints: &[String],
    keys: &[String],
    clock: &Clock,
    worker: usize,
) -> Vec<Op> {
    let mut clients = clients(endpoints);
    let mut ops = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        for attempt in 0..40 {
            let node = (k + attempt) % clients.len();
            let op = execute(&mut clients[node], clock, worker, node, Call::get(key)).await;
            let done = op.outcome == Outcome::Ok;
            ops.push(op);
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    ops
}
