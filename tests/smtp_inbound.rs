//! The inbound SMTP listener over loopback: a real `run_listener` on 127.0.0.1:0 driven by a raw
//! std `TcpStream` client, a Rust STARTTLS client, and Python's smtplib as a standard client.
//! Messages land in a `MemoryReception`. STARTTLS uses a server certificate made for the test
//! with the `openssl` CLI (the committed test PKI is for S/MIME, without serverAuth).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use direct_agent::config::SmtpInConfig;
use direct_agent::transport::smtp_in::{
    MemoryReception, Reception, SmtpServerSettings, run_listener,
};
use tokio::sync::watch;

/// How long a client waits for a reply before the test fails (never a synchronisation).
const GUARD: Duration = Duration::from_secs(30);
const HOST: &str = "hisp-b.example";
const OURS: &str = "iis@hisp-b.example";

// --- the server ---------------------------------------------------------------------------

/// A listener on 127.0.0.1:0, run on its own runtime thread.
struct Server {
    addr: SocketAddr,
    reception: Arc<MemoryReception>,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(settings: SmtpServerSettings) -> Server {
        Server::start_with(settings, Duration::from_secs(30))
    }

    fn start_with(settings: SmtpServerSettings, drain: Duration) -> Server {
        let reception = Arc::new(MemoryReception::new(&[HOST]));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let for_listener: Arc<dyn Reception> = reception.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
            rt.block_on(async move {
                // tokio's bind asks for a backlog of 1024 (std's is 128): room for the
                // connections waiting while max_connections sessions run.
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
                let _ = addr_tx.send(listener.local_addr());
                run_listener(
                    listener,
                    Arc::new(settings),
                    for_listener,
                    shutdown_rx,
                    drain,
                )
                .await;
            });
        });
        let addr = match addr_rx.recv_timeout(GUARD) {
            Ok(Ok(addr)) => addr,
            other => panic!("listener did not start: {other:?}"),
        };
        Server {
            addr,
            reception,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Ask for shutdown and wait until `run_listener` returned; how long that took.
    fn stop(&mut self) -> Duration {
        let start = Instant::now();
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            assert!(t.join().is_ok(), "the listener thread panicked");
        }
        start.elapsed()
    }

    fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn settings() -> SmtpServerSettings {
    let mut s = SmtpServerSettings::new(HOST);
    s.max_size = 64 * 1024;
    s
}

// --- a raw client -------------------------------------------------------------------------

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connect and read the banner.
    fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::connect_only(addr);
        let banner = c.reply();
        assert_eq!(banner, format!("220 {HOST} ESMTP direct-agent"));
        c
    }

    fn connect_only(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(GUARD))
            .unwrap_or_else(|e| panic!("{e}"));
        let writer = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// One whole reply, its lines joined by '\n'.
    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!("connection closed while waiting for a reply ({lines:?})"),
                Ok(_) => {}
                Err(e) => panic!("no reply ({e}); so far {lines:?}"),
            }
            let line = line.trim_end_matches("\r\n").to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("sending: {e}"));
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// EHLO, MAIL, RCPT and DATA, each checked; ready for the message.
    fn open_data(&mut self, from: &str, to: &str) {
        assert!(self.cmd("EHLO client.hisp-a.example").starts_with("250"));
        assert!(
            self.cmd(&format!("MAIL FROM:<{from}>"))
                .starts_with("250 2.1.0")
        );
        assert!(
            self.cmd(&format!("RCPT TO:<{to}>"))
                .starts_with("250 2.1.5")
        );
        assert!(self.cmd("DATA").starts_with("354 "));
    }

    /// Whether the server closed the connection: EOF or reset, no more data.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => {
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        }
    }
}

/// "NNN X.Y.Z" of a reply.
fn code(reply: &str) -> String {
    reply.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ")
}

