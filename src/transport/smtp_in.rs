//! The inbound SMTP server (RFC 5321) where partners' HISPs deliver Direct messages to us: a
//! listener that bounds its sessions with a semaphore ([`run_listener`]) and one session per
//! connection, generic over the stream ([`session`]). A session hands each message with its
//! envelope to a [`Reception`] (the agent's queue) and acknowledges it only once the reception
//! has stored it durably. [`MemoryReception`] is the test double.
//!
//! # Protocol
//! - Banner `220 <hostname> ESMTP direct-agent`. EHLO offers `PIPELINING`, `SIZE <max>`,
//!   `8BITMIME`, `ENHANCEDSTATUSCODES` and, when a certificate is configured and the session is
//!   not yet in TLS, `STARTTLS` (RFC 3207). HELO works too. After STARTTLS the session forgets
//!   its HELO and transaction; the client must send EHLO again.
//! - Not offered: SMTPUTF8 (`MAIL ... SMTPUTF8` and non-ASCII addresses are refused), CHUNKING
//!   (`BDAT` is answered 502 and what follows it is read as commands), BINARYMIME, REQUIRETLS
//!   (555), AUTH, VRFY, EXPN, TURN, ETRN, ATRN, BURL, LHLO (502). DSN parameters (RET, ENVID,
//!   NOTIFY, ORCPT) are accepted and ignored. `RCPT TO:<postmaster>` is asked of the reception
//!   as `postmaster`.
//! - Replies are written when the session is about to wait for input, so a pipelined batch
//!   (RFC 2920) gets its replies in one write.
//!
//! # Decisions
//! - **Bare CR or LF** (RFC 5321 §2.3.8): a command line holding one is answered
//!   `500 5.5.2` and not executed. In DATA, the message is read up to its terminator (only
//!   CR LF "." CR LF ends it, so "\n.\r\n" cannot end a message and smuggle a second one), then
//!   refused with `550 5.6.11` and never stored.
//! - **Line length**: a command line over 512 octets with its CR LF (RFC 5321 §4.5.3.1.4) is
//!   answered `500 5.5.2` once its end arrives; meanwhile its bytes are discarded, so at most
//!   512 octets plus one read are buffered. Text lines in DATA may have any length (RFC 5321's
//!   1000 is not enforced); only the message size counts.
//! - **Size**: counted after dot-unstuffing while receiving. Past `max_size` the rest is read
//!   and discarded up to the terminator, then `552 5.3.4`. At most `max_size` bytes of message
//!   (plus the `Received:` line) are ever buffered. `MAIL FROM:<..> SIZE=n` over the limit:
//!   `552 5.3.4` at once.
//! - **Storing**: the message is handed to [`Reception::store`] on the blocking pool; `250 2.0.0
//!   OK queued as <id>` follows only its `Ok`. `Err` or a panic: `451 4.3.0`. A connection lost
//!   in DATA stores nothing. A `Received:` line (RFC 5321 §4.4: HELO name, peer IP, our
//!   hostname, ESMTP/ESMTPS/SMTP, `for <rcpt>` when there is one recipient, the time DATA was
//!   accepted) is prepended; the message's own bytes stay exactly as received, CR LF included.
//! - **Timeouts**: `command_timeout` for each command (and for writing replies):
//!   `421 4.4.2` and close. `data_timeout` for the whole DATA transfer: `421 4.4.2`, nothing
//!   stored.
//! - **Errors**: after 10 refused commands (unknown, syntax, sequence, bare CR/LF, too long,
//!   refused recipients), `421 4.7.0` and close.
//! - **Connections**: at most `max_connections` sessions; further connections are not accepted
//!   until one ends, so they wait in the kernel's accept backlog (and see the banner late)
//!   rather than getting `421`. Accept errors (e.g. out of file descriptors) back off up to 1 s.
//! - **Shutdown**: when the watch channel turns true (or its sender is dropped, as in
//!   mini-redis), the listener stops accepting and closes its socket. A session waiting for a
//!   command answers `421 4.3.2 ... Service shutting down` at once, even between MAIL and
//!   DATA; a session receiving or storing a message finishes that first, then answers `421` at
//!   its next command. [`run_listener`] returns when all sessions ended or `drain` elapsed; it
//!   then aborts the rest (their clients, unanswered, will retry).
//! - **Logs** (tracing): peer, HELO name, envelope addresses, recipient count, size, queue id
//!   and outcome. Never message content or header values.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memchr::{memchr, memchr2};
use smtp_proto::{
    Error as ProtoError, MAIL_BODY_BINARYMIME, MAIL_REQUIRETLS, MAIL_SMTPUTF8, Request,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_native_tls::{TlsAcceptor, TlsStream};
use tracing::Instrument;

use crate::config::SmtpInConfig;

/// Longest command line, CR LF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// Refused commands after which the session is closed with `421 4.7.0`.
pub const MAX_BAD_COMMANDS: u32 = 10;
/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 8 * 1024;
/// Longest wait for a last reply (421) to be written before closing anyway.
const CLOSING_WRITE: Duration = Duration::from_secs(10);

/// What the listener learnt about one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedEnvelope {
    /// The reverse-path; `""` for the null reverse-path `<>`.
    pub mail_from: String,
    /// Accepted forward-paths, in the order given, without duplicates.
    pub rcpt_to: Vec<String>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The name the client gave in EHLO or HELO.
    pub helo: String,
    /// Whether the message came over TLS (STARTTLS).
    pub tls: bool,
}

/// The rest of the agent, as the listener sees it.
pub trait Reception: Send + Sync + 'static {
    /// Whether RCPT TO:<rcpt> is one of ours (local domain/address). false => 550 5.1.1.
    fn accepts_recipient(&self, rcpt: &str) -> bool;
    /// Store the message and its envelope durably (fsync) and return a queue id. Blocking; called
    /// via spawn_blocking. Err(reason) => 451 4.3.0 and nothing is acknowledged.
    fn store(&self, envelope: &ReceivedEnvelope, raw: &[u8]) -> Result<String, String>;

    /// [`Reception::store`] from a session's task, with the same contract. By default `store`
    /// runs on tokio's blocking pool; a reception that gathers the messages of many sessions
    /// into one commit hands them over instead.
    fn store_owned(
        self: Arc<Self>,
        envelope: ReceivedEnvelope,
        raw: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || self.store(&envelope, &raw))
                .await
                .unwrap_or_else(|e| Err(format!("the store task failed: {e}")))
        })
    }
}

/// How the listener and its sessions behave; built from `[smtp_in]` by [`Self::from_config`].
#[derive(Clone)]
pub struct SmtpServerSettings {
    /// Our name in the banner, EHLO and `Received:` lines.
    pub hostname: String,
    /// Largest message accepted, in bytes (offered as `SIZE`).
    pub max_size: usize,
    /// Recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Time allowed for each command.
    pub command_timeout: Duration,
    /// Time allowed for the whole DATA transfer.
    pub data_timeout: Duration,
    /// Concurrent sessions; further connections wait in the accept backlog.
    pub max_connections: usize,
    /// Refuse MAIL (`530 5.7.0`) until the client has started TLS.
    pub require_tls: bool,
    /// Offered with STARTTLS; `None`: STARTTLS is not advertised.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for SmtpServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServerSettings")
            .field("hostname", &self.hostname)
            .field("max_size", &self.max_size)
            .field("max_recipients", &self.max_recipients)
            .field("command_timeout", &self.command_timeout)
            .field("data_timeout", &self.data_timeout)
            .field("max_connections", &self.max_connections)
            .field("require_tls", &self.require_tls)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl SmtpServerSettings {
    /// The defaults of `[smtp_in]` (38 MiB, 100 recipients, 5 min per command, 10 min for
    /// DATA, 100 connections), without TLS.
    pub fn new(hostname: &str) -> Self {
        SmtpServerSettings {
            hostname: hostname.to_string(),
            max_size: 38 * 1024 * 1024,
            max_recipients: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_connections: 100,
            require_tls: false,
            tls: None,
        }
    }

    /// Settings from `[smtp_in]`; loads the STARTTLS certificate and key. `hostname` is the
    /// agent's (`agent.hostname`).
    pub fn from_config(cfg: &SmtpInConfig, hostname: &str) -> Result<Self, String> {
        if hostname.is_empty() || !hostname.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "'{hostname}' cannot be the SMTP host name: give agent.hostname as a domain name"
            ));
        }
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Some(
                super::tls::acceptor_from_pem(cert, key).map_err(|e| format!("smtp_in: {e}"))?,
            ),
            (None, None) => None,
            _ => {
                return Err(
                    "smtp_in: tls_cert and tls_key go together: give both or neither".into(),
                );
            }
        };
        if cfg.require_tls && tls.is_none() {
            return Err("smtp_in.require_tls needs tls_cert and tls_key to offer STARTTLS".into());
        }
        Ok(SmtpServerSettings {
            hostname: hostname.to_string(),
            max_size: cfg.max_size_bytes(),
            max_recipients: cfg.max_recipients.max(1),
            command_timeout: cfg.command_timeout(),
            data_timeout: cfg.data_timeout(),
            max_connections: cfg.max_connections.max(1),
            require_tls: cfg.require_tls,
            tls,
        })
    }
}

