//! Sinks: where the payloads of an accepted message are handed on (a folder, an interface engine,
//! an IIS web service). A [`Sink`] takes one message's payloads with their metadata and answers
//! accepted, transient failure (try again later) or permanent failure (quarantine).
//!
//! Delivery is at-least-once: an agent that crashes after a sink accepted but before the spool
//! recorded it hands the message over again, so sinks are idempotent by Message-ID where they
//! can be (the directory sink rewrites the same file names).

mod directory;

pub use directory::DirectorySink;

use std::sync::Mutex;

use serde::Serialize;

use crate::config::SinkConfig;
use crate::mime::payload::Payload;

/// What a sink is given: one accepted message.
pub struct SinkDelivery<'a> {
    /// The spool entry it came from.
    pub inbound_id: i64,
    pub message_id: Option<&'a str>,
    pub from: &'a str,
    pub to: &'a [String],
    pub metadata: &'a DeliveryMetadata,
    pub payloads: &'a [Payload],
}

/// Metadata written beside payloads (no payload content, no PHI).
#[derive(Clone, Debug, Serialize)]
pub struct DeliveryMetadata {
    pub message_id: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    pub signer_subject: String,
    pub signer_fingerprint_sha256: String,
    pub signer_binding: String,
    /// Unix seconds the message was stored at reception.
    pub received_at: i64,
    /// Unix seconds it was opened and accepted.
    pub accepted_at: i64,
    /// How it arrived (smtp peer, imap account).
    pub source: String,
}

/// How a delivery went.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkOutcome {
    /// Durably accepted; `location` says where (a path, an ACK control id).
    Accepted { location: String },
    /// Try again later (disk full, peer down).
    Transient(String),
    /// Will never be accepted (refused by the peer): quarantine.
    Permanent(String),
}

/// A downstream destination for payloads.
pub trait Sink: Send + Sync {
    /// A name for logs and records, e.g. `directory:/var/lib/direct-agent/inbox`.
    fn name(&self) -> String;
    /// Deliver one message's payloads. Blocking; called off the async runtime.
    fn deliver(&self, delivery: &SinkDelivery<'_>) -> SinkOutcome;
}

/// Build the configured sinks.
pub fn from_config(sinks: &[SinkConfig]) -> Vec<Box<dyn Sink>> {
    sinks
        .iter()
        .map(|s| match s {
            SinkConfig::Directory { path } => {
                Box::new(DirectorySink::new(path.clone())) as Box<dyn Sink>
            }
        })
        .collect()
}

/// A test double: records what it was given and answers from a script (then `Accepted`).
#[derive(Default)]
pub struct StubSink {
    pub script: Mutex<Vec<SinkOutcome>>,
    pub delivered: Mutex<Vec<(Option<String>, usize)>>,
}

impl Sink for StubSink {
    fn name(&self) -> String {
        "stub".into()
    }
    fn deliver(&self, d: &SinkDelivery<'_>) -> SinkOutcome {
        let mut script = self.script.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = if script.is_empty() {
            SinkOutcome::Accepted {
                location: "stub".into(),
            }
        } else {
            script.remove(0)
        };
        if matches!(outcome, SinkOutcome::Accepted { .. }) {
            self.delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((d.message_id.map(str::to_string), d.payloads.len()));
        }
        outcome
    }
}
