//! Certificates for the TLS tests: a CA made with rcgen that issues
//! certificates for localhost and 127.0.0.1 and writes them as PEM files
//! into a temp dir of its own.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tempfile::TempDir;

/// A certificate authority that writes PEM files into a temp dir.
pub struct Pki {
    dir: TempDir,
    ca: Issuer<'static, KeyPair>,
    pub ca_pem: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        Pki {
            dir,
            ca: Issuer::new(params, key),
            ca_pem,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `cn` naming localhost and 127.0.0.1, written as
    /// `<file>.pem` and `<file>.key`; returns (cert PEM, key PEM).
    pub fn issue(&self, file: &str, cn: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.ca).unwrap().pem();
        let key = key.serialize_pem();
        std::fs::write(self.dir.path().join(format!("{file}.pem")), &cert).unwrap();
        std::fs::write(self.dir.path().join(format!("{file}.key")), &key).unwrap();
        (cert, key)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}
