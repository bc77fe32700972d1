//! etcd `TxnRequest`s in and `TxnResponse`s out: conversion to and from the
//! store's `Txn`. etcd's rules for a transaction (operation limit, empty
//! keys, a key written twice in a branch) are `store::check_txn`'s, shared
//! with writes a follower forwards.

use super::convert::{key_value, range_query, range_response};
use crate::error::{Error, Result};
use crate::pb;
use crate::pb::compare::{CompareResult as PbResult, CompareTarget as PbTarget, TargetUnion};
use crate::store::{
    Compare, CompareResult, CompareTarget, KeyRange, OpResult, Revision, Txn, TxnOp, TxnResult,
};

/// Converts a request, with the checks only its wire form allows (an
/// empty request op, a put's lease fields); the rules every write follows
/// are `store::check_txn`'s.
pub fn from_pb(req: pb::TxnRequest) -> Result<Txn> {
    let compare = req
        .compare
        .into_iter()
        .map(compare)
        .collect::<Result<_>>()?;
    let ops = |ops: Vec<pb::RequestOp>| ops.into_iter().map(request_op).collect::<Result<Vec<_>>>();
    Ok(Txn {
        compare,
        success: ops(req.success)?,
        failure: ops(req.failure)?,
    })
}

fn compare(c: pb::Compare) -> Result<Compare> {
    let result = match PbResult::try_from(c.result).unwrap_or(PbResult::Equal) {
        PbResult::Equal => CompareResult::Equal,
        PbResult::Greater => CompareResult::Greater,
        PbResult::Less => CompareResult::Less,
        PbResult::NotEqual => CompareResult::NotEqual,
    };
    // An unset target value counts as 0 or empty.
    let number = |u: &Option<TargetUnion>| match u {
        Some(TargetUnion::Version(v))
        | Some(TargetUnion::CreateRevision(v))
        | Some(TargetUnion::ModRevision(v))
        | Some(TargetUnion::Lease(v)) => *v,
        _ => 0,
    };
    let target = match PbTarget::try_from(c.target).unwrap_or(PbTarget::Version) {
        PbTarget::Version => CompareTarget::Version(number(&c.target_union)),
        PbTarget::Create => CompareTarget::Create(number(&c.target_union)),
        PbTarget::Mod => CompareTarget::Mod(number(&c.target_union)),
        PbTarget::Lease => CompareTarget::Lease(number(&c.target_union)),
        PbTarget::Value => CompareTarget::Value(match c.target_union {
            Some(TargetUnion::Value(v)) => v,
            _ => Vec::new(),
        }),
    };
    Ok(Compare {
        range: KeyRange::new(&c.key, &c.range_end),
        target,
        result,
    })
}

fn request_op(op: pb::RequestOp) -> Result<TxnOp> {
    use pb::request_op::Request;
    match op.request {
        None => Err(Error::KeyNotFound),
        Some(Request::RequestRange(r)) => Ok(TxnOp::Range(range_query(&r))),
        Some(Request::RequestPut(p)) => {
            let super::convert::PutFields {
                key,
                value,
                lease,
                must_exist,
            } = super::convert::put_fields(
                p.key,
                p.value,
                p.lease,
                p.ignore_value,
                p.ignore_lease,
            )?;
            Ok(TxnOp::Put {
                key,
                value,
                lease,
                must_exist,
                prev_kv: p.prev_kv,
            })
        }
        Some(Request::RequestDeleteRange(d)) => Ok(TxnOp::DeleteRange {
            range: KeyRange::new(&d.key, &d.range_end),
            prev_kv: d.prev_kv,
        }),
        Some(Request::RequestTxn(t)) => Ok(TxnOp::Txn(from_pb(t)?)),
    }
}

/// Whether every read in it is serializable.
pub fn is_serializable(req: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    let ops_serializable = |ops: &[pb::RequestOp]| {
        ops.iter().all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(t)) => is_serializable(t),
            _ => true,
        })
    };
    ops_serializable(&req.success) && ops_serializable(&req.failure)
}

/// The wire response; nested responses carry headers holding only the
/// revision, as etcd's do.
pub fn to_pb(
    result: TxnResult,
    revision: Revision,
    header: Option<pb::ResponseHeader>,
) -> pb::TxnResponse {
    use pb::response_op::Response;
    let nested = || {
        Some(pb::ResponseHeader {
            revision,
            ..Default::default()
        })
    };
    let responses = result
        .responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                OpResult::Range(r) => Response::ResponseRange(range_response(r, nested())),
                OpResult::Put { prev_kv } => Response::ResponsePut(pb::PutResponse {
                    header: nested(),
                    prev_kv: prev_kv.map(key_value),
                }),
                OpResult::DeleteRange { deleted, prev_kvs } => {
                    Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: nested(),
                        deleted,
                        prev_kvs: prev_kvs.into_iter().map(key_value).collect(),
                    })
                }
                OpResult::Txn(t) => Response::ResponseTxn(to_pb(t, revision, nested())),
            }),
        })
        .collect();
    pb::TxnResponse {
        header,
        succeeded: result.succeeded,
        responses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }
    }

    fn del(key: &str, end: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: key.into(),
                    range_end: end.into(),
                    prev_kv: false,
                },
            )),
        }
    }

    fn txn(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    fn nested(t: pb::TxnRequest) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestTxn(t)),
        }
    }

    /// Converts and checks `t` as the KV service does.
    fn from_pb(t: pb::TxnRequest, max_txn_ops: usize) -> Result<Txn> {
        let limits = crate::store::Limits {
            max_request_bytes: usize::MAX,
            max_txn_ops,
        };
        let txn = super::from_pb(t)?;
        crate::store::check_txn(&txn, &limits)?;
        Ok(txn)
    }

    #[test]
    fn etcds_duplicate_key_rules() {
        let dup = |t: pb::TxnRequest| matches!(from_pb(t, 128), Err(Error::DuplicateKey));
        assert!(dup(txn(vec![put("d"), put("d")], vec![])));
        assert!(dup(txn(vec![put("d"), del("d", "")], vec![])));
        assert!(dup(txn(vec![del("a", "z"), put("m")], vec![])));
        assert!(dup(txn(
            vec![put("k"), nested(txn(vec![put("k")], vec![]))],
            vec![]
        )));
        // Allowed: overlapping deletes, one key in both branches, in both
        // branches of a nested txn.
        assert!(!dup(txn(vec![del("a", "m"), del("c", "z")], vec![])));
        assert!(!dup(txn(vec![put("k")], vec![put("k")])));
        assert!(!dup(txn(
            vec![nested(txn(vec![put("k")], vec![put("k")]))],
            vec![]
        )));
    }

    #[test]
    fn limits_and_empty_requests() {
        let many = txn((0..129).map(|i| put(&format!("k{i}"))).collect(), vec![]);
        assert!(matches!(from_pb(many, 128), Err(Error::TooManyOps)));
        let empty_op = txn(vec![pb::RequestOp { request: None }], vec![]);
        assert!(matches!(from_pb(empty_op, 128), Err(Error::KeyNotFound)));
        assert!(matches!(
            from_pb(txn(vec![put("")], vec![]), 128),
            Err(Error::EmptyKey)
        ));
        let no_key_compare = pb::TxnRequest {
            compare: vec![pb::Compare::default()],
            ..Default::default()
        };
        assert!(matches!(from_pb(no_key_compare, 128), Err(Error::EmptyKey)));
    }
}
