//! kvctl: a command-line client over etcd's v3 API.
//!
//! `args` parses the command line and builds requests, `output` prints
//! responses, `status` runs `endpoint status [--watch]`, `run` ties them to a
//! `client::Client`, `snapshot` backups. Depends only on `client`, `pb` and
//! `backup`, except `snapshot restore`, which seeds a data dir through
//! `node` (as `etcdutl` works on etcd's data dirs).

mod args;
mod auth;
pub mod bench;
pub mod bench_watch;
mod health;
mod lease;
mod output;
mod run;
mod shell;
mod snapshot;
mod status;
mod txn;
mod watch;

pub use args::{BenchArgs, BenchKind, Cli, Command, Format};
pub use run::run;
pub use shell::run as shell;
