//! Sinks: where the payloads of an accepted message are handed on: a folder ([`DirectorySink`]),
//! an interface engine over MLLP ([`MllpSink`]), an HTTP endpoint ([`HttpSink`]), the CDC IIS
//! web service ([`SoapSink`]) or a program ([`CommandSink`]). A [`Sink`] takes one message's
//! payloads with their metadata and answers accepted, transient failure (try again later),
//! permanent failure (quarantine) or credential refused (disabled, never retried). [`SinkSet`]
//! picks the sinks a message goes to from the `[[sink]]` routing keys.
//!
//! Delivery is at-least-once: an agent that crashes after a sink accepted but before the spool
//! recorded it hands the message over again, so sinks are idempotent by Message-ID where they
//! can be (the directory sink rewrites the same file names).

mod command;
mod directory;
mod http;
mod mllp;
mod route;
mod soap;

pub use command::{CommandConfigError, CommandSink};
pub use directory::DirectorySink;
pub use http::HttpSink;
pub use mllp::{AckVerdict, FrameError, FrameReader, MllpSink, judge_ack};
pub use route::{RouteKey, RoutedSink, SinkSet, takes};
pub use soap::SoapSink;

use std::sync::Mutex;

use serde::Serialize;

use crate::config::{SinkConfig, SinkKind};
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
    /// The HL7 validation verdict (profile, rule ids, locations; no field values), when the
    /// message was validated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<serde_json::Value>,
}

/// How a delivery went.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkOutcome {
    /// Durably accepted; `location` says where (a path, an ACK control id). `ack` is the HL7
    /// acknowledgement the destination answered with (MLLP, SOAP), if any.
    Accepted {
        location: String,
        ack: Option<String>,
    },
    /// Try again later (disk full, peer down, no answer).
    Transient(String),
    /// Will never be accepted (refused by the peer): quarantine. `ack` is the destination's HL7
    /// acknowledgement (AE/AR), kept with the quarantine record.
    Permanent { reason: String, ack: Option<String> },
    /// The destination refused the sink's credential (HTTP 401/403, a SOAP security fault), or
    /// the password variable is unset: the credential [`Sink::credential`] is disabled and
    /// nothing is sent with it again until an operator resets it.
    CredentialRejected(String),
}

impl SinkOutcome {
    /// Accepted at `location`, without an ACK.
    pub fn accepted(location: impl Into<String>) -> Self {
        SinkOutcome::Accepted {
            location: location.into(),
            ack: None,
        }
    }

    /// Refused for `reason`, without an ACK.
    pub fn permanent(reason: impl Into<String>) -> Self {
        SinkOutcome::Permanent {
            reason: reason.into(),
            ack: None,
        }
    }
}

/// A downstream destination for payloads.
pub trait Sink: Send + Sync {
    /// A name for logs and records, e.g. `directory:/var/lib/direct-agent/inbox`.
    fn name(&self) -> String;
    /// Deliver one message's payloads. Blocking; called off the async runtime.
    fn deliver(&self, delivery: &SinkDelivery<'_>) -> SinkOutcome;
    /// The name of the credential this sink logs in with (`sink:<name>`), if it has one. When the
    /// spool holds it as disabled, the pipeline does not call [`Sink::deliver`].
    fn credential(&self) -> Option<String> {
        None
    }
}

/// Why a configured sink could not be built.
#[derive(Debug, thiserror::Error)]
#[error("sink {name}: {reason}")]
pub struct SinkConfigError {
    pub name: String,
    pub reason: String,
}

/// Build one configured sink.
pub fn build(config: &SinkConfig) -> Result<Box<dyn Sink>, SinkConfigError> {
    let name = config.display_name();
    let fail = |reason: String| SinkConfigError {
        name: name.clone(),
        reason,
    };
    match &config.kind {
        SinkKind::Directory { path } => Ok(Box::new(DirectorySink::new(path.clone()))),
        SinkKind::Mllp(m) => {
            let connect_timeout = duration("connect_timeout", &m.connect_timeout).map_err(fail)?;
            let ack_timeout = duration("ack_timeout", &m.ack_timeout).map_err(fail)?;
            if m.host.trim().is_empty() {
                return Err(fail("host is empty".into()));
            }
            if m.port == 0 {
                return Err(fail("port 0 is not a port to connect to".into()));
            }
            Ok(Box::new(MllpSink::new(
                m.host.clone(),
                m.port,
                connect_timeout,
                ack_timeout,
            )))
        }
        SinkKind::Command(c) => {
            let timeout = duration("timeout", &c.timeout).map_err(fail)?;
            if c.permanent_exit_codes.contains(&0) {
                return Err(fail(
                    "permanent_exit_codes cannot list 0: exit 0 means accepted".into(),
                ));
            }
            let sink = CommandSink::new(
                c.program.clone(),
                c.args.clone(),
                timeout,
                c.permanent_exit_codes.clone(),
            )
            .map_err(|e| fail(e.to_string()))?;
            Ok(Box::new(sink))
        }
        SinkKind::Http(h) => Ok(Box::new(HttpSink::new(&name, h)?)),
        SinkKind::Soap(s) => Ok(Box::new(SoapSink::new(&name, s)?)),
    }
}

/// A duration key of a sink, non-zero.
fn duration(key: &str, value: &str) -> Result<std::time::Duration, String> {
    match crate::config::parse_duration(value) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(format!("{key} = {value:?} must be longer than zero")),
        None => Err(format!(
            "{key} = {value:?} is not a duration (write e.g. \"30s\", \"500ms\", \"2m\")"
        )),
    }
}

/// Build the configured sinks.
pub fn from_config(sinks: &[SinkConfig]) -> Result<Vec<Box<dyn Sink>>, SinkConfigError> {
    sinks.iter().map(build).collect()
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
            SinkOutcome::accepted("stub")
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
