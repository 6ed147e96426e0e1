//! Single-certificate checks: key usage for a purpose, key strength, validity period.

use openssl::asn1::Asn1Time;
use openssl::pkey::Id;
use openssl::x509::{X509KeyUsage, X509Ref};

use super::{TrustError, describe};
use crate::clock::Clock;

/// What a certificate is about to be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Signing a message (needs digitalSignature).
    Sign,
    /// Receiving encrypted content (needs keyEncipherment for RSA, keyAgreement for EC).
    Encrypt,
}

/// The key usage extension must allow the purpose; no extension allows everything (RFC 5280).
pub fn check_key_usage(cert: &X509Ref, purpose: Purpose) -> Result<(), TrustError> {
    let Some(ku) = cert.key_usage() else {
        return Ok(());
    };
    let is_ec = cert.public_key().map(|k| k.id() == Id::EC).unwrap_or(false);
    let (needed, flag, verb) = match purpose {
        Purpose::Sign => ("digitalSignature", X509KeyUsage::DIGITAL_SIGNATURE, "sign"),
        Purpose::Encrypt if is_ec => (
            "keyAgreement",
            X509KeyUsage::KEY_AGREEMENT,
            "receive encrypted messages",
        ),
        Purpose::Encrypt => (
            "keyEncipherment",
            X509KeyUsage::KEY_ENCIPHERMENT,
            "receive encrypted messages",
        ),
    };
    if ku.contains(flag) {
        Ok(())
    } else {
        Err(TrustError::KeyUsage {
            subject: describe(cert),
            purpose: verb,
            needed,
        })
    }
}

/// RSA keys of 2048 bits or more, or EC keys on P-256/P-384.
pub fn check_key_strength(cert: &X509Ref) -> Result<(), TrustError> {
    let weak = |detail: String| TrustError::WeakKey {
        subject: describe(cert),
        detail,
    };
    let key = cert
        .public_key()
        .map_err(|_| weak("public key OpenSSL cannot read".into()))?;
    match key.id() {
        Id::RSA => {
            let bits = key.bits();
            if bits < 2048 {
                return Err(weak(format!("{bits}-bit RSA key")));
            }
            Ok(())
        }
        Id::EC => {
            let ec = key.ec_key().map_err(|_| weak("unreadable EC key".into()))?;
            match ec.group().curve_name() {
                Some(openssl::nid::Nid::X9_62_PRIME256V1) | Some(openssl::nid::Nid::SECP384R1) => {
                    Ok(())
                }
                other => Err(weak(format!(
                    "EC key on curve {}",
                    other.and_then(|n| n.short_name().ok()).unwrap_or("unknown")
                ))),
            }
        }
        _ => Err(weak("key of an unsupported type".into())),
    }
}

/// notBefore <= now <= notAfter at the clock's time.
pub fn check_validity(cert: &X509Ref, clock: &dyn Clock) -> Result<(), TrustError> {
    let now_unix = clock.unix_seconds();
    let (expired, early) = match (
        crate::clock::asn1_unix(cert.not_after()),
        crate::clock::asn1_unix(cert.not_before()),
    ) {
        (Some(after), Some(before)) => (after < now_unix, before > now_unix),
        _ => {
            let now = Asn1Time::from_unix(now_unix).map_err(|_| TrustError::Path {
                subject: describe(cert),
                detail: "the clock's time cannot be represented".into(),
            })?;
            (cert.not_after() < now, cert.not_before() > now)
        }
    };
    if expired {
        return Err(TrustError::Expired {
            subject: describe(cert),
            not_after: crate::clock::asn1_iso(cert.not_after()),
        });
    }
    if early {
        return Err(TrustError::NotYetValid {
            subject: describe(cert),
            not_before: crate::clock::asn1_iso(cert.not_before()),
        });
    }
    Ok(())
}
