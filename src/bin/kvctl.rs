//! `kvctl`, raftkv's command-line client: parses arguments and runs the
//! command (see `raftkv::cli`).

use std::process::ExitCode;

use clap::Parser;
use raftkv::cli::{self, Cli};

/// mimalloc: the servers and the benchmark client allocate per request
/// and per log entry; it cut allocator time against glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => match cli.command {
            cli::Command::Shell => rt.block_on(cli::shell()),
            _ => rt.block_on(cli::run(cli)),
        },
        Err(e) => {
            eprintln!("Error: starting the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
