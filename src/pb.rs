//! Generated protobuf and gRPC code (see `build.rs`); nothing hand-written.
//!
//! Generated types are always referred to as `pb::X`, so a reader can tell wire
//! types from domain types at a glance.

#![allow(clippy::all, missing_docs)]

/// etcd's `mvccpb` package: `KeyValue`, `Event`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's `etcdserverpb` package: the client-facing services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// raftkv's node-to-node service.
pub mod peer {
    tonic::include_proto!("raftkv.peer");
}

pub use etcdserverpb::*;
pub use mvccpb::KeyValue;
