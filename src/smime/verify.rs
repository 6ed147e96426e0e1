//! Signature verification: multipart/signed (detached) or signed-data (opaque), every SignerInfo
//! checked on its own. Trust in the signers is decided by the caller.

use std::borrow::Cow;

use base64::Engine;
use openssl::cms::CmsContentInfo;
use openssl::nid::Nid;
use openssl::x509::X509;

use super::algorithms::Digest;
use super::{SmimeError, ffi};
use crate::mime::entity::{Entity, canonical_crlf, multipart_parts};
use crate::trust::{describe, fingerprint};

/// One signer as found in the message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignerReport {
    pub subject: Option<String>,
    pub fingerprint_sha256: Option<String>,
    pub digest: Digest,
    /// Signature and message digest verified (says nothing yet about trust).
    pub signature_valid: bool,
    /// Why the signature did not verify, when it did not.
    pub failure: Option<String>,
    #[serde(skip)]
    pub cert: Option<X509>,
}

/// A verified signature layer.
#[derive(Debug)]
pub struct Verified {
    /// The signed entity (canonical form).
    pub content: Vec<u8>,
    pub signers: Vec<SignerReport>,
    /// All certificates the signature carried (for path building).
    pub certs: Vec<X509>,
    /// `true` for detached multipart/signed, `false` for opaque signed-data.
    pub detached: bool,
}

/// Decode base64 that may be wrapped in lines.
pub(crate) fn decode_base64(body: &[u8], what: &'static str) -> Result<Vec<u8>, SmimeError> {
    // Decoded in 4 KiB runs of non-space characters, so a large body is not copied whole first.
    const RUN: usize = 4096; // decoded in whole quads; what is left waits for the next line
    let engine = &base64::engine::general_purpose::STANDARD;
    let bad = |e: base64::DecodeError| SmimeError::Malformed {
        layer: what,
        detail: format!("base64 is invalid or truncated: {e}"),
    };
    let mut out = Vec::with_capacity(body.len() / 4 * 3);
    let mut run: Vec<u8> = Vec::with_capacity(RUN + 128);
    // Whole lines are copied at once; only a line with inner white space is filtered byte by byte.
    for line in body.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.iter().any(|b| b.is_ascii_whitespace()) {
            run.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
        } else {
            run.extend_from_slice(line);
        }
        if run.len() >= RUN {
            let whole = run.len() / 4 * 4;
            engine.decode_vec(&run[..whole], &mut out).map_err(bad)?;
            run.drain(..whole);
        }
    }
    engine.decode_vec(&run, &mut out).map_err(bad)?;
    Ok(out)
}

/// Verify the signature layer of a decrypted entity. Takes the buffer so that the signed content
/// can be returned without another copy of it.
pub fn verify(entity_bytes: Vec<u8>) -> Result<Verified, SmimeError> {
    let entity = Entity::parse(&entity_bytes);
    let ct = entity.content_type();
    if ct.is("multipart/signed") {
        let boundary = ct.param("boundary").ok_or_else(|| SmimeError::Malformed {
            layer: "multipart/signed",
            detail: "no boundary parameter".into(),
        })?;
        let parts = multipart_parts(entity.body, boundary)
            .filter(|p| p.len() >= 2)
            .ok_or_else(|| SmimeError::Malformed {
                layer: "multipart/signed",
                detail: "it does not hold a content part and a signature part".into(),
            })?;
        let content = canonical_crlf(parts[0]);
        let sig_entity = Entity::parse(parts[1]);
        let sig_type = sig_entity.content_type();
        if !(sig_type.is("application/pkcs7-signature")
            || sig_type.is("application/x-pkcs7-signature"))
        {
            return Err(SmimeError::Unsigned(format!(
                "the second part of multipart/signed is {}, not application/pkcs7-signature",
                sig_type.mime
            )));
        }
        let der = decode_base64(sig_entity.body, "signature (application/pkcs7-signature)")?;
        let cms = parse_signed(&der)?;
        let checked =
            ffi::verify_signers(&cms, Some(&content)).map_err(|e| SmimeError::Malformed {
                layer: "signature",
                detail: e.to_string(),
            })?;
        let content = match content {
            Cow::Owned(c) => c,
            // Already canonical: cut the content out of the buffer in place.
            Cow::Borrowed(part) => {
                let start = part.as_ptr() as usize - entity_bytes.as_ptr() as usize;
                let end = start + part.len();
                let mut bytes = entity_bytes;
                bytes.truncate(end);
                bytes.drain(..start);
                bytes
            }
        };
        return Ok(finish(checked, true, Some(content)));
    }
    let is_pkcs7 = ct.is("application/pkcs7-mime") || ct.is("application/x-pkcs7-mime");
    if is_pkcs7
        && ct
            .param("smime-type")
            .is_none_or(|t| t.eq_ignore_ascii_case("signed-data"))
    {
        let der = decode_base64(entity.body, "signed-data (application/pkcs7-mime)")?;
        let cms = parse_signed(&der)?;
        let checked = ffi::verify_signers(&cms, None).map_err(|e| SmimeError::Malformed {
            layer: "signed-data",
            detail: e.to_string(),
        })?;
        return Ok(finish(checked, false, None));
    }
    Err(SmimeError::Unsigned(format!(
        "the decrypted content is {} with no signature: Direct messages must be signed",
        ct.mime
    )))
}

fn parse_signed(der: &[u8]) -> Result<CmsContentInfo, SmimeError> {
    let cms = CmsContentInfo::from_der(der).map_err(|e| SmimeError::Malformed {
        layer: "signature",
        detail: e.to_string(),
    })?;
    if ffi::content_type(&cms) != Nid::PKCS7_SIGNED {
        return Err(SmimeError::Unsigned(
            "the signature part does not hold CMS SignedData".into(),
        ));
    }
    Ok(cms)
}

fn finish(checked: ffi::SignedContent, detached: bool, content: Option<Vec<u8>>) -> Verified {
    let signers = checked
        .signers
        .into_iter()
        .map(|s| SignerReport {
            subject: s.cert.as_ref().map(|c| describe(c)),
            fingerprint_sha256: s.cert.as_ref().map(|c| fingerprint(c)),
            digest: s
                .digest_alg
                .as_deref()
                .map_or(Digest::Unknown, Digest::from_algorithm_der),
            signature_valid: s.signature_valid,
            failure: s.failure,
            cert: s.cert,
        })
        .collect();
    Verified {
        content: content.unwrap_or(checked.content),
        signers,
        certs: checked.certs,
        detached,
    }
}
