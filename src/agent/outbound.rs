//! The outbound side: sealing a payload with the sending domain's keys and queueing it
//! ([`seal_and_queue`]), and delivering claimed queue entries over SMTP ([`attempt`],
//! [`run_workers`]) with the result recorded in the spool.
//!
//! Credential safety: before an attempt the route's credential is checked; a disabled one blocks
//! the entry without connecting. A server that rejects AUTH disables the credential at once
//! (persisted) and logs an alert; nothing retries it until `direct-agent credentials reset NAME`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::address::DirectAddress;
use crate::clock::{Clock, SystemClock};
use crate::config::SmtpOutConfig;
use crate::message::{SealOptions, seal};
use crate::spool::{
    AttemptResult, NewOutbound, OutboundEntry, OutboundKind, OutboundState, Spool, SqliteSpool,
};
use crate::transport::smtp_out::{DeliveryError, Outbound, next_attempt_delay};

use super::{Context, SealRefusal};

/// How long a claimed entry stays leased to its worker (longer than any one attempt).
pub const DELIVERY_LEASE_SECS: i64 = 900;

/// A message sealed and queued.
#[derive(Debug)]
pub struct Queued {
    pub message_id: String,
    pub entries: Vec<i64>,
}

/// Seal `payload` from `from` to `to` with the configuration's keys (recipients' certificates
/// discovered and validated) and queue it.
pub fn seal_and_queue(
    ctx: &Context,
    spool: &SqliteSpool,
    from: &DirectAddress,
    to: &[DirectAddress],
    payload: &[u8],
    opts: &SealOptions,
) -> Result<Queued, SealRefusal> {
    let mut recipients = Vec::new();
    let signer = ctx.signer_and_recipients(from, to, &mut recipients, &[], &mut Vec::new())?;
    let clock = SystemClock;
    let sealed = seal(from, to, payload, &signer, &recipients, opts, &clock)
        .map_err(|e| SealRefusal::Configuration(e.to_string()))?;
    let now = clock.unix_seconds();
    let entries = spool
        .enqueue(NewOutbound {
            kind: OutboundKind::Message,
            message_id: sealed.message_id.clone(),
            mail_from: from.to_string(),
            rcpt_to: to.iter().map(|t| t.to_string()).collect(),
            raw: &sealed.message,
            now,
            expires_at: now + ctx.config.smtp_out.lifetime().as_secs() as i64,
        })
        .map_err(|e| SealRefusal::Configuration(format!("cannot queue the message: {e}")))?;
    spool
        .track(
            &from.to_string(),
            &sealed.message_id,
            &to.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "message",
            opts.request_mdn,
            now,
        )
        .map_err(|e| SealRefusal::Configuration(format!("cannot track the message: {e}")))?;
    tracing::info!(message_id = %sealed.message_id, from = %from, recipients = to.len(), entries = entries.len(), size = sealed.message.len(), "message sealed and queued");
    Ok(Queued {
        message_id: sealed.message_id,
        entries,
    })
}

/// The credential a delivery to `domain` uses, if its route authenticates.
pub fn route_credential(cfg: &SmtpOutConfig, domain: &str) -> Option<String> {
    cfg.route_for(domain)
        .filter(|r| r.username.is_some())
        .map(|r| r.credential_name())
}