/// The stored message without its first (Received:) header field.
fn after_received(raw: &[u8]) -> &[u8] {
    assert!(
        raw.starts_with(b"Received: from "),
        "{}",
        String::from_utf8_lossy(raw)
    );
    // The Received field is folded: it ends at the first CRLF not followed by a tab.
    let mut i = 0;
    while let Some(p) = raw[i..].windows(2).position(|w| w == b"\r\n") {
        i += p + 2;
        if raw.get(i) != Some(&b'\t') {
            return &raw[i..];
        }
    }
    panic!("no end of the Received field")
}

// --- test TLS material ----------------------------------------------------------------------

/// A self-signed server certificate for `localhost` / 127.0.0.1 (serverAuth), made with the
/// `openssl` CLI in `dir`: (certificate, key).
fn server_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the openssl CLI ({e}); install it: apt-get install openssl")
        });
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn tls_settings(dir: &Path, require_tls: bool) -> SmtpServerSettings {
    let (cert, key) = server_certificate(dir);
    let cfg = SmtpInConfig {
        tls_cert: Some(cert),
        tls_key: Some(key),
        require_tls,
        max_size: "64KiB".into(),
        ..SmtpInConfig::default()
    };
    SmtpServerSettings::from_config(&cfg, HOST).unwrap_or_else(|e| panic!("{e}"))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

// --- tests ----------------------------------------------------------------------------------

#[test]
fn a_message_is_stored_byte_exact_before_the_250() {
    let server = Server::start(settings());
    let mut c = server.client();
    let ehlo = c.cmd("EHLO client.hisp-a.example");
    assert_eq!(
        ehlo,
        format!(
            "250-{HOST}\n250-PIPELINING\n250-SIZE 65536\n250-8BITMIME\n250 ENHANCEDSTATUSCODES"
        )
    );
    assert!(
        c.cmd("MAIL FROM:<ehr@hisp-a.example> BODY=8BITMIME")
            .starts_with("250 2.1.0")
    );
    assert!(c.cmd(&format!("RCPT TO:<{OURS}>")).starts_with("250 2.1.5"));
    assert!(c.cmd("DATA").starts_with("354 "));
    let wire = b"From: <ehr@hisp-a.example>\r\nSubject: t\r\n\r\n..one dot\r\n...\r\n.x\r\n\xc3\xa9 8bit\r\n\r\n.\r\n";
    let stored = b"From: <ehr@hisp-a.example>\r\nSubject: t\r\n\r\n.one dot\r\n..\r\nx\r\n\xc3\xa9 8bit\r\n\r\n";
    c.send(wire);
    let reply = c.reply();
    // The 250 is sent only once store returned, so the message is there when it arrives.
    assert_eq!(
        server.reception.count(),
        1,
        "250 before the message was stored"
    );
    assert_eq!(reply, "250 2.0.0 OK queued as MEM000001");
    assert!(c.cmd("QUIT").starts_with("221 2.0.0"));

    let messages = server.reception.messages();
    let (envelope, raw) = &messages[0];
    assert_eq!(envelope.mail_from, "ehr@hisp-a.example");
    assert_eq!(envelope.rcpt_to, vec![OURS.to_string()]);
    assert_eq!(envelope.helo, "client.hisp-a.example");
    assert!(envelope.peer.ip().is_loopback());
    assert!(!envelope.tls);
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.starts_with(&format!(
            "Received: from client.hisp-a.example ([127.0.0.1])\r\n\tby {HOST} with ESMTP\r\n\tfor <{OURS}>;\r\n\t"
        )),
        "{text}"
    );
    assert_eq!(after_received(raw), stored);
}

