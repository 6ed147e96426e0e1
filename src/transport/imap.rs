//! The IMAP edge poller: fetches the Direct messages an edge agent's HISP keeps in a mailbox
//! (`[[imap]]`), hands each to the agent's spool, and only then marks it `\Seen` or moves it
//! to the processed mailbox.
//!
//! # Delivery guarantee
//! A message is fetched with `BODY.PEEK[]`, so fetching marks nothing. It is stored durably
//! through [`MailboxSpool::store`] *before* it is flagged or moved. If the agent dies between
//! the two, the next poll finds the message again, sees it is already stored (the spool is
//! idempotent by UIDVALIDITY+UID and by Message-ID) and only flags it: nothing is lost and
//! nothing is delivered twice.
//!
//! # Shape
//! [`poll_once`] is one connection: connect (plain, STARTTLS or TLS), `LOGIN` once, `SELECT`,
//! `UID SEARCH`, then fetch/store/flag message by message, `LOGOUT`. [`run`] repeats that until
//! shutdown, keeping the session open in `IDLE` (RFC 2177) when the server offers it, and backs
//! off exponentially on transient errors. A rejected password ends [`run`]: retrying a wrong
//! password only locks the account, so the caller disables the credential instead.
//!
//! The protocol steps (`login`, `sweep`, `idle`) are generic over the stream, so they run over a
//! TCP or TLS connection as well as over an in-memory pipe in the unit tests.
//!
//! Logs carry the account, mailbox, UID, size, Message-ID and outcome; never message content
//! or subjects (the payloads are protected health information), never the password.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_imap::imap_proto::{Capability, Response, ResponseCode, Status};
use async_imap::types::Fetch;
use async_imap::{Client, Session};
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::{ConnTls, ImapAfter, ImapConfig};

/// Time allowed to connect, for the TLS handshake and for each command but `FETCH`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Time allowed to fetch one message (they may be tens of MiB on a slow link).
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Time allowed for `DONE` and `LOGOUT` when stopping; shutdown should not wait on a dead peer.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one `IDLE` lasts before it is ended and re-issued. RFC 2177 §3: servers may log off
/// an idle client after 30 minutes, so clients re-issue IDLE "at least every 29 minutes".
const IDLE_RENEW: Duration = Duration::from_secs(25 * 60);
/// How long [`run`] lets a session finish its work and log out after shutdown is signalled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// First delay after a transient error; doubled on each further failure.
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
/// Longest delay between attempts after transient errors.
const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// The rest of the agent, as the poller sees it.
pub trait MailboxSpool: Send + Sync + 'static {
    /// Whether this mailbox message was already stored (by UIDVALIDITY+UID, or by Message-ID
    /// when given).
    fn already_stored(
        &self,
        account: &str,
        uidvalidity: u32,
        uid: u32,
        message_id: Option<&str>,
    ) -> bool;
    /// Store durably (fsync) before returning; blocking (called through `spawn_blocking`).
    /// Must itself be idempotent by (account, uidvalidity, uid) and by Message-ID.
    fn store(
        &self,
        account: &str,
        uidvalidity: u32,
        uid: u32,
        message_id: Option<&str>,
        raw: &[u8],
    ) -> Result<(), String>;
}

/// A [`MailboxSpool`] in memory: the test double shipped beside the real spool (as lettre ships
/// `StubTransport`). Idempotent by (account, UIDVALIDITY, UID) and by Message-ID, like the real
/// one; it also counts every `store` call, so a test can tell "stored once" from "stored twice,
/// deduplicated".
#[derive(Debug, Default)]
pub struct MemorySpool {
    state: Mutex<MemorySpoolState>,
}

#[derive(Debug, Default)]
struct MemorySpoolState {
    messages: Vec<SpooledMessage>,
    store_calls: usize,
}

/// One message a [`MemorySpool`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledMessage {
    pub account: String,
    pub uidvalidity: u32,
    pub uid: u32,
    pub message_id: Option<String>,
    pub raw: Vec<u8>,
}

impl SpooledMessage {
    fn same(&self, account: &str, uidvalidity: u32, uid: u32, message_id: Option<&str>) -> bool {
        self.account == account
            && ((self.uidvalidity == uidvalidity && self.uid == uid)
                || (message_id.is_some() && self.message_id.as_deref() == message_id))
    }
}

impl MemorySpool {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemorySpoolState> {
        // A panic elsewhere while holding the lock leaves the data consistent (every update
        // is a single push or increment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The messages stored, in the order they were stored.
    pub fn messages(&self) -> Vec<SpooledMessage> {
        self.state().messages.clone()
    }

    /// How many times `store` was called (duplicates included).
    pub fn store_calls(&self) -> usize {
        self.state().store_calls
    }
}

impl MailboxSpool for MemorySpool {
    fn already_stored(
        &self,
        account: &str,
        uidvalidity: u32,
        uid: u32,
        message_id: Option<&str>,
    ) -> bool {
        self.state()
            .messages
            .iter()
            .any(|m| m.same(account, uidvalidity, uid, message_id))
    }

