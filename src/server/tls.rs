//! TLS on the client port (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//! `--client-cert-auth`, etcd's flags), with rustls (no OpenSSL), and
//! certificates that reload without a restart: before each new connection
//! the three files are looked at (size, modification time, inode), and
//! when any changed the configuration is built again from them. New
//! connections then use the new certificate and CA; connections already
//! open carry on with the old. Files that do not make a working
//! configuration (half-written, a key that does not match) are refused
//! with a warning and the last good configuration stays in use.
//!
//! Handshakes run in their own tasks, each bounded by `HANDSHAKE_TIMEOUT`,
//! so a client that stalls in its handshake holds up no one else.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};

use crate::config::{ClientTlsConfig, ConfigError};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections that finished their handshake and wait for the server.
const READY_QUEUE: usize = 64;

/// What identifies one version of a file on disk.
type Fingerprint = Vec<Option<(u64, SystemTime, u64)>>;

/// The client port's TLS configuration, rebuilt when its files change.
pub struct ClientTls {
    cfg: ClientTlsConfig,
    current: Mutex<Loaded>,
}

struct Loaded {
    /// The files as they were when `config` was built (or last refused).
    seen: Fingerprint,
    config: Arc<rustls::ServerConfig>,
}

impl ClientTls {
    /// Builds the configuration from `cfg`'s files: a configuration that
    /// cannot work is refused at startup, naming the flag.
    pub fn load(cfg: &ClientTlsConfig) -> Result<ClientTls, ConfigError> {
        let seen = fingerprint(cfg);
        let config = build(cfg)?;
        Ok(ClientTls {
            cfg: cfg.clone(),
            current: Mutex::new(Loaded {
                seen,
                config: Arc::new(config),
            }),
        })
    }

    /// The configuration for the next connection, rebuilt first if the
    /// files changed since it was last looked at.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        let now = fingerprint(&self.cfg);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if now != current.seen {
            current.seen = now;
            match build(&self.cfg) {
                Ok(config) => {
                    current.config = Arc::new(config);
                    tracing::info!("client TLS certificates reloaded");
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "client TLS files changed but do not load; still using the previous ones"
                ),
            }
        }
        current.config.clone()
    }

    /// `plain` connections after their TLS handshake; a connection whose
    /// handshake fails or times out is closed and left out.
    pub fn accept<S>(
        self: Arc<Self>,
        plain: S,
    ) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>>
    where
        S: Stream<Item = io::Result<TcpStream>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            let mut plain = std::pin::pin!(plain);
            loop {
                // Once the server is gone, so is this loop (and the
                // listening socket with it).
                let conn = tokio::select! {
                    conn = plain.next() => conn,
                    _ = tx.closed() => return,
                };
                let Some(conn) = conn else { return };
                let conn = match conn {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Accept errors (too many open files) are the
                        // server's to see.
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(self.config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let peer = conn.peer_addr().ok();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(?peer, error = %e, "client TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(?peer, "client TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Which files `--cert-file`, `--key-file` and `--trusted-ca-file` name.
fn files(cfg: &ClientTlsConfig) -> impl Iterator<Item = &PathBuf> {
    [
        Some(&cfg.cert_file),
        Some(&cfg.key_file),
        cfg.trusted_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
}

fn fingerprint(cfg: &ClientTlsConfig) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    files(cfg)
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.len(), meta.modified().ok()?, meta.ino()))
        })
        .collect()
}

fn bad(flag: &str, path: &Path, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{flag} {}: {why}", path.display()))
}

fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(flag, path, e))?;
    if certs.is_empty() {
        return Err(bad(flag, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The rustls configuration `cfg`'s files make now.
fn build(cfg: &ClientTlsConfig) -> Result<rustls::ServerConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&cfg.cert_file, "--cert-file")?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| bad("--key-file", &cfg.key_file, e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("client TLS: {e}")))?;
    let builder = match (&cfg.trusted_ca_file, cfg.client_cert_auth) {
        (Some(ca), true) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca, "--trusted-ca-file")? {
                roots
                    .add(cert)
                    .map_err(|e| bad("--trusted-ca-file", ca, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| bad("--trusted-ca-file", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, true) => {
            return Err(ConfigError(
                "--client-cert-auth needs --trusted-ca-file".into(),
            ))
        }
        // As etcd: without --client-cert-auth no certificate is asked of
        // clients.
        (_, false) => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| bad("--key-file", &cfg.key_file, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
