//! What commands that use the configuration share: the loaded configuration, the local domains
//! with their credentials, the trust store, and the fetcher for CRLs, AIA and bundles.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::x509::X509;

use crate::address::DirectAddress;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::credential::Credential;
use crate::credential::load_certificates;
use crate::discovery::{Discoverer, Discovery, DiscoveryCache, HickoryDns, LdapDirectory};
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
    /// Parsed anchors per (domain, direction) with the store version they were read at.
    anchor_cache: AnchorCache,
    /// Recipients' chosen certificates per (local domain, address), reused for `[discovery]
    /// cache_ttl_max` (the DNS TTL when shorter), "nothing usable" for `negative_ttl`; forgotten
    /// whenever the trust store changes, so an `anchors remove` counts at the next message.
    discovered: DiscoveryCache,
    /// The trust store version `discovered` was filled under.
    discovered_version: Mutex<Option<i64>>,
    /// The DNS resolver of discovery, built at the first lookup and then shared.
    dns: Mutex<Option<Arc<HickoryDns>>>,
}

type AnchorCache =
    std::sync::Mutex<std::collections::HashMap<(String, Direction), (i64, Vec<X509>)>>;

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
        let d = &config.discovery;
        let discovered = DiscoveryCache::new(
            crate::config::parse_duration(&d.cache_ttl_max).unwrap_or(Duration::from_secs(3600)),
            crate::config::parse_duration(&d.negative_ttl).unwrap_or(Duration::from_secs(300)),
        );
        Ok(Context {
            config,
            domains,
            store,
            fetcher,
            anchor_cache: Default::default(),
            discovered,
            discovered_version: Mutex::new(None),
            dns: Mutex::new(None),
        })
    }

    /// The configured domain named `name`, or an error listing the configured ones.
    pub fn domain(&self, name: &str) -> Result<&LocalDomain, String> {
        let canonical = crate::cli::configured_domain(&self.config, name)?;
        self.domains
            .iter()
            .find(|d| d.name == canonical)
            .ok_or_else(|| format!("domain {canonical} was not loaded"))
    }

    /// The configured domain serving `address`.
    pub fn domain_of(&self, address: &DirectAddress) -> Result<&LocalDomain, String> {
        self.domain(address.domain())
    }

    /// The anchors of `domain` serving `direction`, parsed; kept in memory until the store
    /// changes (an `anchors add` in another process shows at the next message).
    pub fn anchors(&self, domain: &str, direction: Direction) -> Result<Vec<X509>, String> {
        let version = self.store.version().map_err(|e| e.to_string())?;
        let key = (domain.to_string(), direction);
        if let Some((v, anchors)) = self
            .anchor_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && *v == version
        {
            return Ok(anchors.clone());
        }
        let anchors = self.load_anchors(domain, direction)?;
        self.anchor_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (version, anchors.clone()));
        Ok(anchors)
    }

    fn load_anchors(&self, domain: &str, direction: Direction) -> Result<Vec<X509>, String> {
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
        let dns = self.dns(timeout)?;
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
            dns: dns.as_ref(),
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
        let found = discoverer.discover(address, &validate);
        crate::ops::METRICS.discovery_lookup(&found, d.ldap);
        Ok(found)
    }

    /// The resolver discovery uses: one per context, built at the first lookup (building one
    /// starts a runtime and reads the system's resolver configuration).
    fn dns(&self, timeout: Duration) -> Result<Arc<HickoryDns>, String> {
        let mut dns = self.dns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = dns.as_ref() {
            return Ok(d.clone());
        }
        let d = &self.config.discovery;
        let built = Arc::new(HickoryDns::new(&d.nameserver_addrs(), timeout, d.attempts)?);
        *dns = Some(built.clone());
        Ok(built)
    }

    /// The certificates to encrypt to `address` from `domain`: remembered from an earlier
    /// discovery (see `discovered`), else discovered now and remembered. `Ok(Err(reason))` when
    /// there is no usable certificate; `Err` when the configuration or store fails.
    pub fn recipient_certificates(
        &self,
        address: &DirectAddress,
        domain: &LocalDomain,
    ) -> Result<Result<Vec<X509>, String>, String> {
        let version = self.store.version().map_err(|e| e.to_string())?;
        {
            let mut seen = self
                .discovered_version
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if *seen != Some(version) {
                self.discovered.clear();
                *seen = Some(version);
            }
        }
        let key = format!("{} {}", domain.name, address.canonical());
        let now = Instant::now();
        match self.discovered.get(&key, now) {
            Some(Err(reason)) => return Ok(Err(reason)),
            // A remembered certificate that has expired since is looked up again.
            Some(Ok(certs)) if certs.iter().all(still_valid) => return Ok(Ok(certs)),
            _ => {}
        }
        let found = self.discover(address, domain)?;
        self.discovered.put(&key, &found, now);
        let certs = found.chosen_certs();
        Ok(if certs.is_empty() {
            Err(found.reason.unwrap_or_default())
        } else {
            Ok(certs)
        })
    }

    /// The configured signing credential for `from`, and the recipients' certificates. Recipient certificates
    /// given on the command line are validated against the domain's outgoing anchors (purpose
    /// encrypt, bound to one of the recipients); without any, each recipient's certificates are
    /// discovered (DNS CERT, then LDAP) and added to `recipients`. Errors carry their exit code: 2
    /// configuration, 5 untrusted or undiscoverable recipient. `discovered` receives, for each
    /// recipient whose certificates were discovered, how many were chosen.
    pub fn signer_and_recipients(
        &self,
        from: &DirectAddress,
        to: &[DirectAddress],
        recipients: &mut Vec<X509>,
        offered: &[X509],
        discovered: &mut Vec<(DirectAddress, usize)>,
    ) -> Result<Credential, SealRefusal> {
        let ctx = self;
        let domain = ctx.domain_of(from).map_err(SealRefusal::Configuration)?;
        let signer = domain.signer_for(from).cloned().ok_or_else(|| {
            SealRefusal::Configuration(
                format!(
                    "no signing credential in domain {} is bound to {from} (address- or domain-bound, usage sign or both)",
                    domain.name
                ),
            )
        })?;
        if recipients.is_empty() {
            for rcpt in to {
                let certs = ctx
                    .recipient_certificates(rcpt, domain)
                    .map_err(SealRefusal::Configuration)?
                    .map_err(|reason| {
                        SealRefusal::Untrusted(format!(
                            "no usable certificate for {rcpt}: {reason} (see `direct-agent certs discover {rcpt}`)"
                        ))
                    })?;
                tracing::info!(recipient = %rcpt, certificates = certs.len(), "recipient certificates discovered");
                discovered.push((rcpt.clone(), certs.len()));
                recipients.extend(certs);
            }
            return Ok(signer);
        }
        let anchors = ctx
            .anchors(&domain.name, Direction::Outgoing)
            .map_err(SealRefusal::Configuration)?;
        if anchors.is_empty() {
            return Err(SealRefusal::Configuration(format!(
                "domain {} has no outgoing trust anchors: add the recipient's CA with `direct-agent anchors add FILE --domain {} --direction outgoing`",
                domain.name, domain.name
            )));
        }
        let mut intermediates = offered.to_vec();
        intermediates.extend(domain.intermediates.iter().cloned());
        let clock = SystemClock;
        let inputs = ctx.trust_inputs(domain, &anchors, &intermediates, &[], &clock);
        for cert in recipients {
            let mut reasons = Vec::new();
            let ok = to.iter().any(|rcpt| {
                match crate::trust::validate(
                    cert,
                    &inputs,
                    crate::trust::Purpose::Encrypt,
                    Some(rcpt),
                ) {
                    Ok(_) => true,
                    Err(e) => {
                        reasons.push(e.to_string());
                        false
                    }
                }
            });
            if !ok {
                reasons.dedup();
                return Err(SealRefusal::Untrusted(format!(
                    "recipient certificate not trusted: {}",
                    reasons.join("; ")
                )));
            }
        }
        Ok(signer)
    }
}

/// Whether `cert` is still within its validity period now.
fn still_valid(cert: &X509) -> bool {
    let now = crate::clock::Clock::unix_seconds(&SystemClock);
    crate::clock::asn1_unix(cert.not_after()).is_some_and(|end| end > now)
        && crate::clock::asn1_unix(cert.not_before()).is_some_and(|start| start <= now)
}

/// Why a message cannot be sealed from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum SealRefusal {
    /// The configuration lacks something (a domain, a credential, anchors): exit 2.
    #[error("{0}")]
    Configuration(String),
    /// A recipient's certificate is missing or not trusted: exit 5.
    #[error("{0}")]
    Untrusted(String),
}