#[test]
fn python_smtplib_delivers_in_plain_text_and_after_starttls() {
    let dir = tempdir();
    let settings = tls_settings(dir.path(), false);
    let cert = dir.path().join("server.pem");
    let server = Server::start(settings);
    let script = r#"
import smtplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
msg = b"From: <ehr@hisp-a.example>\r\nTo: <iis@hisp-b.example>\r\nSubject: py\r\n\r\n.dot line\r\nend\r\n"
with smtplib.SMTP("127.0.0.1", port, local_hostname="py.hisp-a.example", timeout=30) as s:
    s.sendmail("ehr@hisp-a.example", ["iis@hisp-b.example"], msg)
with smtplib.SMTP("localhost", port, local_hostname="py.hisp-a.example", timeout=30) as s:
    s.ehlo()
    assert s.has_extn("starttls"), "STARTTLS not offered"
    assert s.has_extn("pipelining") and s.has_extn("8bitmime")
    assert int(s.esmtp_features["size"]) == 65536
    s.starttls(context=ssl.create_default_context(cafile=cafile))
    s.ehlo()
    assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS"
    refused = s.sendmail("ehr@hisp-a.example", ["iis@hisp-b.example"], msg)
    assert refused == {}, refused
    try:
        s.sendmail("ehr@hisp-a.example", ["someone@elsewhere.example"], msg)
        raise SystemExit("a foreign recipient was accepted")
    except smtplib.SMTPRecipientsRefused as e:
        code = e.recipients["someone@elsewhere.example"][0]
        assert code == 550, code
print("ok")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(server.addr.port().to_string())
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); install it: apt-get install python3")
        });
    assert!(
        out.status.success(),
        "smtplib client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let messages = server.reception.messages();
    assert_eq!(messages.len(), 2);
    let sent = b"From: <ehr@hisp-a.example>\r\nTo: <iis@hisp-b.example>\r\nSubject: py\r\n\r\n.dot line\r\nend\r\n";
    for (i, (envelope, raw)) in messages.iter().enumerate() {
        assert_eq!(envelope.tls, i == 1);
        assert_eq!(envelope.helo, "py.hisp-a.example");
        assert_eq!(after_received(raw), sent);
        let protocol = if i == 1 {
            "with ESMTPS"
        } else {
            "with ESMTP\r\n"
        };
        assert!(String::from_utf8_lossy(raw).contains(protocol));
    }
}

#[test]
fn a_rust_client_starts_tls_verifying_the_server_certificate() {
    let dir = tempdir();
    let settings = tls_settings(dir.path(), true);
    let server = Server::start(settings);
    let root = std::fs::read(dir.path().join("server.pem")).unwrap_or_else(|e| panic!("{e}"));
    let mut c = server.client();
    assert!(c.cmd("EHLO c.hisp-a.example").ends_with("\n250 STARTTLS"));
    assert!(c.cmd("STARTTLS").starts_with("220 2.0.0"));
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(
            native_tls::Certificate::from_pem(&root).unwrap_or_else(|e| panic!("{e}")),
        )
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let stream = c.reader.into_inner();
    let mut tls = connector
        .connect("localhost", stream)
        .unwrap_or_else(|e| panic!("TLS handshake: {e}"));
    let read_reply = |tls: &mut native_tls::TlsStream<TcpStream>, line: &str| {
        tls.write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        // Read until a final reply line ("NNN " ... CRLF).
        loop {
            let n = tls.read(&mut byte).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(n, 1, "connection closed");
            got.push(byte[0]);
            if got.ends_with(b"\r\n") {
                let start = got[..got.len() - 2]
                    .windows(2)
                    .rposition(|w| w == b"\r\n")
                    .map(|p| p + 2)
                    .unwrap_or(0);
                if got.get(start + 3) == Some(&b' ') {
                    return String::from_utf8_lossy(&got).into_owned();
                }
            }
        }
    };
    // RFC 3207: after STARTTLS the client must say EHLO again.
    assert!(read_reply(&mut tls, "MAIL FROM:<a@hisp-a.example>").starts_with("503 5.5.1"));
    let ehlo = read_reply(&mut tls, "EHLO c.hisp-a.example");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(read_reply(&mut tls, "MAIL FROM:<a@hisp-a.example>").starts_with("250 2.1.0"));
    assert!(read_reply(&mut tls, &format!("RCPT TO:<{OURS}>")).starts_with("250 2.1.5"));
    assert!(read_reply(&mut tls, "DATA").starts_with("354"));
    assert!(read_reply(&mut tls, "Subject: tls\r\n\r\nbody\r\n.").starts_with("250 2.0.0"));
    let messages = server.reception.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].0.tls);
    assert!(String::from_utf8_lossy(&messages[0].1).contains("with ESMTPS"));
    assert_eq!(
        after_received(&messages[0].1),
        b"Subject: tls\r\n\r\nbody\r\n"
    );
}

