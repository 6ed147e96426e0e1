//! dnsmasq as an authoritative loopback DNS server for `*.test`: CERT records (`--dns-rr`, type
//! 37, RFC 4398 rdata given as hex), SRV records (`--srv-host`) and A records (`--host-record`).
//! `--local=/test/` makes it answer NXDOMAIN/NODATA for anything else under `test` instead of
//! REFUSED (it has no upstream servers). Runs in the foreground (`--no-daemon`) under `spawn_tied`
//! (stopped on drop or when the test process dies); quiet (no `--log-queries`), its stderr is kept for failure messages.

use std::fmt::Write as _;
use std::time::Duration;

use tempfile::TempDir;

use super::{ChildGuard, free_port, program, require_program, spawn_tied, wait_for_tcp};

pub const INSTALL: &str = "apt-get install -y dnsmasq-base";

/// The records to serve.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    /// (name, rdata) of CERT records.
    pub certs: Vec<(String, Vec<u8>)>,
    /// (`_ldap._tcp.DOMAIN`, target, port, priority, weight).
    pub srv: Vec<(String, String, u16, u16, u16)>,
    /// (name, IPv4) A records.
    pub hosts: Vec<(String, String)>,
    /// (name, `IP#PORT`): queries for the name (and below it) are forwarded there instead of
    /// answered locally, e.g. to a server that never answers (a timeout at one name only).
    pub forward: Vec<(String, String)>,
}

/// RFC 4398 CERT rdata: type (2 bytes), key tag (2), algorithm (1), then the certificate or URL.
pub fn cert_rdata(cert_type: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + data.len());
    v.extend_from_slice(&cert_type.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0]);
    v.extend_from_slice(data);
    v
}

fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub struct Dnsmasq {
    _child: ChildGuard,
    dir: TempDir,
    pub port: u16,
}

impl Dnsmasq {
    pub fn start(zone: &Zone) -> Dnsmasq {
        require_program("dnsmasq", INSTALL);
        let dir = TempDir::new().expect("temp dir");
        let mut args: Vec<String> = vec![
            "--no-daemon".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--no-poll".into(),
            "--bind-interfaces".into(),
            "--listen-address=127.0.0.1".into(),
            "--conf-file=/dev/null".into(),
            "--local=/test/".into(),
            "--cache-size=0".into(),
            format!("--pid-file={}", dir.path().join("dnsmasq.pid").display()),
        ];
        // DCDT_DNS_LOG=1: log every query with its transport (UDP/TCP); printed on drop.
        if std::env::var_os("DCDT_DNS_LOG").is_some() {
            args.push("--log-queries=proto".into());
        }
        for (name, rdata) in &zone.certs {
            args.push(format!("--dns-rr={name},37,{}", hex(rdata)));
        }
        for (service, target, port, prio, weight) in &zone.srv {
            args.push(format!(
                "--srv-host={service},{target},{port},{prio},{weight}"
            ));
        }
        for (name, ip) in &zone.hosts {
            args.push(format!("--host-record={name},{ip}"));
        }
        for (name, upstream) in &zone.forward {
            args.push(format!("--server=/{name}/{upstream}"));
        }
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let log = dir.path().join(format!("dnsmasq-{attempt}.log"));
            let mut all = args.clone();
            all.push(format!("--port={port}"));
            let mut child = spawn_tied(&program("dnsmasq"), &all, &log)
                .unwrap_or_else(|e| panic!("cannot start dnsmasq under bash ({e}): {INSTALL}"));
            match wait_for_tcp(&mut child, port, Duration::from_secs(10), Some(&log)) {
                Ok(()) => {
                    return Dnsmasq {
                        _child: child,
                        dir,
                        port,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("dnsmasq did not start: {last}");
    }

    /// The dnsmasq log files (stderr of each start attempt).
    pub fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".log") {
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if std::env::var_os("DCDT_DNS_LOG").is_some() {
            eprintln!("---- dnsmasq log\n{}", self.log());
        }
    }
}
