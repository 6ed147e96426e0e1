//! The "ping pong" connectivity handshake HISPs use before real data flows.
//!
//! A **ping** is a Direct message whose payload is an HL7 test query (MSH-11 = `T`) with the
//! routing fields configured for the partner (`[[partner]]`), marked in the protected headers
//! with `X-Direct-Ping: <nonce>`. The responding agent, once the ping passed decryption and trust
//! (and its processed MDN went out), checks the HL7 header against its own configuration for the
//! sender and answers with a **pong**: a Direct message marked `X-Direct-Pong: <ping Message-ID>`
//! and `X-Direct-Ping-Nonce: <nonce>` whose payload is the HL7 ACK of those checks (AA, or AE/AR
//! with ERR segments naming the fields). Pings and pongs never reach the sinks.

use crate::address::DirectAddress;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::hl7::{self, AckCode, AckError, ErrorCode, Location, Severity};
use crate::message::{OpenReport, SealOptions};
use crate::mime::payload::PayloadKind;
use crate::spool::SqliteSpool;
use crate::spool::tracking::NotificationKey;

use super::Context;

/// Protected header marking a ping; the value is a nonce.
pub const PING_HEADER: &str = "X-Direct-Ping";
/// Protected header marking a pong; the value is the ping's Message-ID.
pub const PONG_HEADER: &str = "X-Direct-Pong";
/// The ping's nonce, quoted in the pong.
pub const NONCE_HEADER: &str = "X-Direct-Ping-Nonce";

/// How an opened message is marked.
#[derive(Debug, PartialEq, Eq)]
pub enum Marked {
    Ping {
        nonce: String,
    },
    Pong {
        ping_message_id: String,
        nonce: String,
    },
    Neither,
}

/// Read the ping/pong marks from the protected (inner) headers.
pub fn marked(inner: &[u8]) -> Marked {
    let e = crate::mime::entity::Entity::parse(inner);
    let get = |h: &str| e.header(h).map(|v| v.trim().to_string());
    if let Some(ping_message_id) = get(PONG_HEADER) {
        return Marked::Pong {
            ping_message_id,
            nonce: get(NONCE_HEADER).unwrap_or_default(),
        };
    }
    match get(PING_HEADER) {
        Some(nonce) => Marked::Ping { nonce },
        None => Marked::Neither,
    }
}

/// The responder's verdict on a ping's HL7 header.
pub struct Verdict {
    pub code: AckCode,
    pub errors: Vec<AckError>,
    /// The ACK (ER7), or None when the payload was not HL7 at all.
    pub ack: Option<String>,
}

fn err(location: Location, code: ErrorCode, message: String) -> AckError {
    AckError {
        location: Some(location),
        hl7_error_code: code,
        severity: Severity::Error,
        application_error_code: None,
        message,
    }
}

/// Check a ping's HL7 payload from `sender` against our `[[partner]]` configuration.
pub fn check_ping(cfg: &Config, sender: &DirectAddress, payload: &str, now: i64) -> Verdict {
    let messages = match hl7::parse_messages(payload) {
        Ok(m) if !m.is_empty() => m,
        Ok(_) | Err(_) => {
            return Verdict {
                code: AckCode::Reject,
                errors: Vec::new(),
                ack: None,
            };
        }
    };
    let msg = &messages[0];
    let msh = msg.msh();
    let ns = |hd: Option<hl7::Hd<'_>>| {
        hd.and_then(|h| h.namespace_id().map(|c| c.into_owned()))
            .unwrap_or_default()
    };
    let mut errors = Vec::new();
    let mut reject = false;
    match cfg.partner(sender) {
        None => errors.push(err(
            Location::segment("MSH", 1).field(4),
            ErrorCode::TableValueNotFound,
            format!(
                "no [[partner]] is configured for {sender}: its sending facility cannot be checked"
            ),
        )),
        Some(p) => {
            let theirs = ns(msh.sending_facility());
            if !theirs.eq_ignore_ascii_case(&p.receiving_facility) {
                errors.push(err(
                    Location::segment("MSH", 1).field(4),
                    ErrorCode::TableValueNotFound,
                    format!("MSH-4 sending facility '{theirs}' is not the one configured for {sender} ('{}')", p.receiving_facility),
                ));
            }
            let ours = ns(msh.receiving_facility());
            if !ours.eq_ignore_ascii_case(&p.sending_facility) {
                errors.push(err(
                    Location::segment("MSH", 1).field(6),
                    ErrorCode::TableValueNotFound,
                    format!(
                        "MSH-6 receiving facility '{ours}' is not ours ('{}')",
                        p.sending_facility
                    ),
                ));
            }
        }
    }
    let processing = msh
        .processing_id()
        .map(|c| c.into_owned())
        .unwrap_or_default();
    if processing != "T" {
        reject = true;
        errors.push(err(
            Location::segment("MSH", 1).field(11),
            ErrorCode::UnsupportedProcessingId,
            format!("MSH-11 is '{processing}': a ping must be test traffic (T)"),
        ));
    }
    let version = msh.version_id().map(|c| c.into_owned()).unwrap_or_default();
    if version != "2.5.1" {
        reject = true;
        errors.push(err(
            Location::segment("MSH", 1).field(12),
            ErrorCode::UnsupportedVersionId,
            format!("MSH-12 version '{version}' is not 2.5.1"),
        ));
    }
    let code = if reject {
        AckCode::Reject
    } else if errors.is_empty() {
        AckCode::Accept
    } else {
        AckCode::Error
    };
    let when = hl7::msh::timestamp(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.max(0) as u64),
        chrono::FixedOffset::east_opt(0).expect("zero offset is valid"),
    );
    let control = format!("PONG{now}");
    let ack = hl7::build_ack(msg, code, &errors, &when, &control);
    Verdict {
        code,
        errors,
        ack: Some(ack),
    }
}

