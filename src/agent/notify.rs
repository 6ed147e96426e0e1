//! Notifications on the inbound side: answering a received message with MDNs (processed once
//! trust passed; dispatched or failed after the sinks when the sender asked for final-destination
//! delivery), and recording the MDNs and DSNs that arrive about our own messages.
//!
//! Rules (RFC 8098; Implementation Guide for Delivery Notification in Direct): never an MDN for
//! an MDN or a DSN, none when decryption or trust failed (we only get here after both passed),
//! none twice for the same message, recipient and disposition (`notified` table). MDNs are
//! sealed like any Direct message and sent with the null reverse-path.

use crate::address::DirectAddress;
use crate::clock::SystemClock;
use crate::mdn::{self, Disposition, DispositionKind, MdnRequest, Report};
use crate::message::OpenReport;
use crate::spool::tracking::NotificationKey;

use super::pending::{Reply, Sent};
use crate::spool::tracking::{Notice, NoticeOutcome};
use crate::spool::{OutboundKind, SqliteSpool};

use super::Context;

/// What the message turned out to be.
pub enum Received {
    /// An MDN or DSN about one of our messages (recorded; not for the sinks).
    Notification(String),
    /// An ordinary message, with the sender's notification request (if any).
    Message(Option<mdn::NotificationRequest>),
}

/// Classify an opened message; a notification is recorded against our tracking here.
pub fn classify(spool: &SqliteSpool, report: &OpenReport, now: i64) -> Result<Received, String> {
    if mdn::notification_kind(&report.inner).is_none() {
        let outer = crate::mime::entity::Entity::parse(&report.inner);
        return Ok(Received::Message(mdn::requested(outer.headers())));
    }
    let parsed = mdn::parse_report(&report.inner)
        .map_err(|e| format!("unreadable delivery notification: {e}"))?;
    let mut lines = Vec::new();
    match parsed {
        Report::Mdn(m) => {
            let original = m
                .original_message_id
                .clone()
                .ok_or("MDN without Original-Message-ID: cannot match it to a message")?;
            let recipient = m
                .final_recipient
                .clone()
                .unwrap_or_else(|| report.from.clone());
            let notice = match m.disposition.kind {
                DispositionKind::Processed => Some(Notice::Processed),
                DispositionKind::Dispatched => Some(Notice::Dispatched),
                DispositionKind::Failed => Some(Notice::Failed),
                _ => None,
            };
            let Some(notice) = notice else {
                return Ok(Received::Notification(format!(
                    "MDN for {original} from {recipient} with a disposition Direct does not track; recorded only"
                )));
            };
            let detail = m.failure.clone().unwrap_or_default();
            let outcome = spool
                .record_notice(&original, &recipient, notice, &detail, now)
                .map_err(|e| e.to_string())?;
            if notice == Notice::Processed {
                observe_round_trip(spool, &original, &recipient, &outcome, now);
            }
            lines.push(describe(&original, &recipient, notice, &outcome));
        }
        Report::Dsn(d) => {
            let original = d
                .original_message_id
                .clone()
                .ok_or("DSN without the original Message-ID: cannot match it to a message")?;
            for r in d
                .recipients
                .iter()
                .filter(|r| r.action.eq_ignore_ascii_case("failed"))
            {
                let detail = r
                    .diagnostic
                    .clone()
                    .or_else(|| r.status.clone())
                    .unwrap_or_else(|| "delivery failed (DSN)".into());
                let recipient = r.final_recipient.clone();
                let outcome = spool
                    .record_notice(&original, &recipient, Notice::Failed, &detail, now)
                    .map_err(|e| e.to_string())?;
                lines.push(describe(&original, &recipient, Notice::Failed, &outcome));
            }
            if lines.is_empty() {
                lines.push(format!("DSN for {original} with no failed recipient"));
            }
        }
    }
    Ok(Received::Notification(lines.join("; ")))
}

/// Feed `direct_agent_mdn_round_trip_seconds` when a processed MDN moved a tracked message:
/// from the time it was handed to the partner's server (the tracking row's `sent_at`) to now.
fn observe_round_trip(
    spool: &SqliteSpool,
    original: &str,
    recipient: &str,
    outcome: &NoticeOutcome,
    now: i64,
) {
    if !matches!(outcome, NoticeOutcome::Updated(_)) {
        return;
    }
    let sent_at = spool.tracking(Some(original), 1000).ok().and_then(|rows| {
        rows.into_iter()
            .find(|t| t.recipient.eq_ignore_ascii_case(recipient))
            .and_then(|t| t.sent_at)
    });
    if let Some(sent_at) = sent_at {
        crate::ops::METRICS.mdn_processed((now - sent_at) as f64);
    }
}

