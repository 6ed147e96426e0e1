//! S/MIME for Direct (RFC 5751 / Applicability Statement §2): sign, encrypt, decrypt and verify,
//! with OpenSSL's CMS as the engine and the Direct algorithm policy of [`algorithms`].

pub mod algorithms;
mod ber;
mod decrypt;
mod encrypt;
mod ffi;
mod sign;
pub(crate) mod verify;

pub use decrypt::{Decrypted, decrypt};
pub use encrypt::encrypt;
pub use sign::sign;
pub use verify::{SignerReport, Verified, verify};

pub(crate) use ffi::asn1_time_text;

/// Why an S/MIME operation failed. Each variant says what was wrong with which input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmimeError {
    /// The message is not encrypted the way Direct requires.
    #[error("{0}")]
    NotEncrypted(String),
    /// The CMS structure could not be read.
    #[error("the S/MIME {layer} could not be parsed: {detail}")]
    Malformed { layer: &'static str, detail: String },
    /// Encrypted with an algorithm Direct refuses.
    #[error(
        "content is encrypted with {0}, which Direct does not accept (AES-CBC or AES-GCM required)"
    )]
    WeakCipher(String),
    /// None of our keys can decrypt it.
    #[error(
        "not addressed to us: none of our {ours} certificate(s) matches a recipient of this message ({detail})"
    )]
    NotForUs { ours: usize, detail: String },
    /// A recipient matched but decryption failed: the message is corrupt or was tampered with.
    #[error(
        "decryption failed for our certificate {subject}: the message is corrupt or was altered ({detail})"
    )]
    DecryptFailed { subject: String, detail: String },
    /// No signature layer.
    #[error("{0}")]
    Unsigned(String),
    /// OpenSSL failed while building a message.
    #[error("S/MIME {operation} failed: {detail}")]
    Build {
        operation: &'static str,
        detail: String,
    },
}
