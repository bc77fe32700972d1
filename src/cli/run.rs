//! Runs one parsed kvctl command against the cluster and maps the outcome to
//! an exit code: 0 success, 1 the request failed (or a `put --if-*`
//! condition did not hold), 2 bad usage, 3 a transaction that does not
//! parse, 5 a watch the server canceled (as etcdctl).

use std::io::{Read, Write};
use std::process::ExitCode;

use super::args::{
    self, BenchKind, CheckCommand, Cli, Command, EndpointCommand, Format, MemberCommand,
    SnapshotCommand,
};
use super::output::{self, GetStyle};
use super::{auth, bench, bench_watch, health, lease, snapshot, status, txn, watch};
use crate::client::{Client, Dial};
use crate::pb::response_op::Response as OpResponse;

/// The request failed (etcdctl's exit code for errors).
const EXIT_ERROR: u8 = 1;
/// The command line was wrong.
const EXIT_USAGE: u8 = 2;
/// The transaction read from stdin does not parse.
const EXIT_BAD_TXN: u8 = 3;
/// The server canceled the watch.
const EXIT_WATCH_CANCELED: u8 = 5;

/// Runs `cli` and prints its result; errors go to stderr as one line.
/// (`shell` is `shell::run`'s.)
pub async fn run(cli: Cli) -> ExitCode {
    ExitCode::from(run_one(cli).await)
}

/// Runs one command, prints its result (errors on stderr as one line) and
/// returns its exit code.
pub(super) async fn run_one(cli: Cli) -> u8 {
    let plaintext = cli.cacert.is_none() && cli.cert_file.is_none();
    match execute(cli).await {
        Ok(true) => 0,
        Ok(false) => EXIT_ERROR,
        Err(Failure::Usage(msg)) => {
            eprintln!("Error: {msg}");
            EXIT_USAGE
        }
        // The reader went away (`kvctl ... | head`): nothing to report.
        Err(Failure::Request(e))
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            0
        }
        Err(Failure::Request(e)) => {
            eprintln!("Error: {e:#}");
            // What a TLS port's answer to a plaintext HTTP/2 preface looks
            // like from here.
            let text = format!("{e:#}");
            if plaintext
                && (text.contains("h2 protocol error") || text.ends_with("transport error"))
            {
                eprintln!("(if the server uses TLS, pass --cacert, or an https:// endpoint)");
            }
            EXIT_ERROR
        }
        Err(Failure::Coded(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            code
        }
    }
}

enum Failure {
    Usage(String),
    Request(anyhow::Error),
    /// A specific exit code, with the lines to print on stderr.
    Coded(u8, String),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Request(e.into())
    }
}

