//! direct-agent: a Direct Secure Messaging agent for HL7 v2 immunization traffic.
//!
//! # Layout
//! How a message flows through the modules:
//!
//! ```text
//! outgoing: payload --mime::build--> inner RFC 5322 --smime::sign--> multipart/signed
//!           --smime::encrypt--> EnvelopedData --mime::build::outer_message--> Direct message
//!           (orchestrated by message::seal; certificates checked by trust)
//! incoming: Direct message --smime::decrypt--> multipart/signed --smime::verify--> signers
//!           --trust::validate (path, CRL, binding)--> mime::payload::extract --> payloads
//!           (orchestrated by message::open)
//! ```
//!
//! - [`address`]: `DirectAddress`, parsed once at the edge.
//! - [`clock`]: the `Clock` trait, so trust decisions run at a fixed time in tests.
//! - [`credential`]: our keys and certificates (PEM, PKCS#12).
//! - [`mime`]: building and reading the MIME layers byte-exactly; payload extraction.
//! - [`smime`]: CMS sign/verify/encrypt/decrypt through OpenSSL, and the algorithm policy.
//! - [`trust`]: key usage, key strength, validity, path to an anchor, CRLs, address binding.
//! - [`message`]: `seal` and `open`, the two verbs everything else is built on.
//! - [`cli`]: the `direct-agent` command line.
#![deny(unsafe_code)]

pub mod address;
pub mod agent;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credential;
pub mod discovery;
pub mod domain;
pub mod message;
pub mod mime;
pub mod sink;
pub mod smime;
pub mod spool;
pub mod store;
pub mod transport;
pub mod trust;
