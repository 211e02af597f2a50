//! DNS over TLS (RFC 7858) and zone transfers over TLS (RFC 9103): the certificate
//! pair, read and checked into the rustls configuration every new handshake uses.
//!
//! TLS 1.3 and 1.2 through rustls with the aws-lc-rs provider (already in the tree
//! for TSIG), ALPN `dot` (BIND's XoT requires it, RFC 9103 section 7.1), session
//! resumption by ticket and by session id. [`Certificates`] holds the current
//! configuration; a reload (SIGHUP, or a change of either file, polled) swaps it for
//! new handshakes while open connections carry on with the one they started with. A
//! pair that fails to load keeps the old one (logged and counted by the caller).
//! Errors name the file and what is wrong, never its content.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key file larger than this is refused unread (a chain is a few KB).
const MAX_FILE: u64 = 1 << 20;

/// Which of the two files an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Certificate,
    Key,
}

/// A pair that cannot be used: which file, and why (never its content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub file: Which,
    pub message: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `[tls]`: the two files, and the rustls configuration made from them.
#[derive(Clone)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
    /// The leaf certificate's notAfter, in Unix seconds (None if it cannot be read).
    pub not_after: Option<i64>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("certificate", &self.certificate)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads both files (PEM; the certificate chain leaf first; the key PKCS#8, SEC1
    /// or RSA) and checks that the key is the certificate's.
    pub fn load(certificate: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_err = |message: String| TlsError {
            file: Which::Certificate,
            message: format!("{}: {message}", certificate.display()),
        };
        let key_err = |message: String| TlsError {
            file: Which::Key,
            message: format!("{}: {message}", key.display()),
        };
        let cert_pem = read_bounded(certificate).map_err(cert_err)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| cert_err(format!("not a PEM certificate chain ({e})")))?;
        if chain.is_empty() {
            return Err(cert_err("no PEM certificate in it".into()));
        }
        let not_after = not_after(&chain[0]);
        let key_pem = read_bounded(key).map_err(key_err)?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            key_err(format!(
                "no PEM private key (PKCS#8, SEC1 or RSA) in it ({e})"
            ))
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| cert_err(format!("TLS setup failed: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| key_err(format!("does not go with the certificate ({e})")))?;
        server.alpn_protocols = vec![b"dot".to_vec()];
        // Resumption: TLS 1.3 tickets, and the session cache rustls keeps for 1.2.
        server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| cert_err(format!("TLS session tickets: {e}")))?;
        Ok(Self {
            certificate: certificate.to_path_buf(),
            key: key.to_path_buf(),
            server: Arc::new(server),
            not_after,
        })
    }
}

/// A TLS client for zone transfers from a primary (XoT, RFC 9103): TLS 1.3 and 1.2,
/// ALPN `dot`, the primary's certificate checked against the CA certificates in
/// `ca_file` (PEM) and, per connection, the name it must carry.
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = read_bounded(ca_file).map_err(|m| format!("{}: {m}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| format!("{}: not a PEM certificate ({e})", ca_file.display()))?;
        roots.add(cert).map_err(|e| {
            format!(
                "{}: a certificate that cannot be a CA ({e})",
                ca_file.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no PEM certificate in it", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"dot".to_vec()];
    Ok(Arc::new(client))
}

/// One DER element at the start of `der`: (tag, contents, the rest).
fn der(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The notAfter of an X.509 certificate (RFC 5280 4.1.2.5), in Unix seconds: a walk
/// to TBSCertificate's validity, for the expiry gauge. `None` if it does not parse.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der(rest)?.2; // [0] version
    }
    for _ in 0..3 {
        rest = der(rest)?.2; // serialNumber, signature, issuer
    }
    let (_, validity, _) = der(rest)?;
    let (_, _, after) = der(validity)?; // notBefore
    let (tag, time, _) = der(after)?;
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            // UTCTime YYMMDDHHMMSSZ: 50..99 are 19xx (RFC 5280 4.1.2.5.1).
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?), // GeneralizedTime
        _ => return None,
    };
    if rest.len() != 11 || !rest.ends_with('Z') {
        return None;
    }
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// A regular file of at most [`MAX_FILE`] bytes.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read ({e})"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read ({e})"))?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(format!("not a regular file of at most {MAX_FILE} bytes"));
    }
    let mut body = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE)
        .read_to_end(&mut body)
        .map_err(|e| format!("cannot be read ({e})"))?;
    Ok(body)
}

/// What a change of one file looks like from outside. The inode as well as the time
/// and length: a renewed certificate is often exactly as long as the old one, and a
/// copy that keeps times (`cp -p`, `install -p`, `rsync -t`) or a Kubernetes Secret
/// volume's symlink swap can bring a file with an old modification time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    dev: u64,
    ino: u64,
}

/// The stamps of the pair: (certificate, key).
pub type Stamp = [FileStamp; 2];

/// The stamp of the pair now, following symlinks (a file that cannot be read stamps
/// as nothing).
pub fn stamp(certificate: &Path, key: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let one = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| FileStamp {
                modified: m.modified().ok(),
                len: m.len(),
                dev: m.dev(),
                ino: m.ino(),
            })
            .unwrap_or_default()
    };
    [one(certificate), one(key)]
}

/// The configuration new handshakes use; swapped whole by a reload.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<rustls::ServerConfig>,
}

