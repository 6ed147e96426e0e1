//! What commands that use the configuration share: the loaded configuration, the local domains
//! with their credentials, the trust store, and the fetcher for CRLs, AIA and bundles.

use std::path::Path;

use openssl::x509::X509;

use crate::address::DirectAddress;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::credential::load_certificates;
use crate::discovery::{Discoverer, Discovery, HickoryDns, LdapDirectory};
use crate::domain::LocalDomain;
use crate::store::{Direction, SqliteStore, TrustStore};
use crate::trust::fetch::HttpFetcher;
use crate::trust::{Online, Purpose, TrustInputs};

/// The loaded configuration and everything built from it.
pub struct Context {
    pub config: Config,
    pub domains: Vec<LocalDomain>,
    pub store: SqliteStore,
    pub fetcher: HttpFetcher,
}

impl Context {
    /// Load the configuration (`--config`, `DIRECT_AGENT_CONFIG` or the default), its domains with
    /// their credentials, and the store. Errors are configuration errors (exit 2).
    pub fn load(config_flag: Option<&Path>) -> Result<Context, String> {
        Self::open(config_flag, true)
    }

    /// As [`Context::load`], without reading our private keys (validate and discover only).
    pub fn load_public(config_flag: Option<&Path>) -> Result<Context, String> {
        Self::open(config_flag, false)
    }

    fn open(config_flag: Option<&Path>, with_credentials: bool) -> Result<Context, String> {
        let path = Config::locate(config_flag);
        let config = Config::load(&path).map_err(|e| e.to_string())?;
        let domains = if with_credentials {
            LocalDomain::load_all(&config)
        } else {
            LocalDomain::load_all_public(&config)
        }
        .map_err(|e| e.to_string())?;
        let store = crate::store::open_store(&config).map_err(|e| e.to_string())?;
        let fetcher = HttpFetcher::new(config.fetch_timeout());
        Ok(Context {
            config,
            domains,
            store,
            fetcher,
        })
    }

    /// The configured domain named `name`, or an error listing the configured ones.
    pub fn domain(&self, name: &str) -> Result<&LocalDomain, String> {
        let canonical = super::configured_domain(&self.config, name)?;
        self.domains
            .iter()
            .find(|d| d.name == canonical)
            .ok_or_else(|| format!("domain {canonical} was not loaded"))
    }

    /// The configured domain serving `address`.
    pub fn domain_of(&self, address: &DirectAddress) -> Result<&LocalDomain, String> {
        self.domain(address.domain())
    }

    /// The anchors of `domain` serving `direction`, parsed.
    pub fn anchors(&self, domain: &str, direction: Direction) -> Result<Vec<X509>, String> {
        let records = self
            .store
            .anchors(Some(domain))
            .map_err(|e| e.to_string())?;
        let now = crate::clock::Clock::unix_seconds(&crate::clock::SystemClock);
        let mut anchors = Vec::new();
        for record in records
            .into_iter()
            .filter(|a| a.direction.serves(direction))
        {
            let Ok(cert) = X509::from_der(&record.der) else {
                tracing::warn!(domain, fingerprint = %record.fingerprint, "stored trust anchor is unreadable; remove and add it again");
                continue;
            };
            if let Some(not_after) = crate::clock::asn1_unix(cert.not_after()) {
                let days_left = (not_after - now).div_euclid(86_400);
                if days_left < 0 {
                    tracing::warn!(domain, fingerprint = %record.fingerprint, subject = %crate::trust::describe(&cert), "trust anchor has expired: certificates chaining to it are refused");
                } else if days_left <= 30 {
                    tracing::warn!(domain, fingerprint = %record.fingerprint, subject = %crate::trust::describe(&cert), days_left, "trust anchor expires soon");
                }
            }
            anchors.push(cert);
        }
        Ok(anchors)
    }

    /// Trust inputs for one domain under the configured revocation policy, fetching online.
    pub fn trust_inputs<'a>(
        &'a self,
        domain: &'a LocalDomain,
        anchors: &'a [X509],
        intermediates: &'a [X509],
        crls: &'a [openssl::x509::X509Crl],
        clock: &'a dyn crate::clock::Clock,
    ) -> TrustInputs<'a> {
        TrustInputs {
            anchors,
            intermediates,
            crls,
            clock,
            revocation: self.config.trust.revocation,
            online: Some(Online {
                fetcher: &self.fetcher,
                store: Some(&self.store),
                aia: self.config.trust.aia,
            }),
            required_policies: &domain.required_policies,
        }
    }

    /// Discover the certificates to encrypt to `address`, validated for `domain` (its outgoing
    /// anchors, the configured revocation policy) under `[discovery]`.
    pub fn discover(
        &self,
        address: &DirectAddress,
        domain: &LocalDomain,
    ) -> Result<Discovery, String> {
        let d = &self.config.discovery;
        let timeout =
            crate::config::parse_duration(&d.timeout).unwrap_or(std::time::Duration::from_secs(2));
        let dns = HickoryDns::new(&d.nameserver_addrs(), timeout, d.attempts)?;
        let directory = LdapDirectory { timeout };
        let mut static_certs = Vec::new();
        for s in &d.certificates {
            let target = s.target.trim().to_ascii_lowercase();
            let matches = target == address.canonical()
                || (!target.contains('@') && address.in_domain(&target));
            if matches {
                let certs = load_certificates(&s.file)
                    .map_err(|e| format!("[[discovery.certificate]] for {}: {e}", s.target))?;
                static_certs.extend(
                    certs
                        .into_iter()
                        .map(|c| (c, format!("configuration {}", s.file.display()))),
                );
            }
        }
        let anchors = self.anchors(&domain.name, Direction::Outgoing)?;
        let clock = SystemClock;
        let inputs = self.trust_inputs(domain, &anchors, &domain.intermediates, &[], &clock);
        let discoverer = Discoverer {
            dns: &dns,
            directory: d
                .ldap
                .then_some(&directory as &dyn crate::discovery::Directory),
            fetcher: &self.fetcher,
            static_certs,
            default_ttl: crate::config::parse_duration(&d.cache_ttl_max)
                .unwrap_or(std::time::Duration::from_secs(3600)),
        };
        let validate =
            |cert: &X509| crate::trust::validate(cert, &inputs, Purpose::Encrypt, Some(address));
        Ok(discoverer.discover(address, &validate))
    }
}
