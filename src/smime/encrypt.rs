//! Encryption: an EnvelopedData (AuthEnvelopedData for AES-GCM) to every recipient certificate.

use openssl::x509::X509;

use super::SmimeError;
use super::algorithms::{ContentCipher, Digest, KeyTransport};
use super::ffi::{self, RsaTransport};

/// Encrypt `entity` to `recipients`, appending the CMS (streamed BER) to `out` as CRLF base64
/// lines: `out` is typically the outer message's header block.
pub fn encrypt(
    entity: &[u8],
    recipients: &[X509],
    cipher: &ContentCipher,
    transport: &KeyTransport,
    out: Vec<u8>,
) -> Result<Vec<u8>, SmimeError> {
    let build = |detail: String| SmimeError::Build {
        operation: "encryption",
        detail,
    };
    let c = cipher
        .openssl()
        .ok_or_else(|| build(format!("{cipher} cannot be used to send")))?;
    let t = match transport {
        KeyTransport::RsaPkcs1 => RsaTransport::Pkcs1,
        KeyTransport::RsaOaepSha1 => RsaTransport::Oaep(Digest::Sha1.message_digest()),
        KeyTransport::RsaOaepSha256 => RsaTransport::Oaep(Digest::Sha256.message_digest()),
        other => return Err(build(format!("{other} cannot be used to send"))),
    };
    if recipients.is_empty() {
        return Err(build("no recipient certificates".into()));
    }
    ffi::encrypt_to_base64(entity, recipients, c, t, out).map_err(|e| build(e.to_string()))
}
