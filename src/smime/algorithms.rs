//! The algorithm vocabulary of Direct S/MIME: which digests, content ciphers and key transports we
//! send and accept, named from their OIDs, with the policy of the Applicability Statement.
//!
//! OpenSSL has no getter for an EnvelopedData's content-encryption algorithm, so
//! [`content_encryption`] reads it from the DER that OpenSSL re-encodes (definite lengths), with a
//! small walk over the `der` crate's generic values rather than a full CMS model.

use std::fmt;

use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode, Reader, SliceReader, Tag, Tagged};
use openssl::hash::MessageDigest;
use openssl::symm::Cipher;

const OID_SHA1: &str = "1.3.14.3.2.26";
const OID_MD5: &str = "1.2.840.113549.2.5";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";
const OID_SHA512: &str = "2.16.840.1.101.3.4.2.3";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_RSAES_OAEP: &str = "1.2.840.113549.1.1.7";

/// A digest used in a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Digest {
    Sha256,
    Sha384,
    Sha512,
    Sha1,
    Md5,
    Unknown,
}

impl Digest {
    /// Direct (and the Java RI 8.x) accepts the SHA-2 family only.
    pub fn accepted(self) -> bool {
        matches!(self, Digest::Sha256 | Digest::Sha384 | Digest::Sha512)
    }

    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha512 => "sha512",
            Digest::Sha1 => "sha1",
            Digest::Md5 => "md5",
            Digest::Unknown => "unknown",
        }
    }

    /// The `micalg` parameter of multipart/signed (RFC 5751 §3.4.3.2).
    pub fn micalg(self) -> &'static str {
        match self {
            Digest::Sha384 => "sha-384",
            Digest::Sha512 => "sha-512",
            Digest::Sha1 => "sha-1",
            Digest::Md5 => "md5",
            _ => "sha-256",
        }
    }

    pub fn message_digest(self) -> MessageDigest {
        match self {
            Digest::Sha384 => MessageDigest::sha384(),
            Digest::Sha512 => MessageDigest::sha512(),
            Digest::Sha1 => MessageDigest::sha1(),
            Digest::Md5 => MessageDigest::md5(),
            _ => MessageDigest::sha256(),
        }
    }

    fn from_oid(oid: &str) -> Digest {
        match oid {
            OID_SHA256 => Digest::Sha256,
            OID_SHA384 => Digest::Sha384,
            OID_SHA512 => Digest::Sha512,
            OID_SHA1 => Digest::Sha1,
            OID_MD5 => Digest::Md5,
            _ => Digest::Unknown,
        }
    }

    /// Name the digest of a DER AlgorithmIdentifier.
    pub fn from_algorithm_der(der: &[u8]) -> Digest {
        algorithm_oid(der).map_or(Digest::Unknown, |(oid, _)| Digest::from_oid(&oid))
    }

    /// Parse the CLI/config spelling.
    pub fn parse(s: &str) -> Option<Digest> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "sha256" => Some(Digest::Sha256),
            "sha384" => Some(Digest::Sha384),
            "sha512" => Some(Digest::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A content-encryption algorithm.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ContentCipher {
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes192Gcm,
    Aes256Gcm,
    TripleDesCbc,
    Rc2Cbc,
    Other(String),
}

impl ContentCipher {
    /// Direct receivers accept AES in CBC or GCM mode; 3DES, RC2 and anything else are refused.
    pub fn accepted(&self) -> bool {
        matches!(
            self,
            ContentCipher::Aes128Cbc
                | ContentCipher::Aes192Cbc
                | ContentCipher::Aes256Cbc
                | ContentCipher::Aes128Gcm
                | ContentCipher::Aes192Gcm
                | ContentCipher::Aes256Gcm
        )
    }

    pub fn is_aead(&self) -> bool {
        matches!(
            self,
            ContentCipher::Aes128Gcm | ContentCipher::Aes192Gcm | ContentCipher::Aes256Gcm
        )
    }

    pub fn name(&self) -> String {
        match self {
            ContentCipher::Aes128Cbc => "aes128-cbc".into(),
            ContentCipher::Aes192Cbc => "aes192-cbc".into(),
            ContentCipher::Aes256Cbc => "aes256-cbc".into(),
            ContentCipher::Aes128Gcm => "aes128-gcm".into(),
            ContentCipher::Aes192Gcm => "aes192-gcm".into(),
            ContentCipher::Aes256Gcm => "aes256-gcm".into(),
            ContentCipher::TripleDesCbc => "des-ede3-cbc".into(),
            ContentCipher::Rc2Cbc => "rc2-cbc".into(),
            ContentCipher::Other(oid) => format!("unknown cipher {oid}"),
        }
    }

    /// The OpenSSL cipher for sending; only the accepted ciphers can be sent.
    pub fn openssl(&self) -> Option<Cipher> {
        Some(match self {
            ContentCipher::Aes128Cbc => Cipher::aes_128_cbc(),
            ContentCipher::Aes192Cbc => Cipher::aes_192_cbc(),
            ContentCipher::Aes256Cbc => Cipher::aes_256_cbc(),
            ContentCipher::Aes128Gcm => Cipher::aes_128_gcm(),
            ContentCipher::Aes192Gcm => Cipher::aes_192_gcm(),
            ContentCipher::Aes256Gcm => Cipher::aes_256_gcm(),
            _ => return None,
        })
    }

    fn from_oid(oid: &str) -> ContentCipher {
        match oid {
            "2.16.840.1.101.3.4.1.2" => ContentCipher::Aes128Cbc,
            "2.16.840.1.101.3.4.1.22" => ContentCipher::Aes192Cbc,
            "2.16.840.1.101.3.4.1.42" => ContentCipher::Aes256Cbc,
            "2.16.840.1.101.3.4.1.6" => ContentCipher::Aes128Gcm,
            "2.16.840.1.101.3.4.1.26" => ContentCipher::Aes192Gcm,
            "2.16.840.1.101.3.4.1.46" => ContentCipher::Aes256Gcm,
            "1.2.840.113549.3.7" => ContentCipher::TripleDesCbc,
            "1.2.840.113549.3.2" => ContentCipher::Rc2Cbc,
            other => ContentCipher::Other(other.to_string()),
        }
    }

    /// Parse the CLI/config spelling (`aes128-cbc`, `aes256-gcm`, ...).
    pub fn parse(s: &str) -> Option<ContentCipher> {
        let c = match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "aes128cbc" => ContentCipher::Aes128Cbc,
            "aes192cbc" => ContentCipher::Aes192Cbc,
            "aes256cbc" => ContentCipher::Aes256Cbc,
            "aes128gcm" => ContentCipher::Aes128Gcm,
            "aes192gcm" => ContentCipher::Aes192Gcm,
            "aes256gcm" => ContentCipher::Aes256Gcm,
            _ => return None,
        };
        Some(c)
    }
}

