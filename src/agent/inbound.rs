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
use crate::config::SinkRole;
use crate::domain::LocalDomain;
use crate::message::{Envelope, OpenInputs, OpenReport, open_owned};
use crate::sink::{DeliveryMetadata, RouteKey, Sink, SinkDelivery, SinkOutcome, SinkSet};
use crate::spool::{InboundEntry, InboundOutcome};
use crate::store::Direction;
use crate::trust::ValidationCache;

use super::{Context, notify, pingpong, reply, validation};
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

/// Open `entry` and deliver its payloads. The raw message is taken out of `entry` and opened in
/// place (the spool keeps its copy), so a large message is not held twice while it is decrypted.
pub fn process(
    ctx: &Context,
    spool: &crate::spool::SqliteSpool,
    sinks: &SinkSet,
    cache: &ValidationCache,
    entry: &mut InboundEntry,
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
    let opened = {
        let _cpu = super::gate::CpuGate::inbound().enter();
        open_owned(std::mem::take(&mut entry.raw), &inputs)
    };
    let report = match opened {
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
    let sender = DirectAddress::parse(&report.from).ok();
    let verdict = match validation::check(
        &ctx.config,
        sender.as_ref(),
        &report.payloads,
        &validation::today(now),
    ) {
        Ok(v) => v,
        Err(e) => {
            return Processed {
                outcome: InboundOutcome::Retry {
                    reason: format!("HL7 validation not configured correctly: {e}"),
                    next_attempt_at: now + sink_retry_delay(entry.attempts),
                },
                report: Some(report),
            };
        }
    };
    // An operator released this message with `--accept-invalid-hl7`: deliver it with its
    // findings recorded, and send no ACK of ours (a sink's ACK still goes back).
    let overridden = !verdict.passed()
        && crate::spool::Spool::overridden(spool, entry.id, "hl7").unwrap_or(false);
    if overridden {
        tracing::warn!(inbound = entry.id, message_id = ?report.message_id, from = %report.from, "delivering a message that failed HL7 validation: an operator overrode it");
    }
    let mut metadata = DeliveryMetadata {
        message_id: report.message_id.clone(),
        from: report.from.clone(),
        to: report.to.clone(),
        signer_subject: report.signer.subject.clone(),
        signer_fingerprint_sha256: report.signer.fingerprint_sha256.clone(),
        signer_binding: format!("{:?}", report.signer.binding).to_ascii_lowercase(),
        received_at: entry.received_at,
        accepted_at: now,
        source: entry.source.clone(),
        validation: verdict.profile.map(|_| {
            let mut v = verdict.to_json();
            if overridden {
                v["overridden_by_operator"] = serde_json::Value::Bool(true);
            }
            v
        }),
    };
    let delivery = SinkDelivery {
        inbound_id: entry.id,
        message_id: report.message_id.as_deref(),
        from: &report.from,
        to: &report.to,
        metadata: &metadata,
        payloads: &report.payloads,
    };
    let key = RouteKey {
        from: &report.from,
        to: &ours,
        message_types: &verdict.message_types,
    };
    let reply_from = ours.first();
    let send_acks = |acks: &[String]| {
        if !ctx.config.hl7.reply_with_ack {
            return None;
        }
        let us = reply_from?;
        Some(
            reply::send_acks(ctx, spool, &report, us, acks).unwrap_or_else(|e| {
                tracing::error!(message_id = ?report.message_id, from = %report.from, error = %e, "HL7 ACK reply not sent");
                format!("HL7 ACK not sent: {e}")
            }),
        )
    };

    if !verdict.passed() && !overridden {
        // Refused by validation: to the reject sinks if any take it, else quarantine. The sender
        // hears of it through a failed MDN (when asked) and an AE/AR ACK (when configured).
        let summary = verdict.summary();
        let profile = verdict.profile.map(|p| p.to_string()).unwrap_or_default();
        let rejects = sinks.select(SinkRole::Reject, &key);
        let handed = if rejects.is_empty() {
            None
        } else {
            match deliver_all(spool, &rejects, &delivery, now) {
                Delivered::All { locations, .. } => Some(locations),
                Delivered::Transient(reason) => {
                    return retry_or_give_up(
                        ctx,
                        spool,
                        report,
                        &ours,
                        entry,
                        now,
                        reason,
                        final_destination,
                    );
                }
                Delivered::Permanent { reason, .. } => {
                    tracing::error!(message_id = report.message_id.as_deref().unwrap_or("-"), from = %report.from, sink_reason = %reason, "the reject sink refused a message that failed HL7 validation; quarantined");
                    None
                }
            }
        };
        if final_destination {
            let failed = Disposition::Failed {
                reason: format!("HL7 validation failed (profile {profile}): {summary}"),
            };
            notify::send_mdns(ctx, spool, &report, &ours, &failed, true);
        }
        // ACKs are only built when they are sent (building one parses the HL7 again).
        let ack = if ctx.config.hl7.reply_with_ack {
            send_acks(&reply::build_acks(&verdict, &report.payloads, now))
        } else {
            None
        };
        let outcome = match handed {
            Some(locations) => InboundOutcome::Delivered {
                detail: serde_json::json!({
                    "rejected": format!("HL7 validation failed (profile {profile}): {summary}"),
                    "validation": verdict.to_json(),
                    "signer": report.signer.subject,
                    "sinks": locations,
                    "ack": ack,
                }),
            },
            None => InboundOutcome::Quarantined {
                kind: "hl7".into(),
                reason: format!("HL7 validation failed (profile {profile}): {summary}"),
            },
        };
        return Processed {
            outcome,
            report: Some(report),
        };
    }

    let mut chosen = sinks.select(SinkRole::Deliver, &key);
    if chosen.is_empty() {
        chosen = sinks.select(SinkRole::Fallback, &key);
    }
    if chosen.is_empty() {
        return Processed {
            outcome: InboundOutcome::Quarantined {
                kind: "route".into(),
                reason: format!(
                    "no [[sink]] takes a message from {} to {} with message types [{}]: add a sink (or widen senders / recipient_domains / message_types)",
                    report.from,
                    ours.iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    verdict.message_types.join(", ")
                ),
            },
            report: Some(report),
        };
    }
    let (locations, sink_acks) = match deliver_all(spool, &chosen, &delivery, now) {
        Delivered::All { locations, acks } => (locations, acks),
        Delivered::Transient(reason) => {
            return retry_or_give_up(
                ctx,
                spool,
                report,
                &ours,
                entry,
                now,
                reason,
                final_destination,
            );
        }
        Delivered::Permanent { reason, ack } => {
            if final_destination {
                // The reason names the sink's refusal, not the payload.
                let failed = Disposition::Failed {
                    reason: format!("the destination refused the message: {reason}"),
                };
                notify::send_mdns(ctx, spool, &report, &ours, &failed, true);
            }
            // The destination's own ACK (AE/AR) is what the sender needs to see.
            let acks = match &ack {
                Some(a) => vec![a.clone()],
                None => Vec::new(),
            };
            let _ = send_acks(&acks);
            return Processed {
                outcome: InboundOutcome::Quarantined {
                    kind: "sink".into(),
                    reason: match ack {
                        Some(_) => {
                            format!("{reason} (the destination's ACK is kept in the record)")
                        }
                        None => reason,
                    },
                },
                report: Some(report),
            };
        }
    };
    if final_destination {
        notify::send_mdns(ctx, spool, &report, &ours, &Disposition::Dispatched, true);
    }
    let acks = if !sink_acks.is_empty() {
        sink_acks
    } else if overridden || !ctx.config.hl7.reply_with_ack {
        Vec::new()
    } else {
        reply::build_acks(&verdict, &report.payloads, now)
    };
    let ack = send_acks(&acks);
    let mut detail = serde_json::json!({
        "signer": report.signer.subject,
        "signer_fingerprint_sha256": report.signer.fingerprint_sha256,
        "payloads": report.payloads.iter().map(|p| serde_json::json!({"content_type": p.content_type, "size": p.data.len()})).collect::<Vec<_>>(),
        "hl7_overridden": overridden,
        "ack": ack,
    });
    // Moved in, not through `json!` (which would copy them value by value).
    detail["sinks"] = serde_json::Value::Array(locations);
    detail["validation"] = metadata.validation.take().unwrap_or_default();
    Processed {
        outcome: InboundOutcome::Delivered { detail },
        report: Some(report),
    }
}

/// How handing a message to a set of sinks went.
enum Delivered {
    /// Every sink accepted; the ACKs destinations answered with.
    All {
        locations: Vec<serde_json::Value>,
        acks: Vec<String>,
    },
    /// One failed transiently, or its credential is disabled: try again later.
    Transient(String),
    /// One refused.
    Permanent { reason: String, ack: Option<String> },
}

/// Hand the delivery to each sink in turn, stopping at the first that does not accept.
fn deliver_all(
    spool: &crate::spool::SqliteSpool,
    sinks: &[&dyn Sink],
    delivery: &SinkDelivery<'_>,
    now: i64,
) -> Delivered {
    use crate::spool::Spool;
    let mut locations = Vec::new();
    let mut acks = Vec::new();
    for sink in sinks {
        if let Some(credential) = sink.credential() {
            match spool.disabled_credential(&credential) {
                Ok(Some(_)) => {
                    return Delivered::Transient(format!(
                        "sink {}: credential {credential} is disabled; run `direct-agent credentials reset {credential}` once it is fixed",
                        sink.name()
                    ));
                }
                Ok(None) => {}
                Err(e) => return Delivered::Transient(format!("spool unavailable: {e}")),
            }
        }
        match sink.deliver(delivery) {
            SinkOutcome::Accepted { location, ack } => {
                locations.push(serde_json::json!({"sink": sink.name(), "location": location}));
                acks.extend(ack);
            }
            SinkOutcome::Transient(reason) => {
                return Delivered::Transient(format!("sink {}: {reason}", sink.name()));
            }
            SinkOutcome::Permanent { reason, ack } => {
                return Delivered::Permanent {
                    reason: format!("sink {} refused the message: {reason}", sink.name()),
                    ack,
                };
            }
            SinkOutcome::CredentialRejected(reason) => {
                // Never retried with the same credential: the entry waits until an operator
                // runs `direct-agent credentials reset`.
                let credential = sink
                    .credential()
                    .unwrap_or_else(|| format!("sink:{}", sink.name()));
                if let Err(e) = spool.disable_credential(&credential, &reason, now) {
                    tracing::error!(credential = %credential, error = %e, "cannot record a disabled credential");
                }
                tracing::error!(alert = true, message_id = delivery.message_id.unwrap_or("-"), from = %delivery.from, credential = %credential, sink = %sink.name(), reason = %reason, "ALERT: sink credential refused; disabled until `direct-agent credentials reset {credential}`");
                return Delivered::Transient(format!(
                    "sink {}: credential {credential} refused and disabled: {reason}",
                    sink.name()
                ));
            }
        }
    }
    Delivered::All { locations, acks }
}

/// A transient sink failure: retry with backoff, or after [`SINK_RETRY_LIMIT`] quarantine (and
/// tell the sender, when asked, that the destination never took it).
#[allow(clippy::too_many_arguments)]
fn retry_or_give_up(
    ctx: &Context,
    spool: &crate::spool::SqliteSpool,
    report: OpenReport,
    ours: &[DirectAddress],
    entry: &InboundEntry,
    now: i64,
    reason: String,
    final_destination: bool,
) -> Processed {
    let outcome = if now - entry.received_at > SINK_RETRY_LIMIT {
        if final_destination {
            let failed = Disposition::Failed {
                reason: "the destination did not accept the message in 24 hours".into(),
            };
            notify::send_mdns(ctx, spool, &report, ours, &failed, true);
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
    Processed {
        outcome,
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
