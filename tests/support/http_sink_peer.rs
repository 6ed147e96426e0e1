//! A loopback HTTP peer for the `http` and `soap` sink tests: `http_sink_peer.py` (Python's
//! `http.server`) on 127.0.0.1, answering by the first path segment (`/401/…`, `/soap-aa/…`, see
//! the script) and recording every request (method, path, headers, body, parsed SOAP fields) as
//! a JSON line, read back with [`HttpSinkPeer::requests`]. It stops when its standard input
//! closes (on drop, or when the test process dies). [`HttpSinkPeer::start_tls`] serves HTTPS
//! with a fresh self-signed certificate for 127.0.0.1 made by the `openssl` CLI.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;
use tempfile::TempDir;

use super::{ChildGuard, log_file, require_program, run};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/http_sink_peer.py"
);

/// One request the peer received.
#[derive(Debug, Clone, Deserialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    body_b64: String,
    /// The `submitSingleMessage` fields as the server's XML parser read them (SOAP modes).
    pub soap: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Recorded {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body_b64)
            .expect("the peer records bodies as base64")
    }

    /// A SOAP field as the server read it.
    pub fn soap_field(&self, name: &str) -> Option<String> {
        self.soap.as_ref()?.get(name)?.as_str().map(str::to_string)
    }
}

pub struct HttpSinkPeer {
    _child: ChildGuard,
    dir: TempDir,
    pub port: u16,
}

impl HttpSinkPeer {
    /// Start the peer; paths without a mode segment are answered with `default_mode`.
    pub fn start(default_mode: &str) -> HttpSinkPeer {
        HttpSinkPeer::launch(default_mode, false)
    }

    /// [`HttpSinkPeer::start`] over HTTPS; its certificate is [`HttpSinkPeer::ca_pem`].
    pub fn start_tls(default_mode: &str) -> HttpSinkPeer {
        HttpSinkPeer::launch(default_mode, true)
    }

    fn launch(default_mode: &str, tls: bool) -> HttpSinkPeer {
        require_program("python3", "apt-get install -y python3");
        let dir = TempDir::new().expect("temp dir");
        let log = dir.path().join("peer.log");
        let mut command = Command::new("python3");
        command
            .arg(SCRIPT)
            .arg(dir.path().join("requests.jsonl"))
            .arg(default_mode);
        if tls {
            let (cert, key) = self_signed(dir.path());
            command.arg(cert).arg(key);
        }
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file(&log))
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
            panic!(
                "the HTTP sink peer did not start: {line:?} {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        HttpSinkPeer {
            _child: child,
            dir,
            port,
        }
    }

    /// `http://127.0.0.1:PORT/REL`.
    pub fn url(&self, rel: &str) -> String {
        format!("http://127.0.0.1:{}/{rel}", self.port)
    }

    /// `https://127.0.0.1:PORT/REL` (for [`HttpSinkPeer::start_tls`]).
    pub fn https_url(&self, rel: &str) -> String {
        format!("https://127.0.0.1:{}/{rel}", self.port)
    }

    /// The self-signed certificate of [`HttpSinkPeer::start_tls`] (its own CA).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn record_path(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        std::fs::read_to_string(self.record_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line from the peer"))
            .collect()
    }
}

/// A self-signed CA certificate and key for 127.0.0.1 in `dir`.
fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    require_program("openssl", "apt-get install -y openssl");
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
        .args(["-nodes", "-days", "2", "-subj", "/CN=http-sink-peer.test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}
