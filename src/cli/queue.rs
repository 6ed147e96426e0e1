//! `queue`, `quarantine` and `credentials`: the operator's view of the spool. They work on the
//! spool file directly, so they can be used while `serve` runs.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::clock::{Clock, SystemClock};
use crate::spool::{InboundState, OutboundState, Spool, SqliteSpool};

use super::{EXIT_FAILED, load_config, usage};

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List outbound entries (newest first).
    List {
        /// Only entries in this state: queued, sending, sent, failed, dropped.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one entry with its attempt history and next attempt.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Make a queued or failed entry due now; `--failed` resends every failed entry (bulk resend,
    /// e.g. after a partner's outage outlasted the retry lifetime).
    Retry {
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        id: Option<i64>,
        /// Every failed entry instead of one.
        #[arg(long)]
        failed: bool,
    },
    /// Drop a queued or failed entry (kept as `dropped` for the record).
    Drop { id: i64 },
    /// List the MDNs, pongs and HL7 ACK replies that could not be sealed yet (the recipient's
    /// certificate was not discoverable): kept and retried on the outbound schedule.
    Replies {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    /// List quarantined messages with their reasons.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one quarantined (or any inbound) message's record; `--raw FILE` writes the message.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
        /// Write the raw message as received to FILE (it is encrypted; no PHI is printed).
        #[arg(long, value_name = "FILE")]
        raw: Option<PathBuf>,
    },
    /// Put a quarantined message back for processing (after fixing the cause, e.g. adding an
    /// anchor); `--kind trust` releases every message quarantined for that reason, `--all` all.
    Release {
        #[arg(required_unless_present_any = ["kind", "all"], conflicts_with_all = ["kind", "all"])]
        id: Option<i64>,
        /// Every quarantined message of this refusal class (decrypt, signature, trust, malformed,
        /// address, hl7, route, sink, notification).
        #[arg(long, conflicts_with = "all")]
        kind: Option<String>,
        /// Every quarantined message.
        #[arg(long)]
        all: bool,
        /// Deliver the message(s) although they failed HL7 validation (an operator's decision,
        /// recorded; the findings stay in the sidecar). Only for messages quarantined as `hl7`.
        #[arg(long)]
        accept_invalid_hl7: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CredentialsCommand {
    /// List credentials disabled after a server refused them.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Re-enable a disabled credential (after fixing the password); blocked messages become due.
    Reset { name: String },
}

fn open_spool(config: Option<&Path>) -> Result<SqliteSpool, i32> {
    let cfg = load_config(config).map_err(usage)?;
    SqliteSpool::open(&cfg.agent.data_dir).map_err(usage)
}

fn when(t: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

fn failed(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    EXIT_FAILED
}

pub fn run_queue(cmd: QueueCommand, config: Option<&Path>) -> i32 {
    let spool = match open_spool(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let now = SystemClock.unix_seconds();
    match cmd {
        QueueCommand::List { state, json } => {
            let state = match state.as_deref().map(|s| (s, OutboundState::parse(s))) {
                None => None,
                Some((_, Some(s))) => Some(s),
                Some((s, None)) => {
                    return usage(format!(
                        "--state {s}: choose queued, sending, sent, failed or dropped"
                    ));
                }
            };
            let entries = match spool.list_outbound(state) {
                Ok(e) => e,
                Err(e) => return failed(e),
            };
            if json {
                println!("{}", serde_json::to_string(&entries).unwrap_or_default());
                return 0;
            }
            if entries.is_empty() {
                println!("queue is empty");
            }
            for e in entries {
                println!(
                    "{:>6}  {:<8} {:<7} {:>3} attempts  next {}  {} -> {}  {}{}",
                    e.id,
                    e.state.as_str(),
                    e.kind.as_str(),
                    e.attempts,
                    when(e.next_attempt_at),
                    e.mail_from,
                    e.rcpt_to.join(","),
                    e.message_id,
                    e.last_error
                        .as_deref()
                        .map(|l| format!("  last error: {l}"))
                        .unwrap_or_default()
                );
            }
            0
        }
        QueueCommand::Replies { json } => {
            let replies = match spool.pending_replies() {
                Ok(r) => r,
                Err(e) => return failed(e),
            };
            if json {
                println!("{}", serde_json::to_string(&replies).unwrap_or_default());
                return 0;
            }
            if replies.is_empty() {
                println!("no replies waiting to be sealed");
            }
            for r in replies {
                println!(
                    "{:>6}  {:<10} {:>3} attempts  next {}  {} -> {}  for {}  last error: {}",
                    r.id,
                    r.disposition,
                    r.attempts,
                    when(r.next_attempt_at),
                    r.from_address,
                    r.to_address,
                    r.original_message_id,
                    r.last_error
                );
            }
            0
        }
        QueueCommand::Show { id, json } => {
            let entry = match spool.outbound(id) {
                Ok(Some(e)) => e,
                Ok(None) => return failed(format!("no queue entry {id} (see `queue list`)")),
                Err(e) => return failed(e),
            };
            if json {
                println!("{}", serde_json::to_string(&entry).unwrap_or_default());
                return 0;
            }
            println!("entry        {}", entry.id);
            println!("kind         {}", entry.kind.as_str());
            println!("message-id   {}", entry.message_id);
            println!("from         {}", entry.mail_from);
            println!("to           {}", entry.rcpt_to.join(", "));
            println!("domain       {}", entry.domain);
            println!("size         {} bytes", entry.size);
            println!("state        {}", entry.state.as_str());
            println!("created      {}", when(entry.created_at));
            println!("expires      {}", when(entry.expires_at));
            if matches!(entry.state, OutboundState::Queued) {
                match &entry.blocked_on {
                    Some(c) => println!(
                        "next attempt blocked: credential {c} is disabled (`direct-agent credentials reset {c}`)"
                    ),
                    None => println!(
                        "next attempt {} (in {} s)",
                        when(entry.next_attempt_at),
                        (entry.next_attempt_at - now).max(0)
                    ),
                }
            }
            println!("attempts     {}", entry.attempts);
            for a in &entry.history {
                println!(
                    "  {}  {:<13} {}{}",
                    when(a.at),
                    a.outcome,
                    a.detail,
                    a.next_attempt_at
                        .map(|n| format!(" (next attempt {}, after {} s)", when(n), n - a.at))
                        .unwrap_or_default()
                );
            }
            0
        }
        QueueCommand::Retry { id: None, .. } => {
            let entries = match spool.list_outbound(Some(OutboundState::Failed)) {
                Ok(e) => e,
                Err(e) => return failed(e),
            };
            let mut progress = super::progress::Progress::new("resent", entries.len());
            let mut due = 0;
            for e in &entries {
                match spool.retry(e.id, now) {
                    Ok(true) => due += 1,
                    Ok(false) => {}
                    Err(err) => {
                        progress.finish();
                        return failed(err);
                    }
                }
                progress.tick();
            }
            progress.finish();
            println!(
                "{due} of {} failed entries are due now (the running agent sends them)",
                entries.len()
            );
            0
        }
        QueueCommand::Retry { id: Some(id), .. } => match spool.retry(id, now) {
            Ok(true) => {
                println!("entry {id} is due now");
                0
            }
            Ok(false) => failed(format!(
                "entry {id} cannot be retried: it does not exist, is sent, dropped, in flight, or blocked on a disabled credential (see `queue show {id}`)"
            )),
            Err(e) => failed(e),
        },
        QueueCommand::Drop { id } => match spool.drop_entry(id, now) {
            Ok(true) => {
                println!("entry {id} dropped");
                0
            }
            Ok(false) => failed(format!(
                "entry {id} cannot be dropped: only queued or failed entries can (see `queue show {id}`)"
            )),
            Err(e) => failed(e),
        },
    }
}

pub fn run_quarantine(cmd: QuarantineCommand, config: Option<&Path>) -> i32 {
    let spool = match open_spool(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let now = SystemClock.unix_seconds();
    match cmd {
        QuarantineCommand::List { json } => {
            let entries = match spool.list_inbound(Some(InboundState::Quarantined)) {
                Ok(e) => e,
                Err(e) => return failed(e),
            };
            if json {
                println!("{}", serde_json::to_string(&entries).unwrap_or_default());
                return 0;
            }
            if entries.is_empty() {
                println!("quarantine is empty");
            }
            for e in entries {
                println!(
                    "{:>6}  {}  {:<9} from {}  {}: {}",
                    e.id,
                    when(e.updated_at),
                    e.reason_kind.as_deref().unwrap_or("-"),
                    if e.mail_from.is_empty() {
                        "<>"
                    } else {
                        &e.mail_from
                    },
                    e.message_id.as_deref().unwrap_or("(no Message-ID)"),
                    e.reason.as_deref().unwrap_or("")
                );
            }
            0
        }
        QuarantineCommand::Show { id, json, raw } => {
            let entry = match spool.inbound(id) {
                Ok(Some(e)) => e,
                Ok(None) => return failed(format!("no inbound message {id}")),
                Err(e) => return failed(e),
            };
            if let Some(path) = raw
                && let Err(e) = std::fs::write(&path, &entry.raw)
            {
                return failed(format!("cannot write {}: {e}", path.display()));
            }
            if json {
                println!("{}", serde_json::to_string(&entry).unwrap_or_default());
                return 0;
            }
            println!("message      {}", entry.id);
            println!("state        {}", entry.state.as_str());
            println!(
                "message-id   {}",
                entry.message_id.as_deref().unwrap_or("(none)")
            );
            println!("source       {}", entry.source);
            println!("mail from    {}", entry.mail_from);
            println!("rcpt to      {}", entry.rcpt_to.join(", "));
            println!("size         {} bytes", entry.size);
            println!("received     {}", when(entry.received_at));
            println!("updated      {}", when(entry.updated_at));
            if let Some(k) = &entry.reason_kind {
                println!("refusal      {k}");
            }
            if let Some(r) = &entry.reason {
                println!("reason       {r}");
            }
            0
        }
        QuarantineCommand::Release {
            id: None,
            kind,
            accept_invalid_hl7,
            ..
        } => {
            let entries = match spool.list_inbound(Some(InboundState::Quarantined)) {
                Ok(e) => e,
                Err(e) => return failed(e),
            };
            let chosen: Vec<_> = entries
                .iter()
                .filter(|e| kind.is_none() || e.reason_kind == kind)
                .filter(|e| !accept_invalid_hl7 || e.reason_kind.as_deref() == Some("hl7"))
                .collect();
            let mut progress = super::progress::Progress::new("released", chosen.len());
            let mut released = 0;
            for e in &chosen {
                let r = if accept_invalid_hl7 {
                    spool.release_overriding(e.id, "hl7", now)
                } else {
                    spool.release(e.id, now)
                };
                match r {
                    Ok(true) => released += 1,
                    Ok(false) => {}
                    Err(err) => {
                        progress.finish();
                        return failed(err);
                    }
                }
                progress.tick();
            }
            progress.finish();
            println!(
                "{released} message(s) released{}: the running agent processes them again",
                kind.map(|k| format!(" (quarantined for {k})"))
                    .unwrap_or_default()
            );
            0
        }
        QuarantineCommand::Release {
            id: Some(id),
            accept_invalid_hl7: true,
            ..
        } => {
            match spool.inbound(id) {
                Ok(Some(e)) if e.reason_kind.as_deref() == Some("hl7") => {}
                Ok(Some(_)) => {
                    return failed(format!(
                        "message {id} is not quarantined for HL7 validation (see `quarantine show {id}`): --accept-invalid-hl7 only overrides that"
                    ));
                }
                Ok(None) => return failed(format!("message {id} is not in quarantine")),
                Err(e) => return failed(e),
            }
            match spool.release_overriding(id, "hl7", now) {
                Ok(true) => {
                    println!(
                        "message {id} released with its HL7 findings overridden: the running agent delivers it"
                    );
                    0
                }
                Ok(false) => failed(format!("message {id} is not in quarantine")),
                Err(e) => failed(e),
            }
        }
        QuarantineCommand::Release { id: Some(id), .. } => match spool.release(id, now) {
            Ok(true) => {
                println!("message {id} released: the running agent processes it again");
                0
            }
            Ok(false) => failed(format!("message {id} is not in quarantine")),
            Err(e) => failed(e),
        },
    }
}

pub fn run_credentials(cmd: CredentialsCommand, config: Option<&Path>) -> i32 {
    let spool = match open_spool(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match cmd {
        CredentialsCommand::List { json } => {
            let list = match spool.disabled_credentials() {
                Ok(l) => l,
                Err(e) => return failed(e),
            };
            if json {
                println!("{}", serde_json::to_string(&list).unwrap_or_default());
                return 0;
            }
            if list.is_empty() {
                println!("no credential is disabled");
            }
            for c in list {
                println!("{}  disabled {}  {}", c.name, when(c.disabled_at), c.reason);
            }
            0
        }
        CredentialsCommand::Reset { name } => {
            match spool.reset_credential(&name, SystemClock.unix_seconds()) {
                Ok(true) => {
                    println!("credential {name} re-enabled; messages waiting for it are due now");
                    0
                }
                Ok(false) => failed(format!(
                    "credential {name} is not disabled (see `direct-agent credentials list`)"
                )),
                Err(e) => failed(e),
            }
        }
    }
}
