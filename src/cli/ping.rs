//! `direct-agent ping ADDRESS`: the connectivity handshake with a partner, printed as a report of
//! steps, each with its timing and verdict. The running agent (`serve`, sharing the spool)
//! receives the processed MDN and the pong; this command sends the ping and watches the spool.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::address::DirectAddress;
use crate::agent::Context;
use crate::agent::outbound::{DELIVERY_LEASE_SECS, attempt};
use crate::agent::pingpong::PING_HEADER;
use crate::clock::{Clock, SystemClock};
use crate::hl7::MshBuilder;
use crate::message::{SealOptions, seal};
use crate::spool::{AttemptResult, NewOutbound, OutboundKind, Spool, SqliteSpool};
use crate::transport::smtp_out::Outbound;

use super::{EXIT_FAILED, usage};

#[derive(Args, Debug)]
pub struct PingArgs {
    /// The partner's Direct address.
    address: String,
    /// Our address (default: postmaster@ the first configured domain).
    #[arg(long)]
    from: Option<String>,
    /// How long to wait for the processed MDN and the pong.
    #[arg(long, default_value = "120s")]
    timeout: String,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Step {
    step: &'static str,
    ok: bool,
    ms: u64,
    detail: String,
}

struct Report {
    steps: Vec<Step>,
    json: bool,
}

impl Report {
    fn add(&mut self, step: &'static str, ok: bool, since: Instant, detail: String) -> bool {
        let s = Step {
            step,
            ok,
            ms: since.elapsed().as_millis() as u64,
            detail,
        };
        if !self.json {
            println!(
                "[{}] {:<44} {:>6} ms  {}",
                if s.ok { " ok " } else { "FAIL" },
                s.step,
                s.ms,
                s.detail
            );
        }
        self.steps.push(s);
        ok
    }

