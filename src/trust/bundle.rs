//! Trust bundles: reading the certificates out of a bundle (certs-only PKCS#7 in DER or PEM, a
//! PEM file of certificates, or a CMS SignedData wrapping either, signed by a pinned signer),
//! and loading a bundle's bytes from a file or a URL.
//!
//! The signature rule is strict both ways: a bundle whose subscription pins a signer must be
//! signed by exactly that certificate, and a signed bundle is refused when no signer is pinned
//! (its signature would otherwise prove nothing).

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::hash::{MessageDigest, hash};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::X509;

use super::describe;
use super::fetch::Fetcher;

/// Why a bundle could not be used. Each message says what was wrong with which input.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleError {
    /// The bundle's bytes could not be had (file or HTTP).
    #[error("cannot load the bundle {location}: {reason}")]
    Load { location: String, reason: String },
    /// Neither PKCS#7/CMS nor PEM certificates.
    #[error(
        "not a trust bundle: {detail} (expected certs-only PKCS#7 in DER or PEM, PEM certificates, or CMS SignedData)"
    )]
    Malformed { detail: String },
    /// Parsed, but holds no certificate.
    #[error(
        "the bundle holds no certificates; refusing it rather than removing every anchor it provided"
    )]
    Empty,
    /// A signer is pinned but the bundle carries no signature.
    #[error(
        "the bundle is not signed, but its subscription pins the signer {pinned}; refusing an unsigned bundle"
    )]
    Unsigned { pinned: String },
    /// The bundle is signed but no signer is pinned to check it against.
    #[error(
        "the bundle is CMS-signed (by {signer}); pin the signer's certificate with --signer CERT to accept it"
    )]
    SignerNotPinned { signer: String },
    /// Signed by someone other than the pinned signer.
    #[error("the bundle is signed by {found}, not by the pinned signer {pinned}")]
    WrongSigner { pinned: String, found: String },
    /// The signature does not verify (content altered, or a corrupt signature).
    #[error(
        "the bundle's signature by {pinned} does not verify ({detail}); the bundle was altered or corrupted"
    )]
    BadSignature { pinned: String, detail: String },
}

impl BundleError {
    /// Whether trying again later can help (fetch failures can; a bad bundle will not change by
    /// itself, though its publisher may fix it).
    pub fn is_transient(&self) -> bool {
        matches!(self, BundleError::Load { .. })
    }
}

/// SHA-256 of `bytes`, lower-case hex without separators (bundle checksums).
pub fn sha256_hex(bytes: &[u8]) -> String {
    match hash(MessageDigest::sha256(), bytes) {
        Ok(d) => hex::encode(d),
        // Hashing in memory only fails if OpenSSL lacks SHA-256; fall back to a value that never
        // matches a real checksum, so the bundle is re-parsed rather than skipped.
        Err(_) => String::new(),
    }
}

/// Read a bundle's bytes: `http://` and `https://` through `fetcher`, anything else (optionally
/// `file://`) from the file system.
pub fn load_bundle(location: &str, fetcher: &dyn Fetcher) -> Result<Vec<u8>, BundleError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return fetcher.fetch(location).map_err(|e| BundleError::Load {
            location: location.to_string(),
            reason: e.reason,
        });
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    std::fs::read(path).map_err(|e| BundleError::Load {
        location: location.to_string(),
        reason: e.to_string(),
    })
}

