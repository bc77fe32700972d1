//! etcd's transactions: compare, then run the success or failure branch, as
//! one revision.
//!
//! Every compare in the transaction, nested ones included, is evaluated
//! against the state before it, so the branches taken are fixed up front.
//! Then the requests that could be refused (a read of a compacted or future
//! revision, a put that keeps the value of a missing key) are checked, so a
//! refused transaction changes nothing. Then the chosen ops run in order,
//! each seeing the earlier ones' writes.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::batch::Writer;
use super::command::Rejection;
use super::kv::{KeyRange, KeyValue, RangeQuery, RangeResult};
use crate::error::Result;

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

/// One request inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Range(RangeQuery),
    Put {
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
    Txn(Txn),
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
    Txn(TxnResult),
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
        // raftkv has no leases: every key's lease is 0.
        CompareTarget::Lease(v) => 0.cmp(v),
    };
    holds(actual, c.result)
}

fn compare_holds(w: &Writer<'_>, c: &Compare) -> Result<bool> {
    let kvs = match w.range(&RangeQuery::new(c.range.clone()))? {
        Ok(r) => r.kvs,
        Err(_) => return Ok(false),
    };
    if kvs.is_empty() {
        return Ok(compare_one(None, c));
    }
    Ok(kvs.iter().all(|kv| compare_one(Some(kv), c)))
}

fn choose(w: &Writer<'_>, txn: &Txn) -> Result<Path> {
    let mut succeeded = true;
    for c in &txn.compare {
        if !compare_holds(w, c)? {
            succeeded = false;
            break;
        }
    }
    let mut nested = Vec::new();
    for op in txn.branch(succeeded) {
        if let TxnOp::Txn(inner) = op {
            nested.push(choose(w, inner)?);
        }
    }
    Ok(Path { succeeded, nested })
}

/// Refuses the transaction, before it changes anything, if a request on its
/// path would be refused.
fn precheck(w: &Writer<'_>, txn: &Txn, path: &Path) -> Result<std::result::Result<(), Rejection>> {
    let mut nested = path.nested.iter();
    for op in txn.branch(path.succeeded) {
        match op {
            TxnOp::Range(q) if q.revision > 0 => {
                if let Err(r) = w.range(&RangeQuery {
                    count_only: true,
                    ..q.clone()
                })? {
                    return Ok(Err(r));
                }
            }
            TxnOp::Put {
                key,
                value,
                must_exist,
                ..
            } if (*must_exist || value.is_none()) && w.get(key)?.is_none() => {
                return Ok(Err(Rejection::KeyNotFound));
            }
            TxnOp::Txn(inner) => {
                let p = nested
                    .next()
                    .expect("invariant: a path entry per nested txn");
                if let Err(r) = precheck(w, inner, p)? {
                    return Ok(Err(r));
                }
            }
            _ => {}
        }
    }
    Ok(Ok(()))
}

fn execute(
    w: &mut Writer<'_>,
    txn: &Txn,
    path: &Path,
) -> Result<std::result::Result<TxnResult, Rejection>> {
    let mut nested = path.nested.iter();
    let mut responses = Vec::new();
    for op in txn.branch(path.succeeded) {
        let response = match op {
            TxnOp::Range(q) => match w.range(q)? {
                Ok(r) => OpResult::Range(r),
                Err(r) => return Ok(Err(r)),
            },
            TxnOp::Put {
                key,
                value,
                must_exist,
                prev_kv,
            } => match w.put(key, value.clone(), *must_exist, *prev_kv)? {
                Ok(prev) => OpResult::Put { prev_kv: prev },
                Err(r) => return Ok(Err(r)),
            },
            TxnOp::DeleteRange { range, prev_kv } => {
                let (count, deleted) = w.delete_range(range, *prev_kv)?;
                OpResult::DeleteRange {
                    deleted: count,
                    prev_kvs: deleted,
                }
            }
            TxnOp::Txn(inner) => {
                let p = nested
                    .next()
                    .expect("invariant: a path entry per nested txn");
                match execute(w, inner, p)? {
                    Ok(r) => OpResult::Txn(r),
                    Err(r) => return Ok(Err(r)),
                }
            }
        };
        responses.push(response);
    }
    Ok(Ok(TxnResult {
        succeeded: path.succeeded,
        responses,
    }))
}

/// Runs `txn` as the changes of `w`'s revision. A refused transaction
/// changes nothing.
pub fn apply(w: &mut Writer<'_>, txn: &Txn) -> Result<std::result::Result<TxnResult, Rejection>> {
    let path = choose(w, txn)?;
    if let Err(r) = precheck(w, txn, &path)? {
        return Ok(Err(r));
    }
    execute(w, txn, &path)
}
