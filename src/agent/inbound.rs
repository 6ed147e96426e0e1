//! The inbound pipeline for one spooled message: open it (decrypt, verify, trust, against the
//! anchors of the local domains it is addressed to), hand its payloads to every sink, and say how
//! it ended. Nothing here talks to the network except the trust checks' CRL/AIA fetches.
//!
//! Every refusal becomes a quarantine record with the refusal class (`decrypt`, `signature`,
//! `trust`, `malformed`, `address`, `sink`) and the specific reason; the message stays in the
//! spool. A transient sink failure is retried with backoff, and after [`SINK_RETRY_LIMIT`] the
//! message is quarantined with the last reason.

use openssl::x509::X509;

use crate::address::DirectAddress;
use crate::clock::SystemClock;
use crate::domain::LocalDomain;
use crate::message::{Envelope, OpenInputs, OpenReport, open};
use crate::sink::{DeliveryMetadata, Sink, SinkDelivery, SinkOutcome};
use crate::spool::{InboundEntry, InboundOutcome};
use crate::store::Direction;
use crate::trust::ValidationCache;

use super::{Context, notify, pingpong};
use crate::mdn::Disposition;

/// How long a message may keep failing transiently at the sinks before it is quarantined.
pub const SINK_RETRY_LIMIT: i64 = 24 * 3600;

/// The outcome of opening and delivering one inbound entry, with the report when it opened.
pub struct Processed {
    pub outcome: InboundOutcome,
    pub report: Option<OpenReport>,
}

fn quarantine(kind: &str, reason: impl Into<String>) -> Processed {
    Processed {
        outcome: InboundOutcome::Quarantined {
            kind: kind.into(),
            reason: reason.into(),
        },
        report: None,
    }
}

/// The sink retry delay after `attempts` transient failures: 30 s doubling, at most 30 min.
pub fn sink_retry_delay(attempts: u32) -> i64 {
    (30i64 << attempts.saturating_sub(1).min(6)).min(1800)
}

