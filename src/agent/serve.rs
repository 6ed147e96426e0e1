//! `direct-agent serve`: one process running the inbound SMTP listeners, the IMAP pollers, the
//! inbound pipeline workers and the delivery workers, under one shutdown signal.
//!
//! On SIGTERM or SIGINT the listeners stop accepting and answer `421` to clients at their next
//! command, pollers and workers finish the message in hand, and the process exits 0 once they
//! have (or after [`DRAIN`]: anything unfinished is still in the spool and resumes at the next
//! start).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::address::DirectAddress;
use crate::clock::{Clock, SystemClock};
use crate::sink::{Sink, SinkSet};
use crate::spool::{
    InboundEntry, InboundOutcome, NewInbound, Received, Source, Spool, SqliteSpool,
};
use crate::transport::imap::{ImapError, MailboxSpool};
use crate::transport::smtp_in::{ReceivedEnvelope, Reception, SmtpServerSettings};
use crate::transport::smtp_out::Outbound;
use crate::trust::ValidationCache;

use super::Context;
use super::committer::Committer;
use super::inbound::process;

/// Longest wait for in-flight work after a shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(30);
/// How long a claimed inbound entry stays leased to its worker.
const INBOUND_LEASE_SECS: i64 = 600;

/// The outer Message-ID of a raw message, if it has one.
pub fn message_id_of(raw: &[u8]) -> Option<String> {
    // Only the header block is read.
    let end = memchr::memmem::find(raw, b"\r\n\r\n")
        .or_else(|| memchr::memmem::find(raw, b"\n\n"))
        .map_or(raw.len(), |i| i + 2);
    crate::mime::entity::Entity::parse(&raw[..end])
        .header("Message-ID")
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
}

/// The agent as the SMTP listener and IMAP pollers see it: a spool that stores durably and
/// wakes the inbound workers.
pub struct AgentReception {
    pub spool: Arc<SqliteSpool>,
    pub domains: Vec<String>,
    pub wake: Arc<Notify>,
    /// Stores what the SMTP sessions receive, many sessions' messages in one commit.
    commits: Committer,
}

impl AgentReception {
    /// A reception storing into `spool` and waking the inbound workers with `wake`. SMTP
    /// sessions' messages go through a [`Committer`]; IMAP stores directly.
    pub fn new(spool: Arc<SqliteSpool>, domains: Vec<String>, wake: Arc<Notify>) -> Self {
        AgentReception {
            commits: Committer::start(spool.clone()),
            spool,
            domains,
            wake,
        }
    }

    fn stored(&self, r: Received, what: &str) -> Result<String, String> {
        match r {
            Received::Stored(id) => {
                self.wake.notify_one();
                Ok(id.to_string())
            }
            Received::Duplicate(id) => {
                tracing::info!(
                    inbound = id,
                    "{what}: duplicate of a message already stored; acknowledged, not processed again"
                );
                Ok(id.to_string())
            }
        }
    }
}

impl Reception for AgentReception {
    fn accepts_recipient(&self, rcpt: &str) -> bool {
        DirectAddress::parse(rcpt).is_ok_and(|a| self.domains.iter().any(|d| a.in_domain(d)))
    }

    fn store(&self, envelope: &ReceivedEnvelope, raw: &[u8]) -> Result<String, String> {
        let r = self
            .spool
            .receive(NewInbound {
                source: Source::Smtp {
                    peer: envelope.peer.to_string(),
                    helo: envelope.helo.clone(),
                    tls: envelope.tls,
                },
                mail_from: envelope.mail_from.clone(),
                rcpt_to: envelope.rcpt_to.clone(),
                message_id: message_id_of(raw),
                raw,
                now: SystemClock.unix_seconds(),
            })
            .map_err(|e| e.to_string())?;
        self.stored(r, "smtp")
    }

    fn store_owned(
        self: Arc<Self>,
        envelope: ReceivedEnvelope,
        raw: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>> {
        Box::pin(async move {
            let message_id = message_id_of(&raw);
            let r = self.commits.store(envelope, message_id, raw).await?;
            self.stored(r, "smtp")
        })
    }
}

impl MailboxSpool for AgentReception {
    fn already_stored(
        &self,
        account: &str,
        uidvalidity: u32,
        uid: u32,
        message_id: Option<&str>,
    ) -> bool {
        self.spool
            .imap_seen(account, uidvalidity, uid, message_id)
            .unwrap_or(false)
    }