    fn store(
        &self,
        account: &str,
        uidvalidity: u32,
        uid: u32,
        message_id: Option<&str>,
        raw: &[u8],
    ) -> Result<(), String> {
        let mut state = self.state();
        state.store_calls += 1;
        if !state
            .messages
            .iter()
            .any(|m| m.same(account, uidvalidity, uid, message_id))
        {
            state.messages.push(SpooledMessage {
                account: account.to_string(),
                uidvalidity,
                uid,
                message_id: message_id.map(str::to_string),
                raw: raw.to_vec(),
            });
        }
        Ok(())
    }
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImapError {
    /// The server refused the credentials (a `NO` to `LOGIN`). Retrying cannot help until the
    /// password is changed, and repeated failures may lock the account: the caller disables
    /// the credential (`credentials reset` enables it again).
    #[error(
        "IMAP server rejected the credentials of {credential}: {reason} (check the password, then `credentials reset {credential}`)"
    )]
    AuthRejected { credential: String, reason: String },
    /// The configuration cannot work as written: the password variable is unset, the CA file
    /// is unreadable, the server refuses `LOGIN` on this kind of connection.
    #[error("IMAP configuration: {0}")]
    Configuration(String),
    /// Network, TLS, protocol or spool trouble a later attempt may not meet.
    #[error("IMAP: {0}")]
    Transient(String),
}

impl ImapError {
    /// Whether a later attempt can succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, ImapError::Transient(_))
    }
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PollStats {
    /// Messages fetched from the mailbox.
    pub fetched: usize,
    /// Messages handed to the spool (newly stored).
    pub stored: usize,
    /// Messages the spool already had (a poll before was interrupted before flagging them).
    pub duplicates: usize,
    /// Messages marked `\Seen` or moved after storage.
    pub flagged: usize,
}

impl PollStats {
    fn add(&mut self, other: &PollStats) {
        self.fetched += other.fetched;
        self.stored += other.stored;
        self.duplicates += other.duplicates;
        self.flagged += other.flagged;
    }
}

/// One poll: connect, `LOGIN` once, `SELECT` the mailbox, fetch every message not yet handled,
/// store each through `spool`, then mark it `\Seen` or move it (per `cfg.after`), `LOGOUT`.
///
/// The password is read from the environment variable `cfg.password_env` first; when it is
/// unset this returns [`ImapError::Configuration`] without connecting.
pub async fn poll_once(
    cfg: &ImapConfig,
    spool: Arc<dyn MailboxSpool>,
) -> Result<PollStats, ImapError> {
    let account = Account::new(cfg);
    let (mut session, caps) = open(&account).await?;
    let result = sweep(&mut session, &caps, &account, &spool, &|| false).await;
    logout(&mut session, &account).await;
    result
}

/// Poll until `shutdown` turns true (or its sender is dropped).
///
/// With `cfg.idle` and a server offering `IDLE`, one session stays open and waits in `IDLE`
/// (re-issued every 25 minutes, RFC 2177); otherwise the mailbox is polled every
/// `cfg.poll_interval`. Transient errors are logged and retried after an exponential back-off
/// (2 s doubling to at most 5 min). [`ImapError::AuthRejected`] and
/// [`ImapError::Configuration`] end the loop and are returned.
pub async fn run(
    cfg: ImapConfig,
    spool: Arc<dyn MailboxSpool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ImapError> {
    let account = Account::new(&cfg);
    if cfg.tls == ConnTls::None {
        warn!(
            account = %account.name,
            host = %cfg.host,
            port = cfg.port,
            "insecure: IMAP without TLS (tls = \"none\"); the password and messages cross the network in plain text"
        );
    }
    info!(account = %account.name, mailbox = %cfg.mailbox, idle = cfg.idle, "IMAP poller starting");
    let mut backoff = Backoff::default();
    let mut watcher = shutdown.clone();
    loop {
        if stopping(&shutdown) {
            break;
        }
        let outcome = {
            let work = cycle(&account, &spool, &mut shutdown, &mut backoff);
            tokio::pin!(work);
            tokio::select! {
                r = &mut work => r,
                () = shutdown_signalled(&mut watcher) => {
                    // The cycle sees the signal too and ends its IDLE or its sweep (after the
                    // message in hand) with DONE and LOGOUT. A connect or command stuck on a
                    // dead peer is abandoned after a grace period: dropping the work loses
                    // nothing, as nothing is flagged before it is stored.
                    tokio::time::timeout(SHUTDOWN_GRACE, &mut work)
                        .await
                        .unwrap_or(Ok(Cycle::Stopped))
                }
            }
        };
        let delay = match outcome {
            Ok(Cycle::Stopped) => break,
            Ok(Cycle::Polled) => cfg.poll_interval(),
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                warn!(account = %account.name, error = %e, retry_in = ?delay, "IMAP poll failed");
                delay
            }
            Err(e) => {
                error!(account = %account.name, error = %e, "IMAP poller stopped");
                return Err(e);
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown_signalled(&mut shutdown) => break,
        }
    }
    info!(account = %account.name, "IMAP poller stopped (shutdown)");
    Ok(())
}

/// How a [`cycle`] ended.
enum Cycle {
    /// A poll without IDLE finished; wait `poll_interval` before the next.
    Polled,
    /// Shutdown was signalled.
    Stopped,
}

/// One connection's worth of [`run`]: connect, sweep, then either wait in IDLE and sweep again
/// until shutdown, or log out (no IDLE) and let [`run`] wait for the next interval.
async fn cycle(
    account: &Account<'_>,
    spool: &Arc<dyn MailboxSpool>,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<Cycle, ImapError> {
    let (mut session, caps) = open(account).await?;
    let use_idle = account.cfg.idle && caps.idle;
    loop {
        let stop_check = shutdown.clone();
        sweep(&mut session, &caps, account, spool, &|| {
            stopping(&stop_check)
        })
        .await?;
        backoff.reset();
        if stopping(shutdown) {
            logout(&mut session, account).await;
            return Ok(Cycle::Stopped);
        }
        if !use_idle {
            logout(&mut session, account).await;
            return Ok(Cycle::Polled);
        }
        let (next, woke) = idle(session, account, shutdown).await?;
        session = next;
        if woke == Wake::Shutdown {
            logout(&mut session, account).await;
            return Ok(Cycle::Stopped);
        }
    }
}

/// Why an `IDLE` ended.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    /// The server reported a change (or the IDLE was renewed): sweep again.
    Mailbox,
    /// Shutdown was signalled.
    Shutdown,
}

/// Wait in `IDLE` until the server reports a change, `IDLE_RENEW` passes or shutdown is
/// signalled; then end it with `DONE` and give the session back.
async fn idle<T: ImapIo>(
    session: Session<T>,
    account: &Account<'_>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(Session<T>, Wake), ImapError> {
    let mut handle = session.idle();
    timed(COMMAND_TIMEOUT, handle.init())
        .await
        .map_err(|e| account.transient("IDLE", e))?;
    debug!(account = %account.name, mailbox = %account.cfg.mailbox, "IMAP IDLE");
    let wake = {
        // `_interrupt` must live as long as the wait: dropping it ends the wait early.
        let (wait, _interrupt) = handle.wait_with_timeout(IDLE_RENEW);
        tokio::select! {
            r = wait => {
                r.map_err(|e| account.transient("IDLE", e))?;
                Wake::Mailbox
            }
            () = tokio::time::sleep(IDLE_RENEW) => Wake::Mailbox,
            () = shutdown_signalled(shutdown) => Wake::Shutdown,
        }
    };
    let limit = if wake == Wake::Shutdown {
        GOODBYE_TIMEOUT
    } else {
        COMMAND_TIMEOUT
    };
    let session = timed(limit, handle.done())
        .await
        .map_err(|e| account.transient("DONE (end of IDLE)", e))?;
    Ok((session, wake))
}

/// The account being polled, with the name it is known by in logs and errors.
struct Account<'a> {
    cfg: &'a ImapConfig,
    name: String,
}

