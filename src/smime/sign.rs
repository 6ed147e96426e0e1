//! Signing: a detached multipart/signed entity over canonical content.

use super::algorithms::Digest;
use super::{SmimeError, ffi};
use crate::credential::Credential;
use crate::mime::build::multipart_signed;

/// Sign `content` (a canonical CRLF MIME entity) with `cred`, including its chain, and return
/// the multipart/signed entity.
pub fn sign(content: &[u8], cred: &Credential, digest: Digest) -> Result<Vec<u8>, SmimeError> {
    let der = ffi::sign_detached(
        content,
        &cred.cert,
        &cred.key,
        &cred.chain,
        digest.message_digest(),
    )
    .map_err(|e| SmimeError::Build {
        operation: "signing",
        detail: e.to_string(),
    })?;
    Ok(multipart_signed(content, &der, digest.micalg()))
}
