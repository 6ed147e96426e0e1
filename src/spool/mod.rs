//! The spool: the agent's durable record of every message it has taken responsibility for.
//!
//! - **Inbound**: a raw message as received (SMTP DATA or an IMAP fetch) with its envelope, stored
//!   and fsynced before the peer is told `250` or the mailbox message is flagged. The inbound
//!   pipeline then claims it, opens it and hands its payloads to the sinks; it ends `delivered` or
//!   `quarantined` (kept, with the reason). Duplicates (the same Message-ID to the same
//!   recipients, or the same IMAP UID) are recognised at reception, so a peer's retry after a lost
//!   `250` reaches the sink once.
//! - **Outbound**: a sealed message queued for one recipient domain, with its attempt history,
//!   next attempt time and expiry. Workers claim entries under a lease, so two agents sharing a
//!   store never send the same entry at once and a crashed worker's entry is picked up again.
//! - **Pending replies**: MDNs, pongs and HL7 ACK replies that could not be sealed yet (the
//!   recipient's certificate could not be discovered), kept unsealed and retried.
//! - **Credentials**: SMTP AUTH and IMAP logins that a server rejected, disabled until an operator
//!   resets them.
//!
//! [`Spool`] is the interface; [`SqliteSpool`] the embedded implementation (a PostgreSQL one for
//! several agents sharing a queue would implement the same trait with `SELECT … FOR UPDATE SKIP
//! LOCKED` leases).

mod health;
pub mod replies;
mod sqlite;
pub mod tracking;

pub use sqlite::{SPOOL_FILE, SqliteSpool};

use serde::Serialize;

/// Why the spool failed. Storage failures are transient for the peer (451), never a loss.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    #[error("spool {path}: {detail}")]
    Database { path: String, detail: String },
    #[error("{0}")]
    NotFound(String),
}

/// Where an inbound message came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Source {
    /// An SMTP client at this address, with the HELO name it gave.
    Smtp {
        peer: String,
        helo: String,
        tls: bool,
    },
    /// An IMAP mailbox (the `[[imap]]` credential name) and its UIDVALIDITY/UID.
    Imap {
        account: String,
        uidvalidity: u32,
        uid: u32,
    },
    /// Queued locally (tests, `direct-agent receive`).
    Local,
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Smtp { peer, helo, tls } => {
                format!("smtp {peer} helo={helo}{}", if *tls { " tls" } else { "" })
            }
            Source::Imap {
                account,
                uidvalidity,
                uid,
            } => format!("imap {account} uidvalidity={uidvalidity} uid={uid}"),
            Source::Local => "local".into(),
        }
    }
}

/// A message being received.
pub struct NewInbound<'a> {
    pub source: Source,
    /// The envelope reverse-path ("" for the null sender, or unknown for IMAP).
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The outer Message-ID, when the message has one (used for duplicate detection).
    pub message_id: Option<String>,
    pub raw: &'a [u8],
    pub now: i64,
}

/// What reception did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Stored as a new inbound entry.
    Stored(i64),
    /// Already stored earlier as this entry; nothing new was written.
    Duplicate(i64),
}

impl Received {
    pub fn id(self) -> i64 {
        match self {
            Received::Stored(id) | Received::Duplicate(id) => id,
        }
    }
}

/// Where an inbound entry stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum InboundState {
    /// Stored, waiting to be (re)processed.
    Received,
    /// Opened and accepted by every sink.
    Delivered,
    /// Refused (decryption, signature, trust, malformed, sink permanent failure): kept with the
    /// reason until an operator releases or deletes it.
    Quarantined,
}

impl InboundState {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundState::Received => "received",
            InboundState::Delivered => "delivered",
            InboundState::Quarantined => "quarantined",
        }
    }
    pub fn parse(s: &str) -> Option<InboundState> {
        Some(match s {
            "received" => InboundState::Received,
            "delivered" => InboundState::Delivered,
            "quarantined" => InboundState::Quarantined,
            _ => return None,
        })
    }
}

