//! Sealing: payload -> inner RFC 5322 message -> message/rfc822 wrapper -> multipart/signed ->
//! EnvelopedData -> outer message with the copied headers (Applicability Statement §2).

use openssl::x509::X509;

use crate::address::{DirectAddress, parse_list};
use crate::clock::Clock;
use crate::credential::Credential;
use crate::mime::build::{self, COPIED_HEADERS, InnerMessage};
use crate::mime::entity::{Entity, canonical_crlf};
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
    seal_payload(from, to, payload, signer, recipient_certs, opts, clock)
}

/// [`seal()`], taking the payload: it is freed as soon as it is encoded into the signed entity,
/// so a large payload is not held beside the finished message. For callers done with it, such
/// as `message seal` reading a file.
pub fn seal_owned(
    from: &DirectAddress,
    to: &[DirectAddress],
    payload: Vec<u8>,
    signer: &Credential,
    recipient_certs: &[X509],
    opts: &SealOptions,
    clock: &dyn Clock,
) -> Result<Sealed, SealError> {
    seal_payload(from, to, payload, signer, recipient_certs, opts, clock)
}

fn seal_payload(
    from: &DirectAddress,
    to: &[DirectAddress],
    payload: impl AsRef<[u8]>,
    signer: &Credential,
    recipient_certs: &[X509],
    opts: &SealOptions,
    clock: &dyn Clock,
) -> Result<Sealed, SealError> {
    check_parties(to, signer, recipient_certs, clock)?;
    let message_id = build::new_message_id(from.domain());
    let date = chrono::DateTime::<chrono::Utc>::from(clock.now()).to_rfc2822();
    let id = message_id.as_str();
    // The closure owns the payload (when given one), so it is dropped once the inner message is
    // written, before signing and encryption.
    let message = sign_and_encrypt(signer, recipient_certs, opts, move |out| {
        build::build_inner_into(
            out,
            &InnerMessage {
                from,
                to,
                subject: &opts.subject,
                payload: payload.as_ref(),
                content_type: opts.content_type.as_deref(),
                filename: &opts.filename,
                request_mdn: opts.request_mdn,
                extra_headers: &opts.extra_headers,
            },
            id,
            &date,
        )
    })?;
    Ok(Sealed {
        message,
        message_id,
    })
}

/// Seal a ready-made inner RFC 5322 message (headers and body, CRLF; bare LF is converted), such
/// as an MDN from [`crate::mdn::build::build_mdn`]: it is wrapped as message/rfc822, signed,
/// encrypted, and the outer message gets the headers copied from it. [`Sealed::message_id`] is
/// the inner message's Message-ID.
///
/// Only the algorithm choices of `opts` apply (cipher, digest, key transport); subject, payload
/// type, MDN request and extra headers are the inner message's own business. The inner message
/// must have a Message-ID, its From must be `from`, and every address of `to` must be among its
/// To/Cc/Bcc (otherwise the receiver would refuse it as header tampering).
pub fn seal_inner(
    from: &DirectAddress,
    to: &[DirectAddress],
    inner: &[u8],
    signer: &Credential,
    recipient_certs: &[X509],
    opts: &SealOptions,
    clock: &dyn Clock,
) -> Result<Sealed, SealError> {
    check_parties(to, signer, recipient_certs, clock)?;
    let inner = canonical_crlf(inner);
    let message_id = {
        let entity = Entity::parse(&inner);
        if entity.headers().is_empty() {
            return Err(SealError::Usage(
                "the inner message has no RFC 5322 header block".into(),
            ));
        }
        let message_id = entity
            .header("Message-ID")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SealError::Usage("the inner message has no Message-ID header".into()))?
            .to_string();
        let inner_from = entity.header("From").unwrap_or("");
        if !DirectAddress::parse(inner_from).is_ok_and(|a| &a == from) {
            return Err(SealError::Usage(format!(
                "the inner message's From '{inner_from}' is not the sender {from}"
            )));
        }
        let listed: Vec<DirectAddress> = ["To", "Cc", "Bcc"]
            .iter()
            .filter_map(|h| entity.header(h))
            .flat_map(parse_list)
            .filter_map(Result::ok)
            .collect();
        if let Some(missing) = to.iter().find(|t| !listed.contains(t)) {
            return Err(SealError::Usage(format!(
                "{missing} is not among the inner message's To/Cc/Bcc recipients; the receiver would refuse it as header tampering"
            )));
        }
        message_id
    };
    let message = sign_and_encrypt(signer, recipient_certs, opts, |out| {
        out.extend_from_slice(&inner)
    })?;
    Ok(Sealed {
        message,
        message_id,
    })
}

/// Recipients present, and our signing certificate and every recipient certificate fit for use.
fn check_parties(
    to: &[DirectAddress],
    signer: &Credential,
    recipient_certs: &[X509],
    clock: &dyn Clock,
) -> Result<(), SealError> {
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
    Ok(())
}

