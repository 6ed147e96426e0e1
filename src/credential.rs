//! `Credential`: one of our private keys with its certificate and chain, loaded from PEM or PKCS#12.
//!
//! PKCS#12 passwords come from an environment variable named by the caller, never from argv or a
//! configuration file. Key material is never logged or included in error text.

use std::path::{Path, PathBuf};

use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// Why a key or certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error(
        "{path} holds no private key OpenSSL can read (PEM PKCS#8 or PKCS#1, or PKCS#12 .p12/.pfx expected)"
    )]
    NoKey { path: PathBuf },
    /// The file holds no certificate.
    #[error("{path} holds no certificate (PEM or DER X.509 expected)")]
    NoCertificate { path: PathBuf },
    /// A PKCS#12 file needs a password from the environment.
    #[error(
        "{path} is PKCS#12: name the environment variable holding its password with --key-password-env (or password_env in the configuration)"
    )]
    PasswordNeeded { path: PathBuf },
    /// The environment variable named for the password is not set.
    #[error("environment variable {var} (password for {path}) is not set")]
    PasswordEnvMissing { var: String, path: PathBuf },
    /// The PKCS#12 password is wrong or the file is corrupt.
    #[error("cannot open PKCS#12 {path}: wrong password or corrupt file")]
    Pkcs12 { path: PathBuf },
    /// A private key file that users other than its owner may read (unix mode & 0o077 != 0).
    #[error(
        "private key {path} is readable by group or others (mode {mode:04o}): run `chmod 600 {path}` \
         (for public test keys only: [agent] insecure_key_permissions = true)"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    /// The key does not belong to the certificate.
    #[error("the private key in {key} does not match the certificate {cert} (subject {subject})")]
    Mismatch {
        key: PathBuf,
        cert: PathBuf,
        subject: String,
    },
}

/// A private key, its certificate and the intermediates to send with it. Cloning shares the
/// OpenSSL objects (reference counts), it does not copy key material.
#[derive(Clone)]
pub struct Credential {
    pub key: PKey<Private>,
    pub cert: X509,
    pub chain: Vec<X509>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("subject", &crate::trust::describe(&self.cert))
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|source| CredentialError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Refuse a private key file (PEM or PKCS#12) that its group or others may read: the key is the
/// HISP's identity and decrypts PHI. On other systems than unix there is no mode to check.
/// Configured keys are checked (unless `[agent] insecure_key_permissions`); keys given on the
/// command line (`message seal/open --sign-key/--key`) are not.
pub fn check_key_permissions(path: &Path) -> Result<(), CredentialError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| CredentialError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CredentialError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

/// Whether a key file is PKCS#12, by its extension (`.p12`, `.pfx`, any case).
pub fn is_pkcs12(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()),
        Some(ref e) if e == "p12" || e == "pfx"
    )
}

/// Read every certificate in a PEM (one or more) or DER file.
pub fn load_certificates(path: &Path) -> Result<Vec<X509>, CredentialError> {
    let bytes = read(path)?;
    let certs = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        X509::stack_from_pem(&bytes).unwrap_or_default()
    } else {
        X509::from_der(&bytes).map(|c| vec![c]).unwrap_or_default()
    };
    if certs.is_empty() {
        return Err(CredentialError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

impl Credential {
    /// Load a credential. `key` is a PEM key (then `cert` is required: the certificate followed by
    /// its chain) or a PKCS#12 file (then `cert` may be omitted; the password comes from the
    /// environment variable `password_env`).
    pub fn load(
        key: &Path,
        cert: Option<&Path>,
        password_env: Option<&str>,
    ) -> Result<Credential, CredentialError> {
        if is_pkcs12(key) {
            let var = password_env.ok_or_else(|| CredentialError::PasswordNeeded {
                path: key.to_path_buf(),
            })?;
            let password = std::env::var(var).map_err(|_| CredentialError::PasswordEnvMissing {
                var: var.to_string(),
                path: key.to_path_buf(),
            })?;
            let der = read(key)?;
            let parsed = Pkcs12::from_der(&der)
                .and_then(|p| p.parse2(&password))
                .map_err(|_| CredentialError::Pkcs12 {
                    path: key.to_path_buf(),
                })?;
            let pkey = parsed.pkey.ok_or_else(|| CredentialError::NoKey {
                path: key.to_path_buf(),
            })?;
            let mut chain: Vec<X509> = parsed
                .ca
                .map(|s| s.into_iter().collect())
                .unwrap_or_default();
            let leaf = match (parsed.cert, cert) {
                (_, Some(c)) => {
                    let mut certs = load_certificates(c)?;
                    let leaf = certs.remove(0);
                    chain.extend(certs);
                    leaf
                }
                (Some(c), None) => c,
                (None, None) => {
                    return Err(CredentialError::NoCertificate {
                        path: key.to_path_buf(),
                    });
                }
            };
            return Credential::checked(pkey, leaf, chain, key, cert.unwrap_or(key));
        }
        let pem = read(key)?;
        let pkey = PKey::private_key_from_pem(&pem)
            .or_else(|_| PKey::private_key_from_der(&pem))
            .map_err(|_| CredentialError::NoKey {
                path: key.to_path_buf(),
            })?;
        let cert_path = cert.ok_or_else(|| CredentialError::NoCertificate {
            path: key.to_path_buf(),
        })?;
        let mut certs = load_certificates(cert_path)?;
        let leaf = certs.remove(0);
        Credential::checked(pkey, leaf, certs, key, cert_path)
    }

    fn checked(
        key: PKey<Private>,
        cert: X509,
        chain: Vec<X509>,
        key_path: &Path,
        cert_path: &Path,
    ) -> Result<Credential, CredentialError> {
        let matches = cert
            .public_key()
            .map(|p| p.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(CredentialError::Mismatch {
                key: key_path.to_path_buf(),
                cert: cert_path.to_path_buf(),
                subject: crate::trust::describe(&cert),
            });
        }
        Ok(Credential { key, cert, chain })
    }
}

#[cfg(all(test, unix))]
mod permission_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key_with_mode(dir: &Path, mode: u32) -> PathBuf {
        let p = dir.join(format!("k{mode:o}.key"));
        std::fs::write(&p, b"not read here").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_key_readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = key_with_mode(dir.path(), 0o644);
        let e = check_key_permissions(&p).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("mode 0644"), "{e}");
        assert!(e.contains(&format!("chmod 600 {}", p.display())), "{e}");
        assert!(check_key_permissions(&key_with_mode(dir.path(), 0o640)).is_err());
    }

    #[test]
    fn an_owner_only_key_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_key_permissions(&key_with_mode(dir.path(), 0o600)).is_ok());
        assert!(check_key_permissions(&key_with_mode(dir.path(), 0o400)).is_ok());
    }
}