/// Returns `Ok(false)` when the command ran but something it checked failed.
async fn execute(cli: Cli) -> Result<bool, Failure> {
    let dial = Dial {
        connect_timeout: cli.dial_timeout,
        command_timeout: cli.command_timeout,
        tls: None,
        credentials: credentials(&cli)?,
    }
    .with_tls_files(
        cli.cacert.as_deref(),
        cli.cert_file.as_deref(),
        cli.key_file.as_deref(),
    )?;
    let dial = &dial;
    let format = cli.write_out;
    let simple = format.unwrap_or(Format::Simple);
    let hex = cli.hex;
    match &cli.command {
        Command::Endpoint(EndpointCommand::Status(a)) => {
            let endpoints = resolve_endpoints(&cli.endpoints, a.cluster, dial).await?;
            let format = format.unwrap_or(Format::Table);
            return Ok(status::run(&endpoints, dial, format, a).await?);
        }
        Command::Endpoint(EndpointCommand::Health(a)) => {
            let endpoints = resolve_endpoints(&cli.endpoints, a.cluster, dial).await?;
            let checks = endpoints.iter().map(|e| health::check(e, dial));
            let results = futures::future::join_all(checks).await;
            print!("{}", health::render(&results, simple));
            if results.iter().any(|h| h.result.is_err()) {
                return Err(Failure::Request(anyhow::anyhow!("unhealthy cluster")));
            }
            return Ok(true);
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            // Into a buffer: clap_complete panics on a failed write (a
            // closed pipe), kvctl reports it.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, "kvctl", &mut script);
            std::io::stdout().write_all(&script)?;
            return Ok(true);
        }
        Command::Snapshot(SnapshotCommand::Status { file }) => {
            print!("{}", snapshot::status(file, simple)?);
            return Ok(true);
        }
        Command::Snapshot(SnapshotCommand::Restore {
            file,
            data_dir,
            id,
            initial_cluster,
            skip_hash_check,
        }) => {
            let args = snapshot::RestoreArgs {
                file,
                data_dir,
                id: *id,
                initial_cluster,
                skip_hash_check: *skip_hash_check,
            };
            print!("{}", snapshot::restore(args).await?);
            return Ok(true);
        }
        _ => {}
    }
    let mut client = Client::new(cli.endpoints, dial)?;
    let out = match &cli.command {
        Command::Put(a) => {
            let value = match &a.value {
                Some(v) => v.clone().into_bytes(),
                None if a.ignore_value => Vec::new(),
                None => read_stdin_value()?,
            };
            if a.ignore_value && a.value.is_some() {
                return Err(Failure::Usage("--ignore-value takes no VALUE".into()));
            }
            let put = args::put_request(a, value);
            match args::put_condition(a) {
                None => output::put(&client.put(put).await?, simple, hex),
                Some(compare) => {
                    use crate::pb::request_op::Request;
                    let get = crate::pb::RangeRequest {
                        key: put.key.clone(),
                        ..Default::default()
                    };
                    let req = crate::pb::TxnRequest {
                        compare: vec![compare],
                        success: vec![crate::pb::RequestOp {
                            request: Some(Request::RequestPut(put)),
                        }],
                        failure: vec![crate::pb::RequestOp {
                            request: Some(Request::RequestRange(get)),
                        }],
                    };
                    let resp = client.txn(req).await?;
                    if !resp.succeeded {
                        return Err(Failure::Request(anyhow::anyhow!(txn::precondition_failed(
                            &a.key, &resp
                        ))));
                    }
                    match resp.responses.into_iter().next().and_then(|r| r.response) {
                        Some(OpResponse::ResponsePut(p)) => output::put(&p, simple, hex),
                        _ => {
                            return Err(Failure::Request(anyhow::anyhow!(
                                "unexpected transaction response"
                            )))
                        }
                    }
                }
            }
        }
        Command::Txn(a) => {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut stdout = std::io::stdout();
            let prompt: Option<&mut dyn std::io::Write> = if a.interactive {
                Some(&mut stdout)
            } else {
                None
            };
            let req = txn::read_txn(&mut input, prompt)
                .map_err(|e| Failure::Coded(EXIT_BAD_TXN, format!("Error: {e}")))?;
            txn::render(&client.txn(req).await?, simple, hex)
        }
        Command::Watch(a) => match watch::run(&mut client, a, simple, hex).await? {
            watch::Ended::Stopped => Vec::new(),
            watch::Ended::Canceled(reason) => {
                let msg = format!(
                    "watch was canceled ({reason})\nError: watch is canceled by the server"
                );
                return Err(Failure::Coded(EXIT_WATCH_CANCELED, msg));
            }
        },
        Command::Bench(a) if a.kind == BenchKind::Watch => {
            bench_watch::run(client.endpoints(), dial, a)
                .await?
                .render(simple)
                .into_bytes()
        }
        Command::Bench(a) => bench::run(client.endpoints(), dial, a)
            .await?
            .render(simple)
            .into_bytes(),
        Command::Check(CheckCommand::Perf(a)) => {
            let (passed, out) =
                bench::check_perf(client.endpoints(), dial, &a.load, a.duration, simple).await?;
            print!("{out}");
            return Ok(passed);
        }
        Command::Compaction(a) => {
            let req = crate::pb::CompactionRequest {
                revision: a.revision,
                physical: a.physical,
            };
            client.compact(req).await?;
            format!("compacted revision {}\n", a.revision).into_bytes()
        }
        Command::Get(a) => {
            let style = GetStyle {
                print_value_only: a.print_value_only,
                count_only: a.count_only,
                hex,
            };
            output::get(&client.range(args::get_request(a)).await?, simple, style)
        }
        Command::Del(a) => output::del(
            &client.delete_range(args::del_request(a)).await?,
            simple,
            hex,
        ),
        Command::Member(MemberCommand::List) => {
            output::member_list(&client.member_list().await?, simple).into_bytes()
        }
        Command::Member(MemberCommand::Add {
            name,
            peer_urls,
            learner,
        }) => {
            let req = crate::pb::MemberAddRequest {
                peer_ur_ls: split_urls(peer_urls),
                is_learner: *learner,
            };
            output::member_added(&client.member_add(req).await?, name.as_deref(), simple)
                .into_bytes()
        }
        Command::Member(MemberCommand::Remove { id }) => {
            let resp = client.member_remove(*id).await?;
            output::member_changed("removed from", *id, resp.header.as_ref(), simple).into_bytes()
        }
        Command::Member(MemberCommand::Update { id, peer_urls }) => {
            let req = crate::pb::MemberUpdateRequest {
                id: *id,
                peer_ur_ls: split_urls(peer_urls),
            };
            let resp = client.member_update(req).await?;
            output::member_changed("updated in", *id, resp.header.as_ref(), simple).into_bytes()
        }
        Command::Member(MemberCommand::Promote { id }) => {
            let resp = client.member_promote(*id).await?;
            output::member_changed("promoted in", *id, resp.header.as_ref(), simple).into_bytes()
        }
        Command::Lease(cmd) => lease::lease(&mut client, cmd, simple).await?.into_bytes(),
        Command::Auth(cmd) => auth::auth(&mut client, cmd, simple).await?.into_bytes(),
        Command::User(cmd) => auth::user(&mut client, cmd, simple).await?.into_bytes(),
        Command::Role(cmd) => auth::role(&mut client, cmd, simple).await?.into_bytes(),
        Command::Snapshot(SnapshotCommand::Save { file }) => {
            snapshot::save(&mut client, file).await?.into_bytes()
        }
        Command::Snapshot(_) | Command::Completion { .. } | Command::Shell => {
            unreachable!("handled above")
        }
        Command::Lock(a) => {
            let code = lease::lock(&mut client, a).await?;
            if code != 0 {
                return Err(Failure::Coded(code, String::new()));
            }
            Vec::new()
        }
        Command::Elect(a) => {
            lease::elect(&mut client, a).await?;
            Vec::new()
        }
        Command::Endpoint(_) => unreachable!("handled above"),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(true)
}

/// Whom to authenticate as, from `--user` and `--password` (asking for
/// the password when neither gives it).
fn credentials(cli: &Cli) -> Result<Option<crate::client::Credentials>, Failure> {
    let Some(spec) = &cli.auth_user else {
        return Ok(None);
    };
    let (user, password) = auth::split_user(spec);
    let password = match password.or_else(|| cli.auth_password.clone()) {
        Some(p) => p,
        None => auth::read_password(&user, false).map_err(Failure::Request)?,
    };
    Ok(Some(crate::client::Credentials { user, password }))
}

/// The endpoints to act on: those given, or with `cluster`, every member's
/// client URL as the cluster reports it.
async fn resolve_endpoints(
    given: &[String],
    cluster: bool,
    dial: &Dial,
) -> Result<Vec<String>, Failure> {
    if !cluster {
        return Ok(given.to_vec());
    }
    let mut client = Client::new(given.to_vec(), dial)?;
    let members = client.member_list().await?.members;
    // A member may publish a URL for each network its clients come from
    // (a container network's name, the host's published port): take, for
    // each, the first that accepts a connection from here, else its first.
    let mut endpoints = Vec::new();
    for m in &members {
        let urls: Vec<String> = m
            .client_ur_ls
            .iter()
            .map(|url| {
                url.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        let mut chosen = None;
        if urls.len() > 1 {
            for url in &urls {
                if crate::client::connect(url, dial).await.is_ok() {
                    chosen = Some(url.clone());
                    break;
                }
            }
        }
        endpoints.extend(chosen.or_else(|| urls.first().cloned()));
    }
    if endpoints.is_empty() {
        return Err(Failure::Request(anyhow::anyhow!(
            "no member has published a client URL yet"
        )));
    }
    Ok(endpoints)
}

/// etcdctl reads the value from stdin when it is not an argument: any
/// bytes, less one trailing newline.
fn read_stdin_value() -> Result<Vec<u8>, Failure> {
    let mut value = Vec::new();
    std::io::stdin()
        .read_to_end(&mut value)
        .map_err(|e| Failure::Usage(format!("reading the value from stdin: {e}")))?;
    if value.ends_with(b"\n") {
        value.pop();
    }
    Ok(value)
}

/// etcdctl's comma-separated URL list.
fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}