fn describe(original: &str, recipient: &str, notice: Notice, outcome: &NoticeOutcome) -> String {
    let what = match notice {
        Notice::Processed => "processed",
        Notice::Dispatched => "dispatched",
        Notice::Failed => "failed",
    };
    match outcome {
        NoticeOutcome::Updated(s) => {
            format!(
                "{what} MDN for {original} from {recipient}: now {}",
                s.as_str()
            )
        }
        NoticeOutcome::Duplicate => {
            format!("duplicate {what} MDN for {original} from {recipient} ignored")
        }
        NoticeOutcome::Late(s) => format!(
            "late {what} MDN for {original} from {recipient}: recorded, the message stays {}",
            s.as_str()
        ),
        NoticeOutcome::Unknown => {
            format!("{what} MDN for {original} from {recipient}: not a message we sent")
        }
    }
}

/// Send `disposition` for the message in `report` from each of `ours` (our recipients of it) to
/// its sender, once per (message, recipient, disposition). Errors are logged, not returned: a
/// notification that cannot be sent must not block the message.
pub fn send_mdns(
    ctx: &Context,
    spool: &SqliteSpool,
    report: &OpenReport,
    ours: &[DirectAddress],
    disposition: &Disposition,
    final_destination: bool,
) {
    if !ctx.config.mdn.send {
        return;
    }
    let Some(original) = report.message_id.as_deref() else {
        tracing::warn!(from = %report.from, "message without Message-ID: no MDN can refer to it");
        return;
    };
    let Ok(sender) = DirectAddress::parse(&report.from) else {
        tracing::warn!(message_id = original, "sender address unreadable: no MDN");
        return;
    };
    let label = match disposition {
        Disposition::Processed => "processed",
        Disposition::Dispatched => "dispatched",
        Disposition::Failed { .. } => "failed",
    };
    for us in ours {
        let recipient = us.canonical();
        let once = NotificationKey {
            original_message_id: original,
            recipient: &recipient,
            disposition: label,
        };
        // Checked before sealing (an RSA signature) and recorded with the queue entry.
        match spool.notified(original, &recipient, label) {
            Ok(false) => {}
            Ok(true) => continue,
            Err(e) => {
                tracing::error!(message_id = original, error = %e, "cannot read the MDN record; not sent");
                continue;
            }
        }
        match queue_mdn(
            ctx,
            spool,
            &once,
            &sender,
            us,
            disposition,
            final_destination,
        ) {
            Ok(Sent::Already) => {}
            Ok(Sent::Queued(id)) => {
                tracing::info!(message_id = original, mdn = %id, to = %sender, from = %us, disposition = label, "MDN queued")
            }
            Ok(Sent::Kept(reason)) => {
                tracing::warn!(message_id = original, to = %sender, disposition = label, reason = %reason, "MDN cannot be sealed yet; kept and retried on the outbound schedule")
            }
            Err(e) => {
                tracing::error!(message_id = original, to = %sender, disposition = label, error = %e, "MDN could not be sent")
            }
        }
    }
}

/// Build, seal and queue one MDN, recorded as sent in the same commit (kept and retried when it
/// cannot be sealed yet).
fn queue_mdn(
    ctx: &Context,
    spool: &SqliteSpool,
    once: &NotificationKey<'_>,
    sender: &DirectAddress,
    us: &DirectAddress,
    disposition: &Disposition,
    final_destination: bool,
) -> Result<Sent, String> {
    let original = once.original_message_id;
    let clock = SystemClock;
    let built = mdn::build_mdn(
        &MdnRequest {
            original_message_id: original.to_string(),
            original_sender: sender.clone(),
            final_recipient: us.clone(),
            original_recipient: Some(us.to_string()),
            final_destination_requested: final_destination,
        },
        disposition,
        &ctx.config.agent.hostname,
        &clock,
    );
    super::pending::send_or_keep(
        ctx,
        spool,
        &Reply {
            key: NotificationKey { ..*once },
            kind: OutboundKind::Mdn,
            // RFC 8098 §2.1: MDNs go with the null reverse-path.
            mail_from: "",
            from: us,
            to: sender,
            inner: &built.inner,
        },
    )
}
