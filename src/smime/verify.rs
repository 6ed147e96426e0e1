//! Signature verification: multipart/signed (detached) or signed-data (opaque), every SignerInfo
//! checked on its own. Trust in the signers is decided by the caller.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use openssl::cms::CmsContentInfo;
use openssl::nid::Nid;
use openssl::x509::X509;

use super::algorithms::Digest;
use super::{SmimeError, ber, ffi};
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
    // The usual body (lines ending CRLF or LF, nothing else between the characters): drop the
    // line ends with memchr and decode in one call. Anything else, or a body too large to copy
    // once more, takes the general path, which also gives the error.
    const FAST_LIMIT: usize = 1 << 20;
    if body.len() <= FAST_LIMIT {
        let mut compact = Vec::with_capacity(body.len());
        let mut rest = body;
        while let Some(i) = memchr::memchr2(b'\r', b'\n', rest) {
            compact.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
        }
        compact.extend_from_slice(rest);
        if let Ok(decoded) = crate::mime::base64_engine().decode(&compact) {
            return Ok(decoded);
        }
    }
    decode_base64_lines(body, what)
}

/// [`decode_base64`] for any white space between the characters, in 4 KiB runs.
fn decode_base64_lines(body: &[u8], what: &'static str) -> Result<Vec<u8>, SmimeError> {
    // Decoded in 4 KiB runs of non-space characters, so a large body is not copied whole first.
    const RUN: usize = 4096; // decoded in whole quads; what is left waits for the next line
    let engine = crate::mime::base64_engine();
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

/// Decode the base64 at `buf[start..]` into the front of `buf` itself, then cut `buf` to the
/// decoded bytes (and give the rest back to the allocator): a 37 MB message body becomes its
/// 27 MB DER without a second buffer. Same rules and errors as [`decode_base64`].
pub(crate) fn decode_base64_in_place(
    buf: &mut Vec<u8>,
    start: usize,
    what: &'static str,
) -> Result<(), SmimeError> {
    const RUN: usize = 4096;
    let engine = crate::mime::base64_engine();
    let bad = |e: base64::DecodeSliceError| SmimeError::Malformed {
        layer: what,
        detail: format!("base64 is invalid or truncated: {e}"),
    };
    // Whole lines are copied into the run at once (only a line with inner white space is
    // filtered byte by byte), and whole quads are decoded straight into the front of `buf`.
    // `write` never overtakes what is still to be read: the bytes decoded so far are 3/4 of
    // the characters already copied out of `buf[start..read]`.
    let mut run: Vec<u8> = Vec::with_capacity(RUN + 128);
    let mut write = 0;
    let mut read = start.min(buf.len());
    while read < buf.len() {
        let end = memchr::memchr(b'\n', &buf[read..]).map_or(buf.len(), |i| read + i);
        let line = buf[read..end].trim_ascii();
        if line.iter().any(|b| b.is_ascii_whitespace()) {
            run.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
        } else {
            run.extend_from_slice(line);
        }
        read = end + 1;
        if run.len() >= RUN {
            let whole = run.len() / 4 * 4;
            write += engine
                .decode_slice(&run[..whole], &mut buf[write..])
                .map_err(bad)?;
            run.drain(..whole);
        }
    }
    write += engine.decode_slice(&run, &mut buf[write..]).map_err(bad)?;
    buf.truncate(write);
    buf.shrink_to_fit();
    Ok(())
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
        let (cms, certs) = parse_signed(&der)?;
        let checked = ffi::verify_signers(&cms, Some(&content), certs.as_deref()).map_err(|e| {
            SmimeError::Malformed {
                layer: "signature",
                detail: e.to_string(),
            }
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
        let (cms, certs) = parse_signed(&der)?;
        let checked = ffi::verify_signers(&cms, None, certs.as_deref()).map_err(|e| {
            SmimeError::Malformed {
                layer: "signed-data",
                detail: e.to_string(),
            }
        })?;
        return Ok(finish(checked, false, None));
    }
    Err(SmimeError::Unsigned(format!(
        "the decrypted content is {} with no signature: Direct messages must be signed",
        ct.mime
    )))
}

/// Parse a SignedData. Its certificates are taken out first and come from [`known_certificate`]
/// (a partner's certificates are the same bytes in every message), unless the structure is one the
/// walk leaves whole; the second value is then `None` and OpenSSL decodes them itself.
fn parse_signed(der: &[u8]) -> Result<(CmsContentInfo, Option<Vec<X509>>), SmimeError> {
    let split = ber::detach_certificates(der).and_then(|w| {
        let certs: Option<Vec<X509>> = w
            .certificates
            .iter()
            .map(|r| known_certificate(&der[r.clone()]))
            .collect();
        certs.map(|c| (w.header, c))
    });
    let (parsed, certs): (&[u8], _) = match &split {
        Some((header, certs)) => (header, Some(certs.clone())),
        None => (der, None),
    };
    let cms = CmsContentInfo::from_der(parsed).map_err(|e| SmimeError::Malformed {
        layer: "signature",
        detail: e.to_string(),
    })?;
    if ffi::content_type(&cms) != Nid::PKCS7_SIGNED {
        return Err(SmimeError::Unsigned(
            "the signature part does not hold CMS SignedData".into(),
        ));
    }
    Ok((cms, certs))
}

/// How many distinct certificates [`known_certificate`] keeps; past that it starts over.
const KNOWN_CERTIFICATES: usize = 1024;

/// The certificate encoded by `der`, parsed once per distinct encoding. Identical bytes are the
/// identical certificate, so reuse changes nothing but the cost; `None` if it does not parse.
fn known_certificate(der: &[u8]) -> Option<X509> {
    static KNOWN: OnceLock<Mutex<HashMap<Vec<u8>, X509>>> = OnceLock::new();
    let known = KNOWN.get_or_init(Mutex::default);
    if let Some(c) = known.lock().ok()?.get(der) {
        return Some(c.clone());
    }
    let cert = X509::from_der(der).ok()?;
    let mut map = known.lock().ok()?;
    if map.len() >= KNOWN_CERTIFICATES {
        map.clear();
    }
    map.insert(der.to_vec(), cert.clone());
    Some(cert)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// In-place decoding gives exactly what the copying decoder gives, for every wrapping and
    /// white space a peer may use, and the same refusal for bad input.
    #[test]
    fn in_place_decoding_matches_the_copying_decoder() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let plain = base64::engine::general_purpose::STANDARD.encode(&data);
        let wrap = |width: usize, eol: &str| -> String {
            plain
                .as_bytes()
                .chunks(width)
                .map(|c| format!("{}{eol}", std::str::from_utf8(c).unwrap()))
                .collect()
        };
        let mut spaced = wrap(64, "\n");
        spaced.insert_str(100, "  \t ");
        let bodies = [
            plain.clone(),
            wrap(76, "\r\n"),
            wrap(64, "\n"),
            wrap(5000, "\r\n"),
            spaced,
            format!("\r\n\r\n{}\r\n\r\n", wrap(76, "\r\n")),
        ];
        for body in &bodies {
            let head = b"Content-Type: application/pkcs7-mime\r\n\r\n";
            let mut buf = head.to_vec();
            buf.extend_from_slice(body.as_bytes());
            decode_base64_in_place(&mut buf, head.len(), "test").unwrap();
            assert_eq!(buf, data);
            assert_eq!(decode_base64(body.as_bytes(), "test").unwrap(), data);
            assert_eq!(decode_base64_lines(body.as_bytes(), "test").unwrap(), data);
        }
        for bad in ["QUJD!", "QUJDRA=", "QQ==QQ==", "QQ==\r\nQQ==\r\n", "Q"] {
            let mut buf = bad.as_bytes().to_vec();
            assert!(
                decode_base64_in_place(&mut buf, 0, "test").is_err(),
                "{bad}"
            );
            assert!(decode_base64(bad.as_bytes(), "test").is_err(), "{bad}");
            assert!(
                decode_base64_lines(bad.as_bytes(), "test").is_err(),
                "{bad}"
            );
        }
        let mut empty = b"headers\r\n\r\n".to_vec();
        decode_base64_in_place(&mut empty, 11, "test").unwrap();
        assert!(empty.is_empty());
    }

    use foreign_types::ForeignType;

    fn credential(stem: &str) -> crate::credential::Credential {
        let path = |name: String| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("certs")
                .join(name)
        };
        crate::credential::Credential::load(
            &path(format!("{stem}.key")),
            Some(&path(format!("{stem}.fullchain.pem"))),
            None,
        )
        .unwrap()
    }

    /// Our signatures carry the signer and its intermediate; they are taken out before OpenSSL
    /// parses the rest, found again (the same objects on the second message), and the signer
    /// is matched among them. A certificate swapped for another leaves the signer unmatched.
    #[test]
    fn certificates_come_from_the_known_set_and_still_bind_the_signer() {
        let ehr = credential("ehr@hisp-a.example");
        let content = b"Content-Type: text/plain\r\n\r\nhello\r\n";
        let der = super::super::sign(content, &ehr, Digest::Sha256).unwrap();
        let w = ber::detach_certificates(&der).expect("our SignedData splits");
        assert_eq!(w.certificates.len(), 1 + ehr.chain.len());

        let (cms, certs) = parse_signed(&der).unwrap();
        let certs = certs.expect("certificates supplied from the known set");
        let ehr_der = ehr.cert.to_der().unwrap();
        assert!(certs.iter().any(|c| c.to_der().unwrap() == ehr_der));
        let checked = ffi::verify_signers(&cms, Some(content), Some(&certs)).unwrap();
        assert_eq!(checked.signers.len(), 1);
        assert!(
            checked.signers[0].signature_valid,
            "{:?}",
            checked.signers[0].failure
        );
        assert_eq!(checked.certs.len(), certs.len());
        // A second message reuses the parsed certificates.
        let (_, again) = parse_signed(&der).unwrap();
        assert_eq!(
            again.unwrap()[0].as_ptr(),
            certs[0].as_ptr(),
            "parsed again instead of reused"
        );
        // The altered content still fails.
        let checked = ffi::verify_signers(&cms, Some(b"other"), Some(&certs)).unwrap();
        assert!(!checked.signers[0].signature_valid);

        // Someone else's certificate in place of the signer's: no signer certificate is found.
        let iis = credential("iis@hisp-b.example");
        let (cms, _) = parse_signed(&der).unwrap();
        let wrong = vec![iis.cert.clone()];
        let checked = ffi::verify_signers(&cms, Some(content), Some(&wrong)).unwrap();
        assert!(!checked.signers[0].signature_valid);
        assert!(checked.signers[0].cert.is_none());
    }
}