/// The certificates of a bundle. `signer`: the pinned signer of a CMS-signed bundle; when given,
/// the bundle must be signed by exactly that certificate, and when absent a signed bundle is
/// refused.
pub fn parse_bundle(bytes: &[u8], signer: Option<&X509>) -> Result<Vec<X509>, BundleError> {
    let der = match pem_label(bytes) {
        Some(label) if label == "CERTIFICATE" || label == "TRUSTED CERTIFICATE" => {
            let certs = X509::stack_from_pem(bytes).map_err(|e| BundleError::Malformed {
                detail: format!("PEM certificates that OpenSSL cannot read: {}", first(&e)),
            })?;
            return unsigned(certs, signer);
        }
        Some(label) if label == "PKCS7" => Pkcs7::from_pem(bytes)
            .and_then(|p| p.to_der())
            .map_err(|e| BundleError::Malformed {
                detail: format!("PEM PKCS7 that OpenSSL cannot read: {}", first(&e)),
            })?,
        Some(label) if label == "CMS" => CmsContentInfo::from_pem(bytes)
            .and_then(|c| c.to_der())
            .map_err(|e| BundleError::Malformed {
            detail: format!("PEM CMS that OpenSSL cannot read: {}", first(&e)),
        })?,
        Some(label) => {
            return Err(BundleError::Malformed {
                detail: format!("a PEM {label} block"),
            });
        }
        None => bytes.to_vec(),
    };
    let p7 = match Pkcs7::from_der(&der) {
        Ok(p) => p,
        Err(_) => {
            // A single DER certificate is a (small) bundle too.
            if let Ok(cert) = X509::from_der(&der) {
                return unsigned(vec![cert], signer);
            }
            return Err(BundleError::Malformed {
                detail: format!(
                    "{} bytes that are neither DER PKCS#7/CMS nor a certificate",
                    bytes.len()
                ),
            });
        }
    };
    let Some(signed) = p7.signed() else {
        return Err(BundleError::Malformed {
            detail: "a PKCS#7 structure that is not SignedData".into(),
        });
    };
    // Re-encoded by OpenSSL, so BER input (indefinite lengths) is DER here.
    let normalized = p7.to_der().map_err(|e| BundleError::Malformed {
        detail: format!("cannot re-encode the PKCS#7: {}", first(&e)),
    })?;
    let signer_count = signer_infos(&normalized).ok_or_else(|| BundleError::Malformed {
        detail: "a SignedData whose structure cannot be read".into(),
    })?;
    if signer_count == 0 {
        let certs: Vec<X509> = signed
            .certificates()
            .map(|s| s.iter().map(|c| c.to_owned()).collect())
            .unwrap_or_default();
        return unsigned(certs, signer);
    }
    let claimed = claimed_signers(&p7);
    let Some(pinned) = signer else {
        return Err(BundleError::SignerNotPinned { signer: claimed });
    };
    let inner = verify_signed(&der, pinned, &claimed)?;
    // The signed content must itself be an unsigned bundle; a second signature layer is refused
    // (there is nothing pinned for it).
    parse_bundle(&inner, None)
}

/// Certificates of an unsigned bundle: refused when a signer is pinned or when empty.
fn unsigned(certs: Vec<X509>, signer: Option<&X509>) -> Result<Vec<X509>, BundleError> {
    if let Some(pinned) = signer {
        return Err(BundleError::Unsigned {
            pinned: describe(pinned),
        });
    }
    if certs.is_empty() {
        return Err(BundleError::Empty);
    }
    Ok(certs)
}

/// Verify a CMS SignedData with `pinned` as the only possible signer and return its content.
///
/// `NOINTERN` keeps OpenSSL from looking up the signer among the certificates the bundle carries,
/// so the signerInfo must name `pinned` and the signature must verify with its key.
/// `NO_SIGNER_CERT_VERIFY` skips path validation of the signer: pinning replaces it.
fn verify_signed(der: &[u8], pinned: &X509, claimed: &str) -> Result<Vec<u8>, BundleError> {
    let pinned_name = describe(pinned);
    let mut cms = CmsContentInfo::from_der(der).map_err(|e| BundleError::Malformed {
        detail: format!(
            "a signed bundle that OpenSSL's CMS cannot read: {}",
            first(&e)
        ),
    })?;
    let mut certs = Stack::new().map_err(|e| BundleError::BadSignature {
        pinned: pinned_name.clone(),
        detail: first(&e),
    })?;
    certs
        .push(pinned.clone())
        .map_err(|e| BundleError::BadSignature {
            pinned: pinned_name.clone(),
            detail: first(&e),
        })?;
    let mut out = Vec::new();
    match cms.verify(
        Some(&certs),
        None,
        None,
        Some(&mut out),
        CMSOptions::NOINTERN | CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY,
    ) {
        Ok(()) => Ok(out),
        Err(e) => {
            let reasons: Vec<String> = e
                .errors()
                .iter()
                .filter_map(|x| x.reason().map(str::to_string))
                .collect();
            if reasons
                .iter()
                .any(|r| r.contains("signer certificate not found"))
            {
                Err(BundleError::WrongSigner {
                    pinned: pinned_name,
                    found: claimed.to_string(),
                })
            } else {
                Err(BundleError::BadSignature {
                    pinned: pinned_name,
                    detail: if reasons.is_empty() {
                        "OpenSSL gave no reason".into()
                    } else {
                        reasons.join("; ")
                    },
                })
            }
        }
    }
}