impl Certificates {
    pub fn new(config: &TlsConfig) -> Self {
        Self {
            current: ArcSwap::new(config.server.clone()),
        }
    }

    /// The configuration for the next handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// From now on, new handshakes use `config`.
    pub fn replace(&self, config: &TlsConfig) {
        self.current.store(config.server.clone());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed pair for `name` (openssl), written into `dir`; (cert, key).
    pub(crate) fn pair(dir: &Path, name: &str, tag: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{tag}.crt"));
        let key = dir.join(format!("{tag}.key"));
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl req");
        (cert, key)
    }

    /// A same-length replacement with the old modification time (`cp -p`), or a
    /// Kubernetes Secret volume's swap of its `..data` symlink, still changes the stamp.
    #[test]
    fn a_replaced_file_changes_the_stamp_even_with_the_same_time_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_a")).unwrap();
        std::fs::create_dir(d.join("..2026_b")).unwrap();
        for (sub, body) in [("..2026_a", "certificate A"), ("..2026_b", "certificate B")] {
            std::fs::write(d.join(sub).join("tls.crt"), body).unwrap();
            std::fs::write(d.join(sub).join("tls.key"), "key").unwrap();
        }
        let old = std::fs::metadata(d.join("..2026_a/tls.crt"))
            .unwrap()
            .modified()
            .unwrap();
        for f in ["tls.crt", "tls.key"] {
            std::fs::File::options()
                .write(true)
                .open(d.join("..2026_b").join(f))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        std::os::unix::fs::symlink("..2026_a", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tls.crt", d.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", d.join("tls.key")).unwrap();
        let (cert, key) = (d.join("tls.crt"), d.join("tls.key"));
        let before = stamp(&cert, &key);
        assert_eq!(before, stamp(&cert, &key), "nothing changed");
        // What the kubelet does: a new ..data symlink renamed over the old one.
        std::os::unix::fs::symlink("..2026_b", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "certificate B");
        let after = stamp(&cert, &key);
        assert_ne!(before[0], after[0], "same length, same time, other file");
        assert_ne!(before[1], after[1]);
        assert_eq!(
            stamp(&d.join("missing"), &key)[0],
            FileStamp::default(),
            "a missing file stamps as nothing"
        );
    }

    /// notAfter in either time format (UTCTime until 2049, GeneralizedTime after).
    #[test]
    fn not_after_reads_both_time_formats() {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag, body.len() as u8];
            out.extend_from_slice(body);
            out
        }
        let cert = |after: Vec<u8>| {
            let validity = tlv(0x30, &[tlv(0x17, b"250101000000Z"), after].concat());
            let tbs = [
                tlv(0xa0, &tlv(0x02, &[2])),
                tlv(0x02, &[1]),
                tlv(0x30, &[]),
                tlv(0x30, &[]),
                validity,
            ]
            .concat();
            tlv(0x30, &tlv(0x30, &tbs))
        };
        assert_eq!(
            not_after(&cert(tlv(0x18, b"20600101000000Z"))),
            Some(2_840_140_800)
        );
        assert_eq!(
            not_after(&cert(tlv(0x17, b"491231235959Z"))),
            Some(2_524_607_999)
        );
        assert_eq!(not_after(&cert(tlv(0x17, b"700101000000Z"))), Some(0));
        assert_eq!(
            not_after(&cert(tlv(0x17, b"7001010000Z"))),
            None,
            "too short"
        );
        assert_eq!(not_after(b"\x30\x80"), None);
        assert_eq!(not_after(&[]), None);
    }

    #[test]
    fn a_pair_loads_and_every_bad_one_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "dns.test", "a");
        let loaded = TlsConfig::load(&cert, &key).unwrap();
        assert_eq!(loaded.server.alpn_protocols, [b"dot".to_vec()]);
        // openssl says when it ends; so must we.
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        let end = String::from_utf8(out.stdout).unwrap(); // notAfter=2026-12-09 05:20:00Z
        let end = end.trim().trim_start_matches("notAfter=");
        let date = std::process::Command::new("date")
            .args(["-u", "-d", end, "+%s"])
            .output()
            .unwrap();
        let want: i64 = String::from_utf8(date.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(loaded.not_after, Some(want), "{end}");
        let (_, other_key) = pair(dir.path(), "dns.test", "b");
        let e = TlsConfig::load(&cert, &other_key).unwrap_err();
        assert_eq!(e.file, Which::Key, "{e}");
        assert!(
            e.message.contains("b.key") && e.message.contains("does not go with"),
            "{e}"
        );
        let e = TlsConfig::load(&dir.path().join("missing.crt"), &key).unwrap_err();
        assert_eq!(e.file, Which::Certificate);
        assert!(e.message.contains("missing.crt"), "{e}");
        // A key where the certificate should be; a certificate where the key should be.
        let e = TlsConfig::load(&key, &key).unwrap_err();
        assert_eq!(e.file, Which::Certificate, "{e}");
        let e = TlsConfig::load(&cert, &cert).unwrap_err();
        assert_eq!(e.file, Which::Key, "{e}");
        // Never the file's content in the message.
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "hunter2-very-secret\n").unwrap();
        let e = TlsConfig::load(&secret, &key).unwrap_err();
        assert!(!e.message.contains("hunter2"), "{e}");
        assert!(
            TlsConfig::load(Path::new("/dev/zero"), &key).is_err(),
            "not a regular file"
        );
    }
}