    fn store(
        &self,
        account: &str,
        uidvalidity: u32,
        uid: u32,
        message_id: Option<&str>,
        raw: &[u8],
    ) -> Result<(), String> {
        let r = self
            .spool
            .receive(NewInbound {
                source: Source::Imap {
                    account: account.to_string(),
                    uidvalidity,
                    uid,
                },
                mail_from: String::new(),
                rcpt_to: Vec::new(),
                message_id: message_id
                    .map(str::to_string)
                    .or_else(|| message_id_of(raw)),
                raw,
                now: SystemClock.unix_seconds(),
            })
            .map_err(|e| e.to_string())?;
        self.stored(r, "imap").map(|_| ())
    }
}

/// Process inbound entries until shutdown.
async fn run_inbound_workers(
    n: usize,
    ctx: Arc<Context>,
    spool: Arc<SqliteSpool>,
    sinks: Arc<SinkSet>,
    cache: Arc<ValidationCache>,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = Vec::new();
    for _ in 0..n.max(1) {
        let (ctx, spool, sinks, cache, wake) = (
            ctx.clone(),
            spool.clone(),
            sinks.clone(),
            cache.clone(),
            wake.clone(),
        );
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if *shutdown.borrow() {
                    break;
                }
                let (ctx, spool2, sinks, cache) =
                    (ctx.clone(), spool.clone(), sinks.clone(), cache.clone());
                let stop = shutdown.clone();
                // One blocking thread works entries until none is due (or shutdown), rather than
                // one `spawn_blocking` hand-off per message.
                let done = tokio::task::spawn_blocking(move || {
                    work_due_entries(&ctx, &spool2, &sinks, &cache, &stop)
                })
                .await;
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "spool unavailable for inbound processing")
                    }
                    Err(e) => tracing::error!(error = %e, "inbound worker task failed"),
                }
                if super::idle(Some(&wake), Duration::from_millis(500), &mut shutdown).await {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Process inbound entries while any is due and no shutdown is asked for. Each entry's outcome
/// is recorded in the commit that leases the next one.
fn work_due_entries(
    ctx: &Context,
    spool: &SqliteSpool,
    sinks: &SinkSet,
    cache: &ValidationCache,
    stop: &watch::Receiver<bool>,
) -> Result<(), String> {
    let mut next = None;
    loop {
        let mut entry = match next.take() {
            Some(entry) => entry,
            None if *stop.borrow() => return Ok(()),
            None => match spool
                .claim_inbound(SystemClock.unix_seconds(), INBOUND_LEASE_SECS)
                .map_err(|e| e.to_string())?
            {
                Some(entry) => entry,
                None => return Ok(()),
            },
        };
        let started = std::time::Instant::now();
        let processed = process(
            ctx,
            spool,
            sinks,
            cache,
            &mut entry,
            SystemClock.unix_seconds(),
        );
        let now = SystemClock.unix_seconds();
        if *stop.borrow() {
            spool
                .finish_inbound(entry.id, &processed.outcome, now)
                .map_err(|e| e.to_string())?;
        } else {
            next = spool
                .finish_and_claim_inbound(entry.id, &processed.outcome, now, INBOUND_LEASE_SECS)
                .map_err(|e| e.to_string())?;
        }
        crate::ops::METRICS.inbound(&processed.outcome);
        log_outcome(&entry, &processed.outcome, started.elapsed(), now);
    }
}

/// One line per processed entry: addresses, ids, the disposition and its reason (no content).
fn log_outcome(entry: &InboundEntry, outcome: &InboundOutcome, elapsed: Duration, now: i64) {
    let elapsed_ms = elapsed.as_millis() as u64;
    let message_id = entry.message_id.as_deref().unwrap_or("-");
    match outcome {
        InboundOutcome::Delivered { .. } => tracing::info!(
            inbound = entry.id,
            message_id,
            from = %entry.mail_from,
            to = ?entry.rcpt_to,
            size = entry.size,
            elapsed_ms,
            disposition = "delivered",
            "message accepted and handed to the sinks"
        ),
        InboundOutcome::Quarantined { kind, reason } => tracing::warn!(
            inbound = entry.id,
            message_id,
            from = %entry.mail_from,
            to = ?entry.rcpt_to,
            refusal = %kind,
            reason = %reason,
            elapsed_ms,
            disposition = "quarantined",
            "message refused and quarantined"
        ),
        InboundOutcome::Retry {
            reason,
            next_attempt_at,
        } => tracing::warn!(
            inbound = entry.id,
            message_id,
            from = %entry.mail_from,
            to = ?entry.rcpt_to,
            reason = %reason,
            elapsed_ms,
            attempts = entry.attempts,
            next_in_s = next_attempt_at - now,
            disposition = "retry",
            "sink failed; retrying later"
        ),
    }
}

/// Time out sent messages whose MDNs did not come (`[mdn] processed_timeout`,
/// `dispatched_timeout`), every second until shutdown.
async fn run_tracking_timeouts(
    spool: Arc<SqliteSpool>,
    mdn: crate::config::MdnConfig,
    sinks: Arc<SinkSet>,
    hostname: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let processed = mdn.processed_timeout().as_secs() as i64;
    let dispatched = mdn.dispatched_timeout().as_secs() as i64;
    loop {
        let s = spool.clone();
        let expired = tokio::task::spawn_blocking(move || {
            s.expire_tracking(SystemClock.unix_seconds(), processed, dispatched)
        })
        .await;
        match expired {
            Ok(Ok(rows)) => {
                for t in rows {
                    tracing::error!(message_id = %t.message_id, recipient = %t.recipient, reason = t.reason.as_deref().unwrap_or(""), disposition = "timed-out", "delivery not confirmed in time: the message counts as failed for this recipient");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "spool unavailable for delivery tracking"),
            Err(e) => tracing::error!(error = %e, "tracking task failed"),
        }
        let (s, sinks2, host) = (spool.clone(), sinks.clone(), hostname.clone());
        if let Err(e) =
            tokio::task::spawn_blocking(move || notify_local_senders(&s, &sinks2, &host)).await
        {
            tracing::error!(error = %e, "failure notification task failed");
        }
        if super::idle(None, Duration::from_secs(1), &mut shutdown).await {
            break;
        }
    }
}

/// Retry the replies kept because they could not be sealed (see [`super::pending`]), every
/// second until shutdown; wake the delivery workers when some were queued.
async fn run_reply_retries(
    ctx: Arc<Context>,
    spool: Arc<SqliteSpool>,
    outbound_wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (c, s) = (ctx.clone(), spool.clone());
        match tokio::task::spawn_blocking(move || {
            super::pending::retry_due(&c, &s, SystemClock.unix_seconds())
        })
        .await
        {
            Ok(0) => {}
            Ok(_) => outbound_wake.notify_waiters(),
            Err(e) => tracing::error!(error = %e, "reply retry task failed"),
        }
        if super::idle(None, Duration::from_secs(1), &mut shutdown).await {
            break;
        }
    }
}

/// Refresh trust bundles when due (each subscription's `--refresh` interval), checking every
/// 10 seconds until shutdown. A failed refresh keeps the last good anchors and is logged.
async fn run_bundle_refresh(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let c = ctx.clone();
        let done = tokio::task::spawn_blocking(move || {
            let now = SystemClock.unix_seconds();
            let bundles = match crate::store::TrustStore::bundles(&c.store) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "trust store unavailable for bundle refresh");
                    return;
                }
            };
            for b in bundles {
                let due = b.last_refresh.unwrap_or(0) + b.refresh_secs as i64;
                if due > now {
                    continue;
                }
                let name = b.name.clone();
                let r = crate::cli::bundles::refresh_bundle(&c.store, &c.fetcher, b);
                for l in &r.lines {
                    tracing::info!(bundle = %name, "{l}");
                }
                if let Some(e) = &r.error {
                    tracing::error!(bundle = %name, error = %e, "bundle refresh failed");
                }
            }
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "bundle refresh task failed");
        }
        if super::idle(None, Duration::from_secs(10), &mut shutdown).await {
            break;
        }
    }
}