/// Who the bundle says signed it (from the certificates it carries), for messages only.
fn claimed_signers(p7: &Pkcs7) -> String {
    let none = "an unknown signer (its certificate is not in the bundle)".to_string();
    let Ok(empty) = Stack::<X509>::new() else {
        return none;
    };
    match p7.signers(&empty, Pkcs7Flags::empty()) {
        Ok(s) if !s.is_empty() => s.iter().map(describe).collect::<Vec<_>>().join(" and "),
        _ => none,
    }
}

/// The label of the first PEM block, if the input is PEM.
fn pem_label(bytes: &[u8]) -> Option<String> {
    let start = memchr::memmem::find(bytes, b"-----BEGIN ")? + 11;
    let rest = &bytes[start..];
    let end = memchr::memmem::find(rest, b"-----")?;
    std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
}

/// Number of signerInfos in a DER ContentInfo holding SignedData, or None if it is not one.
///
/// SignedData ::= SEQUENCE { version, digestAlgorithms SET, encapContentInfo SEQUENCE,
/// certificates [0] IMPLICIT OPTIONAL, crls [1] IMPLICIT OPTIONAL, signerInfos SET }
fn signer_infos(der: &[u8]) -> Option<usize> {
    use der::{Decode, Reader, SliceReader, Tag, Tagged, asn1::AnyRef};
    let content_info = AnyRef::from_der(der).ok()?;
    if content_info.tag() != Tag::Sequence {
        return None;
    }
    let mut r = SliceReader::new(content_info.value()).ok()?;
    let _content_type: AnyRef<'_> = r.decode().ok()?;
    let explicit: AnyRef<'_> = r.decode().ok()?;
    let signed_data = AnyRef::from_der(explicit.value()).ok()?;
    if signed_data.tag() != Tag::Sequence {
        return None;
    }
    let mut r = SliceReader::new(signed_data.value()).ok()?;
    let mut last = None;
    while !r.is_finished() {
        last = Some(r.decode::<AnyRef<'_>>().ok()?);
    }
    let signer_infos = last?;
    if signer_infos.tag() != Tag::Set {
        return None;
    }
    let mut r = SliceReader::new(signer_infos.value()).ok()?;
    let mut n = 0;
    while !r.is_finished() {
        r.decode::<AnyRef<'_>>().ok()?;
        n += 1;
    }
    Some(n)
}

fn first(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|x| x.reason().map(str::to_string))
        .unwrap_or_else(|| "no reason given".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::fetch::StaticFetcher;
    use openssl::pkey::PKey;

    fn certs_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs")
    }

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(certs_dir().join(name)).unwrap()
    }

    fn cert(name: &str) -> X509 {
        X509::from_pem(&read(name)).unwrap()
    }

    fn subjects(certs: &[X509]) -> Vec<String> {
        let mut v: Vec<String> = certs.iter().map(|c| describe(c)).collect();
        v.sort();
        v
    }

    /// bundle-a.p7b signed with `key`/`signer` (as `openssl cms -sign -nodetach -binary`).
    fn signed_bundle(signer: &str) -> Vec<u8> {
        let c = cert(&format!("{signer}.pem"));
        let k = PKey::private_key_from_pem(&read(&format!("{signer}.key"))).unwrap();
        CmsContentInfo::sign(
            Some(&c),
            Some(&k),
            None,
            Some(&read("bundle-a.p7b")),
            CMSOptions::BINARY,
        )
        .unwrap()
        .to_der()
        .unwrap()
    }

    const ROOTS: [&str; 2] = [
        "CN=Direct Agent Test Root A, O=HISP A Test",
        "CN=Direct Agent Test Root B, O=HISP B Test",
    ];

    #[test]
    fn certs_only_pkcs7_der_and_pem() {
        let der = read("bundle-a.p7b");
        assert_eq!(subjects(&parse_bundle(&der, None).unwrap()), ROOTS);
        let pem = Pkcs7::from_der(&der).unwrap().to_pem().unwrap();
        assert_eq!(subjects(&parse_bundle(&pem, None).unwrap()), ROOTS);
    }

    #[test]
    fn pem_certificates_and_single_der() {
        let mut pem = read("root-a.pem");
        pem.extend(read("root-b.pem"));
        assert_eq!(subjects(&parse_bundle(&pem, None).unwrap()), ROOTS);
        let one = parse_bundle(&read("root-a.cer"), None).unwrap();
        assert_eq!(subjects(&one), [ROOTS[0]]);
    }

    #[test]
    fn signed_bundle_with_the_pinned_signer() {
        let signed = signed_bundle("hisp-a.example");
        let pinned = cert("hisp-a.example.pem");
        assert_eq!(
            subjects(&parse_bundle(&signed, Some(&pinned)).unwrap()),
            ROOTS
        );
        // The PEM CMS form too.
        let pem = CmsContentInfo::from_der(&signed).unwrap().to_pem().unwrap();
        assert_eq!(subjects(&parse_bundle(&pem, Some(&pinned)).unwrap()), ROOTS);
    }

    #[test]
    fn signed_bundle_without_a_pin_is_refused() {
        let e = parse_bundle(&signed_bundle("hisp-a.example"), None).unwrap_err();
        assert!(
            matches!(&e, BundleError::SignerNotPinned { signer } if signer.contains("hisp-a.example")),
            "{e}"
        );
        assert!(e.to_string().contains("--signer"), "{e}");
    }

    #[test]
    fn wrong_pinned_signer_is_refused() {
        let e = parse_bundle(
            &signed_bundle("hisp-a.example"),
            Some(&cert("hisp-b.example.pem")),
        )
        .unwrap_err();
        assert!(matches!(e, BundleError::WrongSigner { .. }), "{e}");
        assert!(e.to_string().contains("CN=hisp-a.example"), "{e}");
        assert!(e.to_string().contains("CN=hisp-b.example"), "{e}");
    }

    #[test]
    fn tampered_signed_bundle_is_refused() {
        let signed = signed_bundle("hisp-a.example");
        let inner = read("bundle-a.p7b");
        // Flip a byte inside a certificate of the encapsulated bundle.
        let at = memchr::memmem::find(&signed, &inner[..64]).unwrap() + inner.len() / 2;
        let mut bad = signed.clone();
        bad[at] ^= 0x01;
        let e = parse_bundle(&bad, Some(&cert("hisp-a.example.pem"))).unwrap_err();
        assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("altered"), "{e}");
    }

    #[test]
    fn unsigned_bundle_with_a_pin_is_refused() {
        let e = parse_bundle(&read("bundle-a.p7b"), Some(&cert("hisp-a.example.pem"))).unwrap_err();
        assert!(matches!(e, BundleError::Unsigned { .. }), "{e}");
        let e = parse_bundle(&read("root-a.pem"), Some(&cert("hisp-a.example.pem"))).unwrap_err();
        assert!(matches!(e, BundleError::Unsigned { .. }), "{e}");
    }

    #[test]
    fn garbage_and_empty_are_refused() {
        for junk in [&b""[..], b"garbage bytes", &[0x30, 0x03, 0x02, 0x01, 0x01]] {
            let e = parse_bundle(junk, None).unwrap_err();
            assert!(matches!(e, BundleError::Malformed { .. }), "{e}");
        }
        let e = parse_bundle(
            b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("PRIVATE KEY"), "{e}");
        // `openssl crl2pkcs7 -nocrl -outform DER`: a certs-only PKCS#7 with no certificates.
        let empty = hex::decode(
            "302306092a864886f70d010702a01630140201013100300b06092a864886f70d0107013100",
        )
        .unwrap();
        assert_eq!(parse_bundle(&empty, None).unwrap_err(), BundleError::Empty);
        assert_eq!(signer_infos(&read("bundle-a.p7b")), Some(0));
        assert_eq!(signer_infos(&signed_bundle("hisp-a.example")), Some(1));
    }

    #[test]
    fn checksums_and_loading() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let f = StaticFetcher::default()
            .with("http://b.example/a.p7b", vec![1, 2])
            .failing("http://b.example/gone", "HTTP 404");
        assert_eq!(load_bundle("http://b.example/a.p7b", &f).unwrap(), [1, 2]);
        let e = load_bundle("http://b.example/gone", &f).unwrap_err();
        assert!(e.is_transient());
        assert!(e.to_string().contains("HTTP 404"), "{e}");
        let path = certs_dir().join("bundle-a.p7b");
        let p = path.to_str().unwrap();
        assert_eq!(load_bundle(p, &f).unwrap(), read("bundle-a.p7b"));
        assert_eq!(
            load_bundle(&format!("file://{p}"), &f).unwrap(),
            read("bundle-a.p7b")
        );
        let e = load_bundle("/nonexistent/bundle.p7b", &f).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/bundle.p7b"), "{e}");
    }
}
