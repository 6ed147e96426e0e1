//! `LocalDomain`: a `[[domain]]` of the configuration made ready to use: its credentials loaded
//! (keys matched to certificates), its extra intermediates read, and the choice of which
//! credential signs for an address.

use openssl::x509::X509;

use crate::address::DirectAddress;
use crate::config::{Config, Usage};
use crate::credential::{Credential, CredentialError, check_key_permissions, load_certificates};
use crate::trust::Binding;
use crate::trust::binding_for;

/// Why a configured domain could not be loaded; names the configuration key.
#[derive(Debug, thiserror::Error)]
#[error("configuration {key}: {source}")]
pub struct DomainError {
    pub key: String,
    #[source]
    pub source: CredentialError,
}

/// One of our credentials and what it may be used for.
#[derive(Debug)]
pub struct UsableCredential {
    pub credential: Credential,
    pub usage: Usage,
}

/// A local health domain, loaded.
#[derive(Debug)]
pub struct LocalDomain {
    pub name: String,
    pub credentials: Vec<UsableCredential>,
    pub intermediates: Vec<X509>,
    pub required_policies: Vec<String>,
}

impl LocalDomain {
    /// Load every `[[domain]]` of `cfg`, with its credentials.
    pub fn load_all(cfg: &Config) -> Result<Vec<LocalDomain>, DomainError> {
        Self::load(cfg, true)
    }

    /// Load every `[[domain]]` without reading private keys (for commands that only validate
    /// or discover others' certificates).
    pub fn load_all_public(cfg: &Config) -> Result<Vec<LocalDomain>, DomainError> {
        Self::load(cfg, false)
    }

    fn load(cfg: &Config, with_credentials: bool) -> Result<Vec<LocalDomain>, DomainError> {
        cfg.domains
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut credentials = Vec::new();
                let wanted = if with_credentials {
                    d.credentials.len()
                } else {
                    0
                };
                for (j, c) in d.credentials.iter().take(wanted).enumerate() {
                    if !cfg.agent.insecure_key_permissions {
                        check_key_permissions(&c.key).map_err(|source| DomainError {
                            key: format!("domain[{i}].credential[{j}].key"),
                            source,
                        })?;
                    }
                    let credential =
                        Credential::load(&c.key, c.cert.as_deref(), c.password_env.as_deref())
                            .map_err(|source| DomainError {
                                key: format!("domain[{i}].credential[{j}]"),
                                source,
                            })?;
                    credentials.push(UsableCredential {
                        credential,
                        usage: c.usage,
                    });
                }
                let mut intermediates = Vec::new();
                for (j, p) in d.intermediates.iter().enumerate() {
                    intermediates.extend(load_certificates(p).map_err(|source| DomainError {
                        key: format!("domain[{i}].intermediates[{j}]"),
                        source,
                    })?);
                }
                Ok(LocalDomain {
                    name: d.name.trim_end_matches('.').to_ascii_lowercase(),
                    credentials,
                    intermediates,
                    required_policies: d.required_policies.clone(),
                })
            })
            .collect()
    }

    /// Credentials that may decrypt (usage encrypt or both).
    pub fn decryption_credentials(&self) -> impl Iterator<Item = &Credential> {
        self.credentials
            .iter()
            .filter(|c| c.usage != Usage::Sign)
            .map(|c| &c.credential)
    }

    /// The credential to sign as `from`: an address-bound certificate for that address wins over a
    /// domain-bound one (Applicability Statement §4.1).
    pub fn signer_for(&self, from: &DirectAddress) -> Option<&Credential> {
        let signers = self
            .credentials
            .iter()
            .filter(|c| c.usage != Usage::Encrypt)
            .map(|c| &c.credential);
        let mut domain_bound = None;
        for c in signers {
            match binding_for(&c.cert, from) {
                Ok(Binding::Address) => return Some(c),
                Ok(Binding::Domain) if domain_bound.is_none() => domain_bound = Some(c),
                _ => {}
            }
        }
        domain_bound
    }
}

/// The configured domain serving `address`, if any.
pub fn domain_for<'a>(
    domains: &'a [LocalDomain],
    address: &DirectAddress,
) -> Option<&'a LocalDomain> {
    domains.iter().find(|d| address.in_domain(&d.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configuration_loads_and_address_binding_wins() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/direct-agent.toml");
        let cfg = Config::load(&path).unwrap();
        let domains = LocalDomain::load_all(&cfg).unwrap();
        let b = domain_for(
            &domains,
            &DirectAddress::parse("IIS@hisp-b.example").unwrap(),
        )
        .unwrap();
        let iis = b
            .signer_for(&DirectAddress::parse("iis@hisp-b.example").unwrap())
            .unwrap();
        assert!(crate::trust::describe(&iis.cert).contains("iis@hisp-b.example"));
        let other = b
            .signer_for(&DirectAddress::parse("clerk@hisp-b.example").unwrap())
            .unwrap();
        assert!(crate::trust::describe(&other.cert).contains("CN=hisp-b.example"));
        assert_eq!(b.decryption_credentials().count(), 2);
        assert!(domain_for(&domains, &DirectAddress::parse("x@hisp-a.example").unwrap()).is_none());
    }

    #[test]
    fn a_missing_key_names_the_configuration_key() {
        let cfg = Config::parse(
            "[[domain]]\nname = \"a.example\"\n[[domain.credential]]\nkey = \"/nonexistent/k.pem\"\ncert = \"/nonexistent/c.pem\"\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        let e = LocalDomain::load_all(&cfg).unwrap_err();
        assert!(e.to_string().contains("domain[0].credential[0]"), "{e}");
        let public = LocalDomain::load_all_public(&cfg).expect("no keys are read");
        assert!(public[0].credentials.is_empty());
    }

    /// A configuration whose one credential is a copy of the committed hisp-b key, `mode`.
    #[cfg(unix)]
    fn with_key_mode(dir: &std::path::Path, mode: u32, insecure: bool) -> Config {
        use std::os::unix::fs::PermissionsExt;
        let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        let key = dir.join(format!("b-{mode:o}.key"));
        std::fs::copy(certs.join("hisp-b.example.key"), &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        Config::parse(
            &format!(
                "[agent]\ninsecure_key_permissions = {insecure}\n[[domain]]\nname = \"hisp-b.example\"\n[[domain.credential]]\nkey = \"{}\"\ncert = \"{}\"\n",
                key.display(),
                certs.join("hisp-b.example.fullchain.pem").display()
            ),
            std::path::Path::new("x.toml"),
        )
        .unwrap()
    }

    #[cfg(unix)]
    #[test]
    fn a_configured_key_readable_by_others_is_refused_unless_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let e = LocalDomain::load_all(&with_key_mode(dir.path(), 0o644, false)).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("domain[0].credential[0].key"), "{text}");
        assert!(
            text.contains("mode 0644") && text.contains("chmod 600"),
            "{text}"
        );
        assert!(LocalDomain::load_all(&with_key_mode(dir.path(), 0o600, false)).is_ok());
        assert!(LocalDomain::load_all(&with_key_mode(dir.path(), 0o644, true)).is_ok());
    }
}