    fn finish(self, message_id: Option<&str>) -> i32 {
        let ok = self.steps.iter().all(|s| s.ok);
        if self.json {
            println!(
                "{}",
                serde_json::json!({"ok": ok, "message_id": message_id, "steps": self.steps})
            );
        } else {
            println!(
                "{}",
                if ok {
                    "connectivity verified: every step passed"
                } else {
                    "connectivity NOT verified"
                }
            );
        }
        if ok { 0 } else { EXIT_FAILED }
    }
}

pub fn run_ping(a: PingArgs, config: Option<&Path>) -> i32 {
    let partner = match DirectAddress::parse(&a.address) {
        Ok(p) => p,
        Err(e) => return usage(format!("ADDRESS: {e}")),
    };
    let Some(timeout) = crate::config::parse_duration(&a.timeout) else {
        return usage(format!("--timeout {}: not a duration", a.timeout));
    };
    let ctx = match Context::load(config) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let from = match a.from.as_deref() {
        Some(f) => DirectAddress::parse(f),
        None => match ctx.domains.first() {
            Some(d) => DirectAddress::parse(&format!("postmaster@{}", d.name)),
            None => return usage("no [[domain]] is configured"),
        },
    };
    let from = match from {
        Ok(f) => f,
        Err(e) => return usage(format!("--from: {e}")),
    };
    let domain = match ctx.domain_of(&from) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let Some(routing) = ctx.config.partner(&partner).cloned() else {
        return usage(format!(
            "no [[partner]] for {partner}: configure its HL7 routing fields (address, sending_application, sending_facility, receiving_application, receiving_facility)"
        ));
    };
    let spool = match SqliteSpool::open(&ctx.config.agent.data_dir) {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => return usage(e),
    };
    let mut r = Report {
        steps: Vec::new(),
        json: a.json,
    };
    if !a.json {
        println!("ping {partner} from {from}");
    }

    // 1. Discovery and 2. trust path.
    let t = Instant::now();
    let found = match ctx.discover(&partner, domain) {
        Ok(f) => f,
        Err(e) => {
            r.add("certificate discovery", false, t, e);
            return r.finish(None);
        }
    };
    let certs = found.chosen_certs();
    let sources: Vec<String> = found
        .candidates
        .iter()
        .map(|c| format!("{:?} {}", c.source, c.origin))
        .collect();
    if !r.add(
        "certificate discovery",
        !found.candidates.is_empty(),
        t,
        if found.candidates.is_empty() {
            found
                .reason
                .clone()
                .unwrap_or_else(|| "nothing found".into())
        } else {
            format!(
                "{} candidate(s): {}",
                found.candidates.len(),
                sources.join(", ")
            )
        },
    ) {
        return r.finish(None);
    }
    let chosen: Vec<String> = found
        .candidates
        .iter()
        .filter(|c| found.chosen.contains(&c.fingerprint_sha256))
        .map(|c| format!("{} ({:?}-bound)", c.subject, c.binding))
        .collect();
    if !r.add(
        "trust path of the partner's certificate",
        !certs.is_empty(),
        t,
        if certs.is_empty() {
            found.reason.clone().unwrap_or_default()
        } else {
            format!(
                "valid for encryption, chains to an anchor: {}",
                chosen.join(", ")
            )
        },
    ) {
        return r.finish(None);
    }

    // The ping itself: an HL7 test query with the configured routing fields.
    let nonce = format!("{:016x}", rand_nonce());
    let now = SystemClock.unix_seconds();
    let stamp = crate::hl7::msh::timestamp(
        SystemClock.now(),
        chrono::FixedOffset::east_opt(0).expect("zero offset is valid"),
    );
    let hl7 = MshBuilder::new(stamp, format!("PING{}", &nonce[..10]))
        .sending_application(routing.sending_application.as_str())
        .sending_facility(routing.sending_facility.as_str())
        .receiving_application(routing.receiving_application.as_str())
        .receiving_facility(routing.receiving_facility.as_str())
        .processing_id("T")
        .version_id("2.5.1")
        .ping();
    let signer = match domain.signer_for(&from) {
        Some(s) => s.clone(),
        None => {
            return usage(format!(
                "no signing credential for {from}: give --from with an address our certificates cover"
            ));
        }
    };
    let opts = SealOptions {
        request_mdn: true,
        subject: "Direct ping".into(),
        filename: "ping.hl7".into(),
        extra_headers: vec![(PING_HEADER.into(), nonce.clone())],
        ..SealOptions::default()
    };
    let sealed = match seal(
        &from,
        std::slice::from_ref(&partner),
        hl7.as_bytes(),
        &signer,
        &certs,
        &opts,
        &SystemClock,
    ) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let queued = spool.enqueue(NewOutbound {
        kind: OutboundKind::Message,
        message_id: sealed.message_id.clone(),
        mail_from: from.to_string(),
        rcpt_to: vec![partner.to_string()],
        raw: &sealed.message,
        now,
        expires_at: now + 600,
    });
    let ids = match queued {
        Ok(ids) => ids,
        Err(e) => return usage(e),
    };
    if let Err(e) = spool.track(
        &from.to_string(),
        &sealed.message_id,
        &[partner.to_string()],
        "ping",
        false,
        now,
    ) {
        return usage(e);
    }
    let message_id = sealed.message_id.clone();

    // 3. SMTP: delivered from here, now.
    let t = Instant::now();
    let outbound = match Outbound::from_config(&ctx.config) {
        Ok(o) => o,
        Err(e) => return usage(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return usage(e),
    };
    let entry = match spool.claim_outbound_id(ids[0], now, DELIVERY_LEASE_SECS) {
        Ok(Some(e)) => e,
        Ok(None) => {
            return usage("the ping was taken by a running agent before it could be sent here");
        }
        Err(e) => return usage(e),
    };
    let result = runtime.block_on(attempt(&spool, &outbound, &ctx.config.smtp_out, &entry));
    let (ok, detail) = match &result {
        Ok((_, AttemptResult::Sent { detail })) => (true, detail.clone()),
        Ok((_, AttemptResult::Transient { detail, .. }))
        | Ok((_, AttemptResult::Permanent { detail }))
        | Ok((_, AttemptResult::Blocked { detail, .. })) => (false, detail.clone()),
        Err(e) => (false, e.clone()),
    };
    let tls = detail.contains("(TLS)");
    r.add(
        "SMTP connection and TLS",
        ok,
        t,
        if ok {
            format!(
                "{}{}",
                detail.split(": ").next().unwrap_or(""),
                if tls { "" } else { " (no TLS)" }
            )
        } else {
            detail.clone()
        },
    );
    if !r.add("message accepted by the partner's server", ok, t, detail) {
        return r.finish(Some(&message_id));
    }

    // 4. The processed MDN, received by the running agent.
    let t = Instant::now();
    let deadline = t + timeout;
    let mut processed = false;
    while Instant::now() < deadline {
        if let Ok(rows) = spool.tracking(Some(&message_id), 1)
            && let Some(row) = rows.first()
        {
            if row.processed_at.is_some() {
                processed = true;
                break;
            }
            if row.state.is_final() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    r.add(
        "processed MDN received (round trip)",
        processed,
        t,
        if processed {
            "the partner decrypted and trusted the ping".into()
        } else {
            format!("no processed MDN within {timeout:?} (is `direct-agent serve` running here to receive it?)")
        },
    );

    // 5. The pong.
    let mut pong = None;
    while Instant::now() < deadline {
        if let Ok(Some(p)) = spool.pong(&message_id) {
            pong = Some(p);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match pong {
        Some(p) => {
            r.add(
                "pong received, signature and trust verified",
                true,
                t,
                format!("from {}, signed by {}", p.from, p.signer),
            );
            r.add(
                "partner's verdict on our MSH routing fields",
                p.ack_code == "AA",
                t,
                if p.report.is_empty() {
                    p.ack_code.clone()
                } else {
                    format!("{}: {}", p.ack_code, p.report.replace('\n', "; "))
                },
            );
        }
        None => {
            r.add(
                "pong received, signature and trust verified",
                false,
                t,
                if processed {
                    "MDN received; no pong: partner does not answer pings".into()
                } else {
                    "no pong".into()
                },
            );
        }
    }
    r.finish(Some(&message_id))
}

fn rand_nonce() -> u64 {
    let mut b = [0u8; 8];
    // A nonce only needs to be unpredictable enough to match pong to ping.
    openssl::rand::rand_bytes(&mut b)
        .map(|_| u64::from_le_bytes(b))
        .unwrap_or_else(|_| SystemClock.unix_seconds() as u64 ^ u64::from(std::process::id()))
}