#[test]
fn require_tls_refuses_mail_in_plain_text_with_530() {
    let dir = tempdir();
    let server = Server::start(tls_settings(dir.path(), true));
    let mut c = server.client();
    assert!(c.cmd("EHLO c.hisp-a.example").contains("STARTTLS"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@hisp-a.example>"),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(code(&c.cmd(&format!("RCPT TO:<{OURS}>"))), "503 5.5.1");
}

#[test]
fn settings_from_config_check_the_tls_files() {
    let no_tls = SmtpInConfig {
        require_tls: true,
        ..SmtpInConfig::default()
    };
    let err = SmtpServerSettings::from_config(&no_tls, HOST)
        .err()
        .unwrap_or_default();
    assert!(err.contains("require_tls"), "{err}");
    let missing = SmtpInConfig {
        tls_cert: Some("/nonexistent/cert.pem".into()),
        tls_key: Some("/nonexistent/key.pem".into()),
        ..SmtpInConfig::default()
    };
    let err = SmtpServerSettings::from_config(&missing, HOST)
        .err()
        .unwrap_or_default();
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let defaults = SmtpServerSettings::from_config(&SmtpInConfig::default(), HOST)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(defaults.max_size, 38 * 1024 * 1024);
    assert_eq!(defaults.max_recipients, 100);
    assert!(defaults.tls.is_none());
}

#[test]
fn a_recipient_in_a_foreign_domain_gets_550() {
    let server = Server::start(settings());
    let mut c = server.client();
    c.cmd("EHLO c.hisp-a.example");
    c.cmd("MAIL FROM:<a@hisp-a.example>");
    assert_eq!(code(&c.cmd("RCPT TO:<bob@hisp-c.example>")), "550 5.1.1");
    assert_eq!(code(&c.cmd(&format!("RCPT TO:<{OURS}>"))), "250 2.1.5");
}

#[test]
fn oversize_messages_get_552_and_nothing_is_stored() {
    let server = Server::start(settings());
    let mut c = server.client();
    c.cmd("EHLO c.hisp-a.example");
    assert_eq!(
        code(&c.cmd("MAIL FROM:<a@hisp-a.example> SIZE=65537")),
        "552 5.3.4"
    );
    // Announced small, but larger on the wire.
    assert_eq!(
        code(&c.cmd("MAIL FROM:<a@hisp-a.example> SIZE=100")),
        "250 2.1.0"
    );
    c.cmd(&format!("RCPT TO:<{OURS}>"));
    assert!(c.cmd("DATA").starts_with("354"));
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..200 {
        c.send(line.as_bytes());
    }
    c.send(b".\r\n");
    assert_eq!(code(&c.reply()), "552 5.3.4");
    // The session goes on.
    assert_eq!(code(&c.cmd("NOOP")), "250 2.0.0");
    assert_eq!(server.reception.count(), 0);
}

#[test]
fn commands_out_of_sequence_get_503() {
    let server = Server::start(settings());
    let mut c = server.client();
    assert_eq!(code(&c.cmd("MAIL FROM:<a@hisp-a.example>")), "503 5.5.1");
    c.cmd("EHLO c.hisp-a.example");
    assert_eq!(code(&c.cmd(&format!("RCPT TO:<{OURS}>"))), "503 5.5.1");
    assert_eq!(code(&c.cmd("DATA")), "503 5.5.1");
    c.cmd("MAIL FROM:<a@hisp-a.example>");
    assert_eq!(code(&c.cmd("DATA")), "503 5.5.1");
    assert_eq!(code(&c.cmd("XYZZY")), "500 5.5.1");
    assert_eq!(code(&c.cmd("VRFY iis")), "502 5.5.1");
    assert_eq!(code(&c.cmd("BDAT 1 LAST")), "502 5.5.1");
    assert_eq!(code(&c.cmd("MAIL FROM:<a@@x>")), "501 5.1.7");
    assert_eq!(server.reception.count(), 0);
}

#[test]
fn a_message_with_bare_lf_is_refused_and_not_stored() {
    let server = Server::start(settings());
    let mut c = server.client();
    c.open_data("a@hisp-a.example", OURS);
    c.send(b"Subject: smuggle\r\n\r\nbody\n.\nMAIL FROM:<x@y.example>\r\n.\r\n");
    let reply = c.reply();
    assert_eq!(code(&reply), "550 5.6.11", "{reply}");
    // The "MAIL" inside was part of the refused message, not a command; the session goes on.
    assert_eq!(code(&c.cmd("MAIL FROM:<a@hisp-a.example>")), "250 2.1.0");
    c.cmd(&format!("RCPT TO:<{OURS}>"));
    c.cmd("DATA");
    c.send(b"Subject: fine\r\n\r\nbody\r\n.\r\n");
    assert_eq!(code(&c.reply()), "250 2.0.0");
    let messages = server.reception.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        after_received(&messages[0].1),
        b"Subject: fine\r\n\r\nbody\r\n"
    );
}

#[test]
fn a_command_with_bare_lf_gets_500() {
    let server = Server::start(settings());
    let mut c = server.client();
    c.send(b"EHLO c.hisp-a.example\n");
    assert_eq!(code(&c.reply()), "500 5.5.2");
    // It was not run: MAIL still needs EHLO.
    assert_eq!(code(&c.cmd("MAIL FROM:<a@hisp-a.example>")), "503 5.5.1");
}

#[test]
fn a_10k_line_header_and_a_10k_octet_line_are_accepted() {
    let mut s = settings();
    s.max_size = 1024 * 1024;
    let server = Server::start(s);
    let mut c = server.client();
    c.open_data("a@hisp-a.example", OURS);
    let mut message = Vec::new();
    message.extend_from_slice(format!("X-Long: {}\r\n", "a".repeat(10_000)).as_bytes());
    for i in 0..10_000 {
        message.extend_from_slice(format!("X-Line-{i}: v\r\n").as_bytes());
    }
    message.extend_from_slice(b"\r\nbody\r\n");
    c.send(&message);
    c.send(b".\r\n");
    assert_eq!(code(&c.reply()), "250 2.0.0");
    let messages = server.reception.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(after_received(&messages[0].1), &message[..]);
}

#[test]
fn a_600_octet_command_line_gets_500_and_the_session_goes_on() {
    let server = Server::start(settings());
    let mut c = server.client();
    let long = format!("NOOP {}", "x".repeat(593));
    assert_eq!(long.len() + 2, 600);
    assert_eq!(code(&c.cmd(&long)), "500 5.5.2");
    assert_eq!(code(&c.cmd("NOOP")), "250 2.0.0");
}

#[test]
fn a_connection_dropped_in_data_stores_nothing() {
    let mut server = Server::start(settings());
    let mut c = server.client();
    c.open_data("a@hisp-a.example", OURS);
    c.send(b"Subject: cut\r\n\r\nhalf a bo");
    drop(c);
    // stop() returns once every session has ended, the dropped one included.
    let took = server.stop();
    assert!(took < Duration::from_secs(20), "drain took {took:?}");
    assert_eq!(server.reception.count(), 0);
}

#[test]
fn a_failing_store_gets_451() {
    let server = Server::start(settings());
    server.reception.set_failing(true);
    let mut c = server.client();
    c.open_data("a@hisp-a.example", OURS);
    c.send(b"Subject: s\r\n\r\nbody\r\n.\r\n");
    assert_eq!(code(&c.reply()), "451 4.3.0");
    assert_eq!(server.reception.count(), 0);
}

#[test]
fn pipelined_commands_get_their_replies_in_order() {
    let server = Server::start(settings());
    let mut c = server.client();
    c.send(
        format!(
            "EHLO c.hisp-a.example\r\nMAIL FROM:<a@hisp-a.example>\r\nRCPT TO:<x@hisp-c.example>\r\nRCPT TO:<{OURS}>\r\nDATA\r\n"
        )
        .as_bytes(),
    );
    assert!(c.reply().ends_with("250 ENHANCEDSTATUSCODES"));
    assert_eq!(code(&c.reply()), "250 2.1.0");
    assert_eq!(code(&c.reply()), "550 5.1.1");
    assert_eq!(code(&c.reply()), "250 2.1.5");
    assert!(c.reply().starts_with("354"));
    c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    assert_eq!(code(&c.reply()), "250 2.0.0");
    assert_eq!(code(&c.reply()), "221 2.0.0");
    let messages = server.reception.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0.rcpt_to, vec![OURS.to_string()]);
}

