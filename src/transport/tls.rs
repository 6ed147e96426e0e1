//! TLS for the transports, through native-tls (OpenSSL here): the acceptor the inbound SMTP
//! listener offers with STARTTLS, built from the PEM files named in `[smtp_in]`.

use std::path::Path;

use openssl::pkey::PKey;
use openssl::x509::X509;
use tokio_native_tls::TlsAcceptor;

// Server side

/// A TLS acceptor (TLS 1.2 or later) presenting the certificate chain in `cert` (PEM, leaf first,
/// then its intermediates) with the private key in `key` (PEM: PKCS#8, or a traditional RSA/EC
/// key, which is converted). The key must belong to the leaf. Errors name the file and the fix.
pub fn acceptor_from_pem(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let cert_pem = std::fs::read(cert)
        .map_err(|e| format!("cannot read the TLS certificate {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key)
        .map_err(|e| format!("cannot read the TLS private key {}: {e}", key.display()))?;

    let chain = X509::stack_from_pem(&cert_pem).map_err(|e| {
        format!(
            "{} is not a PEM certificate chain ({e}); give the leaf first, then its intermediates",
            cert.display()
        )
    })?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            cert.display()
        ));
    };
    let pkey = PKey::private_key_from_pem(&key_pem).map_err(|e| {
        format!(
            "{} is not an unencrypted PEM private key ({e}); give a PKCS#8 \
             (-----BEGIN PRIVATE KEY-----) or traditional RSA/EC key",
            key.display()
        )
    })?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&pkey))
        .unwrap_or(false);
    if !matches {
        return Err(format!(
            "the private key {} does not belong to the certificate {} (subject {})",
            key.display(),
            cert.display(),
            subject_text(leaf)
        ));
    }

    // native-tls takes the chain as PEM and the key as PKCS#8 PEM. Re-encode both, so a
    // certificate file that also holds other PEM blocks, or a traditional key, still works.
    let mut chain_pem = Vec::new();
    for c in &chain {
        let pem = c
            .to_pem()
            .map_err(|e| format!("{}: cannot re-encode a certificate: {e}", cert.display()))?;
        chain_pem.extend_from_slice(&pem);
    }
    let pkcs8 = pkey
        .private_key_to_pem_pkcs8()
        .map_err(|e| format!("{}: cannot encode the key as PKCS#8: {e}", key.display()))?;
    let identity = native_tls::Identity::from_pkcs8(&chain_pem, &pkcs8).map_err(|e| {
        format!(
            "cannot use {} with {} for TLS: {e}",
            cert.display(),
            key.display()
        )
    })?;
    let acceptor = native_tls::TlsAcceptor::builder(identity)
        .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
        .build()
        .map_err(|e| format!("cannot build a TLS acceptor from {}: {e}", cert.display()))?;
    Ok(TlsAcceptor::from(acceptor))
}

/// `CN=...` (or the whole name) of a certificate's subject, for messages.
fn subject_text(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = String::from_utf8_lossy(e.data().as_slice());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cert(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("certs")
            .join(name)
    }

    #[test]
    fn builds_an_acceptor_from_the_test_pki() {
        let acceptor = acceptor_from_pem(
            &cert("hisp-a.example.fullchain.pem"),
            &cert("hisp-a.example.key"),
        );
        assert!(acceptor.is_ok(), "{:?}", acceptor.err());
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let err = acceptor_from_pem(
            &cert("hisp-a.example.fullchain.pem"),
            &cert("hisp-b.example.key"),
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("does not belong"), "{err}");
        assert!(err.contains("hisp-b.example.key"), "{err}");
    }

    #[test]
    fn names_a_missing_file() {
        let err = acceptor_from_pem(&cert("no-such.pem"), &cert("hisp-a.example.key"))
            .err()
            .unwrap_or_default();
        assert!(err.contains("no-such.pem"), "{err}");
    }

    #[test]
    fn refuses_a_key_file_given_as_certificate() {
        let err = acceptor_from_pem(&cert("hisp-a.example.key"), &cert("hisp-a.example.key"))
            .err()
            .unwrap_or_default();
        assert!(err.contains("hisp-a.example.key"), "{err}");
        assert!(err.contains("certificate"), "{err}");
    }
}
