//! Running programs from the tests: any command with a deadline
//! (`run_output`), kvctl and etcd's etcdctl against a cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long `run_output` lets a command run before it fails the test.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `cmd` to completion, with `stdin` as its input if given; returns
/// (exit code, stdout, stderr). A command still running after
/// `COMMAND_TIMEOUT` is killed and fails the test, so a hang is a failure
/// with the command named rather than a stuck test run.
pub fn run_output(cmd: &mut Command, stdin: Option<&str>) -> (i32, String, String) {
    use std::io::{Read, Write};
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run a command");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a command") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {COMMAND_TIMEOUT:?}; stderr: {}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        stdout.join().expect("read stdout"),
        stderr.join().expect("read stderr"),
    )
}

/// The lines a child writes, through a channel (so reads can time out).
pub fn line_reader(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Runs kvctl against `endpoints` (a 1 s dial timeout, so failover is
/// quick); returns (exit code, stdout, stderr).
pub fn kvctl(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    run_output(
        Command::new(env!("CARGO_BIN_EXE_kvctl"))
            .arg("--endpoints")
            .arg(endpoints)
            .arg("--dial-timeout")
            .arg("1s")
            .args(args),
        None,
    )
}

/// Runs kvctl and expects it to succeed; returns its stdout.
pub fn kvctl_ok(endpoints: &str, args: &[&str]) -> String {
    let (rc, out, err) = kvctl(endpoints, args);
    assert_eq!(rc, 0, "kvctl {args:?} failed: {err}");
    out
}

/// Runs kvctl with `input` on stdin.
pub fn kvctl_stdin(endpoints: &str, args: &[&str], input: &str) -> (i32, String, String) {
    run_output(
        Command::new(env!("CARGO_BIN_EXE_kvctl"))
            .arg("--endpoints")
            .arg(endpoints)
            .args(args),
        Some(input),
    )
}

/// etcd's etcdctl, from `PATH`.
pub fn etcdctl_path() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("etcdctl"))
        .find(|p| p.is_file());
    found.expect(
        "etcdctl not found on PATH: install etcd's CLI (Debian: apt-get install etcd-client)",
    )
}

/// Runs etcdctl; returns (exit code, stdout, stderr without clientv3's JSON
/// retry warnings).
pub fn etcdctl(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let (code, stdout, stderr) = run_output(
        Command::new(etcdctl_path())
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints)
            .arg("--dial-timeout")
            .arg("5s")
            .args(args),
        None,
    );
    let stderr = stderr
        .lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .collect::<Vec<_>>()
        .join("\n");
    (code, stdout, stderr)
}

/// Runs etcdctl and expects it to succeed; returns its stdout.
pub fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let (rc, out, err) = etcdctl(endpoints, args);
    assert_eq!(rc, 0, "etcdctl {args:?} failed: {err}");
    out
}

/// Runs etcdctl with `input` on stdin.
pub fn etcdctl_stdin(endpoints: &str, args: &[&str], input: &str) -> (i32, String, String) {
    run_output(
        Command::new(etcdctl_path())
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints)
            .args(args),
        Some(input),
    )
}

/// Runs `kvd --id 1 --data-dir DIR ARGS...` (usually with `--check-config`
/// among ARGS); returns its exit code and stderr.
pub fn check_config(args: &[&str], dir: &Path) -> (i32, String) {
    let (code, _, err) = run_output(
        Command::new(env!("CARGO_BIN_EXE_kvd"))
            .args(["--id", "1", "--data-dir"])
            .arg(dir)
            .args(args),
        None,
    );
    (code, err)
}