#[test]
fn two_hundred_concurrent_connections_each_deliver_a_message() {
    let mut s = settings();
    s.max_connections = 20;
    let server = Server::start(s);
    let addr = server.addr;
    let clients: Vec<_> = (0..200)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.open_data(&format!("sender{i}@hisp-a.example"), OURS);
                c.send(format!("Subject: {i}\r\n\r\nmessage {i}\r\n.\r\n").as_bytes());
                let reply = c.reply();
                assert_eq!(code(&reply), "250 2.0.0", "client {i}: {reply}");
                c.cmd("QUIT");
            })
        })
        .collect();
    for (i, t) in clients.into_iter().enumerate() {
        assert!(t.join().is_ok(), "client {i} failed");
    }
    let messages = server.reception.messages();
    assert_eq!(messages.len(), 200);
    let mut seen: Vec<usize> = messages
        .iter()
        .map(|(env, raw)| {
            let i: usize = env
                .mail_from
                .trim_start_matches("sender")
                .trim_end_matches("@hisp-a.example")
                .parse()
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                after_received(raw),
                format!("Subject: {i}\r\n\r\nmessage {i}\r\n").as_bytes()
            );
            i
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
}

#[test]
fn connections_past_max_connections_wait_for_a_free_slot() {
    let mut s = settings();
    s.max_connections = 2;
    let server = Server::start(s);
    let mut a = server.client();
    let _b = server.client();
    let mut c = Client::connect_only(server.addr);
    // No banner while both slots are taken (an observation window, not a synchronisation).
    c.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut byte = [0u8; 1];
    match c.reader.read(&mut byte) {
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("the third connection was served at once: {other:?}"),
    }
    c.reader
        .get_ref()
        .set_read_timeout(Some(GUARD))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code(&a.cmd("QUIT")), "221 2.0.0");
    assert_eq!(c.reply(), format!("220 {HOST} ESMTP direct-agent"));
}

