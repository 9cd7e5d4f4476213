//! Certificates made by a test for its TLS servers: a CA, a server certificate
//! it issued for `127.0.0.1` and `localhost`, and a second CA that issued
//! nothing the servers show (the wrong CA a client must refuse), written as PEM
//! files into a temporary directory that lives as long as the [`TestPki`]; and
//! the key pairs a test's identity provider signs user tokens with.

use crate::child::TempDir;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

/// What a TLS server is started with: its certificate and key, and the CA it
/// trusts (for client certificates and, in a cluster, for its peers).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A test's certificates, as files.
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// Makes the CA, the server certificate and the wrong CA.
    pub fn new() -> Self {
        let dir = TempDir::new("pki");
        let (ca_params, ca_key) = ca("coupon-rush test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signing the test CA");
        let (wrong_params, wrong_key) = ca("coupon-rush wrong CA");
        let wrong_cert = wrong_params.self_signed(&wrong_key).expect("self-signing the wrong CA");

        let mut server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("the server names are valid");
        server.distinguished_name.push(DnType::CommonName, "localhost");
        let server_key = KeyPair::generate().expect("generating the server key");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .expect("issuing the server certificate");

        let pki = Self { dir };
        pki.write("ca.pem", &ca_cert.pem());
        pki.write("wrong-ca.pem", &wrong_cert.pem());
        pki.write("server.pem", &server_cert.pem());
        pki.write("server.key", &server_key.serialize_pem());
        pki
    }

    fn write(&self, name: &str, pem: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA that issued the servers' certificate.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA that issued nothing the servers show.
    pub fn wrong_ca(&self) -> PathBuf {
        self.path("wrong-ca.pem")
    }

    /// What a server is started with.
    pub fn server(&self) -> ServerTls {
        ServerTls {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            ca: self.ca(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A CA's parameters and key: allowed to sign certificates, nothing else.
fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params, KeyPair::generate().expect("generating a CA key"))
}

/// A token-signing key pair, as PEM: the identity provider's private key
/// (PKCS#8) and the public key the API verifies with.
pub struct SigningKey {
    pub private_pem: String,
    pub public_pem: String,
}

impl SigningKey {
    /// A new P-256 key (ES256).
    pub fn es256() -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generating a P-256 key");
        Self {
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        }
    }

    /// A new Ed25519 key (EdDSA).
    pub fn ed25519() -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("generating an Ed25519 key");
        Self {
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        }
    }
}
