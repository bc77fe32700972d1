//! raftkv's integration tests: one binary, real `kvd` processes on loopback.

mod api;
mod backup;
mod bad_input;
mod chaos;
mod cli;
mod client_tls;
mod cluster;
mod compose;
mod corruption;
mod etcd_server;
mod etcdctl;
mod failover;
mod gateway;
mod hostile;
mod kv;
mod leases;
mod membership;
mod ops;
mod peer_tls;
mod pki;
mod quota;
mod recovery;
mod requests;
mod storage;
mod tools;
mod watch;
