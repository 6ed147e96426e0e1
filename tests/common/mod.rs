//! Shared by the integration tests: the built binary, the committed test PKI, and the
//! `message open` command line of the receiving side (iis@hisp-b.example).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_direct-agent");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the committed test PKI.
pub fn cert(name: &str) -> PathBuf {
    root().join("certs").join(name)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `direct-agent message open --in INPUT` as iis@hisp-b.example, trusting `anchors` and checking
/// `crls` (file names under certs/).
pub fn open_as_iis(input: &Path, anchors: &[&str], crls: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["message", "open", "--in"])
        .arg(input)
        .arg("--key")
        .arg(cert("iis@hisp-b.example.key"))
        .arg("--cert")
        .arg(cert("iis@hisp-b.example.pem"));
    for a in anchors {
        c.arg("--anchor").arg(cert(a));
    }
    for r in crls {
        c.arg("--crl").arg(cert(r));
    }
    c
}