impl fmt::Display for ContentCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// How the content-encryption key reached a recipient.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeyTransport {
    RsaPkcs1,
    RsaOaepSha1,
    RsaOaepSha256,
    RsaOaepOther(String),
    Other(String),
}

impl KeyTransport {
    pub fn accepted(&self) -> bool {
        matches!(
            self,
            KeyTransport::RsaPkcs1 | KeyTransport::RsaOaepSha1 | KeyTransport::RsaOaepSha256
        )
    }

    pub fn name(&self) -> String {
        match self {
            KeyTransport::RsaPkcs1 => "rsa-pkcs1".into(),
            KeyTransport::RsaOaepSha1 => "rsa-oaep-sha1".into(),
            KeyTransport::RsaOaepSha256 => "rsa-oaep-sha256".into(),
            KeyTransport::RsaOaepOther(h) => format!("rsa-oaep with hash {h}"),
            KeyTransport::Other(oid) => format!("key transport {oid}"),
        }
    }

    /// Parse the CLI/config spelling.
    pub fn parse(s: &str) -> Option<KeyTransport> {
        match s.to_ascii_lowercase().as_str() {
            "rsa-pkcs1" | "rsa-pkcs1v15" => Some(KeyTransport::RsaPkcs1),
            "rsa-oaep-sha1" => Some(KeyTransport::RsaOaepSha1),
            "rsa-oaep-sha256" | "rsa-oaep" => Some(KeyTransport::RsaOaepSha256),
            _ => None,
        }
    }

    /// Name the key transport of a DER AlgorithmIdentifier.
    pub fn from_algorithm_der(der: &[u8]) -> KeyTransport {
        let Some((oid, params)) = algorithm_oid(der) else {
            return KeyTransport::Other("unparseable".into());
        };
        match oid.as_str() {
            OID_RSA_ENCRYPTION => KeyTransport::RsaPkcs1,
            OID_RSAES_OAEP => match oaep_hash(params.as_deref()) {
                Some(d) if d == OID_SHA1 => KeyTransport::RsaOaepSha1,
                Some(d) if d == OID_SHA256 => KeyTransport::RsaOaepSha256,
                Some(d) => KeyTransport::RsaOaepOther(d),
                None => KeyTransport::RsaOaepOther("unparseable".into()),
            },
            other => KeyTransport::Other(other.to_string()),
        }
    }
}

