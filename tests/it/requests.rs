//! Request builders and small reads the tests share.

use raftkv::pb;
use raftkv::pb::kv_client::KvClient;
use tonic::transport::Channel;

/// A put request.
pub fn put_req(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

/// A linearizable single-key get.
pub fn get_req(key: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

/// A serializable (local) read of every key.
pub fn all_keys_local() -> pb::RangeRequest {
    pb::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        serializable: true,
        ..Default::default()
    }
}

/// A linearizable read of every key.
pub fn all_keys() -> pb::RangeRequest {
    pb::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    }
}

/// The value of `key` read linearizably through `kv`, if present.
pub async fn get_value(kv: &mut KvClient<Channel>, key: &str) -> Option<String> {
    let resp = kv
        .range(get_req(key))
        .await
        .expect("linearizable get")
        .into_inner();
    resp.kvs
        .first()
        .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
}

/// Puts `key` = `value` and returns the write's revision.
pub async fn put_rev(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    kv.put(put_req(key, value))
        .await
        .expect("put")
        .into_inner()
        .header
        .expect("a response header")
        .revision
}