/// The layers around an inner message that `write_inner` appends: message/rfc822 wrapper,
/// multipart/signed, EnvelopedData, and the outer message with the copied headers.
fn sign_and_encrypt(
    signer: &Credential,
    recipient_certs: &[X509],
    opts: &SealOptions,
    write_inner: impl FnOnce(&mut Vec<u8>),
) -> Result<Vec<u8>, SealError> {
    // Built in place, one buffer for the whole signed entity: multipart/signed header, the
    // message/rfc822 wrapper, the inner message, then the signature part. The payload is not
    // copied again until encryption.
    let mut signed = Vec::new();
    let boundary = build::begin_multipart_signed(&mut signed, opts.digest.micalg());
    let content_start = signed.len();
    signed.extend_from_slice(build::RFC822_WRAPPER);
    let inner_start = signed.len();
    write_inner(&mut signed);
    let copied: Vec<(String, String)> = {
        let inner = Entity::parse(&signed[inner_start..]);
        COPIED_HEADERS
            .iter()
            .filter_map(|h| inner.header(h).map(|v| (h.to_string(), v.to_string())))
            .collect()
    };
    let signature = smime::sign(&signed[content_start..], signer, opts.digest)?;
    build::finish_multipart_signed(&mut signed, &boundary, &signature);
    // The outer message is the header block, then OpenSSL's streamed output as base64 lines,
    // written straight into it: no DER copy of the ciphertext is ever held.
    let mut outer = build::outer_headers(&copied, opts.cipher.is_aead());
    let estimate = signed.len() + signed.len() / 200 + 1024 + 1024 * recipient_certs.len();
    outer.reserve_exact(build::base64_lines_len(estimate));
    let message = smime::encrypt(
        &signed,
        recipient_certs,
        &opts.cipher,
        &opts.key_transport,
        outer,
    )?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::clock::FixedClock;
    use crate::credential::load_certificates;
    use crate::mdn::{self, Disposition, DispositionKind, MdnRequest, Report};
    use crate::message::{Envelope, OpenInputs, open};
    use crate::trust::TrustInputs;

    fn cert(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("certs")
            .join(name)
    }

    fn addr(s: &str) -> DirectAddress {
        DirectAddress::parse(s).unwrap()
    }

    fn clock() -> FixedClock {
        FixedClock::at_unix(1_767_225_600) // 2026-01-01
    }

    fn iis() -> Credential {
        Credential::load(
            &cert("iis@hisp-b.example.key"),
            Some(&cert("iis@hisp-b.example.fullchain.pem")),
            None,
        )
        .unwrap()
    }

    fn processed_mdn() -> mdn::BuiltMdn {
        mdn::build_mdn(
            &MdnRequest {
                original_message_id: "<vxu-1@hisp-a.example>".into(),
                original_sender: addr("ehr@hisp-a.example"),
                final_recipient: addr("iis@hisp-b.example"),
                original_recipient: None,
                final_destination_requested: false,
            },
            &Disposition::Processed,
            "mx.hisp-b.example",
            &clock(),
        )
    }

    #[test]
    fn sealed_inner_message_opens_with_its_own_message_id() {
        let built = processed_mdn();
        let recipient_certs = load_certificates(&cert("ehr@hisp-a.example.pem")).unwrap();
        let sealed = seal_inner(
            &addr("iis@hisp-b.example"),
            &[addr("ehr@hisp-a.example")],
            &built.inner,
            &iis(),
            &recipient_certs,
            &SealOptions::default(),
            &clock(),
        )
        .unwrap();
        assert_eq!(sealed.message_id, built.message_id);
        let outer = Entity::parse(&sealed.message);
        assert_eq!(outer.header("Message-ID"), Some(built.message_id.as_str()));
        assert_eq!(outer.header("In-Reply-To"), Some("<vxu-1@hisp-a.example>"));
        assert_eq!(outer.header("Subject"), None, "Subject is not copied");

        let ours = [Credential::load(
            &cert("ehr@hisp-a.example.key"),
            Some(&cert("ehr@hisp-a.example.pem")),
            None,
        )
        .unwrap()];
        let anchors = load_certificates(&cert("root-b.pem")).unwrap();
        let c = clock();
        let report = open(
            &sealed.message,
            &OpenInputs {
                ours: &ours,
                trust: TrustInputs::offline(&anchors, &c),
                envelope: Envelope {
                    mail_from: Some(addr("iis@hisp-b.example")),
                    rcpt_to: vec![addr("ehr@hisp-a.example")],
                },
                cache: None,
            },
        )
        .unwrap();
        assert!(report.wrapped);
        assert_eq!(
            report.message_id.as_deref(),
            Some(built.message_id.as_str())
        );
        assert_eq!(
            report.inner, built.inner,
            "the inner message arrives byte for byte"
        );
        let Ok(Report::Mdn(r)) = mdn::parse_report(&report.inner) else {
            panic!("the opened inner message is not an MDN");
        };
        assert_eq!(r.disposition.kind, DispositionKind::Processed);
    }

    #[test]
    fn seal_inner_refuses_inner_messages_that_would_not_open() {
        let built = processed_mdn();
        let text = String::from_utf8(built.inner.clone()).unwrap();
        let recipient_certs = load_certificates(&cert("ehr@hisp-a.example.pem")).unwrap();
        let try_seal = |from: &str, to: &str, inner: &[u8]| {
            seal_inner(
                &addr(from),
                &[addr(to)],
                inner,
                &iis(),
                &recipient_certs,
                &SealOptions::default(),
                &clock(),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        let e = try_seal("lab@hisp-b.example", "ehr@hisp-a.example", &built.inner);
        assert!(
            e.contains("From") && e.contains("lab@hisp-b.example"),
            "{e}"
        );
        let e = try_seal("iis@hisp-b.example", "other@hisp-a.example", &built.inner);
        assert!(
            e.contains("other@hisp-a.example") && e.contains("tampering"),
            "{e}"
        );
        let no_id = text.replace(&format!("Message-ID: {}\r\n", built.message_id), "");
        let e = try_seal("iis@hisp-b.example", "ehr@hisp-a.example", no_id.as_bytes());
        assert!(e.contains("no Message-ID"), "{e}");
        let e = try_seal(
            "iis@hisp-b.example",
            "ehr@hisp-a.example",
            b"\x00\x01 not a message",
        );
        assert!(e.contains("header block"), "{e}");
    }
}
