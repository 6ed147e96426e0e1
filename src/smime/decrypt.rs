//! Decryption: find which of our keys a RecipientInfo is for, refuse weak ciphers, decrypt.

use openssl::cms::CmsContentInfo;
use openssl::nid::Nid;

use super::algorithms::{ContentCipher, KeyTransport, content_encryption};
use super::{SmimeError, ber, ffi};
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
///
/// The ciphertext is not copied: [`ber::detach_enveloped`] moves it together inside `cms_bytes`
/// and OpenSSL parses only the rest, then decrypts the ciphertext from this buffer. Structures
/// the walk does not expect are parsed whole by OpenSSL as before.
pub fn decrypt(mut cms_bytes: Vec<u8>, ours: &[Credential]) -> Result<Decrypted, SmimeError> {
    let split = ber::detach_enveloped(&mut cms_bytes);
    let parsed: &[u8] = split.as_ref().map_or(&cms_bytes, |s| &s.header);
    let cms = CmsContentInfo::from_der(parsed).map_err(|e| SmimeError::Malformed {
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
    // BER (as OpenSSL and BouncyCastle peers stream it) is re-encoded by OpenSSL first (small once
    // the ciphertext is split off).
    let cipher = match content_encryption(parsed) {
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
    let expected_len = cms_bytes.len();
    let ciphertext: Option<&[u8]> = match &split {
        Some(s) => Some(&cms_bytes[s.ciphertext.clone()]),
        None => {
            // OpenSSL holds its own parsed copy from here on.
            drop(std::mem::take(&mut cms_bytes));
            None
        }
    };
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
                if let Ok(content) =
                    ffi::decrypt(&cms, &cred.key, &cred.cert, expected_len, ciphertext)
                {
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
    let content =
        ffi::decrypt(&cms, &cred.key, &cred.cert, expected_len, ciphertext).map_err(|e| {
            SmimeError::DecryptFailed {
                subject: describe(&cred.cert),
                // AES-GCM tag failures leave OpenSSL's error queue empty.
                detail: if e.errors().is_empty() {
                    "integrity check of the content failed".into()
                } else {
                    e.to_string()
                },
            }
        })?;
    Ok(Decrypted {
        content,
        cipher,
        key_transport,
        recipient: describe(&cred.cert),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::smime::encrypt;
    use crate::smime::verify::decode_base64;

    fn iis() -> Credential {
        let cert = |name: &str| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("certs")
                .join(name)
        };
        Credential::load(
            &cert("iis@hisp-b.example.key"),
            Some(&cert("iis@hisp-b.example.fullchain.pem")),
            None,
        )
        .unwrap()
    }

    /// Our own (streamed, chunked BER) output takes the no-copy path: the walk splits it, and
    /// decrypting it gives the content back; a flipped ciphertext bit fails GCM's tag check.
    #[test]
    fn streamed_output_is_split_and_decrypts() {
        let iis = iis();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for cipher in [ContentCipher::Aes128Cbc, ContentCipher::Aes256Gcm] {
            let text = encrypt(
                &content,
                std::slice::from_ref(&iis.cert),
                &cipher,
                &KeyTransport::RsaOaepSha256,
                Vec::new(),
            )
            .unwrap();
            let der = decode_base64(&text, "test").unwrap();
            assert_eq!(&der[..2], &[0x30, 0x80], "{cipher}: streamed BER expected");
            let split = ber::detach_enveloped(&mut der.clone()).expect("split");
            assert!(split.header.len() < 2048, "{cipher}: the header is small");
            assert!(split.ciphertext.len() >= content.len(), "{cipher}");

            let d = decrypt(der.clone(), std::slice::from_ref(&iis)).unwrap();
            assert!(d.content == content, "{cipher}: content differs");
            assert_eq!(d.cipher, cipher);
            assert_eq!(d.key_transport, Some(KeyTransport::RsaOaepSha256));

            if cipher.is_aead() {
                let mut bad = der.clone();
                let mid = bad.len() / 2;
                bad[mid] ^= 1;
                match decrypt(bad, std::slice::from_ref(&iis)) {
                    Err(SmimeError::DecryptFailed { .. }) => {}
                    other => panic!("{cipher}: tampering not caught: {other:?}"),
                }
            }
        }
    }
}
