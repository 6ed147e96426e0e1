//! Replies the agent originates (MDNs, pongs, HL7 ACK replies): sealed and queued once per
//! notification, or, when sealing fails (most often the original sender's certificate cannot be
//! discovered right now), kept unsealed in the spool and retried on the outbound queue's schedule
//! (`[smtp_out] retry_initial` doubling up to `retry_max`) until `[smtp_out] lifetime`, instead of
//! being logged and lost.

use crate::address::DirectAddress;
use crate::clock::{Clock, SystemClock};
use crate::message::{SealOptions, seal_inner};
use crate::spool::replies::{NewPendingReply, PendingReply};
use crate::spool::tracking::NotificationKey;
use crate::spool::{NewOutbound, OutboundKind, SqliteSpool};

use super::Context;

/// One reply, its inner message built (headers, Message-ID, body), not yet sealed.
pub struct Reply<'a> {
    pub key: NotificationKey<'a>,
    pub kind: OutboundKind,
    /// The envelope sender of the queued message ("" for MDNs, RFC 8098 §2.1).
    pub mail_from: &'a str,
    pub from: &'a DirectAddress,
    pub to: &'a DirectAddress,
    pub inner: &'a [u8],
}

/// What became of a reply.
#[derive(Debug, PartialEq)]
pub enum Sent {
    /// Sealed and queued, with this Message-ID.
    Queued(String),
    /// This notification was sent before: nothing queued.
    Already,
    /// Sealing failed for this reason; the reply is kept and retried.
    Kept(String),
}

/// Seal `r` and queue it, recorded as sent in the same commit.
fn seal_and_queue(ctx: &Context, spool: &SqliteSpool, r: &Reply<'_>) -> Result<Sent, Failure> {
    let mut certs = Vec::new();
    let signer = ctx
        .signer_and_recipients(
            r.from,
            std::slice::from_ref(r.to),
            &mut certs,
            &[],
            &mut Vec::new(),
        )
        .map_err(|e| Failure::Seal(e.to_string()))?;
    let clock = SystemClock;
    let sealed = seal_inner(
        r.from,
        std::slice::from_ref(r.to),
        r.inner,
        &signer,
        &certs,
        &SealOptions::default(),
        &clock,
    )
    .map_err(|e| Failure::Seal(e.to_string()))?;
    let now = clock.unix_seconds();
    let queued = spool
        .enqueue_once(
            &r.key,
            NewOutbound {
                kind: r.kind,
                message_id: sealed.message_id.clone(),
                mail_from: r.mail_from.to_string(),
                rcpt_to: vec![r.to.to_string()],
                raw: &sealed.message,
                now,
                expires_at: now + ctx.config.smtp_out.lifetime().as_secs() as i64,
            },
        )
        .map_err(|e| Failure::Spool(e.to_string()))?;
    Ok(match queued {
        Some(_) => Sent::Queued(sealed.message_id),
        None => Sent::Already,
    })
}

enum Failure {
    /// Sealing failed: worth another attempt later.
    Seal(String),
    /// The spool failed: nothing can be kept either.
    Spool(String),
}

/// The delay before attempt `attempts + 1`: `retry_initial` doubling, at most `retry_max`.
fn retry_delay(ctx: &Context, attempts: u32) -> i64 {
    let out = &ctx.config.smtp_out;
    let initial = out.retry_initial().as_secs().max(1);
    let delay = initial.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
    delay.min(out.retry_max().as_secs().max(1)) as i64
}

