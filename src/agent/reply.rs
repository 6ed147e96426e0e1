//! Direct replies the agent sends on its own: the HL7 ACK of a received message (`[hl7]
//! reply_with_ack`) and, through [`send_reply`], the ping pong's pong. A reply is sealed with the
//! keys of the local address it answers from, to the sender's discovered certificates, and queued
//! like any outgoing message. Each is claimed once in the spool, so a message processed again
//! (after a retry or a crash) is not answered twice.

use crate::address::DirectAddress;
use crate::clock::SystemClock;
use crate::hl7::{self, AckCode, AckError};
use crate::message::{OpenReport, SealOptions};
use crate::mime::payload::{Payload, PayloadKind};
use crate::spool::tracking::NotificationKey;
use crate::spool::{OutboundKind, SqliteSpool};

use super::pending::Sent;

use super::Context;
use super::validation::Hl7Verdict;

/// Seal `payload` from `us` to `to` and queue it; returns the new Message-ID.
pub fn send_reply(
    ctx: &Context,
    spool: &SqliteSpool,
    us: &DirectAddress,
    to: &DirectAddress,
    payload: &[u8],
    opts: &SealOptions,
    once: &NotificationKey<'_>,
) -> Result<Sent, String> {
    let message_id = crate::mime::build::new_message_id(us.domain());
    let date =
        chrono::DateTime::<chrono::Utc>::from(crate::clock::Clock::now(&SystemClock)).to_rfc2822();
    let mut inner = Vec::new();
    crate::mime::build::build_inner_into(
        &mut inner,
        &crate::mime::build::InnerMessage {
            from: us,
            to: std::slice::from_ref(to),
            subject: &opts.subject,
            payload,
            content_type: opts.content_type.as_deref(),
            filename: &opts.filename,
            request_mdn: opts.request_mdn,
            extra_headers: &opts.extra_headers,
        },
        &message_id,
        &date,
    );
    super::pending::send_or_keep(
        ctx,
        spool,
        &super::pending::Reply {
            key: NotificationKey { ..*once },
            kind: OutboundKind::Message,
            mail_from: &us.to_string(),
            from: us,
            to,
            inner: &inner,
        },
    )
}

use super::validation::is_response;

/// Our ACKs for the HL7 messages of `payloads`: AA (with warnings as ERR W), or AE/AR with the
/// validation findings. Messages that are themselves responses get none. An unreadable payload
/// gets none either (there is no MSH to answer).
pub fn build_acks(verdict: &Hl7Verdict, payloads: &[Payload], now: i64) -> Vec<String> {
    let when = hl7::msh::timestamp(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.max(0) as u64),
        chrono::FixedOffset::east_opt(0).expect("zero offset is valid"),
    );
    let mut acks = Vec::new();
    let hl7_payloads = payloads.iter().filter(|p| p.kind == PayloadKind::Hl7v2);
    for (i, p) in hl7_payloads.enumerate() {
        let Ok(messages) = hl7::parse_messages_bytes(&p.data) else {
            continue;
        };
        let report = verdict.reports.get(i);
        for (j, m) in messages.iter().enumerate() {
            let t = m.msh().message_type();
            let ty = format!(
                "{}^{}",
                t.code.as_deref().unwrap_or(""),
                t.trigger_event.as_deref().unwrap_or("")
            );
            if is_response(&ty) {
                continue;
            }
            let (code, errors): (AckCode, Vec<AckError>) =
                match report.and_then(|r| r.messages.get(j)) {
                    Some(mr) => (mr.ack_code(), mr.ack_errors()),
                    None => (AckCode::Accept, Vec::new()),
                };
            let control = control_id();
            acks.push(hl7::build_ack(m, code, &errors, &when, &control));
        }
    }
    acks
}

/// A unique MSH-10 for an ACK we originate.
fn control_id() -> String {
    let mut b = [0u8; 8];
    // A failing CSPRNG leaves zeros; the ID is then still well formed.
    let _ = openssl::rand::rand_bytes(&mut b);
    format!("DA{}", hex::encode_upper(b))
}

/// Send `acks` (one payload, the ACK messages one after the other) back to the sender of
/// `report`, once per received message. Returns what happened, for the record.
pub fn send_acks(
    ctx: &Context,
    spool: &SqliteSpool,
    report: &OpenReport,
    us: &DirectAddress,
    acks: &[String],
) -> Result<String, String> {
    if acks.is_empty() {
        return Ok("no HL7 ACK to send (responses are not acknowledged)".into());
    }
    let sender = DirectAddress::parse(&report.from).map_err(|e| e.to_string())?;
    let original = report
        .message_id
        .clone()
        .ok_or("the message has no Message-ID: an ACK reply could not be matched to it")?;
    let once = NotificationKey {
        original_message_id: &original,
        recipient: &sender.canonical(),
        disposition: "hl7-ack",
    };
    let already = format!("HL7 ACK for {original} already sent");
    if spool
        .notified(once.original_message_id, once.recipient, once.disposition)
        .map_err(|e| e.to_string())?
    {
        return Ok(already);
    }
    let opts = SealOptions {
        subject: "HL7 acknowledgement".into(),
        filename: "ack.hl7".into(),
        extra_headers: vec![("In-Reply-To".into(), original.clone())],
        ..SealOptions::default()
    };
    let payload = acks.concat();
    Ok(
        match send_reply(ctx, spool, us, &sender, payload.as_bytes(), &opts, &once)? {
            Sent::Queued(id) => format!("HL7 ACK sent to {sender} as {id}"),
            Sent::Already => already,
            Sent::Kept(reason) => format!(
                "HL7 ACK to {sender} cannot be sealed yet ({reason}); kept and retried on the outbound schedule"
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_not_acknowledged() {
        assert!(is_response("ACK^V04"));
        assert!(is_response("RSP^K11"));
        assert!(!is_response("VXU^V04"));
        assert!(!is_response("QBP^Q11"));
    }

    #[test]
    fn control_ids_differ() {
        assert_ne!(control_id(), control_id());
        assert_eq!(control_id().len(), 18);
    }
}
