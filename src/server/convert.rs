//! Conversions between wire types (`pb::*`) and the store's domain types, and
//! the request checks every client service shares.

use prost::Message;

use crate::error::{Error, Result};
use crate::node::Node;
use crate::pb;
use crate::store::{
    check_key, KeyRange, KeyValue, RangeQuery, RangeResult, Revision, SortOrder, SortTarget,
};

/// The header every response carries: etcd's clients dereference it
/// unconditionally.
pub fn header(node: &Node, revision: Revision) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: node.cluster_id(),
        member_id: node.id(),
        revision,
        raft_term: node.term(),
    })
}

/// A stored pair as etcd's `KeyValue`.
pub fn key_value(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// Rejects a request whose encoding is over `max` bytes.
pub fn check_size(req: &impl Message, max: usize) -> Result<()> {
    if req.encoded_len() > max {
        return Err(Error::RequestTooLarge);
    }
    Ok(())
}

fn sort_order(order: i32) -> SortOrder {
    match pb::range_request::SortOrder::try_from(order) {
        Ok(pb::range_request::SortOrder::Ascend) => SortOrder::Ascend,
        Ok(pb::range_request::SortOrder::Descend) => SortOrder::Descend,
        _ => SortOrder::None,
    }
}

fn sort_target(target: i32) -> SortTarget {
    match pb::range_request::SortTarget::try_from(target) {
        Ok(pb::range_request::SortTarget::Version) => SortTarget::Version,
        Ok(pb::range_request::SortTarget::Create) => SortTarget::Create,
        Ok(pb::range_request::SortTarget::Mod) => SortTarget::Mod,
        Ok(pb::range_request::SortTarget::Value) => SortTarget::Value,
        _ => SortTarget::Key,
    }
}

/// A `RangeRequest` as the store's query.
pub fn range_query(req: &pb::RangeRequest) -> RangeQuery {
    RangeQuery {
        range: KeyRange::new(&req.key, &req.range_end),
        revision: req.revision,
        limit: req.limit,
        keys_only: req.keys_only,
        count_only: req.count_only,
        sort_order: sort_order(req.sort_order),
        sort_target: sort_target(req.sort_target),
        min_mod_revision: req.min_mod_revision,
        max_mod_revision: req.max_mod_revision,
        min_create_revision: req.min_create_revision,
        max_create_revision: req.max_create_revision,
    }
}

/// The store's answer as a `RangeResponse`.
pub fn range_response(r: RangeResult, header: Option<pb::ResponseHeader>) -> pb::RangeResponse {
    pb::RangeResponse {
        header,
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

/// A put's fields after etcd's checks. Whether the lease exists is the
/// state machine's to say.
pub struct PutFields {
    pub key: Vec<u8>,
    /// `None` keeps the key's value (`ignore_value`).
    pub value: Option<Vec<u8>>,
    /// `None` keeps the key's lease (`ignore_lease`).
    pub lease: Option<i64>,
    /// The key must exist (either of the above).
    pub must_exist: bool,
}

/// Checks a put's wire fields as etcd does (see `PutFields`).
pub fn put_fields(
    key: Vec<u8>,
    value: Vec<u8>,
    lease: i64,
    ignore_value: bool,
    ignore_lease: bool,
) -> Result<PutFields> {
    check_key(&key)?;
    if ignore_value && !value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if ignore_lease && lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(PutFields {
        key,
        value: (!ignore_value).then_some(value),
        lease: (!ignore_lease).then_some(lease),
        must_exist: ignore_value || ignore_lease,
    })
}