/// Open `entry` and deliver its payloads.
pub fn process(
    ctx: &Context,
    spool: &crate::spool::SqliteSpool,
    sinks: &[Box<dyn Sink>],
    cache: &ValidationCache,
    entry: &InboundEntry,
    now: i64,
) -> Processed {
    let rcpts: Vec<DirectAddress> = entry
        .rcpt_to
        .iter()
        .filter_map(|r| DirectAddress::parse(r).ok())
        .collect();
    let recipients = if rcpts.is_empty() {
        // IMAP: no envelope; the outer To/Cc say who it is for.
        outer_recipients(&entry.raw)
    } else {
        rcpts.clone()
    };
    let served: Vec<&LocalDomain> = ctx
        .domains
        .iter()
        .filter(|d| recipients.iter().any(|r| r.in_domain(&d.name)))
        .collect();
    let Some(first) = served.first() else {
        return quarantine(
            "address",
            format!(
                "addressed to {} and none of them is in a configured domain",
                if recipients.is_empty() {
                    "nobody readable".to_string()
                } else {
                    recipients
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        );
    };
    let mut anchors: Vec<X509> = Vec::new();
    let mut intermediates: Vec<X509> = Vec::new();
    for d in &served {
        match ctx.anchors(&d.name, Direction::Incoming) {
            Ok(a) => anchors.extend(a),
            Err(e) => {
                return Processed {
                    outcome: InboundOutcome::Retry {
                        reason: format!("trust store unavailable: {e}"),
                        next_attempt_at: now + sink_retry_delay(entry.attempts),
                    },
                    report: None,
                };
            }
        }
        intermediates.extend(d.intermediates.iter().cloned());
    }
    let ours: Vec<_> = served
        .iter()
        .flat_map(|d| d.decryption_credentials().cloned())
        .collect();
    let clock = SystemClock;
    let envelope = Envelope {
        mail_from: DirectAddress::parse(&entry.mail_from).ok(),
        rcpt_to: rcpts,
    };
    let inputs = OpenInputs {
        ours: &ours,
        trust: ctx.trust_inputs(first, &anchors, &intermediates, &[], &clock),
        envelope,
        cache: Some(cache),
    };
    let report = match open(&entry.raw, &inputs) {
        Ok(r) => r,
        Err(e) => return quarantine(e.kind(), e.to_string()),
    };
    // An MDN or DSN about our own messages is recorded, never handed on or answered.
    let request = match notify::classify(spool, &report, now) {
        Ok(notify::Received::Notification(summary)) => {
            return Processed {
                outcome: InboundOutcome::Delivered {
                    detail: serde_json::json!({"notification": summary, "signer": report.signer.subject}),
                },
                report: Some(report),
            };
        }
        Ok(notify::Received::Message(request)) => request,
        Err(reason) => {
            return Processed {
                outcome: InboundOutcome::Quarantined {
                    kind: "notification".into(),
                    reason,
                },
                report: Some(report),
            };
        }
    };
    let ours: Vec<DirectAddress> = recipients
        .iter()
        .filter(|r| served.iter().any(|d| r.in_domain(&d.name)))
        .cloned()
        .collect();
    let final_destination = request.as_ref().is_some_and(|r| r.final_destination);
    notify::send_mdns(ctx, spool, &report, &ours, &Disposition::Processed, false);
    // Pings and pongs are answered or recorded here and never reach the sinks.
    match pingpong::marked(&report.inner) {
        pingpong::Marked::Ping { nonce } => {
            let summary = match ours.first() {
                Some(us) if ctx.config.pingpong.respond => {
                    pingpong::respond(ctx, spool, &report, us, &nonce)
                        .unwrap_or_else(|e| format!("ping not answered: {e}"))
                }
                _ => "ping not answered (pingpong.respond = false)".to_string(),
            };
            return Processed {
                outcome: InboundOutcome::Delivered {
                    detail: serde_json::json!({"ping": summary, "signer": report.signer.subject}),
                },
                report: Some(report),
            };
        }
        pingpong::Marked::Pong {
            ping_message_id, ..
        } => {
            let summary = pingpong::record_pong(spool, &report, &ping_message_id)
                .unwrap_or_else(|e| format!("pong not recorded: {e}"));
            return Processed {
                outcome: InboundOutcome::Delivered {
                    detail: serde_json::json!({"pong": summary, "signer": report.signer.subject}),
                },
                report: Some(report),
            };
        }
        pingpong::Marked::Neither => {}
    }
    let metadata = DeliveryMetadata {
        message_id: report.message_id.clone(),
        from: report.from.clone(),
        to: report.to.clone(),
        signer_subject: report.signer.subject.clone(),
        signer_fingerprint_sha256: report.signer.fingerprint_sha256.clone(),
        signer_binding: format!("{:?}", report.signer.binding).to_ascii_lowercase(),
        received_at: entry.received_at,
        accepted_at: now,
        source: entry.source.clone(),
    };
    let delivery = SinkDelivery {
        inbound_id: entry.id,
        message_id: report.message_id.as_deref(),
        from: &report.from,
        to: &report.to,
        metadata: &metadata,
        payloads: &report.payloads,
    };
    let mut locations = Vec::new();
    for sink in sinks {
        match sink.deliver(&delivery) {
            SinkOutcome::Accepted { location, .. } => {
                locations.push(serde_json::json!({"sink": sink.name(), "location": location}))
            }
            SinkOutcome::Transient(reason) => {
                let reason = format!("sink {}: {reason}", sink.name());
                let outcome = if now - entry.received_at > SINK_RETRY_LIMIT {
                    if final_destination {
                        let failed = Disposition::Failed {
                            reason: "the destination did not accept the message in 24 hours".into(),
                        };
                        notify::send_mdns(ctx, spool, &report, &ours, &failed, true);
                    }
                    InboundOutcome::Quarantined {
                        kind: "sink".into(),
                        reason: format!("{reason}; gave up after 24 h of retries"),
                    }
                } else {
                    InboundOutcome::Retry {
                        reason,
                        next_attempt_at: now + sink_retry_delay(entry.attempts),
                    }
                };
                return Processed {
                    outcome,
                    report: Some(report),
                };
            }
            SinkOutcome::CredentialRejected(reason) => {
                // Never retried with the same credential: the entry waits until an operator
                // runs `direct-agent credentials reset`.
                let credential = sink
                    .credential()
                    .unwrap_or_else(|| format!("sink:{}", sink.name()));
                if let Err(e) =
                    crate::spool::Spool::disable_credential(spool, &credential, &reason, now)
                {
                    tracing::error!(credential = %credential, error = %e, "cannot record a disabled credential");
                }
                tracing::error!(alert = true, credential = %credential, sink = %sink.name(), reason = %reason, "ALERT: sink credential refused; disabled until `direct-agent credentials reset {credential}`");
                return Processed {
                    outcome: InboundOutcome::Retry {
                        reason: format!(
                            "sink {}: credential {credential} disabled: {reason}",
                            sink.name()
                        ),
                        next_attempt_at: now + sink_retry_delay(entry.attempts),
                    },
                    report: Some(report),
                };
            }
            SinkOutcome::Permanent { reason, .. } => {
                if final_destination {
                    // The reason names the sink's refusal, not the payload.
                    let failed = Disposition::Failed {
                        reason: format!("the destination refused the message: {reason}"),
                    };
                    notify::send_mdns(ctx, spool, &report, &ours, &failed, true);
                }
                return Processed {
                    outcome: InboundOutcome::Quarantined {
                        kind: "sink".into(),
                        reason: format!("sink {} refused the message: {reason}", sink.name()),
                    },
                    report: Some(report),
                };
            }
        }
    }
    if final_destination {
        notify::send_mdns(ctx, spool, &report, &ours, &Disposition::Dispatched, true);
    }
    let detail = serde_json::json!({
        "signer": report.signer.subject,
        "signer_fingerprint_sha256": report.signer.fingerprint_sha256,
        "payloads": report.payloads.iter().map(|p| serde_json::json!({"content_type": p.content_type, "size": p.data.len()})).collect::<Vec<_>>(),
        "sinks": locations,
    });
    Processed {
        outcome: InboundOutcome::Delivered { detail },
        report: Some(report),
    }
}

/// The To/Cc addresses of a message's outer header.
pub fn outer_recipients(raw: &[u8]) -> Vec<DirectAddress> {
    let outer = crate::mime::entity::Entity::parse(raw);
    ["To", "Cc"]
        .iter()
        .filter_map(|h| outer.header(h))
        .flat_map(crate::address::parse_list)
        .filter_map(Result::ok)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_retry_backs_off_and_caps() {
        assert_eq!(sink_retry_delay(1), 30);
        assert_eq!(sink_retry_delay(2), 60);
        assert_eq!(sink_retry_delay(3), 120);
        assert_eq!(sink_retry_delay(40), 1800);
    }
}