/// What the server said it can do, after login.
#[derive(Debug)]
struct Capabilities {
    /// RFC 2177 IDLE.
    idle: bool,
    /// RFC 6851 MOVE.
    r#move: bool,
    /// RFC 4315 UIDPLUS (`UID EXPUNGE`).
    uidplus: bool,
}

impl From<&async_imap::types::Capabilities> for Capabilities {
    fn from(caps: &async_imap::types::Capabilities) -> Self {
        Capabilities {
            idle: caps.has_str("IDLE"),
            r#move: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
        }
    }
}

impl<'a> Account<'a> {
    fn new(cfg: &'a ImapConfig) -> Self {
        Account {
            name: cfg.credential_name(),
            cfg,
        }
    }

    /// The password from the environment variable named by `password_env`, read at each
    /// connect. The value never appears in logs or errors.
    fn password(&self) -> Result<String, ImapError> {
        std::env::var(&self.cfg.password_env).map_err(|e| {
            let why = match e {
                std::env::VarError::NotPresent => "is not set",
                std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
            };
            ImapError::Configuration(format!(
                "environment variable {} (password of {}) {why}",
                self.cfg.password_env, self.name
            ))
        })
    }

    fn server(&self) -> String {
        format!("{}:{}", self.cfg.host, self.cfg.port)
    }

    /// A transient error naming the account, the server and the step that failed.
    fn transient(&self, step: &str, e: impl fmt::Display) -> ImapError {
        ImapError::Transient(format!(
            "{} at {}: {step} failed: {e}",
            self.name,
            self.server()
        ))
    }
}

/// What the poller needs of a connection.
trait ImapIo: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> ImapIo for T {}

/// A plain or TLS connection.
type Connection = Box<dyn ImapIo>;

