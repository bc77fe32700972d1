//! Generated protobuf and gRPC code (see `build.rs`); nothing hand-written.
//!
//! Generated types are always referred to as `pb::X`, so a reader can tell wire
//! types from domain types at a glance.

#![allow(clippy::all, missing_docs)]

/// etcd's `mvccpb` package: `KeyValue`, `Event`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's `authpb` package: users, roles and permissions.
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's `leasepb` package: a lease as etcd's database (and snapshots)
/// keep it.
pub mod leasepb {
    tonic::include_proto!("leasepb");
}

/// etcd's `etcdserverpb` package: the client-facing services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's `v3lockpb` package: the lock service.
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's `v3electionpb` package: the election service.
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// raftkv's node-to-node service.
pub mod peer {
    tonic::include_proto!("raftkv.peer");
}

pub use etcdserverpb::*;
pub use mvccpb::KeyValue;