/// Answer a ping (already trusted) from `report` received by `us`. Returns a summary for the
/// record. Rate limited per sender (`[pingpong] max_pongs_per_hour`).
pub fn respond(
    ctx: &Context,
    spool: &SqliteSpool,
    report: &OpenReport,
    us: &DirectAddress,
    nonce: &str,
) -> Result<String, String> {
    let now = SystemClock.unix_seconds();
    let sender = DirectAddress::parse(&report.from).map_err(|e| e.to_string())?;
    let ping_id = report
        .message_id
        .clone()
        .ok_or("ping without Message-ID: no pong can refer to it")?;
    let recent = spool
        .count_notifications(&sender.canonical(), "pong", now - 3600)
        .map_err(|e| e.to_string())?;
    if recent >= ctx.config.pingpong.max_pongs_per_hour as usize {
        return Ok(format!(
            "ping from {sender} not answered: {recent} pongs in the last hour (pingpong.max_pongs_per_hour)"
        ));
    }
    let once = NotificationKey {
        original_message_id: &ping_id,
        recipient: &sender.canonical(),
        disposition: "pong",
    };
    if spool
        .notified(once.original_message_id, once.recipient, once.disposition)
        .map_err(|e| e.to_string())?
    {
        return Ok(format!("ping {ping_id} already answered"));
    }
    let payload = report
        .payloads
        .iter()
        .find(|p| p.kind == PayloadKind::Hl7v2)
        .map(|p| String::from_utf8_lossy(&p.data).into_owned())
        .unwrap_or_default();
    let verdict = check_ping(&ctx.config, &sender, &payload, now);
    let ack = verdict.ack.unwrap_or_else(|| "MSA|AR|\r".to_string());
    let opts = SealOptions {
        subject: "Direct pong".into(),
        filename: "pong-ack.hl7".into(),
        extra_headers: vec![
            (PONG_HEADER.into(), ping_id.clone()),
            (NONCE_HEADER.into(), nonce.to_string()),
        ],
        ..SealOptions::default()
    };
    let pong_id = match super::reply::send_reply(
        ctx,
        spool,
        us,
        &sender,
        ack.as_bytes(),
        &opts,
        &once,
    )? {
        super::pending::Sent::Queued(id) => id,
        super::pending::Sent::Already => return Ok(format!("ping {ping_id} already answered")),
        super::pending::Sent::Kept(reason) => {
            return Ok(format!(
                "ping {ping_id} from {sender}: the pong cannot be sealed yet ({reason}); kept and retried on the outbound schedule"
            ));
        }
    };
    Ok(format!(
        "ping {ping_id} from {sender} answered with pong {} ({}{})",
        pong_id,
        verdict.code.as_str(),
        if verdict.errors.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                verdict
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    ))
}

/// Record a pong for one of our pings: the partner's ACK code and findings.
pub fn record_pong(
    spool: &SqliteSpool,
    report: &OpenReport,
    ping_message_id: &str,
) -> Result<String, String> {
    let ack = report
        .payloads
        .iter()
        .find(|p| p.kind == PayloadKind::Hl7v2)
        .map(|p| String::from_utf8_lossy(&p.data).into_owned())
        .unwrap_or_default();
    let (code, findings) = match hl7::parse_messages(&ack) {
        Ok(m) if !m.is_empty() => {
            let msg = &m[0];
            let code = msg
                .get("MSA-1")
                .map(|c| c.into_owned())
                .unwrap_or_else(|| "?".into());
            let findings: Vec<String> = msg
                .segments_named("ERR")
                .filter_map(|s| s.field(8).map(|f| f.to_er7(&msg.delimiters())))
                .collect();
            (code, findings)
        }
        _ => (
            "?".to_string(),
            vec!["the pong carried no readable HL7 ACK".to_string()],
        ),
    };
    let new = spool
        .record_pong(
            ping_message_id,
            &report.from,
            &report.signer.subject,
            &code,
            &findings.join("\n"),
            SystemClock.unix_seconds(),
        )
        .map_err(|e| e.to_string())?;
    Ok(if new {
        format!("pong for {ping_message_id} from {}: {code}", report.from)
    } else {
        format!("duplicate pong for {ping_message_id} ignored")
    })
}