/// Accept connections on `listener` until `shutdown` turns true; then stop accepting, let sessions finish their current transaction (each answers 421 4.3.2 at its next command), and return once all sessions ended or `drain` elapsed.
pub async fn run_listener(
    listener: TcpListener,
    settings: Arc<SmtpServerSettings>,
    reception: Arc<dyn Reception>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    if settings.tls.is_none() {
        tracing::warn!(
            listen = %local,
            "STARTTLS is not offered (no smtp_in.tls_cert): envelopes and messages arrive in plain text"
        );
    } else if !settings.require_tls {
        tracing::info!(listen = %local, "STARTTLS offered but not required (smtp_in.require_tls = false)");
    }
    tracing::info!(listen = %local, max_connections = settings.max_connections, "SMTP listener started");

    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let mut sessions = JoinSet::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        // A free slot first: while all are taken, new connections wait in the accept backlog.
        let permit = tokio::select! {
            biased;
            _ = shutdown_signal(&mut shutdown) => break,
            Some(ended) = sessions.join_next(), if !sessions.is_empty() => {
                report_session_end(ended);
                continue;
            }
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown_signal(&mut shutdown) => break,
            Some(ended) = sessions.join_next(), if !sessions.is_empty() => {
                report_session_end(ended);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(50);
                    a
                }
                Err(e) => {
                    tracing::warn!(listen = %local, error = %e, retry_in = ?backoff, "SMTP accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (settings, reception, shutdown) =
            (settings.clone(), reception.clone(), shutdown.clone());
        sessions.spawn(async move {
            session(stream, peer, settings, reception, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(listen = %local, sessions = sessions.len(), "SMTP listener stopped accepting; draining sessions");
    let drained = timeout(drain, async {
        while let Some(ended) = sessions.join_next().await {
            report_session_end(ended);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(listen = %local, sessions = sessions.len(), drain = ?drain, "SMTP sessions still running after the drain time; aborting them");
        sessions.shutdown().await;
    }
    tracing::info!(listen = %local, "SMTP listener stopped");
}

fn report_session_end(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended
        && e.is_panic()
    {
        tracing::error!(error = %e, "an SMTP session panicked");
    }
}

/// Resolves once shutdown is requested: the value turned true or the sender is gone.
async fn shutdown_signal(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn shutdown_requested(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// One session, generic over the stream so tests drive it in memory (tokio::io::duplex) too.
pub async fn session<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: S,
    peer: SocketAddr,
    settings: Arc<SmtpServerSettings>,
    reception: Arc<dyn Reception>,
    shutdown: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("smtp", %peer);
    let session = Session {
        conn: Conn::new(stream),
        peer,
        settings,
        reception,
        shutdown,
        helo: None,
        tls: false,
        tx: None,
        bad_commands: 0,
        framer: CommandFramer::default(),
    };
    session.run().instrument(span).await;
}

// ---------------------------------------------------------------------------------------------
// The stream, plain or upgraded by STARTTLS.

enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// While the plain stream is in the TLS handshake (or after the handshake failed).
    Upgrading,
}

fn not_connected() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream lost in the TLS handshake",
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream<S> {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Upgrading => Err(not_connected()),
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            Stream::Upgrading => Err(not_connected()),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Upgrading => Ok(()),
        }
    }
}

/// Why reading or writing stopped.
#[derive(Debug)]
enum IoEnd {
    Eof,
    Timeout,
    Failed(io::Error),
}

/// The stream with its input (received, not yet consumed) and output (replies not yet sent).
struct Conn<S> {
    stream: Stream<S>,
    input: Vec<u8>,
    output: Vec<u8>,
    chunk: Box<[u8]>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S) -> Self {
        Conn {
            stream: Stream::Plain(stream),
            input: Vec::new(),
            output: Vec::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    fn reply(&mut self, code: u16, status: &str, text: &str) {
        self.output
            .extend_from_slice(format!("{code} {status} {text}\r\n").as_bytes());
    }

    fn line(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    /// Send the queued replies.
    async fn flush(&mut self, deadline: Instant) -> Result<(), IoEnd> {
        if self.output.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.output);
        match timeout_at(deadline, self.stream.write_all(&out)).await {
            Err(_) => Err(IoEnd::Timeout),
            Ok(Err(e)) => Err(IoEnd::Failed(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Append what the peer sent next to `input` (one read). Cancel-safe: a read that has not
    /// completed has consumed nothing.
    async fn read_more(&mut self, deadline: Instant) -> Result<(), IoEnd> {
        let read = timeout_at(deadline, self.stream.read(&mut self.chunk)).await;
        match read {
            Err(_) => Err(IoEnd::Timeout),
            Ok(Err(e)) => Err(IoEnd::Failed(e)),
            Ok(Ok(0)) => Err(IoEnd::Eof),
            Ok(Ok(n)) => {
                self.input.extend_from_slice(&self.chunk[..n]);
                Ok(())
            }
        }
    }

    /// Send what is queued and close the stream (TLS close_notify included), waiting at most
    /// [`CLOSING_WRITE`].
    async fn close(&mut self) {
        let deadline = Instant::now() + CLOSING_WRITE;
        let _ = self.flush(deadline).await;
        let _ = timeout_at(deadline, self.stream.shutdown()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Framing: command lines and the DATA body, without I/O.

/// One command line taken from the input.
#[derive(Debug, PartialEq, Eq)]
enum Framed {
    /// A complete line ending in CR LF (included).
    Line(Vec<u8>),
    /// Longer than [`MAX_COMMAND_LINE`]; its bytes were discarded.
    TooLong,
    /// It holds a CR or LF that is not part of the final CR LF.
    BareNewline,
}

/// Splits the input into command lines, discarding the bytes of an over-long line as they
/// arrive, so the input never holds more than [`MAX_COMMAND_LINE`] octets of one line.
#[derive(Default)]
struct CommandFramer {
    /// Inside an over-long line: drop bytes until its LF.
    skipping: bool,
}

impl CommandFramer {
    /// The next line in `input` (removed from it), or `None` when more input is needed.
    fn next(&mut self, input: &mut Vec<u8>) -> Option<Framed> {
        let Some(lf) = memchr(b'\n', input) else {
            if self.skipping || input.len() >= MAX_COMMAND_LINE {
                self.skipping = true;
                input.clear();
            }
            return None;
        };
        let line: Vec<u8> = input.drain(..=lf).collect();
        if std::mem::take(&mut self.skipping) || line.len() > MAX_COMMAND_LINE {
            return Some(Framed::TooLong);
        }
        match line[..line.len() - 1].strip_suffix(b"\r") {
            Some(text) if memchr2(b'\r', b'\n', text).is_none() => Some(Framed::Line(line)),
            _ => Some(Framed::BareNewline),
        }
    }
}

/// Where the DATA receiver is in the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataState {
    /// At the start of a line (after CR LF, or at the start of the data).
    LineStart,
    /// A "." at the start of a line.
    Dot,
    /// "." CR at the start of a line.
    DotCr,
    /// Inside a line.
    Text,
    /// After a CR inside a line (already kept).
    Cr,
}

/// What DATA brought.
#[derive(Debug, PartialEq, Eq)]
enum DataOutcome {
    /// The message, dot-unstuffed, after the prefix given to the receiver.
    Message(Vec<u8>),
    /// Over the size limit; `size` bytes were received (and discarded).
    TooBig { size: usize },
    /// It held a bare CR or LF.
    BareNewline,
}

/// Receives the DATA body: undoes dot-stuffing, finds the CR LF "." CR LF terminator, counts
/// the size and flags bare CR or LF.
///
/// Written here rather than using smtp-proto's `DataReceiver` because that one (0.2.5) starts
/// in the middle of a line, so a "." on the first line is neither unstuffed nor recognised as
/// the terminator; it buffers without bound; and it passes bare CR and LF on silently. This
/// receiver keeps at most the prefix plus `max_size` bytes, allocated as the message grows.
struct DataReceiver {
    state: DataState,
    max_size: usize,
    prefix_len: usize,
    /// Bytes of message seen (after unstuffing), kept or not.
    size: usize,
    body: Vec<u8>,
    too_big: bool,
    bare_newline: bool,
}

/// Bytes reserved for a message body before DATA starts.
const INITIAL_DATA_CAPACITY: usize = 64 * 1024;

impl DataReceiver {
    /// A receiver that keeps at most `max_size` bytes of message after `prefix` (the
    /// `Received:` line).
    fn new(max_size: usize, mut prefix: Vec<u8>) -> Self {
        // A Direct message is tens of KiB: start there rather than doubling up from the prefix.
        prefix.reserve(max_size.min(INITIAL_DATA_CAPACITY));
        DataReceiver {
            state: DataState::LineStart,
            max_size,
            prefix_len: prefix.len(),
            size: 0,
            body: prefix,
            too_big: false,
            bare_newline: false,
        }
    }

    /// Take in `input`. `Some(n)`: the terminator ended at `input[n - 1]`; what follows it is
    /// not the message's. `None`: all of `input` was taken, more is needed.
    fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                DataState::LineStart => {
                    if input[i] == b'.' {
                        self.state = DataState::Dot;
                        i += 1;
                    } else {
                        self.state = DataState::Text;
                    }
                }
                DataState::Dot => {
                    if input[i] == b'\r' {
                        self.state = DataState::DotCr;
                        i += 1;
                    } else {
                        // A stuffed dot (RFC 5321 §4.5.2): drop it, the byte is text.
                        self.state = DataState::Text;
                    }
                }
                DataState::DotCr => {
                    if input[i] == b'\n' {
                        self.state = DataState::LineStart;
                        return Some(i + 1);
                    }
                    // "." CR then not LF: the dot was stuffing, the CR is bare.
                    self.keep(b"\r");
                    self.state = DataState::Cr;
                }
                DataState::Text => {
                    let rest = &input[i..];
                    match memchr2(b'\r', b'\n', rest) {
                        None => {
                            self.keep(rest);
                            i = input.len();
                        }
                        Some(p) => {
                            self.keep(&rest[..=p]);
                            if rest[p] == b'\n' {
                                self.refuse_bare_newline();
                            } else {
                                self.state = DataState::Cr;
                            }
                            i += p + 1;
                        }
                    }
                }
                DataState::Cr => {
                    if input[i] == b'\n' {
                        self.keep(b"\n");
                        self.state = DataState::LineStart;
                        i += 1;
                    } else {
                        // A bare CR; the byte after it is text (another CR is handled there).
                        self.refuse_bare_newline();
                        self.state = DataState::Text;
                    }
                }
            }
        }
        None
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.too_big || self.bare_newline {
            return;
        }
        if self.size > self.max_size {
            self.too_big = true;
            self.body = Vec::new();
            return;
        }
        // Grow by doubling, but never past prefix + max_size.
        let needed = self.body.len() + bytes.len();
        if needed > self.body.capacity() {
            let target = needed
                .max(self.body.capacity().saturating_mul(2))
                .min(self.prefix_len + self.max_size);
            self.body.reserve_exact(target - self.body.len());
        }
        self.body.extend_from_slice(bytes);
    }

    fn refuse_bare_newline(&mut self) {
        self.bare_newline = true;
        self.body = Vec::new();
    }

    /// Message bytes received so far (after unstuffing).
    fn size(&self) -> usize {
        self.size
    }

    fn finish(self) -> DataOutcome {
        if self.too_big {
            DataOutcome::TooBig { size: self.size }
        } else if self.bare_newline {
            DataOutcome::BareNewline
        } else {
            DataOutcome::Message(self.body)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The trace line.

/// The `Received:` line (RFC 5321 §4.4, RFC 3848 protocol names) put before a message, folded,
/// ending in CR LF. The HELO name is the client's claim, so characters that do not belong in
/// a domain or address literal are replaced by `_`.
fn received_header(
    helo: &str,
    peer: SocketAddr,
    hostname: &str,
    protocol: &str,
    rcpt_to: &[String],
    date: &str,
) -> String {
    let helo: String = helo
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_:[]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let ip = match peer.ip() {
        std::net::IpAddr::V4(ip) => format!("[{ip}]"),
        std::net::IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    };
    let mut h = format!("Received: from {helo} ({ip})\r\n\tby {hostname} with {protocol}");
    if let [rcpt] = rcpt_to {
        h.push_str(&format!("\r\n\tfor <{rcpt}>"));
    }
    h.push_str(&format!(";\r\n\t{date}\r\n"));
    h
}

// ---------------------------------------------------------------------------------------------
// The session.

/// The client's HELO or EHLO.
struct Greeting {
    name: String,
    extended: bool,
}

/// The transaction opened by MAIL.
struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
}

/// Why a session ended, for the log.
#[derive(Debug)]
enum SessionEnd {
    Quit,
    ClientClosed,
    Timeout,
    Shutdown,
    TooManyErrors,
    TlsFailed(String),
    Io(io::Error),
}

impl From<IoEnd> for SessionEnd {
    fn from(e: IoEnd) -> Self {
        match e {
            IoEnd::Eof => SessionEnd::ClientClosed,
            IoEnd::Timeout => SessionEnd::Timeout,
            IoEnd::Failed(e) => SessionEnd::Io(e),
        }
    }
}

struct Session<S> {
    conn: Conn<S>,
    peer: SocketAddr,
    settings: Arc<SmtpServerSettings>,
    reception: Arc<dyn Reception>,
    shutdown: watch::Receiver<bool>,
    helo: Option<Greeting>,
    tls: bool,
    tx: Option<Transaction>,
    bad_commands: u32,
    framer: CommandFramer,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    async fn run(mut self) {
        tracing::debug!("SMTP connection opened");
        let banner = format!("220 {} ESMTP direct-agent", self.settings.hostname);
        self.conn.line(&banner);
        let end = loop {
            if let Err(end) = self.step().await {
                break end;
            }
            if self.bad_commands >= MAX_BAD_COMMANDS {
                let text = format!(
                    "{} Too many errors, closing connection",
                    self.settings.hostname
                );
                self.conn.reply(421, "4.7.0", &text);
                break SessionEnd::TooManyErrors;
            }
        };
        self.conn.close().await;
        let helo = self.helo.as_ref().map(|h| h.name.as_str()).unwrap_or("");
        match &end {
            SessionEnd::Quit | SessionEnd::ClientClosed if self.tx.is_none() => {
                tracing::debug!(helo, end = ?end, "SMTP connection closed")
            }
            SessionEnd::Io(e) => {
                tracing::info!(helo, error = %e, "SMTP connection lost")
            }
            SessionEnd::TlsFailed(reason) => {
                tracing::info!(helo, reason = %reason, "SMTP connection closed: TLS failed")
            }
            _ => tracing::info!(helo, end = ?end, "SMTP connection closed"),
        }
    }

    /// Read one command and answer it.
    async fn step(&mut self) -> Result<(), SessionEnd> {
        match self.next_command().await? {
            Framed::TooLong => {
                self.refuse(500, "5.5.2", "Line too long (512 octets at most)");
                Ok(())
            }
            Framed::BareNewline => {
                self.refuse(
                    500,
                    "5.5.2",
                    "Bare CR or LF not allowed, end lines with CR LF",
                );
                Ok(())
            }
            Framed::Line(line) => self.command(&line).await,
        }
    }

    /// A refused command: queue the reply and count it.
    fn refuse(&mut self, code: u16, status: &str, text: &str) {
        self.bad_commands += 1;
        self.conn.reply(code, status, text);
    }

    /// Wait for the next command line, sending the queued replies first; answers 421 on
    /// timeout or shutdown.
    async fn next_command(&mut self) -> Result<Framed, SessionEnd> {
        let deadline = Instant::now() + self.settings.command_timeout;
        loop {
            if shutdown_requested(&self.shutdown) {
                return Err(self.closing_shutdown());
            }
            if let Some(framed) = self.framer.next(&mut self.conn.input) {
                return Ok(framed);
            }
            if let Err(e) = self.conn.flush(deadline).await {
                return Err(e.into());
            }
            let read = tokio::select! {
                biased;
                _ = shutdown_signal(&mut self.shutdown) => None,
                read = self.conn.read_more(deadline) => Some(read),
            };
            match read {
                None => return Err(self.closing_shutdown()),
                Some(Ok(())) => {}
                Some(Err(IoEnd::Timeout)) => {
                    let text = format!(
                        "{} Timeout waiting for a command, closing connection",
                        self.settings.hostname
                    );
                    self.conn.reply(421, "4.4.2", &text);
                    return Err(SessionEnd::Timeout);
                }
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    fn closing_shutdown(&mut self) -> SessionEnd {
        let text = format!(
            "{} Service shutting down, closing connection",
            self.settings.hostname
        );
        self.conn.reply(421, "4.3.2", &text);
        SessionEnd::Shutdown
    }

    async fn command(&mut self, line: &[u8]) -> Result<(), SessionEnd> {
        // TURN (RFC 821) is not known to smtp-proto; answer it as unimplemented, not unknown.
        let verb_end = line
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(line.len());
        if line[..verb_end].eq_ignore_ascii_case(b"TURN") {
            self.refuse(502, "5.5.1", "TURN not implemented");
            return Ok(());
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r,
            Err(e) => {
                self.syntax_error(e);
                return Ok(());
            }
        };
        match request {
            Request::Ehlo { host } => self.hello(&host, true),
            Request::Helo { host } => self.hello(&host, false),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(&to.address, line),
            Request::Data => return self.data().await,
            Request::Rset => {
                self.tx = None;
                self.conn.reply(250, "2.0.0", "OK");
            }
            Request::Noop { .. } => self.conn.reply(250, "2.0.0", "OK"),
            Request::Quit => {
                let text = format!("{} closing connection", self.settings.hostname);
                self.conn.reply(221, "2.0.0", &text);
                return Err(SessionEnd::Quit);
            }
            Request::StartTls => return self.starttls().await,
            Request::Help { .. } => self.conn.reply(
                214,
                "2.0.0",
                "direct-agent speaks ESMTP (RFC 5321); see RFC 5321 for the commands",
            ),
            Request::Vrfy { .. } | Request::Expn { .. } => {
                self.refuse(502, "5.5.1", "VRFY and EXPN not implemented")
            }
            Request::Bdat { .. } => self.refuse(502, "5.5.1", "BDAT not implemented (no CHUNKING)"),
            Request::Auth { .. } => self.refuse(502, "5.5.1", "AUTH not implemented"),
            Request::Lhlo { .. } => self.refuse(
                502,
                "5.5.1",
                "LHLO not implemented (this is SMTP, not LMTP)",
            ),
            other => {
                let text = format!("{} not implemented", other.name());
                self.refuse(502, "5.5.1", &text);
            }
        }
        Ok(())
    }

    fn syntax_error(&mut self, e: ProtoError) {
        match e {
            ProtoError::UnknownCommand => self.refuse(500, "5.5.1", "Command unrecognized"),
            ProtoError::InvalidSenderAddress => {
                self.refuse(501, "5.1.7", "Bad sender address syntax")
            }
            ProtoError::InvalidRecipientAddress => {
                self.refuse(501, "5.1.3", "Bad recipient address syntax")
            }
            ProtoError::SyntaxError { syntax } => {
                let text = format!("Syntax: {syntax}");
                self.refuse(501, "5.5.4", &text)
            }
            ProtoError::InvalidParameter { param } => {
                let text = format!("Invalid {param} parameter");
                self.refuse(501, "5.5.4", &text)
            }
            ProtoError::UnsupportedParameter { param } => {
                let text = format!("Unsupported parameter {}", printable(&param, 64));
                self.refuse(555, "5.5.4", &text)
            }
            _ => self.refuse(501, "5.5.4", "Syntax error"),
        }
    }

    fn hello(&mut self, host: &str, extended: bool) {
        self.tx = None;
        self.helo = Some(Greeting {
            name: host.to_string(),
            extended,
        });
        let name = &self.settings.hostname;
        if !extended {
            self.conn.reply(250, "2.0.0", name);
            return;
        }
        // Written here rather than with smtp-proto's EhloResponse, whose greeting text is fixed.
        let size = format!("SIZE {}", self.settings.max_size);
        let mut lines = vec![name.as_str(), "PIPELINING", &size, "8BITMIME"];
        lines.push("ENHANCEDSTATUSCODES");
        if self.settings.tls.is_some() && !self.tls {
            lines.push("STARTTLS");
        }
        let last = lines.len() - 1;
        for (i, l) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.conn.line(&format!("250{sep}{l}"));
        }
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<std::borrow::Cow<'_, str>>) {
        if self.helo.is_none() {
            return self.refuse(503, "5.5.1", "Send EHLO or HELO first");
        }
        if self.settings.require_tls && !self.tls {
            return self.refuse(530, "5.7.0", "Must issue a STARTTLS command first");
        }
        if self.tx.is_some() {
            return self.refuse(503, "5.5.1", "Nested MAIL command (send RSET first)");
        }
        if from.flags & MAIL_SMTPUTF8 != 0 {
            return self.refuse(555, "5.5.4", "SMTPUTF8 not supported");
        }
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return self.refuse(555, "5.5.4", "BODY=BINARYMIME not supported");
        }
        if from.flags & MAIL_REQUIRETLS != 0 {
            return self.refuse(555, "5.5.4", "REQUIRETLS not supported");
        }
        if !from.address.is_ascii() {
            return self.refuse(
                553,
                "5.6.7",
                "Non-ASCII address needs SMTPUTF8, not offered",
            );
        }
        if from.size > self.settings.max_size {
            let text = format!(
                "Message size exceeds fixed maximum message size ({} bytes)",
                self.settings.max_size
            );
            return self.refuse(552, "5.3.4", &text);
        }
        self.tx = Some(Transaction {
            mail_from: from.address.into_owned(),
            rcpt_to: Vec::new(),
        });
        self.conn.reply(250, "2.1.0", "Sender OK");
    }

    fn rcpt(&mut self, address: &str, line: &[u8]) {
        if self.helo.is_none() {
            return self.refuse(503, "5.5.1", "Send EHLO or HELO first");
        }
        let Some(tx) = &self.tx else {
            return self.refuse(503, "5.5.1", "Need MAIL before RCPT");
        };
        // smtp-proto gives "" for both <postmaster> and <>.
        let address = if address.is_empty() {
            let upper = line.to_ascii_uppercase();
            if memchr::memmem::find(&upper, b"POSTMASTER").is_none() {
                return self.refuse(501, "5.1.3", "A null forward-path is not allowed");
            }
            "postmaster"
        } else {
            address
        };
        if !address.is_ascii() {
            return self.refuse(
                553,
                "5.6.7",
                "Non-ASCII address needs SMTPUTF8, not offered",
            );
        }
        if tx.rcpt_to.len() >= self.settings.max_recipients {
            self.conn.reply(452, "4.5.3", "Too many recipients");
            return;
        }
        if !self.reception.accepts_recipient(address) {
            tracing::info!(rcpt = address, "recipient refused: not one of ours");
            let text = format!("<{address}>: recipient not accepted here");
            return self.refuse(550, "5.1.1", &text);
        }
        if let Some(tx) = &mut self.tx
            && !tx.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(address))
        {
            tx.rcpt_to.push(address.to_string());
        }
        self.conn.reply(250, "2.1.5", "Recipient OK");
    }

    async fn starttls(&mut self) -> Result<(), SessionEnd> {
        let Some(acceptor) = self.settings.tls.clone() else {
            self.refuse(502, "5.5.1", "STARTTLS not available");
            return Ok(());
        };
        if self.tls {
            self.refuse(503, "5.5.1", "Already in TLS");
            return Ok(());
        }
        if self.helo.is_none() {
            self.refuse(503, "5.5.1", "Send EHLO first");
            return Ok(());
        }
        if !self.conn.input.is_empty() {
            // Commands pipelined after STARTTLS came in plain text; they must not be run as
            // if they came over TLS (the CVE-2011-0411 injection).
            tracing::warn!(
                bytes = self.conn.input.len(),
                "discarding plain-text input pipelined after STARTTLS"
            );
            self.conn.input.clear();
        }
        self.conn.reply(220, "2.0.0", "Ready to start TLS");
        let deadline = Instant::now() + self.settings.command_timeout;
        self.conn.flush(deadline).await?;
        let Stream::Plain(plain) = std::mem::replace(&mut self.conn.stream, Stream::Upgrading)
        else {
            // self.tls is false, so the stream is still plain.
            return Err(SessionEnd::TlsFailed("stream not plain".into()));
        };
        match timeout_at(deadline, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                self.conn.stream = Stream::Tls(Box::new(tls));
                self.tls = true;
                // RFC 3207 §4.2: forget what the client said before TLS.
                self.helo = None;
                self.tx = None;
                tracing::debug!("TLS started");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "TLS handshake failed");
                Err(SessionEnd::TlsFailed(e.to_string()))
            }
            Err(_) => Err(SessionEnd::TlsFailed("handshake timed out".into())),
        }
    }

    async fn data(&mut self) -> Result<(), SessionEnd> {
        let Some(helo) = &self.helo else {
            self.refuse(503, "5.5.1", "Send EHLO or HELO first");
            return Ok(());
        };
        let Some(tx) = &self.tx else {
            self.refuse(503, "5.5.1", "Need MAIL and RCPT before DATA");
            return Ok(());
        };
        if tx.rcpt_to.is_empty() {
            self.refuse(503, "5.5.1", "Need RCPT before DATA (no valid recipients)");
            return Ok(());
        }
        let protocol = match (self.tls, helo.extended) {
            (true, _) => "ESMTPS",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        };
        let received = received_header(
            &helo.name,
            self.peer,
            &self.settings.hostname,
            protocol,
            &tx.rcpt_to,
            &chrono::Utc::now().to_rfc2822(),
        );
        let envelope = ReceivedEnvelope {
            mail_from: tx.mail_from.clone(),
            rcpt_to: tx.rcpt_to.clone(),
            peer: self.peer,
            helo: helo.name.clone(),
            tls: self.tls,
        };
        self.tx = None;

        self.conn.line("354 End data with <CR><LF>.<CR><LF>");
        let deadline = Instant::now() + self.settings.data_timeout;
        let mut receiver = DataReceiver::new(self.settings.max_size, received.into_bytes());
        loop {
            if !self.conn.input.is_empty() {
                if let Some(n) = receiver.feed(&self.conn.input) {
                    self.conn.input.drain(..n);
                    break;
                }
                self.conn.input.clear();
            }
            let read = match self.conn.flush(deadline).await {
                Ok(()) => self.conn.read_more(deadline).await,
                Err(e) => Err(e),
            };
            if let Err(e) = read {
                let lost = SessionEnd::from(e);
                if let SessionEnd::Timeout = lost {
                    let text = format!(
                        "{} Timeout receiving the message, closing connection",
                        self.settings.hostname
                    );
                    self.conn.reply(421, "4.4.2", &text);
                }
                tracing::info!(
                    helo = %envelope.helo,
                    from = %envelope.mail_from,
                    rcpts = envelope.rcpt_to.len(),
                    received = receiver.size(),
                    end = ?lost,
                    outcome = "dropped",
                    "message not received completely; nothing stored"
                );
                return Err(lost);
            }
        }

        let size = receiver.size();
        match receiver.finish() {
            DataOutcome::TooBig { size } => {
                tracing::info!(
                    helo = %envelope.helo, from = %envelope.mail_from,
                    rcpts = envelope.rcpt_to.len(), size, max_size = self.settings.max_size,
                    outcome = "too-big", "message refused"
                );
                let text = format!(
                    "Message size exceeds fixed maximum message size ({} bytes)",
                    self.settings.max_size
                );
                self.conn.reply(552, "5.3.4", &text);
            }
            DataOutcome::BareNewline => {
                tracing::info!(
                    helo = %envelope.helo, from = %envelope.mail_from,
                    rcpts = envelope.rcpt_to.len(), size,
                    outcome = "bare-newline", "message refused"
                );
                self.conn.reply(
                    550,
                    "5.6.11",
                    "Message refused: bare CR or LF (RFC 5321 section 2.3.8); end lines with CR LF",
                );
            }
            DataOutcome::Message(raw) => self.store(envelope, raw, size).await,
        }
        Ok(())
    }

    /// Hand the message to the reception and answer by its outcome.
    async fn store(&mut self, envelope: ReceivedEnvelope, raw: Vec<u8>, size: usize) {
        let stored = self
            .reception
            .clone()
            .store_owned(envelope.clone(), raw)
            .await;
        match stored {
            Ok(id) => {
                let id = printable(&id, 128);
                tracing::info!(
                    helo = %envelope.helo, from = %envelope.mail_from,
                    rcpt = ?envelope.rcpt_to, rcpts = envelope.rcpt_to.len(),
                    size, tls = envelope.tls, queue_id = %id,
                    outcome = "queued", "message received"
                );
                self.conn.reply(250, "2.0.0", &format!("OK queued as {id}"));
            }
            Err(reason) => {
                tracing::warn!(
                    helo = %envelope.helo, from = %envelope.mail_from,
                    rcpts = envelope.rcpt_to.len(), size, reason = %reason,
                    outcome = "store-failed", "message not stored; client told to retry"
                );
                self.conn
                    .reply(451, "4.3.0", "Could not store the message, try again later");
            }
        }
    }
}

/// `s` with anything but printable ASCII replaced by `?`, at most `max` characters: text from
/// a peer or the reception going into a reply.
fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The test double.

/// A [`Reception`] that keeps messages in memory, for tests (as lettre ships `StubTransport`):
/// it accepts recipients in the given domains (and `postmaster`), and can be made to fail.
#[derive(Debug, Default)]
pub struct MemoryReception {
    domains: Vec<String>,
    messages: Mutex<Vec<(ReceivedEnvelope, Vec<u8>)>>,
    failing: AtomicBool,
    next_id: AtomicU64,
}

impl MemoryReception {
    /// Accepts recipients in `domains` (case-insensitive).
    pub fn new(domains: &[&str]) -> Self {
        MemoryReception {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }
    }

    /// From now on, `store` fails (`true`) or works (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The messages stored so far, in order.
    pub fn messages(&self) -> Vec<(ReceivedEnvelope, Vec<u8>)> {
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// How many messages are stored.
    pub fn count(&self) -> usize {
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

impl Reception for MemoryReception {
    fn accepts_recipient(&self, rcpt: &str) -> bool {
        if rcpt.eq_ignore_ascii_case("postmaster") {
            return true;
        }
        rcpt.rsplit_once('@')
            .is_some_and(|(_, domain)| self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    }

    fn store(&self, envelope: &ReceivedEnvelope, raw: &[u8]) -> Result<String, String> {
        if self.failing.load(Ordering::SeqCst) {
            return Err("the memory reception is set to fail".into());
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((envelope.clone(), raw.to_vec()));
        Ok(format!("MEM{id:06}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};
    use tokio::task::JoinHandle;

    // --- DATA receiver ------------------------------------------------------------------------

    /// Feed `input` whole, then in two pieces split at every position, then byte by byte; all
    /// must agree. Returns the outcome and the count of bytes taken.
    fn receive(max: usize, input: &[u8]) -> (DataOutcome, Option<usize>) {
        let whole = {
            let mut r = DataReceiver::new(max, Vec::new());
            let n = r.feed(input);
            (r.finish(), n)
        };
        for split in 0..=input.len() {
            let mut r = DataReceiver::new(max, Vec::new());
            let (a, b) = input.split_at(split);
            let n = match r.feed(a) {
                Some(n) => Some(n),
                None => r.feed(b).map(|n| n + a.len()),
            };
            assert_eq!((r.finish(), n), whole, "split at {split} of {input:?}");
        }
        let mut r = DataReceiver::new(max, Vec::new());
        let mut n = None;
        for (i, b) in input.iter().enumerate() {
            if r.feed(std::slice::from_ref(b)).is_some() {
                n = Some(i + 1);
                break;
            }
        }
        assert_eq!((r.finish(), n), whole, "byte by byte: {input:?}");
        whole
    }

    fn message(bytes: &[u8]) -> DataOutcome {
        DataOutcome::Message(bytes.to_vec())
    }

    #[test]
    fn data_is_unstuffed_and_ends_at_crlf_dot_crlf() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"hi\r\n.\r\n", b"hi\r\n"),
            (b".\r\n", b""),
            (b"..\r\n.\r\n", b".\r\n"),
            (b"..x\r\n.\r\n", b".x\r\n"),
            (b".x\r\n.\r\n", b"x\r\n"),
            (b"a\r\n...\r\n.b\r\n\r\n.\r\n", b"a\r\n..\r\nb\r\n\r\n"),
            (b"a. b\r\n .\r\n.\r\n", b"a. b\r\n .\r\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                receive(1000, input),
                (message(expected), Some(input.len())),
                "{input:?}"
            );
        }
    }

    #[test]
    fn data_leaves_what_follows_the_terminator() {
        let input = b"x\r\n.\r\nQUIT\r\n";
        assert_eq!(receive(1000, input), (message(b"x\r\n"), Some(6)));
    }

    #[test]
    fn data_with_bare_cr_or_lf_is_refused_and_no_smuggling_ends_it() {
        let cases: &[&[u8]] = &[
            b"a\nb\r\n.\r\n",
            b"a\rb\r\n.\r\n",
            b"a\r\r\n.\r\n",
            b".\rx\r\n.\r\n",
            b".\n\r\n.\r\n",
            // SMTP smuggling attempts: none of these ends the message early.
            b"a\r\n\n.\r\nMAIL FROM:<x@y>\r\n.\r\n",
            b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n",
            b"a\r.\rMAIL FROM:<x@y>\r\n.\r\n",
        ];
        for input in cases {
            assert_eq!(
                receive(1000, input),
                (DataOutcome::BareNewline, Some(input.len())),
                "{input:?}"
            );
        }
    }

    #[test]
    fn data_over_the_limit_is_counted_and_discarded() {
        let exact = b"12345678\r\n.\r\n";
        assert_eq!(receive(10, exact), (message(b"12345678\r\n"), Some(13)));
        let over = b"123456789\r\n.\r\n";
        assert_eq!(
            receive(10, over),
            (DataOutcome::TooBig { size: 11 }, Some(14))
        );
    }

    #[test]
    fn a_10_mb_line_without_lf_does_not_grow_the_buffer_past_the_limit() {
        let max = 1024 * 1024;
        let mut r = DataReceiver::new(max, b"Received: x\r\n".to_vec());
        let chunk = vec![b'a'; READ_CHUNK];
        let mut peak = 0;
        for _ in 0..(10 * 1024 * 1024 / READ_CHUNK) {
            assert_eq!(r.feed(&chunk), None);
            peak = peak.max(r.body.capacity());
        }
        assert!(peak <= max + 13, "buffer grew to {peak}");
        assert_eq!(r.feed(b"\r\n.\r\n"), Some(5));
        assert_eq!(
            r.finish(),
            DataOutcome::TooBig {
                size: 10 * 1024 * 1024 + 2
            }
        );
    }

    #[test]
    fn data_keeps_the_prefix() {
        let mut r = DataReceiver::new(100, b"Received: x\r\n".to_vec());
        assert_eq!(r.feed(b"Subject: s\r\n\r\nbody\r\n.\r\n"), Some(23));
        assert_eq!(
            r.finish(),
            message(b"Received: x\r\nSubject: s\r\n\r\nbody\r\n")
        );
    }

    // --- command framing ----------------------------------------------------------------------

    #[test]
    fn command_lines_are_framed_at_crlf() {
        let mut f = CommandFramer::default();
        let mut input = b"NOOP\r\nQUIT\r\nRS".to_vec();
        assert_eq!(f.next(&mut input), Some(Framed::Line(b"NOOP\r\n".to_vec())));
        assert_eq!(f.next(&mut input), Some(Framed::Line(b"QUIT\r\n".to_vec())));
        assert_eq!(f.next(&mut input), None);
        input.extend_from_slice(b"ET\r\n");
        assert_eq!(f.next(&mut input), Some(Framed::Line(b"RSET\r\n".to_vec())));
        assert!(input.is_empty());
    }

    #[test]
    fn bare_lf_or_cr_in_a_command_is_flagged() {
        for line in [&b"NOOP\n"[..], b"NO\rOP\r\n", b"NOOP\r\r\n", b"\n"] {
            let mut input = line.to_vec();
            assert_eq!(
                CommandFramer::default().next(&mut input),
                Some(Framed::BareNewline),
                "{line:?}"
            );
        }
    }

    #[test]
    fn command_lines_over_512_octets_are_refused_and_not_buffered() {
        let mut ok = vec![b'a'; MAX_COMMAND_LINE - 2];
        ok.extend_from_slice(b"\r\n");
        let mut input = ok.clone();
        assert_eq!(
            CommandFramer::default().next(&mut input),
            Some(Framed::Line(ok))
        );

        let mut long = vec![b'a'; MAX_COMMAND_LINE - 1];
        long.extend_from_slice(b"\r\n");
        assert_eq!(
            CommandFramer::default().next(&mut long),
            Some(Framed::TooLong)
        );

        // 10 MB without LF, one read at a time: the input never holds more than one read.
        let mut f = CommandFramer::default();
        let mut input = Vec::new();
        for _ in 0..(10 * 1024 * 1024 / READ_CHUNK) {
            input.extend_from_slice(&[b'x'; READ_CHUNK]);
            assert_eq!(f.next(&mut input), None);
            assert!(input.len() < MAX_COMMAND_LINE + READ_CHUNK);
        }
        input.extend_from_slice(b"xx\r\nNOOP\r\n");
        assert_eq!(f.next(&mut input), Some(Framed::TooLong));
        assert_eq!(f.next(&mut input), Some(Framed::Line(b"NOOP\r\n".to_vec())));
    }

    // --- Received: ----------------------------------------------------------------------------

    #[test]
    fn received_header_names_helo_peer_host_protocol_and_single_recipient() {
        let date = "Tue, 1 Jul 2003 10:52:37 +0000";
        let one = received_header(
            "mx.hisp-a.example",
            "192.0.2.7:40000".parse().unwrap_or_else(|_| unreachable!()),
            "hisp-b.example",
            "ESMTPS",
            &["iis@hisp-b.example".into()],
            date,
        );
        assert_eq!(
            one,
            "Received: from mx.hisp-a.example ([192.0.2.7])\r\n\tby hisp-b.example with ESMTPS\r\n\tfor <iis@hisp-b.example>;\r\n\tTue, 1 Jul 2003 10:52:37 +0000\r\n"
        );
        let two = received_header(
            "bad (name)\r\nX-Injected: 1",
            "[2001:db8::1]:25"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            "hisp-b.example",
            "ESMTP",
            &["a@hisp-b.example".into(), "b@hisp-b.example".into()],
            date,
        );
        assert_eq!(
            two,
            "Received: from bad__name___X-Injected:_1 ([IPv6:2001:db8::1])\r\n\tby hisp-b.example with ESMTP;\r\n\tTue, 1 Jul 2003 10:52:37 +0000\r\n"
        );
    }

    // --- sessions in memory -------------------------------------------------------------------

    const GUARD: Duration = Duration::from_secs(10);

    fn peer() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], 2525))
    }

    fn settings() -> SmtpServerSettings {
        let mut s = SmtpServerSettings::new("hisp-b.example");
        s.max_size = 1000;
        s.max_recipients = 3;
        s
    }

    struct Client<S> {
        io: BufReader<S>,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
        /// One whole reply (all its lines, joined by '\n'); fails on EOF or after [`GUARD`].
        async fn reply(&mut self) -> String {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                let n = timeout(GUARD, self.io.read_line(&mut line))
                    .await
                    .unwrap_or_else(|_| panic!("no reply within {GUARD:?} (so far {lines:?})"))
                    .unwrap_or_else(|e| panic!("reading a reply: {e}"));
                assert!(
                    n > 0,
                    "connection closed while waiting for a reply ({lines:?})"
                );
                let line = line.trim_end_matches("\r\n").to_string();
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if last {
                    return lines.join("\n");
                }
            }
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.io
                .get_mut()
                .write_all(bytes)
                .await
                .unwrap_or_else(|e| panic!("sending: {e}"));
        }

        async fn cmd(&mut self, line: &str) -> String {
            self.send(format!("{line}\r\n").as_bytes()).await;
            self.reply().await
        }

        /// Whether the server closed the connection (EOF) within [`GUARD`].
        async fn closed(&mut self) -> bool {
            let mut rest = Vec::new();
            matches!(
                timeout(GUARD, self.io.read_to_end(&mut rest)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        }
    }

    struct Running {
        client: Client<DuplexStream>,
        session: JoinHandle<()>,
        shutdown: watch::Sender<bool>,
    }

    async fn start(settings: SmtpServerSettings, reception: Arc<dyn Reception>) -> Running {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (shutdown, rx) = watch::channel(false);
        let session = tokio::spawn(session(server, peer(), Arc::new(settings), reception, rx));
        let mut client = Client {
            io: BufReader::new(client),
        };
        assert_eq!(
            client.reply().await,
            "220 hisp-b.example ESMTP direct-agent"
        );
        Running {
            client,
            session,
            shutdown,
        }
    }

    async fn ended(session: JoinHandle<()>) {
        timeout(GUARD, session)
            .await
            .unwrap_or_else(|_| panic!("session still running after {GUARD:?}"))
            .unwrap_or_else(|e| panic!("session task failed: {e}"));
    }

    #[tokio::test]
    async fn a_message_is_stored_byte_exact_with_a_received_line() {
        let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
        let Running {
            mut client,
            session,
            shutdown: _shutdown,
        } = start(settings(), reception.clone()).await;
        assert_eq!(
            client.cmd("EHLO mx.hisp-a.example").await,
            "250-hisp-b.example\n250-PIPELINING\n250-SIZE 1000\n250-8BITMIME\n250 ENHANCEDSTATUSCODES"
        );
        assert_eq!(
            client
                .cmd("MAIL FROM:<ehr@hisp-a.example> BODY=8BITMIME SIZE=100")
                .await,
            "250 2.1.0 Sender OK"
        );
        assert_eq!(
            client.cmd("RCPT TO:<iis@hisp-b.example>").await,
            "250 2.1.5 Recipient OK"
        );
        assert!(client.cmd("DATA").await.starts_with("354 "));
        client
            .send(b"Subject: t\r\n\r\n..leading dot\r\nline\r\n.\r\n")
            .await;
        assert_eq!(client.reply().await, "250 2.0.0 OK queued as MEM000001");
        assert_eq!(
            client.cmd("QUIT").await,
            "221 2.0.0 hisp-b.example closing connection"
        );
        assert!(client.closed().await);
        ended(session).await;

        let messages = reception.messages();
        assert_eq!(messages.len(), 1);
        let (envelope, raw) = &messages[0];
        assert_eq!(
            envelope,
            &ReceivedEnvelope {
                mail_from: "ehr@hisp-a.example".into(),
                rcpt_to: vec!["iis@hisp-b.example".into()],
                peer: peer(),
                helo: "mx.hisp-a.example".into(),
                tls: false,
            }
        );
        let text = String::from_utf8_lossy(raw);
        let prefix = "Received: from mx.hisp-a.example ([192.0.2.1])\r\n\tby hisp-b.example with ESMTP\r\n\tfor <iis@hisp-b.example>;\r\n\t";
        assert!(text.starts_with(prefix), "{text}");
        let date_end = text[prefix.len()..]
            .find("\r\n")
            .map(|i| prefix.len() + i + 2);
        let Some(date_end) = date_end else {
            panic!("no end of the Received line: {text}")
        };
        assert!(
            chrono::DateTime::parse_from_rfc2822(&text[prefix.len()..date_end - 2]).is_ok(),
            "{text}"
        );
        assert_eq!(
            &raw[date_end..],
            b"Subject: t\r\n\r\n.leading dot\r\nline\r\n"
        );
    }

    /// A reception whose `store` waits until the test lets it go.
    struct GatedReception {
        inner: MemoryReception,
        entered: Mutex<std::sync::mpsc::Sender<()>>,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl Reception for GatedReception {
        fn accepts_recipient(&self, rcpt: &str) -> bool {
            self.inner.accepts_recipient(rcpt)
        }
        fn store(&self, envelope: &ReceivedEnvelope, raw: &[u8]) -> Result<String, String> {
            let _ = self.entered.lock().map(|tx| tx.send(()));
            let _ = self.release.lock().map(|rx| rx.recv());
            self.inner.store(envelope, raw)
        }
    }

    #[tokio::test]
    async fn the_250_comes_only_after_store_returned() {
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let reception = Arc::new(GatedReception {
            inner: MemoryReception::new(&["hisp-b.example"]),
            entered: Mutex::new(entered_tx),
            release: Mutex::new(release_rx),
        });
        let mut r = start(settings(), reception.clone()).await;
        r.client
            .send(b"HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<x@hisp-b.example>\r\nDATA\r\n")
            .await;
        for expected in ["250 ", "250 ", "250 ", "354 "] {
            assert!(r.client.reply().await.starts_with(expected));
        }
        r.client.send(b"body\r\n.\r\n").await;
        let entered = tokio::task::spawn_blocking(move || entered_rx.recv_timeout(GUARD)).await;
        assert!(matches!(entered, Ok(Ok(()))), "store was not called");
        // store is running and has not returned: nothing may have been answered yet.
        assert!(
            r.client.io.fill_buf().now_or_never().is_none(),
            "a reply was sent before store returned"
        );
        assert_eq!(reception.inner.count(), 0);
        let _ = release_tx.send(());
        assert_eq!(r.client.reply().await, "250 2.0.0 OK queued as MEM000001");
        assert_eq!(reception.inner.count(), 1);
        assert_eq!(reception.inner.messages()[0].0.mail_from, "");
    }

    #[tokio::test]
    async fn sequence_and_syntax_errors() {
        let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
        let mut r = start(settings(), reception.clone()).await;
        let c = &mut r.client;
        assert!(
            c.cmd("MAIL FROM:<a@b.example>")
                .await
                .starts_with("503 5.5.1 ")
        );
        assert!(
            c.cmd("RCPT TO:<x@hisp-b.example>")
                .await
                .starts_with("503 5.5.1 ")
        );
        assert!(c.cmd("DATA").await.starts_with("503 5.5.1 "));
        assert_eq!(
            c.cmd("HELO client.example").await,
            "250 2.0.0 hisp-b.example"
        );
        assert!(
            c.cmd("MAIL FROM:a@b.example")
                .await
                .starts_with("501 5.5.4 ")
        );
        assert!(c.cmd("MAIL FROM:<a@b.example>").await.starts_with("250 "));
        assert!(
            c.cmd("MAIL FROM:<a@b.example>")
                .await
                .starts_with("503 5.5.1 ")
        );
        assert!(c.cmd("DATA").await.starts_with("503 5.5.1 "));
        assert!(
            c.cmd("RCPT TO:<x@elsewhere.example>")
                .await
                .starts_with("550 5.1.1 ")
        );
        assert!(c.cmd("RCPT TO:<>").await.starts_with("501 5.1.3 "));
        assert!(c.cmd("RCPT TO:<Postmaster>").await.starts_with("250 "));
        assert!(c.cmd("RSET").await.starts_with("250 2.0.0"));
        assert!(
            c.cmd("RCPT TO:<x@hisp-b.example>")
                .await
                .starts_with("503 5.5.1 ")
        );
        assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
        assert!(c.cmd("HELP").await.starts_with("214 "));
        // The tenth refused command closes the session.
        assert!(c.cmd("FOO bar").await.starts_with("500 5.5.1 "));
        assert!(c.reply().await.starts_with("421 4.7.0 "));
        assert!(c.closed().await);
        assert_eq!(reception.count(), 0);
    }

    #[tokio::test]
    async fn unimplemented_and_unsupported_things_are_refused() {
        let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
        let mut r = start(settings(), reception).await;
        let c = &mut r.client;
        assert!(!c.cmd("EHLO c").await.contains("STARTTLS"));
        for cmd in [
            "VRFY user",
            "EXPN list",
            "TURN",
            "BDAT 10 LAST",
            "AUTH PLAIN",
            "STARTTLS",
            "ETRN hisp-a.example",
        ] {
            let reply = c.cmd(cmd).await;
            assert!(reply.starts_with("502 5.5.1 "), "{cmd}: {reply}");
        }
        // That was 7 refused commands; 3 more and the session is closed.
        assert!(
            c.cmd("MAIL FROM:<a@b.example> SMTPUTF8")
                .await
                .starts_with("555 5.5.4")
        );
        assert!(
            c.cmd("MAIL FROM:<a@b.example> BODY=BINARYMIME")
                .await
                .starts_with("555 5.5.4")
        );
        let reply = c.cmd("MAIL FROM:<a@b.example> SIZE=1001").await;
        assert!(reply.starts_with("552 5.3.4 "), "{reply}");
        assert!(c.reply().await.starts_with("421 4.7.0 "));
        assert!(c.closed().await);
        ended(r.session).await;
    }

    #[tokio::test]
    async fn too_many_recipients_get_452() {
        let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
        let mut r = start(settings(), reception).await;
        let c = &mut r.client;
        c.cmd("EHLO c").await;
        c.cmd("MAIL FROM:<a@b.example>").await;
        for i in 0..3 {
            assert!(
                c.cmd(&format!("RCPT TO:<r{i}@hisp-b.example>"))
                    .await
                    .starts_with("250 ")
            );
        }
        assert!(
            c.cmd("RCPT TO:<r3@hisp-b.example>")
                .await
                .starts_with("452 4.5.3 ")
        );
    }

    #[tokio::test]
    async fn a_failing_store_gets_451_and_the_session_goes_on() {
        let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
        reception.set_failing(true);
        let mut r = start(settings(), reception.clone()).await;
        let c = &mut r.client;
        c.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@hisp-b.example>\r\nDATA\r\n")
            .await;
        for _ in 0..4 {
            c.reply().await;
        }
        c.send(b"x\r\n.\r\n").await;
        assert!(c.reply().await.starts_with("451 4.3.0 "));
        reception.set_failing(false);
        c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@hisp-b.example>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            c.reply().await;
        }
        c.send(b"x\r\n.\r\n").await;
        assert!(c.reply().await.starts_with("250 2.0.0 OK queued as "));
        assert_eq!(reception.count(), 1);
    }

    #[tokio::test]
    async fn an_idle_session_times_out_with_421() {
        let mut s = settings();
        s.command_timeout = Duration::from_millis(200);
        let mut r = start(s, Arc::new(MemoryReception::new(&[]))).await;
        assert!(r.client.reply().await.starts_with("421 4.4.2 "));
        assert!(r.client.closed().await);
        ended(r.session).await;
    }

    #[tokio::test]
    async fn a_slow_data_transfer_times_out_and_stores_nothing() {
        let mut s = settings();
        s.data_timeout = Duration::from_millis(300);
        let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
        let mut r = start(s, reception.clone()).await;
        let c = &mut r.client;
        c.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@hisp-b.example>\r\nDATA\r\n")
            .await;
        for _ in 0..4 {
            c.reply().await;
        }
        c.send(b"Subject: half a message\r\n").await;
        assert!(c.reply().await.starts_with("421 4.4.2 "));
        assert!(c.closed().await);
        ended(r.session).await;
        assert_eq!(reception.count(), 0);
    }

    #[tokio::test]
    async fn a_connection_dropped_in_data_stores_nothing() {
        let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
        let Running {
            mut client,
            session,
            shutdown: _shutdown,
        } = start(settings(), reception.clone()).await;
        client
            .send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@hisp-b.example>\r\nDATA\r\n")
            .await;
        for _ in 0..4 {
            client.reply().await;
        }
        client.send(b"Subject: half\r\n\r\nbody\r\n").await;
        drop(client);
        ended(session).await;
        assert_eq!(reception.count(), 0);
    }

    #[tokio::test]
    async fn shutdown_answers_an_idle_session_at_once() {
        let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
        let mut r = start(settings(), reception).await;
        r.client.cmd("EHLO c").await;
        r.client.cmd("MAIL FROM:<a@b.example>").await;
        let _ = r.shutdown.send(true);
        assert_eq!(
            r.client.reply().await,
            "421 4.3.2 hisp-b.example Service shutting down, closing connection"
        );
        assert!(r.client.closed().await);
        ended(r.session).await;
    }

    #[tokio::test]
    async fn shutdown_lets_a_message_in_data_finish_first() {
        let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
        let mut r = start(settings(), reception.clone()).await;
        let c = &mut r.client;
        c.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@hisp-b.example>\r\nDATA\r\n")
            .await;
        for _ in 0..4 {
            c.reply().await;
        }
        c.send(b"Subject: s\r\n").await;
        let _ = r.shutdown.send(true);
        c.send(b"\r\nbody\r\n.\r\nNOOP\r\n").await;
        assert!(c.reply().await.starts_with("250 2.0.0 OK queued as "));
        assert!(c.reply().await.starts_with("421 4.3.2 "));
        assert!(c.closed().await);
        ended(r.session).await;
        assert_eq!(reception.count(), 1);
    }

    #[tokio::test]
    async fn starttls_in_memory_resets_the_session() {
        let mut s = settings();
        let cert = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs");
        let acceptor = crate::transport::tls::acceptor_from_pem(
            &cert.join("hisp-b.example.fullchain.pem"),
            &cert.join("hisp-b.example.key"),
        );
        s.tls = Some(acceptor.unwrap_or_else(|e| panic!("{e}")));
        s.require_tls = true;
        let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
        let mut r = start(s, reception.clone()).await;
        assert!(r.client.cmd("EHLO c").await.ends_with("\n250 STARTTLS"));
        assert_eq!(
            r.client.cmd("MAIL FROM:<a@b.example>").await,
            "530 5.7.0 Must issue a STARTTLS command first"
        );
        // A command pipelined after STARTTLS in plain text must be discarded, not run.
        r.client
            .send(b"STARTTLS\r\nMAIL FROM:<evil@b.example>\r\n")
            .await;
        assert!(r.client.reply().await.starts_with("220 2.0.0 "));
        assert!(r.client.io.buffer().is_empty());
        let plain = r.client.io.into_inner();
        // The test PKI's certificates are for S/MIME (no serverAuth), so do not verify here;
        // tests/smtp_inbound.rs verifies a proper server certificate.
        let connector = native_tls::TlsConnector::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let tls = tokio_native_tls::TlsConnector::from(connector)
            .connect("hisp-b.example", plain)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake: {e}"));
        let mut c = Client {
            io: BufReader::new(tls),
        };
        assert!(
            c.cmd("MAIL FROM:<a@b.example>")
                .await
                .starts_with("503 5.5.1 ")
        );
        let ehlo = c.cmd("EHLO c").await;
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        assert!(c.cmd("STARTTLS").await.starts_with("503 5.5.1 "));
        assert!(c.cmd("MAIL FROM:<a@b.example>").await.starts_with("250 "));
        assert!(
            c.cmd("RCPT TO:<x@hisp-b.example>")
                .await
                .starts_with("250 ")
        );
        assert!(c.cmd("DATA").await.starts_with("354 "));
        c.send(b"x\r\n.\r\n").await;
        assert!(c.reply().await.starts_with("250 2.0.0 "));
        c.cmd("QUIT").await;
        ended(r.session).await;
        let messages = reception.messages();
        assert_eq!(messages.len(), 1);
        assert!(messages[0].0.tls);
        assert_eq!(messages[0].0.mail_from, "a@b.example");
        assert!(String::from_utf8_lossy(&messages[0].1).contains("with ESMTPS"));
    }

    // --- properties -----------------------------------------------------------------------------

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Dot-stuffing as a client does it (RFC 5321 §4.5.2), plus the terminator.
        fn stuff(message: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for line in message.split_inclusive(|&b| b == b'\n') {
                if line.first() == Some(&b'.') {
                    out.push(b'.');
                }
                out.extend_from_slice(line);
            }
            out.extend_from_slice(b".\r\n");
            out
        }

        fn text_line() -> impl Strategy<Value = Vec<u8>> {
            // Any bytes but CR and LF, often starting with dots.
            (
                prop_oneof![Just(Vec::new()), Just(b".".to_vec()), Just(b"..".to_vec())],
                proptest::collection::vec(
                    any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
                    0..40,
                ),
            )
                .prop_map(|(dots, rest)| [dots, rest].concat())
        }

        proptest! {
            #[test]
            fn stuffed_messages_come_back_exactly(
                lines in proptest::collection::vec(text_line(), 0..20),
                cut in any::<prop::sample::Index>(),
                tail in proptest::collection::vec(any::<u8>(), 0..20),
            ) {
                let message: Vec<u8> = lines.iter().flat_map(|l| [&l[..], b"\r\n"].concat()).collect();
                let mut wire = stuff(&message);
                let end = wire.len();
                wire.extend_from_slice(&tail);
                let (a, b) = wire.split_at(cut.index(wire.len() + 1).min(end));
                let mut r = DataReceiver::new(usize::MAX / 2, Vec::new());
                let n = match r.feed(a) {
                    Some(n) => Some(n),
                    None => r.feed(b).map(|n| n + a.len()),
                };
                prop_assert_eq!(n, Some(end));
                prop_assert_eq!(r.finish(), DataOutcome::Message(message));
            }

            #[test]
            fn any_command_bytes_are_answered_without_a_panic(
                chunks in proptest::collection::vec(
                    prop_oneof![
                        proptest::collection::vec(any::<u8>(), 0..600),
                        proptest::sample::select(vec![
                            b"EHLO x\r\n".to_vec(), b"MAIL FROM:<a@b.example> SIZE=5\r\n".to_vec(),
                            b"RCPT TO:<x@hisp-b.example>\r\n".to_vec(), b"DATA\r\n".to_vec(),
                            b"\r\n.\r\n".to_vec(), b"RSET\r\n".to_vec(), b"BDAT 3\r\n".to_vec(),
                            b"MAIL FROM:<\"q\\\"\"@x> BODY=8BITMIME RET=FULL\r\n".to_vec(),
                        ]),
                    ],
                    0..12,
                ),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let Ok(rt) = rt else { panic!("runtime") };
                let outcome = rt.block_on(async move {
                    let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
                    let (mut client, server) = tokio::io::duplex(1024 * 1024);
                    let (_tx, rx) = watch::channel(false);
                    let task = tokio::spawn(session(server, peer(), Arc::new(settings()), reception, rx));
                    for c in &chunks {
                        if client.write_all(c).await.is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown().await;
                    let mut replies = Vec::new();
                    let _ = timeout(GUARD, client.read_to_end(&mut replies)).await;
                    drop(client);
                    (timeout(GUARD, task).await, replies)
                });
                let (ended, replies) = outcome;
                prop_assert!(matches!(ended, Ok(Ok(()))), "session did not end cleanly: {:?}", ended);
                // Every reply line is "NNN" followed by a space or a dash.
                for line in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    prop_assert!(line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit)
                        && (line[3] == b' ' || line[3] == b'-') && line.ends_with(b"\r"),
                        "bad reply line {:?}", String::from_utf8_lossy(line));
                }
            }
        }
    }
    use std::path::PathBuf;
}