/// Tell local senders of messages that failed or timed out: a failure DSN (RFC 3464) handed to
/// the local sinks, where the sending organisation reads what arrives for it.
fn notify_local_senders(spool: &SqliteSpool, sinks: &SinkSet, hostname: &str) {
    let rows = match spool.unnotified_failures(50) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "spool unavailable for failure notifications");
            return;
        }
    };
    for t in rows {
        let status = if t.state == crate::spool::tracking::TrackState::TimedOut {
            "4.4.7"
        } else {
            "5.0.0"
        };
        let diagnostic = t
            .reason
            .clone()
            .unwrap_or_else(|| t.state.as_str().to_string());
        let (dsn, dsn_id) = crate::mdn::dsn::build_failure_dsn(
            &t.message_id,
            &t.sender,
            hostname,
            &[crate::mdn::dsn::FailedRecipient {
                address: &t.recipient,
                status,
                diagnostic: &diagnostic,
            }],
            &SystemClock,
        );
        let now = SystemClock.unix_seconds();
        let payloads = vec![crate::mime::payload::Payload {
            kind: crate::mime::payload::PayloadKind::Attachment,
            content_type: "multipart/report; report-type=delivery-status".into(),
            filename: Some("failure-notification.eml".into()),
            size: dsn.len(),
            data: dsn,
        }];
        let from = format!(
            "mailer-daemon@{}",
            t.sender.rsplit_once('@').map_or(hostname, |(_, d)| d)
        );
        let to = vec![t.sender.clone()];
        let metadata = crate::sink::DeliveryMetadata {
            message_id: Some(dsn_id.clone()),
            from: from.clone(),
            to: to.clone(),
            signer_subject: String::new(),
            signer_fingerprint_sha256: String::new(),
            signer_binding: "local".into(),
            received_at: now,
            accepted_at: now,
            source: format!("failure notification for {}", t.message_id),
            validation: None,
        };
        let delivery = crate::sink::SinkDelivery {
            inbound_id: 0,
            message_id: Some(&dsn_id),
            from: &from,
            to: &to,
            metadata: &metadata,
            payloads: &payloads,
        };
        // The sinks that take a non-HL7 message for the sender from its own domain.
        let local = crate::address::DirectAddress::parse(&t.sender).ok();
        let to_local: Vec<_> = local.into_iter().collect();
        let key = crate::sink::RouteKey {
            from: &from,
            to: &to_local,
            message_types: &[],
        };
        let mut chosen = sinks.select(crate::config::SinkRole::Deliver, &key);
        if chosen.is_empty() {
            chosen = sinks.select(crate::config::SinkRole::Fallback, &key);
        }
        if chosen.is_empty() {
            tracing::error!(message_id = %t.message_id, sender = %t.sender, "no [[sink]] takes failure notifications for this sender (a deliver or fallback sink without message_types is needed)");
            continue;
        }
        let all = chosen.iter().all(|s| {
            matches!(
                s.deliver(&delivery),
                crate::sink::SinkOutcome::Accepted { .. }
            )
        });
        if all {
            if let Err(e) = spool.mark_local_notified(&t.message_id, &t.recipient) {
                tracing::error!(error = %e, "cannot record a failure notification");
            }
            crate::ops::METRICS.failure_notified(t.state.as_str());
            tracing::warn!(message_id = %t.message_id, recipient = %t.recipient, sender = %t.sender, dsn = %dsn_id, disposition = t.state.as_str(), "local sender notified of the failure (DSN to the sinks)");
        }
    }
}

