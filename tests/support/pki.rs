//! A test CA and leaf certificates, made with openssl, for DNS over TLS and XoT.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The name every test certificate is for.
pub const NAME: &str = "dns.test";

pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(tool).arg("version").output().is_ok()
}

/// Whether every tool in `tools` is here; when one is not, the test is skipped,
/// unless `PRIVATELINK_DNS_E2E` says the tools are required (CI), where it fails.
pub fn tools_or_skip(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    assert!(
        missing.is_empty() || std::env::var_os("PRIVATELINK_DNS_E2E").is_none(),
        "{missing:?} required"
    );
    missing.is_empty()
}

pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir` (ca.crt, ca.key).
pub fn ca(dir: &Path) {
    let d = |f: &str| dir.join(f).display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        &d("ca.key"),
        "-out",
        &d("ca.crt"),
    ]);
}

/// A leaf for NAME signed by the CA, with this serial, written to `tag`.crt/.key.
pub fn leaf(dir: &Path, tag: &str, serial: &str) -> (PathBuf, PathBuf) {
    let d = |f: &str| dir.join(f).display().to_string();
    let (key, csr, crt, ext) = (
        d(&format!("{tag}.key")),
        d(&format!("{tag}.csr")),
        d(&format!("{tag}.crt")),
        d(&format!("{tag}.ext")),
    );
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN={NAME}"),
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    std::fs::write(&ext, format!("subjectAltName=DNS:{NAME}\n")).unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &d("ca.crt"),
        "-CAkey",
        &d("ca.key"),
        "-set_serial",
        serial,
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &crt,
    ]);
    (PathBuf::from(crt), PathBuf::from(key))
}
