//! direct-agent: a Direct Secure Messaging agent for HL7 v2 immunization traffic.
//!
//! # Layout
//! How a message flows through the modules:
//!
//! ```text
//! outgoing: payload --mime::build--> inner RFC 5322 --smime::sign--> multipart/signed
//!           --smime::encrypt (streamed BER, base64 lines)--> mime::build::outer_headers + body
//!           (orchestrated by message::seal; certificates checked by trust)
//! incoming: Direct message --smime::decrypt (ciphertext split off in place by smime::ber)-->
//!           multipart/signed --smime::verify--> signers
//!           --trust::validate (path, CRL, binding)--> mime::payload::extract --> payloads
//!           (orchestrated by message::open)
//! running:  SMTP in / IMAP --transport--> spool (fsync, then 250 / \Seen) --agent::inbound-->
//!           message::open --> hl7::validate --> sink::SinkSet (routing) --> sinks, else quarantine
//!           send --agent::outbound--> message::seal --> spool queue --transport::smtp_out--> MX/route
//! ```
//!
//! - [`address`]: `DirectAddress`, parsed once at the edge.
//! - [`clock`]: the `Clock` trait, so trust decisions run at a fixed time in tests.
//! - [`credential`]: our keys and certificates (PEM, PKCS#12).
//! - [`mime`]: building and reading the MIME layers byte-exactly; payload extraction.
//! - [`smime`]: CMS sign/verify/encrypt/decrypt through OpenSSL, and the algorithm policy.
//! - [`trust`]: key usage, key strength, validity, path to an anchor, CRLs, address binding.
//! - [`hl7`]: HL7 v2 ER7 payloads: the reader (messages, batches, located errors), MSH access,
//!   the ACK builder (MSA + ERR), connectivity-test messages, the validation profiles
//!   (`hl7::validate`: header and immunization rules, compiled-in code tables) and the onboarding
//!   review. No I/O.
//! - [`message`]: `seal` and `open`, the two verbs everything else is built on.
//! - [`mdn`]: notifications: what a message asks for, building MDNs, reading MDNs and DSNs.
//! - [`spool`]: the durable queue: received messages, outbound entries with their attempts,
//!   quarantine, duplicate keys, disabled credentials (SQLite, behind the `Spool` trait).
//! - [`transport`]: the network edges: inbound SMTP listener, outbound SMTP delivery (routes,
//!   MX), the IMAP edge poller.
//! - [`sink`]: where accepted payloads go (`Sink` trait; directory, MLLP, HTTP, SOAP and command
//!   sinks; routing by sender, recipient domain and message type).
//! - [`agent`]: the running agent: `serve` ties listeners, pollers and workers together; the
//!   inbound pipeline (spool → open → sinks | quarantine) and the outbound one (seal → queue →
//!   deliver).
//! - [`ops`]: `[http] listen`: `/healthz`, `/readyz` and Prometheus `/metrics` of `serve`.
//! - [`demo`]: `direct-agent demo`, the whole product on loopback with a throwaway PKI.
//! - [`cli`]: the `direct-agent` command line.
#![deny(unsafe_code)]

pub mod address;
pub mod agent;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credential;
pub mod demo;
pub mod discovery;
pub mod domain;
pub mod hl7;
pub mod mdn;
pub mod message;
pub mod mime;
pub mod ops;
pub mod sink;
pub mod smime;
pub mod spool;
pub mod store;
pub mod transport;
pub mod trust;
