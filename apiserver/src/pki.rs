//! The server's credentials, created on first start in the data directory: a
//! CA (kept), a serving certificate signed by it (renewed at every start, for
//! 127.0.0.1, ::1, localhost and any extra names), the bearer token, and the
//! kubeconfig that carries the CA and the token to `kubectl` and the other
//! components.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::Error;

/// The credentials a running server uses.
pub struct Credentials {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub token: String,
    pub tls: Arc<rustls::ServerConfig>,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Writes a file readable only by its owner, atomically (temporary file, then rename).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(contents).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(Error::Certificate)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "medforge-control-plane-ca");
    p.distinguished_name
        .push(DnType::OrganizationName, "MedForge");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

/// Loads the CA and token from `dir`, creating them on first start, and
/// issues a fresh serving certificate for `hosts`.
pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Credentials, Error> {
    let ca_key_path = dir.join("ca.key");
    let ca_crt_path = dir.join("ca.crt");
    let token_path = dir.join("token");

    let ca_key = if ca_key_path.exists() && ca_crt_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(|e| io_err(&ca_key_path, e))?;
        KeyPair::from_pem(&pem).map_err(Error::Certificate)?
    } else {
        let key = KeyPair::generate().map_err(Error::Certificate)?;
        let cert = ca_params()?.self_signed(&key).map_err(Error::Certificate)?;
        write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        write_private(&ca_crt_path, cert.pem().as_bytes())?;
        key
    };
    let ca_pem = std::fs::read_to_string(&ca_crt_path).map_err(|e| io_err(&ca_crt_path, e))?;
    let ca_der = pem_to_der(&ca_pem).ok_or_else(|| {
        Error::Config(format!(
            "{} is not a PEM certificate",
            ca_crt_path.display()
        ))
    })?;

    let token = match std::fs::read_to_string(&token_path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = random_hex(32);
            write_private(&token_path, t.as_bytes())?;
            t
        }
    };

    // The serving certificate is cheap to make and renewed at every start, so
    // a change of the listen address or extra names never leaves a stale one.
    let serving_key = KeyPair::generate().map_err(Error::Certificate)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(Error::Certificate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "medforge-apiserver");
    let mut serial = [0u8; 16];
    rand::fill(&mut serial[..]);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut sans = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        SanType::DnsName("localhost".try_into().map_err(Error::Certificate)?),
    ];
    for h in hosts {
        let san = match h.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.clone().try_into().map_err(Error::Certificate)?),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    params.subject_alt_names = sans;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let serving = params
        .signed_by(&serving_key, &issuer)
        .map_err(Error::Certificate)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(
            vec![serving.der().clone(), CertificateDer::from(ca_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(serving_key.serialize_der())),
        )
        .map_err(|e| Error::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    Ok(Credentials {
        ca_pem,
        ca_der,
        token,
        tls: Arc::new(tls),
    })
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The URL clients use to reach a server listening on `addr`.
pub fn server_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    } else {
        addr.ip()
    };
    match host {
        IpAddr::V4(ip) => format!("https://{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("https://[{ip}]:{}", addr.port()),
    }
}

/// A kubeconfig for the server at `url`, with context `medforge` and the
/// `default` namespace.
pub fn kubeconfig(url: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: medforge
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: medforge-admin
  user:
    token: {token}
contexts:
- name: medforge
  context:
    cluster: medforge
    user: medforge-admin
    namespace: default
current-context: medforge
preferences: {{}}
"
    )
}

/// Where the kubeconfig goes when the configuration names none.
pub fn default_kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("kubeconfig")
}
