//! etcd's transactions: compare, then run the success or failure branch, as
//! one revision.
//!
//! Every compare in the transaction, nested ones included, is evaluated
//! against the state before it, so the branches taken are fixed up front.
//! Then the requests that could be refused (a read of a compacted or future
//! revision, a put that keeps the value of a missing key) are checked, so a
//! refused transaction changes nothing. Then the chosen ops run in order,
//! each seeing the earlier ones' writes.
//!
//! A transaction that only reads runs against the applied state under its
//! read lock (`read_only`), not through a `Writer`: it holds up neither
//! writers nor other readers.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::batch::Writer;
use super::kv::{KeyRange, KeyValue, RangeQuery, RangeResult, Reads, Rejection};
use super::state::{LeaseId, State};

/// A transaction: `compare`s, then `success` or `failure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// One condition on every key of `range`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub range: KeyRange,
    pub target: CompareTarget,
    pub result: CompareResult,
}

/// What a compare looks at, and the value it compares with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Lease(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// One request inside a transaction. Encoded by position, as `Command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Range(RangeQuery),
    /// A put as written before leases: runs as a `Put` with lease 0.
    PutV1 {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        must_exist: bool,
        prev_kv: bool,
    },
    DeleteRange {
        range: KeyRange,
        prev_kv: bool,
    },
    /// A nested transaction; decoding bounds how deep (`codec::nested`).
    Txn(#[serde(deserialize_with = "crate::codec::nested")] Txn),
    /// A put, as `Command::Put`.
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        lease: Option<LeaseId>,
        must_exist: bool,
        prev_kv: bool,
    },
}

/// A put inside a transaction, whichever layout it was written in.
pub(super) struct PutOp<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a Vec<u8>>,
    pub lease: Option<LeaseId>,
    pub must_exist: bool,
    pub prev_kv: bool,
}