/// An inbound entry (without its raw bytes unless loaded for processing).
#[derive(Clone, Debug, Serialize)]
pub struct InboundEntry {
    pub id: i64,
    pub source: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub message_id: Option<String>,
    pub size: usize,
    pub state: InboundState,
    pub received_at: i64,
    pub updated_at: i64,
    pub attempts: u32,
    pub next_attempt_at: i64,
    /// The refusal class (decrypt, signature, trust, malformed, sink) when quarantined.
    pub reason_kind: Option<String>,
    /// The specific reason (no PHI: reasons name certificates, algorithms and structure).
    pub reason: Option<String>,
    /// The accepted signer and where the payloads went, once delivered (JSON).
    pub outcome: Option<serde_json::Value>,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// How processing of an inbound entry ended.
#[derive(Clone, Debug)]
pub enum InboundOutcome {
    /// Every sink accepted; `detail` records signer and locations (no payload content).
    Delivered { detail: serde_json::Value },
    /// Refused; the message stays quarantined with this reason.
    Quarantined { kind: String, reason: String },
    /// A sink failed transiently; try again at `next_attempt_at`.
    Retry {
        reason: String,
        next_attempt_at: i64,
    },
}

/// Where an outbound entry stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OutboundState {
    /// Waiting for its next attempt.
    Queued,
    /// Claimed by a worker (until its lease ends).
    Sending,
    /// Accepted by the receiving server.
    Sent,
    /// Permanently refused, expired, or blocked by a disabled credential past its lifetime.
    Failed,
    /// Removed by an operator (`queue drop`).
    Dropped,
}

impl OutboundState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundState::Queued => "queued",
            OutboundState::Sending => "sending",
            OutboundState::Sent => "sent",
            OutboundState::Failed => "failed",
            OutboundState::Dropped => "dropped",
        }
    }
    pub fn parse(s: &str) -> Option<OutboundState> {
        Some(match s {
            "queued" => OutboundState::Queued,
            "sending" => OutboundState::Sending,
            "sent" => OutboundState::Sent,
            "failed" => OutboundState::Failed,
            "dropped" => OutboundState::Dropped,
            _ => return None,
        })
    }
}

/// What kind of message an outbound entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OutboundKind {
    /// A Direct message queued by `send`.
    Message,
    /// A message disposition notification.
    Mdn,
    /// A delivery status notification to a local sender.
    Dsn,
}

impl OutboundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundKind::Message => "message",
            OutboundKind::Mdn => "mdn",
            OutboundKind::Dsn => "dsn",
        }
    }
    pub fn parse(s: &str) -> Option<OutboundKind> {
        Some(match s {
            "message" => OutboundKind::Message,
            "mdn" => OutboundKind::Mdn,
            "dsn" => OutboundKind::Dsn,
            _ => return None,
        })
    }
}

/// A message to queue; one entry is created per recipient domain.
pub struct NewOutbound<'a> {
    pub kind: OutboundKind,
    pub message_id: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub raw: &'a [u8],
    pub now: i64,
    /// When retries stop (now + lifetime).
    pub expires_at: i64,
}

/// One attempt in an entry's history.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Attempt {
    pub at: i64,
    /// `sent`, `transient`, `permanent`, `auth-rejected`, `configuration`, `expired`, `retry`
    /// (operator), `dropped` (operator).
    pub outcome: String,
    /// The server's reply or the error (no message content).
    pub detail: String,
    /// When the next attempt is due, for transient failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
}

