//! `serve` (run the agent) and `send` (seal a payload with the configuration's keys and queue
//! it, or deliver it at once with `--now`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::address::DirectAddress;
use crate::agent::outbound::{DELIVERY_LEASE_SECS, attempt, seal_and_queue};
use crate::agent::serve::{Server, shutdown_signal};
use crate::agent::{Context, SealRefusal};
use crate::clock::{Clock, SystemClock};
use crate::message::SealOptions;
use crate::spool::tracking::TrackState;
use crate::spool::{AttemptResult, OutboundState, Spool, SqliteSpool};
use crate::transport::smtp_out::Outbound;

use super::certs::EXIT_UNTRUSTED;
use super::{EXIT_FAILED, usage};

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Sender: a Direct address of a configured domain.
    #[arg(long)]
    from: String,
    /// Recipient Direct address (repeat for several).
    #[arg(long, required = true)]
    to: Vec<String>,
    /// The payload (an HL7 v2 message by default).
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// Ask for delivery notifications (processed, and dispatched on final delivery).
    #[arg(long)]
    request_mdn: bool,
    /// Send as a plain attachment of this MIME type instead of Direct Context HL7 v2.
    #[arg(long)]
    content_type: Option<String>,
    /// Attachment file name (default: the input's name).
    #[arg(long)]
    filename: Option<String>,
    /// Subject line (must not carry PHI).
    #[arg(long, default_value = "Direct message")]
    subject: String,
    /// Deliver now from this process and report the SMTP result (retries are left to `serve`).
    #[arg(long)]
    now: bool,
    /// Wait until the message is sent and every recipient's processed MDN (and dispatched, with
    /// --request-mdn) arrived; exit 1 on failure, timeout or a failed notification.
    #[arg(long)]
    wait: bool,
    /// Longest wait with --wait, e.g. "120s".
    #[arg(long, default_value = "120s")]
    timeout: String,
}

/// `direct-agent serve`.
pub fn run_serve(config: Option<&Path>) -> i32 {
    let ctx = match Context::load(config) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return usage(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let server = match Server::bind(ctx).await {
            Ok(s) => s,
            Err(e) => return usage(e),
        };
        for a in server.smtp_addresses() {
            eprintln!("direct-agent: SMTP listening on {a}");
        }
        if let Some(a) = server.http_address() {
            eprintln!(
                "direct-agent: operations endpoint on http://{a} (/healthz /readyz /metrics)"
            );
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = tx.send(true);
        });
        match server.run(rx).await {
            Ok(()) => {
                eprintln!("direct-agent: stopped");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_FAILED
            }
        }
    })
}

/// `direct-agent send`.
pub fn run_send(a: SendArgs, config: Option<&Path>) -> i32 {
    let from = match DirectAddress::parse(&a.from) {
        Ok(f) => f,
        Err(e) => return usage(format!("--from: {e}")),
    };
    let mut to = Vec::new();
    for t in &a.to {
        match DirectAddress::parse(t) {
            Ok(x) => to.push(x),
            Err(e) => return usage(format!("--to {t}: {e}")),
        }
    }
    let Some(timeout) = crate::config::parse_duration(&a.timeout) else {
        return usage(format!(
            "--timeout {}: not a duration (e.g. \"120s\")",
            a.timeout
        ));
    };
    let payload = match std::fs::read(&a.input) {
        Ok(p) => p,
        Err(e) => return usage(format!("cannot read {}: {e}", a.input.display())),
    };
    let ctx = match Context::load(config) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let spool = match SqliteSpool::open(&ctx.config.agent.data_dir) {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => return usage(e),
    };
    let opts = SealOptions {
        request_mdn: a.request_mdn,
        content_type: a.content_type.clone(),
        filename: a.filename.clone().unwrap_or_else(|| {
            a.input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "message.hl7".into())
        }),
        subject: a.subject.clone(),
        ..SealOptions::default()
    };
    let queued = match seal_and_queue(&ctx, spool.as_ref(), &from, &to, &payload, &opts) {
        Ok(q) => q,
        Err(SealRefusal::Configuration(e)) => return usage(e),
        Err(SealRefusal::Untrusted(e)) => {
            eprintln!("error: {e}");
            return EXIT_UNTRUSTED;
        }
    };
    println!("{}", queued.message_id);
    if a.now {
        return deliver_now(&ctx, &spool, &queued.entries);
    }
    if a.wait {
        return wait_for(&spool, &queued.message_id, &queued.entries, timeout);
    }
    0
}

