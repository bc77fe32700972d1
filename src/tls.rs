//! TLS for the peer port, with rustls through tonic (no OpenSSL): the
//! member's certificate and key and the CA it trusts, loaded once at
//! startup; the server and client configurations made from them; and etcd's
//! checks of the name in a peer's certificate (`--peer-cert-allowed-cn`,
//! `--peer-cert-allowed-hostname`).
//!
//! With `--peer-client-cert-auth`, a connection that presents no
//! certificate signed by the trusted CA fails its handshake: it never
//! reaches the peer service. The name checks then run on every call
//! (`server::peer`), as etcd checks them on every connection.

use std::net::IpAddr;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use x509_parser::extensions::GeneralName;

use crate::config::PeerTlsConfig;
use crate::error::{Error, Result};

/// How long a peer may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A member's peer TLS material, checked to load.
#[derive(Clone)]
pub struct PeerTls {
    identity: Identity,
    ca: Certificate,
    client_cert_auth: bool,
    allowed_cn: Vec<String>,
    allowed_hostname: Vec<String>,
}

fn read(path: &std::path::Path, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Config(crate::config::ConfigError(format!(
            "{flag} {}: {e}",
            path.display()
        )))
    })
}

fn bad(flag: &str, why: impl std::fmt::Display) -> Error {
    Error::Config(crate::config::ConfigError(format!("{flag}: {why}")))
}

/// The DER of the first certificate in a PEM file, checked to parse.
fn first_certificate(pem: &[u8], flag: &str) -> Result<()> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| bad(flag, format!("not a PEM certificate ({e})")))?;
    pem.parse_x509()
        .map_err(|e| bad(flag, format!("not an X.509 certificate ({e})")))?;
    Ok(())
}

impl PeerTls {
    /// Reads and checks the files `cfg` names: a configuration that cannot
    /// work is refused at startup, naming the flag.
    pub fn load(cfg: &PeerTlsConfig) -> Result<PeerTls> {
        let cert = read(&cfg.cert_file, "--peer-cert-file")?;
        let key = read(&cfg.key_file, "--peer-key-file")?;
        let ca = read(&cfg.trusted_ca_file, "--peer-trusted-ca-file")?;
        first_certificate(&cert, "--peer-cert-file")?;
        first_certificate(&ca, "--peer-trusted-ca-file")?;
        let tls = PeerTls {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
            client_cert_auth: cfg.client_cert_auth,
            allowed_cn: cfg.allowed_cn.clone(),
            allowed_hostname: cfg.allowed_hostname.clone(),
        };
        // rustls checks the key against the certificate here.
        tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(|e| bad("--peer-key-file", tls_error(&e)))?;
        Endpoint::from_static("https://127.0.0.1")
            .tls_config(tls.client_config("127.0.0.1"))
            .map_err(|e| bad("--peer-cert-file", tls_error(&e)))?;
        Ok(tls)
    }

    /// The peer server's configuration: this member's certificate, and
    /// with `--peer-client-cert-auth` a certificate from the trusted CA
    /// required of every peer.
    pub fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(self.identity.clone())
            .timeout(HANDSHAKE_TIMEOUT);
        if self.client_cert_auth {
            config.client_ca_root(self.ca.clone())
        } else {
            config
        }
    }

    /// The configuration for dialing the peer at `host`: its certificate
    /// must come from the trusted CA and name `host`; this member shows its
    /// own certificate.
    pub fn client_config(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(host)
    }

    /// etcd's name checks on the certificate a peer presented (the first of
    /// `chain`): its common name must be one of `--peer-cert-allowed-cn`,
    /// and one of its DNS or IP names one of
    /// `--peer-cert-allowed-hostname`, where those are set.
    pub fn check_peer(&self, chain: Option<&[tonic::transport::CertificateDer<'_>]>) -> Result<()> {
        if self.allowed_cn.is_empty() && self.allowed_hostname.is_empty() {
            return Ok(());
        }
        let refuse = |why: String| Err(Error::PeerCertificate(why));
        let Some(der) = chain.and_then(|c| c.first()) else {
            return refuse("no client certificate".into());
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return refuse("an unreadable client certificate".into());
        };
        if !self.allowed_cn.is_empty() {
            let cn = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or("");
            if !self.allowed_cn.iter().any(|a| a == cn) {
                return refuse(format!("common name {cn:?} is not allowed"));
            }
        }
        if !self.allowed_hostname.is_empty() {
            let names = certificate_names(&cert);
            if !names.iter().any(|n| {
                self.allowed_hostname
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(n))
            }) {
                return refuse(format!("none of its names {names:?} is allowed"));
            }
        }
        Ok(())
    }
}

/// A certificate's DNS and IP subject alternative names.
fn certificate_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A TLS setup error with its causes, which tonic keeps in its sources.
fn tls_error(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