impl fmt::Display for KeyTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The children of a constructed DER value.
fn children(any: AnyRef<'_>) -> der::Result<Vec<AnyRef<'_>>> {
    let mut r = SliceReader::new(any.value())?;
    let mut out = Vec::new();
    while !r.is_finished() {
        out.push(AnyRef::decode(&mut r)?);
    }
    Ok(out)
}

/// The OID of a DER AlgorithmIdentifier and the DER of its parameters, if any.
fn algorithm_oid(der: &[u8]) -> Option<(String, Option<Vec<u8>>)> {
    let any = AnyRef::from_der(der).ok()?;
    let kids = children(any).ok()?;
    let oid: ObjectIdentifier = kids.first()?.decode_as().ok()?;
    let params = kids.get(1).and_then(|p| der::Encode::to_der(p).ok());
    Some((oid.to_string(), params))
}

/// RSAES-OAEP-params: `hashFunc [0] EXPLICIT AlgorithmIdentifier DEFAULT sha1`.
fn oaep_hash(params: Option<&[u8]>) -> Option<String> {
    let Some(params) = params else {
        return Some(OID_SHA1.into());
    };
    let any = AnyRef::from_der(params).ok()?;
    if any.tag() == Tag::Null {
        return Some(OID_SHA1.into());
    }
    for kid in children(any).ok()? {
        if kid.tag().is_context_specific() && kid.tag().number().value() == 0 {
            let inner = AnyRef::from_der(kid.value()).ok()?;
            let inner_der = der::Encode::to_der(&inner).ok()?;
            return algorithm_oid(&inner_der).map(|(oid, _)| oid);
        }
    }
    Some(OID_SHA1.into())
}

/// Read the content-encryption algorithm of a DER ContentInfo holding EnvelopedData or
/// AuthEnvelopedData.
pub fn content_encryption(content_info_der: &[u8]) -> Option<ContentCipher> {
    let ci = AnyRef::from_der(content_info_der).ok()?;
    let kids = children(ci).ok()?;
    // content [0] EXPLICIT
    let explicit = kids.get(1)?;
    let data = AnyRef::from_der(explicit.value()).ok()?;
    // version, originatorInfo [0] OPTIONAL, recipientInfos SET, encryptedContentInfo SEQUENCE
    let fields = children(data).ok()?;
    let set_pos = fields.iter().position(|f| f.tag() == Tag::Set)?;
    let eci = fields.get(set_pos + 1)?;
    if eci.tag() != Tag::Sequence {
        return None;
    }
    let eci_fields = children(*eci).ok()?;
    let alg = eci_fields.get(1)?;
    let alg_der = der::Encode::to_der(alg).ok()?;
    algorithm_oid(&alg_der).map(|(oid, _)| ContentCipher::from_oid(&oid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_spellings() {
        assert_eq!(
            ContentCipher::parse("aes256-gcm"),
            Some(ContentCipher::Aes256Gcm)
        );
        assert_eq!(ContentCipher::parse("des3"), None);
        assert_eq!(Digest::parse("SHA-384"), Some(Digest::Sha384));
        assert_eq!(
            Digest::parse("sha1"),
            None,
            "SHA-1 cannot be chosen for sending"
        );
        assert_eq!(
            KeyTransport::parse("rsa-oaep-sha1"),
            Some(KeyTransport::RsaOaepSha1)
        );
    }

    #[test]
    fn policy_refuses_weak_algorithms() {
        assert!(!Digest::Sha1.accepted());
        assert!(!Digest::Md5.accepted());
        assert!(Digest::Sha512.accepted());
        assert!(!ContentCipher::TripleDesCbc.accepted());
        assert!(ContentCipher::Aes192Gcm.accepted());
    }

    #[test]
    fn garbage_algorithm_der_is_unknown_not_a_panic() {
        assert_eq!(Digest::from_algorithm_der(b"\x30\x03\x06"), Digest::Unknown);
        assert!(matches!(
            KeyTransport::from_algorithm_der(b""),
            KeyTransport::Other(_)
        ));
        assert_eq!(content_encryption(b"\x30\x80\x00\x00"), None);
    }
}