fn deliver_now(ctx: &Context, spool: &std::sync::Arc<SqliteSpool>, entries: &[i64]) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return usage(format!("cannot start the runtime: {e}")),
    };
    let outbound = match Outbound::from_config(&ctx.config) {
        Ok(o) => o,
        Err(e) => return usage(e),
    };
    let mut all_sent = true;
    runtime.block_on(async {
        for &id in entries {
            let entry = match spool.claim_outbound_id(id, SystemClock.unix_seconds(), DELIVERY_LEASE_SECS) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    eprintln!("entry {id}: already taken by a running agent");
                    continue;
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    all_sent = false;
                    continue;
                }
            };
            match attempt(spool, &outbound, &ctx.config.smtp_out, &entry).await {
                Ok((_, AttemptResult::Sent { detail })) => {
                    eprintln!("{}: sent via {detail}", entry.domain)
                }
                Ok((state, AttemptResult::Transient { detail, next_attempt_at })) => {
                    all_sent = false;
                    if state == OutboundState::Failed {
                        eprintln!("{}: failed: {detail}", entry.domain);
                    } else {
                        eprintln!(
                            "{}: not delivered yet: {detail}; queued for a retry in {} s (entry {}, a running `serve` retries it)",
                            entry.domain,
                            next_attempt_at - SystemClock.unix_seconds(),
                            entry.id
                        );
                    }
                }
                Ok((_, AttemptResult::Permanent { detail })) => {
                    all_sent = false;
                    eprintln!("{}: failed: {detail}", entry.domain);
                }
                Ok((_, AttemptResult::Blocked { credential, detail, .. })) => {
                    all_sent = false;
                    eprintln!(
                        "{}: blocked: {detail} (credential {credential} is disabled; fix it, then `direct-agent credentials reset {credential}`)",
                        entry.domain
                    );
                }
                Err(e) => {
                    all_sent = false;
                    eprintln!("error: {e}");
                }
            }
        }
    });
    if all_sent { 0 } else { EXIT_FAILED }
}

fn wait_for(spool: &SqliteSpool, message_id: &str, entries: &[i64], timeout: Duration) -> i32 {
    let deadline = std::time::Instant::now() + timeout;
    // First the queue: every recipient domain's entry sent or failed.
    loop {
        let mut pending = 0;
        let mut failed = Vec::new();
        for &id in entries {
            match spool.outbound(id) {
                Ok(Some(e)) => match e.state {
                    OutboundState::Sent => {}
                    OutboundState::Failed | OutboundState::Dropped => failed.push(e),
                    _ => pending += 1,
                },
                Ok(None) => {}
                Err(e) => return usage(e),
            }
        }
        if !failed.is_empty() {
            for e in failed {
                eprintln!(
                    "{}: {}: {}",
                    e.domain,
                    e.state.as_str(),
                    e.last_error.unwrap_or_default()
                );
            }
            return EXIT_FAILED;
        }
        if pending == 0 {
            eprintln!("sent; waiting for delivery notifications");
            break;
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "timed out with {pending} recipient domain(s) not delivered yet (see `direct-agent queue list`); is `direct-agent serve` running?"
            );
            return EXIT_FAILED;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Then the notifications: processed (and dispatched when requested) per recipient, received
    // by the running agent into the shared spool.
    loop {
        let rows = match spool.tracking(Some(message_id), 1000) {
            Ok(r) => r,
            Err(e) => return usage(e),
        };
        if rows.iter().all(|r| r.state.is_final()) {
            let mut ok = true;
            for r in &rows {
                eprintln!(
                    "{}: {}{}",
                    r.recipient,
                    r.state.as_str(),
                    r.reason
                        .as_deref()
                        .map(|x| format!(" ({x})"))
                        .unwrap_or_default()
                );
                ok &= r.state == TrackState::Complete;
            }
            return if ok { 0 } else { EXIT_FAILED };
        }
        if std::time::Instant::now() >= deadline {
            for r in rows.iter().filter(|r| !r.state.is_final()) {
                eprintln!(
                    "{}: still {} when --timeout ran out (see `direct-agent status {message_id}`)",
                    r.recipient,
                    r.state.as_str()
                );
            }
            return EXIT_FAILED;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `direct-agent status [MESSAGE-ID] [--json]`.
pub fn run_status(message_id: Option<String>, json: bool, config: Option<&Path>) -> i32 {
    let cfg = match super::load_config(config) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let spool = match SqliteSpool::open(&cfg.agent.data_dir) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let rows = match spool.tracking(message_id.as_deref(), 100) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    if let Some(id) = &message_id
        && rows.is_empty()
    {
        eprintln!("error: no message {id} is tracked (only messages sent by this agent are)");
        return EXIT_FAILED;
    }
    if json {
        println!("{}", serde_json::to_string(&rows).unwrap_or_default());
    } else {
        let when = |t: Option<i64>| {
            t.and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
                .map(|d| d.format("%H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into())
        };
        if rows.is_empty() {
            println!("no messages tracked yet");
        }
        for r in &rows {
            println!(
                "{}  {}  {:<10} queued {} sent {} processed {} dispatched {}{}{}",
                r.message_id,
                r.recipient,
                r.state.as_str(),
                when(Some(r.queued_at)),
                when(r.sent_at),
                when(r.processed_at),
                if r.final_destination {
                    when(r.dispatched_at)
                } else {
                    "n/a".into()
                },
                r.reason
                    .as_deref()
                    .map(|x| format!("  {x}"))
                    .unwrap_or_default(),
                if r.notes.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", r.notes.join("; "))
                }
            );
        }
    }
    let failed = rows
        .iter()
        .any(|r| matches!(r.state, TrackState::Failed | TrackState::TimedOut));
    if message_id.is_some() && failed {
        EXIT_FAILED
    } else {
        0
    }
}
