//! Sealing: payload -> inner RFC 5322 message -> message/rfc822 wrapper -> multipart/signed ->
//! EnvelopedData -> outer message with the copied headers (Applicability Statement §2).

use openssl::x509::X509;

use crate::address::DirectAddress;
use crate::clock::Clock;
use crate::credential::Credential;
use crate::mime::build::{self, COPIED_HEADERS, InnerMessage};
use crate::mime::entity::Entity;
use crate::smime::algorithms::{ContentCipher, Digest, KeyTransport};
use crate::smime::{self, SmimeError};
use crate::trust::{Purpose, TrustError, check_key_strength, check_key_usage, check_validity};

/// Choices for one sealed message; `Default` gives the Direct defaults.
#[derive(Clone, Debug)]
pub struct SealOptions {
    pub cipher: ContentCipher,
    pub digest: Digest,
    pub key_transport: KeyTransport,
    pub request_mdn: bool,
    /// `None`: HL7 v2 in Direct Context. `Some`: a plain attachment of this MIME type.
    pub content_type: Option<String>,
    pub filename: String,
    /// Must not carry PHI: it is visible to every relay's logs in many HISPs.
    pub subject: String,
    pub extra_headers: Vec<(String, String)>,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            cipher: ContentCipher::Aes128Cbc,
            digest: Digest::Sha256,
            key_transport: KeyTransport::RsaOaepSha256,
            request_mdn: false,
            content_type: None,
            filename: "message.hl7".into(),
            subject: "Direct message".into(),
            extra_headers: Vec::new(),
        }
    }
}

/// A sealed message ready for SMTP.
#[derive(Debug)]
pub struct Sealed {
    pub message: Vec<u8>,
    pub message_id: String,
}

/// Why a message could not be sealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Our own signing certificate is not fit to sign.
    #[error("our signing certificate cannot be used: {0}")]
    Signer(TrustError),
    /// A recipient certificate is not fit to encrypt to.
    #[error("recipient certificate cannot be used: {0}")]
    Recipient(TrustError),
    /// No recipients or no certificates.
    #[error("{0}")]
    Usage(String),
    /// OpenSSL failed.
    #[error(transparent)]
    Smime(#[from] SmimeError),
}

/// Seal `payload` from `from` to `to`, signed by `signer` and encrypted to `recipient_certs`.
pub fn seal(
    from: &DirectAddress,
    to: &[DirectAddress],
    payload: &[u8],
    signer: &Credential,
    recipient_certs: &[X509],
    opts: &SealOptions,
    clock: &dyn Clock,
) -> Result<Sealed, SealError> {
    if to.is_empty() {
        return Err(SealError::Usage(
            "at least one recipient address is needed".into(),
        ));
    }
    if recipient_certs.is_empty() {
        return Err(SealError::Usage(
            "no recipient certificate: give one for each recipient (--recipient-cert)".into(),
        ));
    }
    check_key_usage(&signer.cert, Purpose::Sign).map_err(SealError::Signer)?;
    check_key_strength(&signer.cert).map_err(SealError::Signer)?;
    check_validity(&signer.cert, clock).map_err(SealError::Signer)?;
    for cert in recipient_certs {
        check_key_usage(cert, Purpose::Encrypt).map_err(SealError::Recipient)?;
        check_key_strength(cert).map_err(SealError::Recipient)?;
        check_validity(cert, clock).map_err(SealError::Recipient)?;
    }
    let message_id = build::new_message_id(from.domain());
    let date = chrono::DateTime::<chrono::Utc>::from(clock.now()).to_rfc2822();
    // Built in place, one buffer for the whole signed entity: multipart/signed header, the
    // message/rfc822 wrapper, the inner message, then the signature part. The payload is not
    // copied again until encryption.
    let mut signed = Vec::new();
    let boundary = build::begin_multipart_signed(&mut signed, opts.digest.micalg());
    let content_start = signed.len();
    signed.extend_from_slice(build::RFC822_WRAPPER);
    let inner_start = signed.len();
    build::build_inner_into(
        &mut signed,
        &InnerMessage {
            from,
            to,
            subject: &opts.subject,
            payload,
            content_type: opts.content_type.as_deref(),
            filename: &opts.filename,
            request_mdn: opts.request_mdn,
            extra_headers: &opts.extra_headers,
        },
        &message_id,
        &date,
    );
    let copied: Vec<(String, String)> = {
        let inner = Entity::parse(&signed[inner_start..]);
        COPIED_HEADERS
            .iter()
            .filter_map(|h| inner.header(h).map(|v| (h.to_string(), v.to_string())))
            .collect()
    };
    let signature = smime::sign(&signed[content_start..], signer, opts.digest)?;
    build::finish_multipart_signed(&mut signed, &boundary, &signature);
    let cms = smime::encrypt(signed, recipient_certs, &opts.cipher, &opts.key_transport)?;
    let message = build::outer_message(&copied, &cms, opts.cipher.is_aead());
    Ok(Sealed {
        message,
        message_id,
    })
}