/// Connect (per `cfg.tls`), read the greeting and log in.
async fn open(account: &Account<'_>) -> Result<(Session<Connection>, Capabilities), ImapError> {
    let password = account.password()?;
    let cfg = account.cfg;
    let tcp = timed(
        COMMAND_TIMEOUT,
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    .map_err(|e| account.transient("connect", e))?;
    let stream: Connection = match cfg.tls {
        ConnTls::None => Box::new(tcp),
        ConnTls::Tls => Box::new(tls_handshake(account, tcp).await?),
        ConnTls::Starttls => {
            let mut client = Client::new(tcp);
            greeting(&mut client, account).await?;
            timed(
                COMMAND_TIMEOUT,
                client.run_command_and_check_ok("STARTTLS", None),
            )
            .await
            .map_err(|e| account.transient("STARTTLS", e))?;
            // Anything the server sent after its OK is dropped with the client's buffer: it
            // was not protected by TLS (the STARTTLS command-injection class of bugs).
            Box::new(tls_handshake(account, client.into_inner()).await?)
        }
    };
    let mut client = Client::new(stream);
    if cfg.tls != ConnTls::Starttls {
        let caps = greeting(&mut client, account).await?;
        if caps.iter().any(|c| c == "LOGINDISABLED") {
            return Err(ImapError::Configuration(format!(
                "{} at {} disables LOGIN on this connection (LOGINDISABLED); use tls = \"starttls\" or \"tls\"",
                account.name,
                account.server()
            )));
        }
    }
    login(client, account, &password).await
}

/// Read the server greeting; its capabilities when it lists them (`* OK [CAPABILITY ...]`).
async fn greeting<T: ImapIo>(
    client: &mut Client<T>,
    account: &Account<'_>,
) -> Result<Vec<String>, ImapError> {
    let greeting = timed(COMMAND_TIMEOUT, client.read_response())
        .await
        .map_err(|e| account.transient("reading the greeting", e))?
        .ok_or_else(|| account.transient("reading the greeting", "connection closed"))?;
    match greeting.parsed() {
        Response::Data {
            status: Status::Ok,
            outcome,
        } => Ok(match &outcome.code {
            Some(ResponseCode::Capabilities(caps)) => caps.iter().map(capability_name).collect(),
            _ => Vec::new(),
        }),
        Response::Data {
            status: Status::Bye,
            outcome,
        } => Err(account.transient(
            "greeting",
            format!(
                "server refused the connection: {}",
                outcome.information.as_deref().unwrap_or("BYE")
            ),
        )),
        _ => Err(account.transient("greeting", "unexpected greeting (not * OK)")),
    }
}

fn capability_name(c: &Capability<'_>) -> String {
    match c {
        Capability::Imap4rev1 => "IMAP4rev1".into(),
        Capability::Auth(a) => format!("AUTH={a}"),
        Capability::Atom(a) => a.to_ascii_uppercase(),
    }
}

/// The TLS handshake, verifying the server's certificate for `cfg.host` against the system
/// roots plus the PEM certificates in `cfg.tls_ca`.
async fn tls_handshake(
    account: &Account<'_>,
    tcp: TcpStream,
) -> Result<tokio_native_tls::TlsStream<TcpStream>, ImapError> {
    let connector = tls_connector(account)?;
    timed(COMMAND_TIMEOUT, connector.connect(&account.cfg.host, tcp))
        .await
        .map_err(|e| account.transient("TLS handshake", e))
}

fn tls_connector(account: &Account<'_>) -> Result<tokio_native_tls::TlsConnector, ImapError> {
    let mut builder = native_tls::TlsConnector::builder();
    builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if let Some(path) = &account.cfg.tls_ca {
        let config = |why: String| {
            ImapError::Configuration(format!(
                "tls_ca {} (for {}): {why}",
                path.display(),
                account.name
            ))
        };
        let pem = std::fs::read(path).map_err(|e| config(format!("cannot read: {e}")))?;
        let certs = native_tls::Certificate::stack_from_pem(&pem)
            .map_err(|e| config(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(config("holds no PEM certificate".into()));
        }
        for cert in certs {
            builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map(tokio_native_tls::TlsConnector::from)
        .map_err(|e| ImapError::Configuration(format!("TLS set-up for {}: {e}", account.name)))
}

/// `LOGIN`, once; then the server's capabilities (from the `OK`, as Dovecot sends them, or
/// asked for). A `NO` is [`ImapError::AuthRejected`] unless the server marks it temporary
/// (RFC 5530 `[UNAVAILABLE]`, `[INUSE]`, `[LIMIT]`) or as needing TLS (`[PRIVACYREQUIRED]`).
async fn login<T: ImapIo>(
    client: Client<T>,
    account: &Account<'_>,
    password: &str,
) -> Result<(Session<T>, Capabilities), ImapError> {
    let username = &account.cfg.username;
    match timed_login(client.login_with_capabilities(username, password)).await {
        Ok((mut session, caps)) => {
            debug!(account = %account.name, user = %username, "IMAP login");
            let caps = match caps {
                Some(caps) => Capabilities::from(&caps),
                None => timed(COMMAND_TIMEOUT, session.capabilities())
                    .await
                    .map(|caps| Capabilities::from(&caps))
                    .map_err(|e| account.transient("CAPABILITY", e))?,
            };
            Ok((session, caps))
        }
        Err(LoginFailure::Imap(async_imap::error::Error::No(text))) => {
            let reason = server_text(&text);
            let upper = reason.to_ascii_uppercase();
            if ["[UNAVAILABLE]", "[INUSE]", "[LIMIT]"]
                .iter()
                .any(|code| upper.contains(code))
            {
                Err(account.transient("LOGIN", reason))
            } else if upper.contains("[PRIVACYREQUIRED]") {
                Err(ImapError::Configuration(format!(
                    "{} at {} requires TLS before LOGIN ({reason}); use tls = \"starttls\" or \"tls\"",
                    account.name,
                    account.server()
                )))
            } else {
                warn!(account = %account.name, user = %username, reason = %reason, "IMAP login rejected");
                Err(ImapError::AuthRejected {
                    credential: account.name.clone(),
                    reason,
                })
            }
        }
        Err(LoginFailure::Imap(async_imap::error::Error::Validate(e))) => {
            Err(ImapError::Configuration(format!(
                "user name or password of {} cannot be sent in LOGIN: {e}",
                account.name
            )))
        }
        Err(LoginFailure::Imap(e)) => Err(account.transient("LOGIN", e)),
        Err(LoginFailure::Timeout) => Err(account.transient("LOGIN", "timed out")),
    }
}

enum LoginFailure {
    Imap(async_imap::error::Error),
    Timeout,
}

async fn timed_login<S, T: ImapIo>(
    f: impl Future<Output = Result<S, (async_imap::error::Error, Client<T>)>>,
) -> Result<S, LoginFailure> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((e, _client))) => Err(LoginFailure::Imap(e)),
        Err(_) => Err(LoginFailure::Timeout),
    }
}

/// The server's text out of async-imap's `NO`/`BAD` error string
/// (`code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")`).
fn server_text(error: &str) -> String {
    const START: &str = "info: Some(\"";
    match (error.find(START), error.rfind("\")")) {
        (Some(start), Some(end)) if start + START.len() <= end => error[start + START.len()..end]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\"),
        _ => error.to_string(),
    }
}

/// `SELECT` the mailbox and handle every message waiting in it: fetch (`BODY.PEEK[]`), store
/// through the spool unless already stored, then flag or move. Stops early, between messages,
/// when `stop()` says so.
async fn sweep<T: ImapIo>(
    session: &mut Session<T>,
    caps: &Capabilities,
    account: &Account<'_>,
    spool: &Arc<dyn MailboxSpool>,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<PollStats, ImapError> {
    let cfg = account.cfg;
    if cfg.after == ImapAfter::Move && cfg.processed_mailbox == cfg.mailbox {
        return Err(ImapError::Configuration(format!(
            "{}: processed_mailbox is the polled mailbox ({}); messages would be fetched again",
            account.name, cfg.mailbox
        )));
    }
    let mailbox = timed(COMMAND_TIMEOUT, session.select(&cfg.mailbox))
        .await
        .map_err(|e| account.transient(&format!("SELECT {}", cfg.mailbox), e))?;
    let uidvalidity = mailbox.uid_validity.ok_or_else(|| {
        account.transient(
            &format!("SELECT {}", cfg.mailbox),
            "the server gave no UIDVALIDITY",
        )
    })?;
    // With `seen`, handled messages are \Seen; with `move`, they leave the mailbox, so every
    // message still in it (but those being expunged) is waiting.
    let query = match cfg.after {
        ImapAfter::Seen => "UNSEEN",
        ImapAfter::Move => "UNDELETED",
    };
    let mut uids: Vec<u32> = timed(COMMAND_TIMEOUT, session.uid_search(query))
        .await
        .map_err(|e| account.transient(&format!("UID SEARCH {query}"), e))?
        .into_iter()
        .collect();
    uids.sort_unstable();
    let mut stats = PollStats::default();
    if uids.is_empty() {
        debug!(account = %account.name, mailbox = %cfg.mailbox, "IMAP mailbox has nothing new");
        return Ok(stats);
    }
    if cfg.after == ImapAfter::Move {
        ensure_mailbox(session, account, &cfg.processed_mailbox).await?;
    }
    for uid in uids {
        if stop() {
            debug!(account = %account.name, "IMAP sweep stopped early for shutdown");
            break;
        }
        let one = handle_message(session, account, spool, caps, uidvalidity, uid).await?;
        stats.add(&one);
    }
    info!(
        account = %account.name,
        mailbox = %cfg.mailbox,
        fetched = stats.fetched,
        stored = stats.stored,
        duplicates = stats.duplicates,
        flagged = stats.flagged,
        "IMAP poll done"
    );
    Ok(stats)
}

/// Fetch, store, then flag one message.
async fn handle_message<T: ImapIo>(
    session: &mut Session<T>,
    account: &Account<'_>,
    spool: &Arc<dyn MailboxSpool>,
    caps: &Capabilities,
    uidvalidity: u32,
    uid: u32,
) -> Result<PollStats, ImapError> {
    let cfg = account.cfg;
    let mut stats = PollStats::default();
    let Some(raw) = fetch(session, account, uid).await? else {
        // Expunged by someone else between SEARCH and FETCH: nothing to do.
        debug!(account = %account.name, mailbox = %cfg.mailbox, uid, outcome = "vanished", "IMAP message gone before fetch");
        return Ok(stats);
    };
    stats.fetched += 1;
    let size = raw.len();
    let message_id = message_id(&raw);

    let (already, raw) = {
        let spool = Arc::clone(spool);
        let name = account.name.clone();
        let mid = message_id.clone();
        tokio::task::spawn_blocking(move || {
            let already = spool.already_stored(&name, uidvalidity, uid, mid.as_deref());
            (already, raw)
        })
        .await
        .map_err(|e| account.transient("spool lookup", e))?
    };
    if already {
        stats.duplicates += 1;
        info!(account = %account.name, mailbox = %cfg.mailbox, uid, size, message_id = ?message_id, outcome = "duplicate", "IMAP message already stored");
    } else {
        let spool = Arc::clone(spool);
        let name = account.name.clone();
        let mid = message_id.clone();
        tokio::task::spawn_blocking(move || {
            spool.store(&name, uidvalidity, uid, mid.as_deref(), &raw)
        })
        .await
        .map_err(|e| account.transient("spool store", e))?
        .map_err(|e| account.transient(&format!("storing UID {uid}"), e))?;
        stats.stored += 1;
        info!(account = %account.name, mailbox = %cfg.mailbox, uid, size, message_id = ?message_id, outcome = "stored", "IMAP message stored");
    }

    mark_handled(session, account, caps, uid).await?;
    stats.flagged += 1;
    let outcome = match cfg.after {
        ImapAfter::Seen => "seen",
        ImapAfter::Move => "moved",
    };
    debug!(account = %account.name, mailbox = %cfg.mailbox, uid, outcome, "IMAP message flagged");
    Ok(stats)
}

/// `UID FETCH uid (UID RFC822.SIZE BODY.PEEK[])`; `None` when the message no longer exists.
async fn fetch<T: ImapIo>(
    session: &mut Session<T>,
    account: &Account<'_>,
    uid: u32,
) -> Result<Option<Vec<u8>>, ImapError> {
    let step = || format!("UID FETCH {uid}");
    let fetches: Vec<Fetch> = timed(FETCH_TIMEOUT, async {
        session
            .uid_fetch(uid.to_string(), "(UID RFC822.SIZE BODY.PEEK[])")
            .await?
            .try_collect()
            .await
    })
    .await
    .map_err(|e| account.transient(&step(), e))?;
    // Unsolicited FETCH responses (flag changes of other messages) may come along; take ours.
    let Some(fetch) = fetches.iter().find(|f| f.uid == Some(uid)) else {
        return Ok(None);
    };
    let Some(body) = fetch.body() else {
        return Err(account.transient(&step(), "the server returned no BODY[]"));
    };
    // The literal's length prefix already guarantees we read all the server sent; a size
    // that disagrees is a server quirk worth a log line, not a reason to stall the mailbox.
    if let Some(size) = fetch.size
        && usize::try_from(size).ok() != Some(body.len())
    {
        warn!(account = %account.name, mailbox = %account.cfg.mailbox, uid, size, body_len = body.len(), "IMAP RFC822.SIZE differs from the fetched body");
    }
    Ok(Some(body.to_vec()))
}

/// Mark a stored message handled: `\Seen`, or move it to `processed_mailbox` (`UID MOVE`, or
/// `UID COPY` + `\Deleted` + expunge on servers without MOVE).
async fn mark_handled<T: ImapIo>(
    session: &mut Session<T>,
    account: &Account<'_>,
    caps: &Capabilities,
    uid: u32,
) -> Result<(), ImapError> {
    let cfg = account.cfg;
    let set = uid.to_string();
    match cfg.after {
        ImapAfter::Seen => store_flags(session, account, &set, "+FLAGS (\\Seen)").await,
        ImapAfter::Move if caps.r#move => timed(
            COMMAND_TIMEOUT,
            session.uid_mv(&set, &cfg.processed_mailbox),
        )
        .await
        .map_err(|e| account.transient(&format!("UID MOVE {uid}"), e)),
        ImapAfter::Move => {
            timed(
                COMMAND_TIMEOUT,
                session.uid_copy(&set, &cfg.processed_mailbox),
            )
            .await
            .map_err(|e| account.transient(&format!("UID COPY {uid}"), e))?;
            store_flags(session, account, &set, "+FLAGS (\\Deleted)").await?;
            let step = if caps.uidplus {
                "UID EXPUNGE"
            } else {
                "EXPUNGE"
            };
            timed(COMMAND_TIMEOUT, async {
                if caps.uidplus {
                    session
                        .uid_expunge(&set)
                        .await?
                        .try_collect::<Vec<_>>()
                        .await
                } else {
                    session.expunge().await?.try_collect::<Vec<_>>().await
                }
            })
            .await
            .map(drop)
            .map_err(|e| account.transient(step, e))
        }
    }
}

async fn store_flags<T: ImapIo>(
    session: &mut Session<T>,
    account: &Account<'_>,
    set: &str,
    change: &str,
) -> Result<(), ImapError> {
    timed(COMMAND_TIMEOUT, async {
        session
            .uid_store(set, change)
            .await?
            .try_collect::<Vec<Fetch>>()
            .await
    })
    .await
    .map(drop)
    .map_err(|e| account.transient(&format!("UID STORE {set} {change}"), e))
}

/// Create `name` unless it exists.
async fn ensure_mailbox<T: ImapIo>(
    session: &mut Session<T>,
    account: &Account<'_>,
    name: &str,
) -> Result<(), ImapError> {
    let pattern = imap_quote(name);
    let exists = timed(COMMAND_TIMEOUT, async {
        let names: Vec<_> = session
            .list(Some(""), Some(&pattern))
            .await?
            .try_collect()
            .await?;
        Ok::<_, async_imap::error::Error>(names.iter().any(|n| n.name() == name))
    })
    .await
    .map_err(|e| account.transient(&format!("LIST {name}"), e))?;
    if !exists {
        timed(COMMAND_TIMEOUT, session.create(name))
            .await
            .map_err(|e| account.transient(&format!("CREATE {name}"), e))?;
        info!(account = %account.name, mailbox = %name, "IMAP mailbox created");
    }
    Ok(())
}

/// An IMAP quoted string.
fn imap_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `LOGOUT`, best effort: the work is done, a peer that does not answer only delays shutdown.
async fn logout<T: ImapIo>(session: &mut Session<T>, account: &Account<'_>) {
    if let Err(e) = timed(GOODBYE_TIMEOUT, session.logout()).await {
        debug!(account = %account.name, error = %e, "IMAP LOGOUT failed");
    }
}

/// The Message-ID of a raw message (without angle brackets), if it has one. mail-parser has a
/// `debug_assert!` a malformed message can reach (see `mime::payload::extract`): a panic there
/// means "no readable Message-ID", never a dead poller.
fn message_id(raw: &[u8]) -> Option<String> {
    std::panic::catch_unwind(|| {
        mail_parser::MessageParser::new()
            .parse_headers(raw)
            .and_then(|m| m.message_id().map(|id| id.trim().to_string()))
    })
    .ok()
    .flatten()
    .filter(|id| !id.is_empty())
}

/// Run `f` for at most `limit`.
async fn timed<T, E: fmt::Display>(
    limit: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("timed out after {limit:?}")),
    }
}