#[test]
fn shutdown_answers_idle_sessions_finishes_data_and_stops_accepting() {
    let mut server = Server::start_with(settings(), Duration::from_secs(60));
    let mut idle = server.client();
    assert!(idle.cmd("EHLO c.hisp-a.example").starts_with("250"));
    let mut busy = server.client();
    busy.open_data("a@hisp-a.example", OURS);
    busy.send(b"Subject: during shutdown\r\n");

    let _ = server.shutdown.send(true);
    // The idle session is answered at once, not after the 5 minute command timeout.
    assert_eq!(
        idle.reply(),
        format!("421 4.3.2 {HOST} Service shutting down, closing connection")
    );
    assert!(idle.closed());

    // A connection made now is never served: refused, or reset when the listener closes.
    if let Ok(late) = TcpStream::connect(server.addr) {
        late.set_read_timeout(Some(GUARD))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        let _ = (&late).read_to_end(&mut got);
        assert!(
            got.is_empty(),
            "served after shutdown: {:?}",
            String::from_utf8_lossy(&got)
        );
    }

    // The session in DATA finishes its message, then gets 421 at its next command.
    busy.send(b"\r\nbody\r\n.\r\n");
    assert_eq!(code(&busy.reply()), "250 2.0.0");
    assert_eq!(code(&busy.reply()), "421 4.3.2");
    assert!(busy.closed());

    let took = server.stop();
    assert!(
        took < Duration::from_secs(30),
        "run_listener waited {took:?}"
    );
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "the listener still accepts after run_listener returned"
    );
    assert_eq!(server.reception.count(), 1);
}
