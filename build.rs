//! Compiles `proto/` into Rust with protox (a pure-Rust protoc), so building
//! raftkv needs cargo and nothing else.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/etcd/auth.proto",
        "proto/etcd/kv.proto",
        "proto/etcd/lease.proto",
        "proto/etcd/rpc.proto",
        "proto/etcd/v3lock.proto",
        "proto/etcd/v3election.proto",
        "proto/raft.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // serde for etcd's messages with protobuf's JSON mapping as etcd's
    // grpc-gateway speaks it (original field names, int64 as strings, bytes
    // as base64): the JSON API on the client port.
    let descriptors = prost::Message::encode_to_vec(&fds);
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb"])?;
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