/// Seal and queue `r`, or keep it for later when sealing fails. `Err` only when the spool fails
/// (then nothing is recorded as sent either).
pub fn send_or_keep(ctx: &Context, spool: &SqliteSpool, r: &Reply<'_>) -> Result<Sent, String> {
    match seal_and_queue(ctx, spool, r) {
        Ok(sent) => Ok(sent),
        Err(Failure::Spool(e)) => Err(e),
        Err(Failure::Seal(reason)) => {
            let now = SystemClock.unix_seconds();
            spool
                .keep_reply(&NewPendingReply {
                    original_message_id: r.key.original_message_id,
                    recipient: r.key.recipient,
                    disposition: r.key.disposition,
                    kind: r.kind,
                    mail_from: r.mail_from,
                    from_address: &r.from.to_string(),
                    to_address: &r.to.to_string(),
                    inner_message: r.inner,
                    now,
                    next_attempt_at: now + retry_delay(ctx, 1),
                    error: &reason,
                })
                .map_err(|e| format!("{reason}; and it could not be kept for a retry: {e}"))?;
            Ok(Sent::Kept(reason))
        }
    }
}

/// Try the kept replies that are due; `serve` calls this every second. Returns how many were
/// queued.
pub fn retry_due(ctx: &Context, spool: &SqliteSpool, now: i64) -> usize {
    let due = match spool.due_replies(now, 64) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "spool unavailable: kept replies not retried");
            return 0;
        }
    };
    let lifetime = ctx.config.smtp_out.lifetime().as_secs() as i64;
    let mut queued = 0;
    for p in due {
        match retry_one(ctx, spool, &p) {
            Ok(Sent::Queued(id)) => {
                queued += 1;
                tracing::info!(reply = %p.disposition, original = %p.original_message_id, to = %p.to_address, queued_as = %id, attempts = p.attempts + 1, "kept reply sealed and queued");
                forget(spool, &p);
            }
            Ok(Sent::Already) => forget(spool, &p),
            // A retry never keeps: a failure comes back as `Failure::Seal`.
            Ok(Sent::Kept(_)) => {}
            Err(Failure::Spool(e)) => {
                tracing::error!(error = %e, "spool unavailable: kept replies not retried");
                return queued;
            }
            Err(Failure::Seal(reason)) if now - p.created_at >= lifetime => {
                tracing::error!(reply = %p.disposition, original = %p.original_message_id, to = %p.to_address, attempts = p.attempts + 1, reason = %reason, "kept reply given up: it could not be sealed within smtp_out.lifetime");
                forget(spool, &p);
            }
            Err(Failure::Seal(reason)) => {
                let next = now + retry_delay(ctx, p.attempts + 1);
                tracing::warn!(reply = %p.disposition, original = %p.original_message_id, to = %p.to_address, attempts = p.attempts + 1, next_in_s = next - now, reason = %reason, "kept reply still cannot be sealed; retrying later");
                if let Err(e) = spool.reply_failed(p.id, &reason, next) {
                    tracing::error!(error = %e, "spool unavailable: kept replies not retried");
                    return queued;
                }
            }
        }
    }
    queued
}

fn retry_one(ctx: &Context, spool: &SqliteSpool, p: &PendingReply) -> Result<Sent, Failure> {
    let (Ok(from), Ok(to)) = (
        DirectAddress::parse(&p.from_address),
        DirectAddress::parse(&p.to_address),
    ) else {
        // Addresses were parsed before they were kept; an unreadable row is dropped, loudly.
        tracing::error!(reply = %p.disposition, original = %p.original_message_id, "kept reply has unreadable addresses; dropped");
        return Ok(Sent::Already);
    };
    seal_and_queue(
        ctx,
        spool,
        &Reply {
            key: NotificationKey {
                original_message_id: &p.original_message_id,
                recipient: &p.recipient,
                disposition: &p.disposition,
            },
            kind: p.kind,
            mail_from: &p.mail_from,
            from: &from,
            to: &to,
            inner: &p.inner_message,
        },
    )
}

fn forget(spool: &SqliteSpool, p: &PendingReply) {
    if let Err(e) = spool.forget_reply(p.id) {
        tracing::error!(error = %e, reply = %p.disposition, original = %p.original_message_id, "could not remove a kept reply; it is tried again (and sent once)");
    }
}
