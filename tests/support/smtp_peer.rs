//! A real SMTP peer for the outbound delivery tests: `smtp_peer.py` (Python aiosmtpd) on
//! 127.0.0.1, driven by a JSON script written here: scripted replies to MAIL, RCPT and DATA,
//! STARTTLS with a certificate made by the `openssl` CLI, AUTH PLAIN/LOGIN with one user. Every
//! AUTH attempt and every accepted message (envelope, size, Message-ID, SHA-256, never the body)
//! is logged as a JSON line, read back with [`SmtpPeer::auth_attempts`] and
//! [`SmtpPeer::messages`]. The server stops when its standard input closes (on drop, or when the
//! test process dies).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use tempfile::TempDir;

use super::{ChildGuard, require_program, run};

pub const INSTALL: &str = "pip install aiosmtpd";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_peer.py");

/// How the peer behaves.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// Offer STARTTLS with a fresh self-signed certificate for `tls_names` (see
    /// [`SmtpPeer::ca_pem`]).
    pub starttls: bool,
    /// Subject alternative names of the certificate; default `127.0.0.1` and `localhost`.
    pub tls_names: Vec<String>,
    /// Refuse MAIL before STARTTLS.
    pub require_tls: bool,
    /// Require AUTH with this user name and password.
    pub auth: Option<(String, String)>,
    /// Replies to successive MAIL commands, then the normal one.
    pub mail: Vec<String>,
    /// Replies to successive RCPT commands, then the normal one.
    pub rcpt: Vec<String>,
    /// Replies to successive ends of DATA, then the normal one.
    pub data: Vec<String>,
    /// Fixed replies to RCPT for some recipients.
    pub rcpt_by_address: Vec<(String, String)>,
}

/// A message the peer accepted.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceivedMessage {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub mail_options: Vec<String>,
    pub size: usize,
    pub message_id: Option<String>,
    pub sha256: String,
    pub tls: bool,
    pub auth_user: Option<String>,
}

/// One AUTH command (PLAIN or LOGIN) the peer answered.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthAttempt {
    pub mechanism: String,
    pub user: Option<String>,
    pub success: bool,
    pub tls: bool,
}

pub struct SmtpPeer {
    _child: ChildGuard,
    dir: TempDir,
    pub port: u16,
}

impl SmtpPeer {
    pub fn start(opts: &PeerOptions) -> SmtpPeer {
        let probe = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): apt-get install -y python3"));
        assert!(
            probe.success(),
            "the Python module aiosmtpd is not installed: {INSTALL}"
        );
        let dir = TempDir::new().expect("temp dir");
        let log = dir.path().join("peer.jsonl");
        let mut script = serde_json::json!({
            "host": "127.0.0.1",
            "port": 0,
            "log": log,
            "require_tls": opts.require_tls,
            "mail": opts.mail,
            "rcpt": opts.rcpt,
            "data": opts.data,
            "rcpt_by_address": opts
                .rcpt_by_address
                .iter()
                .cloned()
                .collect::<std::collections::HashMap<_, _>>(),
        });
        if let Some((user, password)) = &opts.auth {
            script["auth"] = serde_json::json!({"user": user, "password": password});
        }
        if opts.starttls {
            let (cert, key) = self_signed(dir.path(), &opts.tls_names);
            script["tls_cert"] = serde_json::json!(cert);
            script["tls_key"] = serde_json::json!(key);
        }
        let script_path = dir.path().join("script.json");
        std::fs::write(&script_path, script.to_string()).expect("write the peer's script");

        let child = Command::new("python3")
            .arg(SCRIPT)
            .arg(&script_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 ({e}): apt-get install -y python3"));
        let mut child = ChildGuard(child);
        let mut line = String::new();
        let stdout = child.0.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        let Some(port) = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse::<u16>().ok())
        else {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the SMTP peer did not start ({INSTALL}?): {line:?} {err}");
        };
        // Nobody reads the peer's stderr from here on: send it to a file so that a chatty peer
        // cannot fill the pipe and stall.
        if let Some(stderr) = child.0.stderr.take() {
            let path = dir.path().join("stderr.log");
            std::thread::spawn(move || {
                if let Ok(mut f) = std::fs::File::create(path) {
                    let mut stderr = stderr;
                    let _ = std::io::copy(&mut stderr, &mut f);
                }
            });
        }
        SmtpPeer {
            _child: child,
            dir,
            port,
        }
    }

    /// The certificate the peer offers with STARTTLS (self-signed: it is its own CA), for
    /// `smtp_out.tls_ca`.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.events("message")
    }

    /// The AUTH attempts answered so far, in order.
    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        self.events("auth")
    }

    /// What the peer wrote to its standard error (for failure messages).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn events<T: for<'de> Deserialize<'de>>(&self, kind: &str) -> Vec<T> {
        let text = std::fs::read_to_string(self.dir.path().join("peer.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == kind)
            .map(|v| {
                serde_json::from_value(v.clone())
                    .unwrap_or_else(|e| panic!("the peer logged an odd {kind} event {v}: {e}"))
            })
            .collect()
    }
}

/// A self-signed certificate (and its key) for `names` (IP addresses or DNS names).
fn self_signed(dir: &Path, names: &[String]) -> (PathBuf, PathBuf) {
    require_program("openssl", "apt-get install -y openssl");
    let default = ["127.0.0.1".to_string(), "localhost".to_string()];
    let names = if names.is_empty() {
        &default[..]
    } else {
        names
    };
    let san = names
        .iter()
        .map(|n| {
            if n.parse::<std::net::IpAddr>().is_ok() {
                format!("IP:{n}")
            } else {
                format!("DNS:{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=smtp-peer.test"])
        .arg("-addext")
        .arg(format!("subjectAltName={san}"))
        .arg("-addext")
        .arg("basicConstraints=critical,CA:TRUE")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}