/// Attempt one claimed entry and record the result; returns the entry's new state.
pub async fn attempt(
    spool: &Arc<SqliteSpool>,
    outbound: &Outbound,
    cfg: &SmtpOutConfig,
    entry: &OutboundEntry,
) -> Result<(OutboundState, AttemptResult), String> {
    let started = std::time::Instant::now();
    let credential = route_credential(cfg, &entry.domain);
    let result = if let Some(name) = credential.as_ref().filter(|name| {
        spool
            .disabled_credential(name)
            .map(|d| d.is_some())
            .unwrap_or(false)
    }) {
        AttemptResult::Blocked {
            credential: name.clone(),
            outcome: "blocked".into(),
            detail: format!(
                "not attempted: credential {name} is disabled (run `direct-agent credentials reset {name}` after fixing it)"
            ),
        }
    } else {
        // The transport's events (one per host tried) carry the entry and Message-ID through
        // this span.
        let span =
            tracing::info_span!("delivery", entry = entry.id, message_id = %entry.message_id);
        let outcome = tracing::Instrument::instrument(
            outbound.deliver(&entry.domain, &entry.mail_from, &entry.rcpt_to, &entry.raw),
            span,
        )
        .await;
        let now = SystemClock.unix_seconds();
        match outcome {
            Ok(d) => AttemptResult::Sent {
                detail: format!(
                    "{}:{}{}: {}",
                    d.host,
                    d.port,
                    if d.tls { " (TLS)" } else { "" },
                    d.response
                ),
            },
            Err(DeliveryError::Transient(detail)) => {
                let delay = next_attempt_delay(
                    entry.attempts + 1,
                    cfg.retry_initial(),
                    cfg.retry_max(),
                    entry.id as u64,
                );
                AttemptResult::Transient {
                    detail,
                    next_attempt_at: now + delay.as_secs().max(1) as i64,
                }
            }
            Err(DeliveryError::Permanent(detail)) => AttemptResult::Permanent { detail },
            Err(DeliveryError::AuthRejected {
                credential: name,
                reason,
            }) => {
                tracing::error!(credential = %name, reason = %reason, "ALERT: the server rejected our SMTP credentials; the credential is disabled and will not be retried until `direct-agent credentials reset {name}`");
                spool
                    .disable_credential(&name, &reason, now)
                    .map_err(|e| e.to_string())?;
                AttemptResult::Blocked {
                    credential: name,
                    outcome: "auth-rejected".into(),
                    detail: reason,
                }
            }
            Err(DeliveryError::Configuration(detail)) => {
                let name = credential.clone().unwrap_or_else(|| "smtp".into());
                tracing::error!(credential = %name, reason = %detail, "credential unusable; messages wait until it is fixed and reset");
                spool
                    .disable_credential(&name, &detail, now)
                    .map_err(|e| e.to_string())?;
                AttemptResult::Blocked {
                    credential: name,
                    outcome: "configuration".into(),
                    detail,
                }
            }
        }
    };
    let now = SystemClock.unix_seconds();
    let state = spool
        .record_attempt(entry.id, &result, now)
        .map_err(|e| e.to_string())?;
    crate::ops::METRICS.outbound(entry.kind, &result, state);
    // Delivery tracking follows the queue (only our own messages are tracked).
    let tracked = match (&result, state) {
        (AttemptResult::Sent { .. }, _) => spool.track_sent(&entry.message_id, &entry.rcpt_to, now),
        (AttemptResult::Permanent { detail }, _)
        | (AttemptResult::Transient { detail, .. }, OutboundState::Failed) => {
            spool.track_failed(&entry.message_id, &entry.rcpt_to, detail, now)
        }
        _ => Ok(()),
    };
    if let Err(e) = tracked {
        tracing::warn!(entry = entry.id, error = %e, "cannot update delivery tracking");
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match &result {
        AttemptResult::Sent { detail } => {
            tracing::info!(entry = entry.id, message_id = %entry.message_id, from = %entry.mail_from, to = ?entry.rcpt_to, domain = %entry.domain, recipients = entry.rcpt_to.len(), elapsed_ms, reply = %detail, state = state.as_str(), "delivered")
        }
        AttemptResult::Transient {
            detail,
            next_attempt_at,
        } => {
            tracing::warn!(entry = entry.id, message_id = %entry.message_id, from = %entry.mail_from, to = ?entry.rcpt_to, domain = %entry.domain, elapsed_ms, reason = %detail, next_in_s = next_attempt_at - now, state = state.as_str(), "delivery attempt failed (transient)")
        }
        AttemptResult::Permanent { detail } => {
            tracing::warn!(entry = entry.id, message_id = %entry.message_id, from = %entry.mail_from, to = ?entry.rcpt_to, domain = %entry.domain, elapsed_ms, reason = %detail, state = state.as_str(), "delivery failed permanently")
        }
        AttemptResult::Blocked { credential, .. } => {
            tracing::warn!(entry = entry.id, message_id = %entry.message_id, domain = %entry.domain, credential = %credential, "delivery blocked on a disabled credential")
        }
    }
    if state == OutboundState::Failed {
        tracing::error!(entry = entry.id, message_id = %entry.message_id, from = %entry.mail_from, domain = %entry.domain, "message failed: the sender is notified through `direct-agent status`/`queue show`");
    }
    Ok((state, result))
}

/// Run `n` delivery workers until shutdown; `wake` is notified when something is queued.
pub async fn run_workers(
    n: usize,
    spool: Arc<SqliteSpool>,
    outbound: Arc<Outbound>,
    cfg: SmtpOutConfig,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = Vec::new();
    for _ in 0..n.max(1) {
        let spool = spool.clone();
        let outbound = outbound.clone();
        let cfg = cfg.clone();
        let wake = wake.clone();
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if *shutdown.borrow() {
                    break;
                }
                let s = spool.clone();
                let per_domain = cfg.per_domain_concurrency;
                let claimed = tokio::task::spawn_blocking(move || {
                    s.claim_outbound(
                        SystemClock.unix_seconds(),
                        DELIVERY_LEASE_SECS,
                        per_domain,
                    )
                })
                .await;
                match claimed {
                    Ok(Ok(Some(entry))) => {
                        if let Err(e) = attempt(&spool, &outbound, &cfg, &entry).await {
                            tracing::error!(entry = entry.id, error = %e, "cannot record a delivery attempt; the entry is retried when its lease ends");
                        }
                        continue;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "spool unavailable for delivery");
                    }
                    Err(e) => tracing::error!(error = %e, "delivery worker task failed"),
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