/// Whether shutdown was signalled (or nobody can signal it any more).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Resolves once shutdown is signalled (or its sender is gone).
async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Exponential back-off after transient errors: 2 s, 4 s, ... at most 5 min.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

    fn cfg() -> ImapConfig {
        ImapConfig {
            name: None,
            host: "imap.hisp.test".into(),
            port: 993,
            tls: ConnTls::Tls,
            username: "edge@hisp.test".into(),
            password_env: "UNUSED".into(),
            mailbox: "INBOX".into(),
            poll_interval: "60s".into(),
            idle: true,
            after: ImapAfter::Seen,
            processed_mailbox: "Processed".into(),
            tls_ca: None,
        }
    }

    /// A reply that closes the connection instead.
    const HANGUP: &str = "(hang up)";

    /// A scripted IMAP server on the other end of an in-memory pipe: sends `greeting`, then
    /// answers each command line in turn with the next reply (`TAG` replaced by the
    /// command's tag; [`HANGUP`] closes the connection). Returns the command lines it received.
    fn scripted(
        greeting: &'static str,
        replies: Vec<String>,
    ) -> (DuplexStream, tokio::task::JoinHandle<Vec<String>>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(server);
            let mut lines = BufReader::new(read).lines();
            write.write_all(greeting.as_bytes()).await.unwrap();
            let mut seen = Vec::new();
            for reply in replies {
                let Ok(Some(line)) = lines.next_line().await else {
                    break;
                };
                let tag = line.split(' ').next().unwrap_or("").to_string();
                seen.push(line);
                if reply.as_str() == HANGUP {
                    return seen;
                }
                write
                    .write_all(reply.replace("TAG", &tag).as_bytes())
                    .await
                    .unwrap();
            }
            // Record whatever else the client sends until it hangs up.
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push(line);
            }
            seen
        });
        (client, task)
    }

    /// LOGIN against a scripted server: the outcome (the session itself dropped, so the
    /// script ends) and the command lines the server received.
    async fn login_against(replies: Vec<&'static str>) -> (Result<(), ImapError>, Vec<String>) {
        let cfg = cfg();
        let account = Account::new(&cfg);
        let replies = replies.into_iter().map(String::from).collect();
        let (stream, server) = scripted("* OK [CAPABILITY IMAP4rev1] ready\r\n", replies);
        let mut client = Client::new(stream);
        greeting(&mut client, &account).await.expect("greeting");
        let result = login(client, &account, "pw").await.map(drop);
        let seen = server.await.expect("script");
        (result, seen)
    }

    #[tokio::test]
    async fn a_no_to_login_is_auth_rejected_and_sent_once() {
        let (result, seen) = login_against(vec![
            "TAG NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        ])
        .await;
        match result {
            Err(ImapError::AuthRejected { credential, reason }) => {
                assert_eq!(credential, "imap:edge@hisp.test@imap.hisp.test");
                assert_eq!(reason, "[AUTHENTICATIONFAILED] Authentication failed.");
            }
            other => panic!("expected AuthRejected, got {other:?}"),
        }
        let logins = seen.iter().filter(|l| l.contains(" LOGIN ")).count();
        assert_eq!(logins, 1, "{seen:?}");
    }

    #[tokio::test]
    async fn a_temporary_login_failure_is_transient() {
        let (result, _) = login_against(vec![
            "TAG NO [UNAVAILABLE] Temporary authentication failure.\r\n",
        ])
        .await;
        assert!(matches!(result, Err(ImapError::Transient(_))));
    }

    #[tokio::test]
    async fn login_needing_tls_is_a_configuration_error() {
        let (result, _) = login_against(vec![
            "TAG NO [PRIVACYREQUIRED] Plaintext authentication disallowed.\r\n",
        ])
        .await;
        assert!(matches!(result, Err(ImapError::Configuration(_))));
    }

    #[tokio::test]
    async fn a_dropped_connection_during_login_is_transient() {
        let (result, _) = login_against(vec![HANGUP]).await;
        assert!(matches!(&result, Err(e) if e.is_transient()), "{result:?}");
    }

    #[tokio::test]
    async fn the_greeting_lists_capabilities_and_bye_is_refused() {
        let cfg = cfg();
        let account = Account::new(&cfg);
        let (stream, _server) = scripted(
            "* OK [CAPABILITY IMAP4rev1 IDLE LOGINDISABLED AUTH=PLAIN] hi\r\n",
            Vec::new(),
        );
        let caps = greeting(&mut Client::new(stream), &account)
            .await
            .expect("greeting");
        assert_eq!(caps, ["IMAP4rev1", "IDLE", "LOGINDISABLED", "AUTH=PLAIN"]);

        let (stream, _server) = scripted("* BYE Too many connections\r\n", Vec::new());
        let err = greeting(&mut Client::new(stream), &account)
            .await
            .expect_err("BYE");
        assert!(err.is_transient());
        assert!(err.to_string().contains("Too many connections"), "{err}");
    }

    /// A spool whose disk is full.
    struct FullSpool;
    impl MailboxSpool for FullSpool {
        fn already_stored(&self, _: &str, _: u32, _: u32, _: Option<&str>) -> bool {
            false
        }
        fn store(&self, _: &str, _: u32, _: u32, _: Option<&str>, _: &[u8]) -> Result<(), String> {
            Err("No space left on device".into())
        }
    }

    /// Log in and sweep a scripted mailbox holding one message (UID 5, UIDVALIDITY 7).
    async fn sweep_one(
        spool: Arc<dyn MailboxSpool>,
    ) -> (Result<PollStats, ImapError>, Vec<String>, Vec<u8>) {
        let raw = b"Message-ID: <m@hisp.test>\r\n\r\nopaque\r\n".to_vec();
        let replies = vec![
            "TAG OK Logged in\r\n".to_string(),
            "* CAPABILITY IMAP4rev1 IDLE MOVE\r\nTAG OK Capability completed\r\n".to_string(),
            "* 1 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\nTAG OK [READ-WRITE] Selected\r\n"
                .to_string(),
            "* SEARCH 5\r\nTAG OK Search completed\r\n".to_string(),
            format!(
                "* 1 FETCH (UID 5 RFC822.SIZE {n} BODY[] {{{n}}}\r\n{body})\r\nTAG OK Fetch completed\r\n",
                n = raw.len(),
                body = String::from_utf8_lossy(&raw)
            ),
            "* 1 FETCH (FLAGS (\\Seen) UID 5)\r\nTAG OK Store completed\r\n".to_string(),
            "* BYE Logging out\r\nTAG OK Logout completed\r\n".to_string(),
        ];
        let cfg = cfg();
        let account = Account::new(&cfg);
        let (stream, server) = scripted("* OK [CAPABILITY IMAP4rev1] ready\r\n", replies);
        let mut client = Client::new(stream);
        greeting(&mut client, &account).await.expect("greeting");
        let (mut session, caps) = login(client, &account, "pw").await.expect("login");
        let result = sweep(&mut session, &caps, &account, &spool, &|| false).await;
        logout(&mut session, &account).await;
        drop(session);
        let seen = server.await.expect("script");
        (result, seen, raw)
    }

    #[tokio::test]
    async fn a_message_is_peeked_stored_then_flagged() {
        let spool = Arc::new(MemorySpool::new());
        let (result, seen, raw) = sweep_one(spool.clone()).await;
        let stats = result.expect("sweep");
        assert_eq!(
            stats,
            PollStats {
                fetched: 1,
                stored: 1,
                duplicates: 0,
                flagged: 1
            }
        );
        let stored = spool.messages();
        assert_eq!(stored.len(), 1);
        assert_eq!(
            (
                stored[0].uidvalidity,
                stored[0].uid,
                stored[0].raw.as_slice()
            ),
            (7, 5, raw.as_slice())
        );
        assert_eq!(stored[0].message_id.as_deref(), Some("m@hisp.test"));
        let commands: Vec<&str> = seen
            .iter()
            .map(|l| l.split_once(' ').map_or("", |(_, c)| c))
            .collect();
        assert_eq!(
            commands,
            [
                "LOGIN \"edge@hisp.test\" \"pw\"",
                "CAPABILITY",
                "SELECT \"INBOX\"",
                "UID SEARCH UNSEEN",
                "UID FETCH 5 (UID RFC822.SIZE BODY.PEEK[])",
                "UID STORE 5 +FLAGS (\\Seen)",
                "LOGOUT",
            ]
        );
    }

    #[tokio::test]
    async fn a_message_the_spool_cannot_store_is_not_flagged() {
        let (result, seen, _) = sweep_one(Arc::new(FullSpool)).await;
        let err = result.expect_err("store fails");
        assert!(err.is_transient());
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert!(
            !seen.iter().any(|l| l.contains("STORE")),
            "no flag after a failed store: {seen:?}"
        );
    }

    #[test]
    fn server_text_unwraps_async_imap_error_strings() {
        assert_eq!(
            server_text(r#"code: None, info: Some("[AUTHENTICATIONFAILED] Bad \"x\".")"#),
            r#"[AUTHENTICATIONFAILED] Bad "x"."#
        );
        assert_eq!(server_text("something else"), "something else");
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..10).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn message_id_is_read_from_the_header_only() {
        let raw = b"From: a@b.test\r\nMessage-ID: <abc@hisp.test>\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(message_id(raw).as_deref(), Some("abc@hisp.test"));
        assert_eq!(message_id(b"From: a@b.test\r\n\r\nbody\r\n"), None);
    }

    #[test]
    fn memory_spool_is_idempotent_by_uid_and_by_message_id() {
        let spool = MemorySpool::new();
        spool.store("a", 1, 10, Some("m1"), b"x").unwrap();
        spool.store("a", 1, 10, Some("m1"), b"x").unwrap();
        spool.store("a", 1, 11, Some("m1"), b"x").unwrap();
        spool.store("a", 2, 10, None, b"y").unwrap();
        assert_eq!(spool.messages().len(), 2);
        assert_eq!(spool.store_calls(), 4);
        assert!(spool.already_stored("a", 1, 10, None));
        assert!(spool.already_stored("a", 9, 99, Some("m1")));
        assert!(!spool.already_stored("b", 1, 10, Some("m1")));
        assert!(!spool.already_stored("a", 1, 12, None));
    }

    #[tokio::test]
    async fn an_unset_password_variable_is_a_configuration_error() {
        let cfg = ImapConfig {
            password_env: "DIRECT_AGENT_UNIT_TEST_NEVER_SET".into(),
            ..cfg()
        };
        let err = poll_once(&cfg, Arc::new(MemorySpool::new()))
            .await
            .expect_err("no password");
        assert!(matches!(err, ImapError::Configuration(_)), "{err}");
    }

    #[test]
    fn the_poller_futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let cfg = cfg();
        let spool: Arc<dyn MailboxSpool> = Arc::new(MemorySpool::new());
        let (_tx, rx) = watch::channel(false);
        send(&poll_once(&cfg, spool.clone()));
        send(&run(cfg.clone(), spool, rx));
    }
}

#[cfg(test)]
mod message_id_tests {
    use super::message_id;

    #[test]
    fn the_fuzz_crasher_gives_no_message_id_instead_of_a_panic() {
        let raw = include_bytes!(
            "../../tests/fixtures/fuzz/mime_entity/mail-parser-debug-assert-invalid-part-id.eml"
        );
        // Must return (with or without an ID), not panic.
        let _ = message_id(raw);
        assert_eq!(
            message_id(b"Message-ID: <a@b.example>\r\n\r\nx").as_deref(),
            Some("a@b.example")
        );
    }
}
