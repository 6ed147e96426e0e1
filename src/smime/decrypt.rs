//! Decryption: find which of our keys a RecipientInfo is for, refuse weak ciphers, decrypt.

use openssl::cms::CmsContentInfo;
use openssl::nid::Nid;

use super::algorithms::{ContentCipher, KeyTransport, content_encryption};
use super::{SmimeError, ffi};
use crate::credential::Credential;
use crate::trust::describe;

/// A decrypted message layer and how it was protected.
#[derive(Debug)]
pub struct Decrypted {
    pub content: Vec<u8>,
    pub cipher: ContentCipher,
    pub key_transport: Option<KeyTransport>,
    /// Subject of our certificate that matched.
    pub recipient: String,
}

/// Decrypt a DER/BER CMS EnvelopedData or AuthEnvelopedData with whichever credential matches.
pub fn decrypt(cms_bytes: Vec<u8>, ours: &[Credential]) -> Result<Decrypted, SmimeError> {
    let cms = CmsContentInfo::from_der(&cms_bytes).map_err(|e| SmimeError::Malformed {
        layer: "envelope (application/pkcs7-mime)",
        detail: e.to_string(),
    })?;
    let kind = ffi::content_type(&cms);
    let auth_enveloped = kind.short_name().ok() == Some("id-smime-ct-authEnvelopedData");
    if kind != Nid::PKCS7_ENVELOPED && !auth_enveloped {
        return Err(SmimeError::NotEncrypted(format!(
            "the application/pkcs7-mime content is {} rather than enveloped data: the message is not encrypted",
            kind.long_name().unwrap_or("an unknown type")
        )));
    }
    // The algorithm reader needs definite lengths: DER input is read as it is; indefinite-length
    // BER (as OpenSSL and BouncyCastle peers stream it) is re-encoded by OpenSSL first.
    let cipher = match content_encryption(&cms_bytes) {
        Some(c) => c,
        None => {
            let der = cms.to_der().map_err(|e| SmimeError::Malformed {
                layer: "envelope",
                detail: e.to_string(),
            })?;
            content_encryption(&der).ok_or_else(|| SmimeError::Malformed {
                layer: "envelope",
                detail: "no content-encryption algorithm".into(),
            })?
        }
    };
    if !cipher.accepted() {
        return Err(SmimeError::WeakCipher(cipher.name()));
    }
    // OpenSSL holds its own parsed copy from here on.
    let expected_len = cms_bytes.len();
    drop(cms_bytes);
    let mut matched = None;
    for cred in ours {
        if let Some(alg) = ffi::key_transport_algorithm(&cms, &cred.cert) {
            matched = Some((cred, Some(KeyTransport::from_algorithm_der(&alg))));
            break;
        }
    }
    let (cred, key_transport) = match matched {
        Some(m) => m,
        // Key agreement (EC) recipients are not key-transport infos; let OpenSSL try each key.
        None => {
            for cred in ours {
                if let Ok(content) = ffi::decrypt(&cms, &cred.key, &cred.cert, expected_len) {
                    return Ok(Decrypted {
                        content,
                        cipher,
                        key_transport: None,
                        recipient: describe(&cred.cert),
                    });
                }
            }
            return Err(SmimeError::NotForUs {
                ours: ours.len(),
                detail: "no RecipientInfo names our certificates' issuer and serial".into(),
            });
        }
    };
    if let Some(kt) = key_transport.as_ref().filter(|kt| !kt.accepted()) {
        return Err(SmimeError::WeakCipher(kt.name()));
    }
    let content = cms
        .decrypt(&cred.key, &cred.cert)
        .map_err(|e| SmimeError::DecryptFailed {
            subject: describe(&cred.cert),
            // AES-GCM tag failures leave OpenSSL's error queue empty.
            detail: if e.errors().is_empty() {
                "integrity check of the content failed".into()
            } else {
                e.to_string()
            },
        })?;
    Ok(Decrypted {
        content,
        cipher,
        key_transport,
        recipient: describe(&cred.cert),
    })
}
