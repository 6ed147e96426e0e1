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

/// The base64 engine for message bodies: the `base64` crate's SIMD engine (AVX2 or NEON when the
/// CPU has it, found once at run time, else the same scalar code as `general_purpose::STANDARD`),
/// standard alphabet with padding. Bodies are the bulk of what is encoded and decoded per message.
pub(crate) fn base64_engine() -> &'static base64::engine::Simd {
    static ENGINE: std::sync::OnceLock<base64::engine::Simd> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| base64::engine::Simd::standard(base64::engine::general_purpose::PAD))
}
