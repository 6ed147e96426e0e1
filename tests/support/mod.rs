//! Real peers for the discovery tests, started from installed programs on loopback: a Python
//! HTTP server (CRLs, AIA caIssuers, IPKIX URLs), a test PKI made with the `openssl` CLI, dnsmasq
//! (CERT, SRV and A records) and OpenLDAP slapd. Each peer is killed when its guard is dropped;
//! a peer that is missing fails the test with the command that installs it.
#![allow(dead_code)]

pub mod dnsmasq;
pub mod dovecot;
pub mod http;
pub mod http_sink_peer;
pub mod pki;
pub mod slapd;
pub mod smtp_peer;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // A child tied to our stdin pipe (see `spawn_tied`) stops its program when the pipe
        // closes; give it a moment, then kill whatever is left.
        if let Some(stdin) = self.0.stdin.take() {
            drop(stdin);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `program args…` under a small bash wrapper that stops it when our end of its standard
/// input closes: on drop, and also when the test process dies without unwinding (killed by a
/// timeout), so no slapd or dnsmasq outlives the tests. The wrapper exits when the program
/// does (e.g. it could not bind its port). Its stderr goes to `log`. (bash gives background
/// jobs /dev/null as stdin, hence the pipe is handed to `cat` through fd 3.)
pub fn spawn_tied(program: &str, args: &[String], log: &Path) -> std::io::Result<ChildGuard> {
    const WRAPPER: &str = r#"exec 3<&0; cat <&3 >/dev/null & c=$!; exec 3<&-; "$@" </dev/null & p=$!; wait -n "$c" "$p"; kill "$p" "$c" 2>/dev/null; wait "$p" 2>/dev/null; exit 0"#;
    Command::new("bash")
        .arg("-c")
        .arg(WRAPPER)
        .arg("bash")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log_file(log))
        .spawn()
        .map(ChildGuard)
}

impl ChildGuard {
    /// If the child has exited: its status and standard error (from the pipe, or from `log`
    /// when stderr went to that file), for failure messages.
    pub fn exited_with(&mut self, log: Option<&Path>) -> Option<String> {
        match self.0.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = self.0.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                if let Some(log) = log {
                    err.push_str(&std::fs::read_to_string(log).unwrap_or_default());
                }
                Some(format!("{status}: {err}"))
            }
            _ => None,
        }
    }
}

/// Fail (never skip) when `program` is not installed.
pub fn require_program(program: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin", "/usr/local/sbin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file());
    assert!(found, "{program} is not installed: {install}");
}

/// The path of an installed program, looking in the sbin directories too (slapd, dnsmasq).
pub fn program(name: &str) -> String {
    for d in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    name.to_string()
}

/// A loopback port that was free for both TCP and UDP a moment ago. Another process may take it
/// before the caller binds it: callers retry on failure.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Wait until something accepts TCP connections on 127.0.0.1:`port`, or `child` exits, or
/// `limit` passes. Err carries why (with the child's stderr, read from `log` if it went there).
pub fn wait_for_tcp(
    child: &mut ChildGuard,
    port: u16,
    limit: Duration,
    log: Option<&Path>,
) -> Result<(), String> {
    let start = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Some(why) = child.exited_with(log) {
            return Err(format!("exited: {why}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "nothing listens on 127.0.0.1:{port} after {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A file for a child's stderr (a pipe nobody reads could fill up and stall the child).
pub fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).expect("create log file"))
}

/// Run a command to completion; panic with its output when it fails.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A loopback DNS "server" that never answers: a UDP socket nobody reads and a TCP listener
/// that never accepts (connections complete in the kernel, then nothing is said). Queries to it
/// time out instead of being refused.
pub struct Blackhole {
    _udp: UdpSocket,
    _tcp: TcpListener,
    pub port: u16,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        loop {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
            let port = udp.local_addr().expect("local addr").port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
                return Blackhole {
                    _udp: udp,
                    _tcp: tcp,
                    port,
                };
            }
        }
    }
}
pub mod agents;
