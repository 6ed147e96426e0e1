//! MIME for Direct: building the inner RFC 5322 message and the S/MIME layers around it
//! ([`build`]), reading entities and multipart/signed byte-exactly ([`entity`]), and finding the
//! payloads in a received message ([`payload`]).
//!
//! Why our own entity code rather than a MIME library for the S/MIME layers: a signature covers
//! the exact bytes of the first part of multipart/signed, so building and splitting must be
//! byte-exact and canonical (CRLF). Decoding the inner message's parts (transfer encodings,
//! RFC 2231 names, nesting) is left to `mail-parser`.

pub mod build;
pub mod entity;
pub mod payload;
