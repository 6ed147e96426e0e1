//! Signing: a detached CMS SignedData over canonical content.

use super::algorithms::Digest;
use super::{SmimeError, ffi};
use crate::credential::Credential;

/// Sign `content` (a canonical CRLF MIME entity) with `cred`, including its chain, and return the
/// detached SignedData as DER (for the `application/pkcs7-signature` part).
pub fn sign(content: &[u8], cred: &Credential, digest: Digest) -> Result<Vec<u8>, SmimeError> {
    ffi::sign_detached(
        content,
        &cred.cert,
        &cred.key,
        &cred.chain,
        digest.message_digest(),
    )
    .map_err(|e| SmimeError::Build {
        operation: "signing",
        detail: e.to_string(),
    })
}