impl TxnOp {
    /// The op as a put, if it is one.
    pub(super) fn as_put(&self) -> Option<PutOp<'_>> {
        match self {
            TxnOp::Put {
                key,
                value,
                lease,
                must_exist,
                prev_kv,
            } => Some(PutOp {
                key,
                value: value.as_ref(),
                lease: *lease,
                must_exist: *must_exist,
                prev_kv: *prev_kv,
            }),
            TxnOp::PutV1 {
                key,
                value,
                must_exist,
                prev_kv,
            } => Some(PutOp {
                key,
                value: value.as_ref(),
                lease: Some(0),
                must_exist: *must_exist,
                prev_kv: *prev_kv,
            }),
            _ => None,
        }
    }
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TxnResult {
    pub succeeded: bool,
    /// One per op of the branch taken.
    pub responses: Vec<OpResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Range(RangeResult),
    Put {
        prev_kv: Option<KeyValue>,
    },
    DeleteRange {
        deleted: i64,
        prev_kvs: Vec<KeyValue>,
    },
    Txn(#[serde(deserialize_with = "crate::codec::nested")] TxnResult),
}

/// The branches a transaction takes: its own, and those of the nested
/// transactions in that branch, in order.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

impl Txn {
    fn branch(&self, succeeded: bool) -> &[TxnOp] {
        if succeeded {
            &self.success
        } else {
            &self.failure
        }
    }
}

fn holds(actual: Ordering, result: CompareResult) -> bool {
    match result {
        CompareResult::Equal => actual == Ordering::Equal,
        CompareResult::Greater => actual == Ordering::Greater,
        CompareResult::Less => actual == Ordering::Less,
        CompareResult::NotEqual => actual != Ordering::Equal,
    }
}

/// Whether `kv` (or a missing key, `None`) passes `c`. A missing key fails
/// every value compare and counts as 0 for the others, as in etcd.
pub fn compare_one(kv: Option<&KeyValue>, c: &Compare) -> bool {
    let number = |f: fn(&KeyValue) -> i64| kv.map_or(0, f);
    let actual = match &c.target {
        CompareTarget::Value(v) => match kv {
            Some(kv) => kv.value.as_slice().cmp(v.as_slice()),
            None => return false,
        },
        CompareTarget::Version(v) => number(|kv| kv.version).cmp(v),
        CompareTarget::Create(v) => number(|kv| kv.create_revision).cmp(v),
        CompareTarget::Mod(v) => number(|kv| kv.mod_revision).cmp(v),
        CompareTarget::Lease(v) => number(|kv| kv.lease).cmp(v),
    };
    holds(actual, c.result)
}

fn compare_holds(r: &impl Reads, c: &Compare) -> bool {
    let kvs = match r.range(&RangeQuery::new(c.range.clone())) {
        Ok(r) => r.kvs,
        Err(_) => return false,
    };
    if kvs.is_empty() {
        return compare_one(None, c);
    }
    kvs.iter().all(|kv| compare_one(Some(kv), c))
}

fn choose(r: &impl Reads, txn: &Txn) -> Path {
    let succeeded = txn.compare.iter().all(|c| compare_holds(r, c));
    let nested = txn
        .branch(succeeded)
        .iter()
        .filter_map(|op| match op {
            TxnOp::Txn(inner) => Some(choose(r, inner)),
            _ => None,
        })
        .collect();
    Path { succeeded, nested }
}

/// Refuses the transaction, before it changes anything, if a request on its
/// path would be refused.
fn precheck(r: &impl Reads, txn: &Txn, path: &Path) -> Result<(), Rejection> {
    let mut nested = path.nested.iter();
    for op in txn.branch(path.succeeded) {
        match op {
            TxnOp::Range(q) if q.revision > 0 => {
                r.range(&RangeQuery {
                    count_only: true,
                    ..q.clone()
                })?;
            }
            TxnOp::Put { .. } | TxnOp::PutV1 { .. } => {
                let put = op.as_put().expect("invariant: a put");
                let keeps = put.must_exist || put.value.is_none() || put.lease.is_none();
                if keeps && r.get(put.key).is_none() {
                    return Err(Rejection::KeyNotFound);
                }
                if put.lease.is_some_and(|id| id != 0 && !r.has_lease(id)) {
                    return Err(Rejection::LeaseNotFound);
                }
            }
            TxnOp::Txn(inner) => {
                let p = nested
                    .next()
                    .expect("invariant: a path entry per nested txn");
                precheck(r, inner, p)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn execute(w: &mut Writer<'_>, txn: &Txn, path: &Path) -> Result<TxnResult, Rejection> {
    let mut nested = path.nested.iter();
    let mut responses = Vec::new();
    for op in txn.branch(path.succeeded) {
        let response = match op {
            TxnOp::Range(q) => OpResult::Range(w.range(q)?),
            TxnOp::Put { .. } | TxnOp::PutV1 { .. } => {
                let put = op.as_put().expect("invariant: a put");
                OpResult::Put {
                    prev_kv: w.put(
                        put.key,
                        put.value.cloned(),
                        put.lease,
                        put.must_exist,
                        put.prev_kv,
                    )?,
                }
            }
            TxnOp::DeleteRange { range, prev_kv } => {
                let (count, deleted) = w.delete_range(range, *prev_kv);
                OpResult::DeleteRange {
                    deleted: count,
                    prev_kvs: deleted,
                }
            }
            TxnOp::Txn(inner) => {
                let p = nested
                    .next()
                    .expect("invariant: a path entry per nested txn");
                OpResult::Txn(execute(w, inner, p)?)
            }
        };
        responses.push(response);
    }
    Ok(TxnResult {
        succeeded: path.succeeded,
        responses,
    })
}

/// Runs `txn` as the changes of `w`'s revision. A refused transaction
/// changes nothing.
pub fn apply(w: &mut Writer<'_>, txn: &Txn) -> Result<TxnResult, Rejection> {
    let path = choose(w, txn);
    precheck(w, txn, &path)?;
    execute(w, txn, &path)
}

/// Whether `txn` only reads, in every branch and nested transaction, so
/// it can run without a proposal (etcd runs such transactions the same way).
pub fn is_read_only(txn: &Txn) -> bool {
    txn.success.iter().chain(&txn.failure).all(|op| match op {
        TxnOp::Range(_) => true,
        TxnOp::Txn(inner) => is_read_only(inner),
        TxnOp::Put { .. } | TxnOp::PutV1 { .. } | TxnOp::DeleteRange { .. } => false,
    })
}

/// Runs `txn` against `st`; a transaction that writes is refused with
/// `None` (see `is_read_only`), as nothing here can change.
pub(super) fn read_only(st: &State, txn: &Txn) -> Option<Result<TxnResult, Rejection>> {
    if !is_read_only(txn) {
        return None;
    }
    let path = choose(st, txn);
    Some(precheck(st, txn, &path).and_then(|()| read_branches(st, txn, &path)))
}

fn read_branches(st: &State, txn: &Txn, path: &Path) -> Result<TxnResult, Rejection> {
    let mut nested = path.nested.iter();
    let mut responses = Vec::new();
    for op in txn.branch(path.succeeded) {
        responses.push(match op {
            TxnOp::Range(q) => OpResult::Range(st.range(q)?),
            TxnOp::Txn(inner) => {
                let p = nested
                    .next()
                    .expect("invariant: a path entry per nested txn");
                OpResult::Txn(read_branches(st, inner, p)?)
            }
            // `read_only` checked there are none.
            TxnOp::Put { .. } | TxnOp::PutV1 { .. } | TxnOp::DeleteRange { .. } => continue,
        });
    }
    Ok(TxnResult {
        succeeded: path.succeeded,
        responses,
    })
}