/// Everything `serve` needs, bound and ready; [`Server::run`] runs it.
pub struct Server {
    ctx: Arc<Context>,
    spool: Arc<SqliteSpool>,
    listeners: Vec<(SocketAddr, tokio::net::TcpListener)>,
    /// `[http] listen`, bound.
    http: Option<(SocketAddr, tokio::net::TcpListener)>,
}

impl Server {
    /// Check the configuration for serving and bind the listeners.
    pub async fn bind(ctx: Context) -> Result<Server, String> {
        let cfg = &ctx.config;
        if (!cfg.smtp_in.listen.is_empty() || !cfg.imap.is_empty()) && cfg.sinks.is_empty() {
            return Err(format!(
                "{}: no [[sink]] is configured, so received payloads would have nowhere to go; add e.g. [[sink]] kind = \"directory\" path = \"var/inbox\"",
                cfg.source.display()
            ));
        }
        if ctx.domains.is_empty() {
            return Err(format!(
                "{}: no [[domain]] is configured: the agent would accept nothing",
                cfg.source.display()
            ));
        }
        crate::sink::from_config(&cfg.sinks)
            .map_err(|e| format!("{}: {e}", cfg.source.display()))?;
        super::validation::check_config(cfg)
            .map_err(|e| format!("{}: {e}", cfg.source.display()))?;
        let spool = Arc::new(SqliteSpool::open(&cfg.agent.data_dir).map_err(|e| e.to_string())?);
        // Entries a crashed agent (or `send --now`) was working on resume now, not when their
        // lease would have ended. The spool is a local file, so owners are local processes.
        let me = std::process::id();
        let recovered = spool
            .recover_leases(&|pid| {
                pid != me && std::path::Path::new(&format!("/proc/{pid}")).exists()
            })
            .map_err(|e| e.to_string())?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "resuming entries left in flight by a stopped agent"
            );
        }
        let mut listeners = Vec::new();
        for (i, l) in cfg.smtp_in.listen.iter().enumerate() {
            let listener = tokio::net::TcpListener::bind(l)
                .await
                .map_err(|e| format!("smtp_in.listen[{i}] {l}: cannot listen: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            listeners.push((addr, listener));
        }
        let http = match &cfg.http.listen {
            Some(l) => Some(crate::ops::bind(l).await?),
            None => None,
        };
        Ok(Server {
            ctx: Arc::new(ctx),
            spool,
            listeners,
            http,
        })
    }

    /// The bound SMTP addresses (with the real port when 0 was configured).
    pub fn smtp_addresses(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(a, _)| *a).collect()
    }

    /// The bound `[http] listen` address (with the real port when 0 was configured).
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(a, _)| *a)
    }

    /// Run until `shutdown` turns true with the configured sinks; then drain and return.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), String> {
        let sinks = SinkSet::from_config(&self.ctx.config.sinks).map_err(|e| e.to_string())?;
        self.run_with_sink_set(sinks, shutdown).await
    }

    /// As [`Server::run`] with the given sinks (tests, benchmarks, embedding).
    pub async fn run_with_sinks(
        self,
        sinks: Vec<Box<dyn Sink>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        self.run_with_sink_set(SinkSet::unrouted(sinks), shutdown)
            .await
    }

    /// As [`Server::run`] with the given routed sinks.
    pub async fn run_with_sink_set(
        self,
        sinks: SinkSet,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let ctx = self.ctx;
        let cfg = ctx.config.clone();
        let spool = self.spool;
        let inbound_wake = Arc::new(Notify::new());
        let outbound_wake = Arc::new(Notify::new());
        let reception = Arc::new(AgentReception::new(
            spool.clone(),
            ctx.domains.iter().map(|d| d.name.clone()).collect(),
            inbound_wake.clone(),
        ));
        if cfg.agent.insecure_key_permissions {
            tracing::warn!(
                "insecure: [agent] insecure_key_permissions = true: private key files readable by group or others are accepted (public test keys only)"
            );
        } else if let Some(key) = &cfg.smtp_in.tls_key {
            crate::credential::check_key_permissions(key)
                .map_err(|e| format!("configuration smtp_in.tls_key: {e}"))?;
        }
        let settings = Arc::new(SmtpServerSettings::from_config(
            &cfg.smtp_in,
            &cfg.agent.hostname,
        )?);
        let outbound = Arc::new(Outbound::from_config(&cfg)?);
        let sinks: Arc<SinkSet> = Arc::new(sinks);
        let tracking_sinks = sinks.clone();
        let cache = Arc::new(ValidationCache::new());
        let mut tasks = tokio::task::JoinSet::new();
        let ops = Arc::new(crate::ops::Ops::new(ctx.clone(), spool.clone()));
        if let Some((_, listener)) = self.http {
            tasks.spawn(crate::ops::http::run(
                listener,
                ops.clone(),
                shutdown.clone(),
            ));
        }
        for (addr, listener) in self.listeners {
            let _ = addr;
            tasks.spawn(crate::transport::smtp_in::run_listener(
                listener,
                settings.clone(),
                reception.clone() as Arc<dyn Reception>,
                shutdown.clone(),
                DRAIN,
            ));
        }
        ops.set_listeners_bound(true);
        for account in cfg.imap.clone() {
            let name = account.credential_name();
            match spool.disabled_credential(&name) {
                Ok(Some(d)) => {
                    tracing::error!(credential = %name, reason = %d.reason, "IMAP credential is disabled; not polling until `direct-agent credentials reset {name}`");
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            let spool = spool.clone();
            let reception = reception.clone() as Arc<dyn MailboxSpool>;
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                match crate::transport::imap::run(account, reception, shutdown).await {
                    Ok(()) => {}
                    Err(ImapError::AuthRejected { credential, reason }) => {
                        tracing::error!(credential = %credential, reason = %reason, "ALERT: the IMAP server rejected our login; the credential is disabled and will not be retried until `direct-agent credentials reset {credential}`");
                        let _ = spool.disable_credential(&credential, &reason, SystemClock.unix_seconds());
                    }
                    Err(e) => {
                        tracing::error!(credential = %name, error = %e, "IMAP poller stopped");
                        let _ = spool.disable_credential(&name, &e.to_string(), SystemClock.unix_seconds());
                    }
                }
            });
        }
        let (workers, why) = super::workers::choose(cfg.agent.inbound_workers, &cfg.agent.data_dir);
        tracing::info!(workers, chosen_by = %why, "inbound workers");
        tasks.spawn(run_inbound_workers(
            workers,
            ctx.clone(),
            spool.clone(),
            sinks,
            cache,
            inbound_wake,
            shutdown.clone(),
        ));
        tasks.spawn(super::outbound::run_workers(
            cfg.smtp_out.concurrency,
            spool.clone(),
            outbound,
            cfg.smtp_out.clone(),
            outbound_wake.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(run_bundle_refresh(ctx.clone(), shutdown.clone()));
        tasks.spawn(run_reply_retries(
            ctx.clone(),
            spool.clone(),
            outbound_wake.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(run_tracking_timeouts(
            spool.clone(),
            cfg.mdn.clone(),
            tracking_sinks,
            cfg.agent.hostname.clone(),
            shutdown.clone(),
        ));
        let _ = shutdown.wait_for(|s| *s).await;
        ops.set_listeners_bound(false);
        tracing::info!("shutting down: finishing in-flight work");
        let drained = tokio::time::timeout(DRAIN + Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "some work did not finish in time; it resumes from the spool at the next start"
            );
            tasks.abort_all();
        }
        Ok(())
    }
}

/// Resolve when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> ReceivedEnvelope {
        ReceivedEnvelope {
            mail_from: "a@hisp-a.example".into(),
            rcpt_to: vec!["b@hisp-b.example".into()],
            peer: "127.0.0.1:2525".parse().unwrap(),
            helo: "mx.hisp-a.example".into(),
            tls: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_committer_stores_what_concurrent_sessions_hand_it_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(SqliteSpool::open(dir.path()).unwrap());
        let wake = Arc::new(Notify::new());
        let reception = Arc::new(AgentReception::new(
            spool.clone(),
            vec!["hisp-b.example".into()],
            wake.clone(),
        ));
        let mut sessions = tokio::task::JoinSet::new();
        for i in 0..40 {
            let r = reception.clone();
            let raw = format!("Message-ID: <{i}@hisp-a.example>\r\n\r\nbody {i}\r\n").into_bytes();
            sessions.spawn(async move { (i, r.store_owned(envelope(), raw).await) });
        }
        let mut ids = std::collections::BTreeMap::new();
        while let Some(done) = sessions.join_next().await {
            let (i, stored) = done.unwrap();
            ids.insert(i, stored.unwrap());
        }
        let distinct: std::collections::BTreeSet<_> = ids.values().collect();
        assert_eq!(distinct.len(), 40, "one entry per message: {ids:?}");
        let entries = spool.list_inbound(None).unwrap();
        assert_eq!(entries.len(), 40);
        for e in &entries {
            let stored = spool.inbound(e.id).unwrap().unwrap();
            let i: usize = stored
                .message_id
                .as_deref()
                .and_then(|m| m.trim_matches(['<', '>']).split('@').next())
                .and_then(|n| n.parse().ok())
                .unwrap();
            assert_eq!(ids[&i], e.id.to_string(), "answered with its own entry");
        }
        // The same message again (same Message-ID and recipient) is its duplicate: acknowledged
        // with the entry it already has, nothing new stored.
        let again = reception
            .clone()
            .store_owned(
                envelope(),
                b"Message-ID: <7@hisp-a.example>\r\n\r\nbody 7\r\n".to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(again, ids[&7]);
        assert_eq!(spool.list_inbound(None).unwrap().len(), 40);
    }
}
