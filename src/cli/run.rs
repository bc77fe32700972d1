//! Runs one parsed kvctl command against the cluster and maps the outcome to
//! an exit code: 0 success, 1 the request failed, 2 bad usage.

use std::io::Read;
use std::process::ExitCode;

use super::args::{self, Cli, Command, EndpointCommand, Format, MemberCommand};
use super::output::{self, GetStyle};
use super::status;
use crate::client::{Client, Timeouts};

/// The request failed (etcdctl's exit code for errors).
const EXIT_ERROR: u8 = 1;
/// The command line was wrong.
const EXIT_USAGE: u8 = 2;

/// Runs `cli` and prints its result; errors go to stderr as one line.
pub async fn run(cli: Cli) -> ExitCode {
    match execute(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_ERROR),
        Err(Failure::Usage(msg)) => {
            eprintln!("Error: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Request(e)) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

enum Failure {
    Usage(String),
    Request(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Request(e.into())
    }
}

/// Returns `Ok(false)` when the command ran but something it checked failed.
async fn execute(cli: Cli) -> Result<bool, Failure> {
    let timeouts = Timeouts {
        dial: cli.dial_timeout,
        command: cli.command_timeout,
    };
    let format = cli.write_out;
    let simple = format.unwrap_or(Format::Simple);
    if let Command::Endpoint(EndpointCommand::Status(a)) = &cli.command {
        return Ok(
            status::run(&cli.endpoints, timeouts, format.unwrap_or(Format::Table), a).await?,
        );
    }
    let mut client = Client::new(cli.endpoints, timeouts)?;
    let out = match &cli.command {
        Command::Put(a) => {
            let value = match &a.value {
                Some(v) => v.clone(),
                None if a.ignore_value => String::new(),
                None => read_stdin_value()?,
            };
            if a.ignore_value && a.value.is_some() {
                return Err(Failure::Usage("--ignore-value takes no VALUE".into()));
            }
            output::put(&client.put(args::put_request(a, value)).await?, simple)
        }
        Command::Get(a) => {
            let style = GetStyle {
                print_value_only: a.print_value_only,
                count_only: a.count_only,
            };
            output::get(&client.range(args::get_request(a)).await?, simple, style)
        }
        Command::Del(a) => output::del(&client.delete_range(args::del_request(a)).await?, simple),
        Command::Member(MemberCommand::List) => {
            output::member_list(&client.member_list().await?, simple)
        }
        Command::Endpoint(_) => unreachable!("handled above"),
    };
    print!("{out}");
    Ok(true)
}

/// etcdctl reads the value from stdin when it is not an argument.
fn read_stdin_value() -> Result<String, Failure> {
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .map_err(|e| Failure::Usage(format!("reading the value from stdin: {e}")))?;
    if value.ends_with('\n') {
        value.pop();
    }
    Ok(value)
}