/// An outbound entry.
#[derive(Clone, Debug, Serialize)]
pub struct OutboundEntry {
    pub id: i64,
    pub kind: OutboundKind,
    pub message_id: String,
    pub domain: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub size: usize,
    pub state: OutboundState,
    pub attempts: u32,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub expires_at: i64,
    pub last_error: Option<String>,
    /// The credential this entry waits for, when blocked.
    pub blocked_on: Option<String>,
    pub history: Vec<Attempt>,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// How an attempt ended, as recorded.
#[derive(Clone, Debug)]
pub enum AttemptResult {
    Sent {
        detail: String,
    },
    /// Try again at `next_attempt_at` (or fail when that is past the expiry).
    Transient {
        detail: String,
        next_attempt_at: i64,
    },
    Permanent {
        detail: String,
    },
    /// The route's credential is refused or unusable: the entry waits, not retried, until
    /// `credentials reset NAME`; `outcome` is `auth-rejected`, `configuration` or `blocked`.
    Blocked {
        credential: String,
        outcome: String,
        detail: String,
    },
}

/// A disabled credential.
#[derive(Clone, Debug, Serialize)]
pub struct DisabledCredential {
    pub name: String,
    pub disabled_at: i64,
    pub reason: String,
}

/// The spool interface. Every write is durable when the call returns.
pub trait Spool: Send + Sync {
    /// Store a received message (or recognise a duplicate).
    fn receive(&self, msg: NewInbound<'_>) -> Result<Received, SpoolError>;
    /// Whether an IMAP message (account, UIDVALIDITY, UID) or Message-ID from that account was
    /// stored already.
    fn imap_seen(
        &self,
        account: &str,
        uidvalidity: u32,
        uid: u32,
        message_id: Option<&str>,
    ) -> Result<bool, SpoolError>;
    /// Claim the next inbound entry due for processing, with its raw bytes, for `lease` seconds.
    fn claim_inbound(&self, now: i64, lease: i64) -> Result<Option<InboundEntry>, SpoolError>;
    /// Record how processing of a claimed entry ended.
    fn finish_inbound(&self, id: i64, outcome: &InboundOutcome, now: i64)
    -> Result<(), SpoolError>;
    /// [`Spool::finish_inbound`], then [`Spool::claim_inbound`]; a store may do both in one
    /// commit.
    fn finish_and_claim_inbound(
        &self,
        id: i64,
        outcome: &InboundOutcome,
        now: i64,
        lease: i64,
    ) -> Result<Option<InboundEntry>, SpoolError> {
        self.finish_inbound(id, outcome, now)?;
        self.claim_inbound(now, lease)
    }
    /// One inbound entry, with its raw bytes.
    fn inbound(&self, id: i64) -> Result<Option<InboundEntry>, SpoolError>;
    /// Inbound entries (without raw bytes), newest first, optionally of one state.
    fn list_inbound(&self, state: Option<InboundState>) -> Result<Vec<InboundEntry>, SpoolError>;
    /// Put a quarantined entry back for processing (after the operator fixed the cause).
    fn release(&self, id: i64, now: i64) -> Result<bool, SpoolError>;
    /// Release a quarantined entry and record an operator's override of one check (`hl7`: the
    /// message is delivered although it failed HL7 validation).
    fn release_overriding(&self, id: i64, what: &str, now: i64) -> Result<bool, SpoolError>;
    /// Whether an operator overrode check `what` for this entry.
    fn overridden(&self, id: i64, what: &str) -> Result<bool, SpoolError>;

    /// Queue a message; returns the entry ids (one per recipient domain).
    fn enqueue(&self, msg: NewOutbound<'_>) -> Result<Vec<i64>, SpoolError>;
    /// Claim the next outbound entry due, honouring `per_domain` entries in flight per domain.
    fn claim_outbound(
        &self,
        now: i64,
        lease: i64,
        per_domain: usize,
    ) -> Result<Option<OutboundEntry>, SpoolError>;
    /// Claim one particular entry (`send --now`) if it is queued or its lease ran out.
    fn claim_outbound_id(
        &self,
        id: i64,
        now: i64,
        lease: i64,
    ) -> Result<Option<OutboundEntry>, SpoolError>;
    /// Release the leases held by processes that are gone (`is_alive(pid)` false), so a
    /// restarted agent resumes a crashed one's in-flight entries at once.
    fn recover_leases(&self, is_alive: &dyn Fn(u32) -> bool) -> Result<usize, SpoolError>;
    /// Record an attempt on a claimed entry.
    fn record_attempt(
        &self,
        id: i64,
        result: &AttemptResult,
        now: i64,
    ) -> Result<OutboundState, SpoolError>;
    /// One outbound entry, with its raw bytes.
    fn outbound(&self, id: i64) -> Result<Option<OutboundEntry>, SpoolError>;
    /// Outbound entries (without raw bytes), newest first, optionally of one state.
    fn list_outbound(&self, state: Option<OutboundState>)
    -> Result<Vec<OutboundEntry>, SpoolError>;
    /// Outbound entries of one Message-ID.
    fn outbound_by_message_id(&self, message_id: &str) -> Result<Vec<OutboundEntry>, SpoolError>;
    /// Make a queued or failed entry due now (operator).
    fn retry(&self, id: i64, now: i64) -> Result<bool, SpoolError>;
    /// Drop a queued or failed entry (operator); it is kept as `dropped` for the record.
    fn drop_entry(&self, id: i64, now: i64) -> Result<bool, SpoolError>;
    /// Number of entries due or waiting, and the oldest creation time among them.
    fn queue_depth(&self) -> Result<(usize, Option<i64>), SpoolError>;

    /// Disable a credential (persisted) after a server refused it.
    fn disable_credential(&self, name: &str, reason: &str, now: i64) -> Result<(), SpoolError>;
    /// Whether a credential is disabled, and why.
    fn disabled_credential(&self, name: &str) -> Result<Option<DisabledCredential>, SpoolError>;
    fn disabled_credentials(&self) -> Result<Vec<DisabledCredential>, SpoolError>;
    /// Re-enable a credential; entries blocked on it become due now. Returns whether it was
    /// disabled.
    fn reset_credential(&self, name: &str, now: i64) -> Result<bool, SpoolError>;
}

/// Describe a source for storage and listings.
pub fn describe_source(s: &Source) -> String {
    s.describe()
}
