//! Certificate discovery (Applicability Statement §5; the ONC DCDT cases): find a recipient's
//! encryption certificates in DNS CERT records, then LDAP, validate each candidate, and choose.
//!
//! Order: static certificates from the configuration (for partners that publish none); DNS CERT at
//! the address-bound name (`bob.example.org` for `bob@example.org`); DNS CERT at the domain; and
//! only when DNS has no certificate at all, LDAP: SRV `_ldap._tcp.<domain>` in RFC 2782 order,
//! unreachable servers skipped, the first server that answers decides (`mail=<address>`, then
//! `mail=<domain>`).
//!
//! Choice: if any candidate is address-bound, only address-bound candidates count, and if none of
//! them is valid nothing is chosen (no fallback to domain-bound). Every valid candidate of the
//! winning kind is chosen: the message is encrypted to all of them, so whichever key the
//! recipient holds can open it.
//!
//! The logic here does no I/O: DNS, LDAP and HTTP come in through [`Dns`], [`Directory`] and
//! [`Fetcher`], and validation through a closure, so every DCDT rule is unit-tested offline.

mod cache;
mod dns;
mod ldap;
mod srv;

pub use cache::DiscoveryCache;
pub use dns::{HickoryDns, cert_record_from_rdata, resolver_builder};
pub use ldap::LdapDirectory;
pub use srv::rfc2782_order;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use openssl::x509::X509;

use crate::address::DirectAddress;
use crate::trust::fetch::Fetcher;
use crate::trust::{
    Binding, TrustError, ValidatedPath, binding_for, describe, fingerprint, parse_certs,
};

/// CERT record types (RFC 4398).
pub const CERT_PKIX: u16 = 1;
pub const CERT_IPKIX: u16 = 4;

/// One CERT record as found in DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    pub cert_type: u16,
    /// DER for PKIX, the URL bytes for IPKIX.
    pub data: Vec<u8>,
}

/// One SRV answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// Why a lookup failed. "No such record" is not an error: lookups return empty lists then.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{what}: {reason}")]
pub struct LookupError {
    pub what: String,
    pub reason: String,
}

/// A DNS answer with how long it may be cached.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub records: Vec<T>,
    pub ttl: Duration,
}

/// DNS as discovery needs it.
pub trait Dns: Send + Sync {
    fn cert(&self, name: &str) -> Result<Answer<CertRecord>, LookupError>;
    fn srv(&self, name: &str) -> Result<Answer<SrvTarget>, LookupError>;
    fn ip(&self, host: &str) -> Result<Vec<IpAddr>, LookupError>;
}

/// An LDAP directory as discovery needs it: the certificates of the entries whose `mail` equals
/// `mail`, from the server at `addr` (base DN from the rootDSE).
pub trait Directory: Send + Sync {
    fn certificates(&self, addr: SocketAddr, mail: &str) -> Result<Vec<Vec<u8>>, LookupError>;
}

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Source {
    Static,
    DnsAddress,
    DnsDomain,
    LdapAddress,
    LdapDomain,
}

/// A certificate found, and what validation said of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    pub source: Source,
    /// The DNS name, LDAP server and filter, URL or configuration file it came from.
    pub origin: String,
    pub subject: String,
    pub fingerprint_sha256: String,
    /// How it is bound to the address, if at all.
    pub binding: Option<Binding>,
    pub valid: bool,
    pub reason: Option<String>,
    #[serde(skip)]
    pub cert: X509,
}

/// One step of a discovery, for `certs discover`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub step: String,
    /// `pass`, `fail`, `skip` or `warn`.
    pub verdict: &'static str,
    pub detail: String,
}

/// The whole account of one discovery.
#[derive(Debug, serde::Serialize)]
pub struct Discovery {
    pub address: String,
    pub steps: Vec<Step>,
    pub candidates: Vec<Candidate>,
    /// Fingerprints of the chosen certificates.
    pub chosen: Vec<String>,
    /// Why nothing was chosen.
    pub reason: Option<String>,
    /// Nothing was chosen because a lookup failed (DNS timeout, every LDAP server unreachable):
    /// retrying later may succeed, and the answer is not remembered.
    pub transient: bool,
    /// How long this answer may be reused (the DNS TTLs involved, capped by the caller).
    #[serde(skip)]
    pub ttl: Duration,
}

impl Discovery {
    /// The chosen certificates.
    pub fn chosen_certs(&self) -> Vec<X509> {
        self.candidates
            .iter()
            .filter(|c| self.chosen.contains(&c.fingerprint_sha256))
            .map(|c| c.cert.clone())
            .collect()
    }
}

/// What a discovery uses.
pub struct Discoverer<'a> {
    pub dns: &'a dyn Dns,
    /// `None`: LDAP is not consulted.
    pub directory: Option<&'a dyn Directory>,
    /// For IPKIX (URL) records.
    pub fetcher: &'a dyn Fetcher,
    /// Statically configured certificates for this address or its domain, with their origin.
    pub static_certs: Vec<(X509, String)>,
    /// How long an answer with no DNS TTL (LDAP, static) may be reused.
    pub default_ttl: Duration,
}

struct Run {
    steps: Vec<Step>,
    candidates: Vec<Candidate>,
    ttl: Duration,
    /// A lookup whose outcome would decide failed: the search stops and the result is transient.
    failure: Option<String>,
}

impl Run {
    fn step(&mut self, step: impl Into<String>, verdict: &'static str, detail: impl Into<String>) {
        self.steps.push(Step {
            step: step.into(),
            verdict,
            detail: detail.into(),
        });
    }
}

impl Discoverer<'_> {
    /// Discover the certificates to encrypt to `address`. `validate` is the trust module's
    /// validation for the purpose `encrypt` and this address.
    pub fn discover(
        &self,
        address: &DirectAddress,
        validate: &dyn Fn(&X509) -> Result<ValidatedPath, TrustError>,
    ) -> Discovery {
        let mut run = Run {
            steps: Vec::new(),
            candidates: Vec::new(),
            ttl: Duration::MAX,
            failure: None,
        };
        let found = self.search_static(address, validate, &mut run)
            || (run.failure.is_none() && self.search_dns(address, validate, &mut run))
            || (run.failure.is_none() && self.search_ldap(address, validate, &mut run));
        if !found && run.failure.is_none() {
            run.step("result", "fail", "no certificate was found in DNS or LDAP");
        }
        let (chosen, reason) = match &run.failure {
            Some(f) if run.candidates.is_empty() => (
                Vec::new(),
                Some(format!(
                    "discovery could not complete, try again later: {f}"
                )),
            ),
            _ => choose(&run.candidates),
        };
        let transient = chosen.is_empty() && run.failure.is_some();
        match &reason {
            Some(r) => run.step("choice", "fail", r.clone()),
            None => run.step(
                "choice",
                "pass",
                format!("{} certificate(s) chosen", chosen.len()),
            ),
        }
        Discovery {
            address: address.to_string(),
            steps: run.steps,
            candidates: run.candidates,
            chosen,
            reason,
            transient,
            ttl: if run.ttl == Duration::MAX {
                self.default_ttl
            } else {
                run.ttl
            },
        }
    }

    fn consider(
        &self,
        cert: X509,
        source: Source,
        origin: String,
        address: &DirectAddress,
        validate: &dyn Fn(&X509) -> Result<ValidatedPath, TrustError>,
        run: &mut Run,
    ) {
        let binding = binding_for(&cert, address).ok();
        let verdict = validate(&cert);
        let candidate = Candidate {
            source,
            origin,
            subject: describe(&cert),
            fingerprint_sha256: fingerprint(&cert),
            binding,
            valid: verdict.is_ok(),
            reason: verdict.err().map(|e| e.to_string()),
            cert,
        };
        run.step(
            "candidate",
            if candidate.valid { "pass" } else { "fail" },
            format!(
                "{} from {}: {}",
                candidate.subject,
                candidate.origin,
                candidate.reason.as_deref().unwrap_or("valid")
            ),
        );
        if !run
            .candidates
            .iter()
            .any(|c| c.fingerprint_sha256 == candidate.fingerprint_sha256)
        {
            run.candidates.push(candidate);
        }
    }

    fn search_static(
        &self,
        address: &DirectAddress,
        validate: &dyn Fn(&X509) -> Result<ValidatedPath, TrustError>,
        run: &mut Run,
    ) -> bool {
        if self.static_certs.is_empty() {
            return false;
        }
        run.step(
            "static",
            "pass",
            format!("{} configured certificate(s)", self.static_certs.len()),
        );
        for (cert, origin) in &self.static_certs {
            self.consider(
                cert.clone(),
                Source::Static,
                origin.clone(),
                address,
                validate,
                run,
            );
        }
        true
    }

    /// DNS CERT at the address-bound name, then at the domain. True when DNS held any certificate.
    fn search_dns(
        &self,
        address: &DirectAddress,
        validate: &dyn Fn(&X509) -> Result<ValidatedPath, TrustError>,
        run: &mut Run,
    ) -> bool {
        let address_name = format!("{}.{}", address.local_part(), address.domain());
        for (name, source) in [
            (address_name, Source::DnsAddress),
            (address.domain().to_string(), Source::DnsDomain),
        ] {
            let answer = match self.dns.cert(&name) {
                Ok(a) => a,
                Err(e) => {
                    // Not knowing what DNS holds here must not let a lower-precedence source
                    // decide (an address-bound certificate may exist): stop, transiently.
                    run.step(format!("dns CERT {name}"), "fail", e.to_string());
                    run.failure = Some(e.to_string());
                    return false;
                }
            };
            if answer.records.is_empty() {
                run.step(format!("dns CERT {name}"), "skip", "no CERT records");
                continue;
            }
            run.ttl = run.ttl.min(answer.ttl);
            run.step(
                format!("dns CERT {name}"),
                "pass",
                format!("{} record(s)", answer.records.len()),
            );
            let before = run.candidates.len();
            for (i, rec) in answer.records.iter().enumerate() {
                let origin = format!("DNS CERT {name} #{}", i + 1);
                match self.record_certs(rec) {
                    Ok(certs) => {
                        for cert in certs {
                            self.consider(cert, source, origin.clone(), address, validate, run);
                        }
                    }
                    Err(reason) => run.step("dns record", "warn", format!("{origin}: {reason}")),
                }
            }
            if run.candidates.len() > before {
                return true;
            }
        }
        false
    }

    fn record_certs(&self, rec: &CertRecord) -> Result<Vec<X509>, String> {
        match rec.cert_type {
            CERT_PKIX => X509::from_der(&rec.data)
                .map(|c| vec![c])
                .map_err(|_| "type PKIX but the data is not a DER certificate; ignored".into()),
            CERT_IPKIX => {
                let url = std::str::from_utf8(&rec.data)
                    .map_err(|_| "type IPKIX but the URL is not text; ignored".to_string())?
                    .trim_end_matches('\0')
                    .to_string();
                let body = self
                    .fetcher
                    .fetch(&url)
                    .map_err(|e| format!("type IPKIX: {e}; ignored"))?;
                parse_certs(&body)
                    .ok_or_else(|| format!("type IPKIX: {url} returned no certificate; ignored"))
            }
            other => Err(format!("CERT type {other} is not PKIX or IPKIX; ignored")),
        }
    }

    /// LDAP servers from SRV, in RFC 2782 order; the first that answers decides.
    fn search_ldap(
        &self,
        address: &DirectAddress,
        validate: &dyn Fn(&X509) -> Result<ValidatedPath, TrustError>,
        run: &mut Run,
    ) -> bool {
        let Some(directory) = self.directory else {
            run.step("ldap", "skip", "LDAP discovery is off");
            return false;
        };
        let srv_name = format!("_ldap._tcp.{}", address.domain());
        let answer = match self.dns.srv(&srv_name) {
            Ok(a) => a,
            Err(e) => {
                run.step(format!("dns SRV {srv_name}"), "fail", e.to_string());
                run.failure = Some(e.to_string());
                return false;
            }
        };
        if answer.records.is_empty() {
            run.step(
                format!("dns SRV {srv_name}"),
                "skip",
                "no LDAP servers published",
            );
            return false;
        }
        run.ttl = run.ttl.min(answer.ttl);
        let ordered = rfc2782_order(answer.records, &mut rand_u32);
        run.step(
            format!("dns SRV {srv_name}"),
            "pass",
            ordered
                .iter()
                .map(|s| {
                    format!(
                        "{}:{} (priority {}, weight {})",
                        s.target, s.port, s.priority, s.weight
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
        let mut unreachable = Vec::new();
        for target in ordered {
            let ips = match self.dns.ip(&target.target) {
                Ok(ips) if !ips.is_empty() => ips,
                Ok(_) => {
                    run.step(
                        format!("ldap {}", target.target),
                        "fail",
                        "the host name has no address",
                    );
                    unreachable.push(format!("{}: no address", target.target));
                    continue;
                }
                Err(e) => {
                    run.step(format!("ldap {}", target.target), "fail", e.to_string());
                    unreachable.push(e.to_string());
                    continue;
                }
            };
            for ip in ips {
                let addr = SocketAddr::new(ip, target.port);
                let server = format!("ldap://{}:{} ({addr})", target.target, target.port);
                let mut reachable = false;
                for (mail, source) in [
                    (address.canonical(), Source::LdapAddress),
                    (address.domain().to_ascii_lowercase(), Source::LdapDomain),
                ] {
                    match directory.certificates(addr, &mail) {
                        Ok(ders) => {
                            reachable = true;
                            run.step(
                                format!("ldap {server}"),
                                if ders.is_empty() { "skip" } else { "pass" },
                                format!("(mail={mail}): {} certificate(s)", ders.len()),
                            );
                            let before = run.candidates.len();
                            for der in ders {
                                match X509::from_der(&der) {
                                    Ok(cert) => self.consider(
                                        cert,
                                        source,
                                        format!("{server} (mail={mail})"),
                                        address,
                                        validate,
                                        run,
                                    ),
                                    Err(_) => run.step(
                                        "ldap entry",
                                        "warn",
                                        format!("{server} (mail={mail}): userCertificate is not a DER certificate; ignored"),
                                    ),
                                }
                            }
                            if run.candidates.len() > before {
                                return true;
                            }
                        }
                        Err(e) => {
                            run.step(
                                format!("ldap {server}"),
                                "fail",
                                format!("{e}; trying the next server"),
                            );
                            unreachable.push(e.to_string());
                            break;
                        }
                    }
                }
                if reachable {
                    // The first server that answers decides (DCDT: no certificate there means none).
                    return false;
                }
            }
        }
        // No server answered: whether the directory holds a certificate is unknown.
        run.failure = Some(format!(
            "no LDAP server could be reached ({})",
            unreachable.join("; ")
        ));
        false
    }
}

/// Apply the choice rules; returns the chosen fingerprints or why none.
fn choose(candidates: &[Candidate]) -> (Vec<String>, Option<String>) {
    if candidates.is_empty() {
        return (Vec::new(), Some("no certificate found".into()));
    }
    let address_bound: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.binding == Some(Binding::Address))
        .collect();
    let pool: Vec<&Candidate> = if address_bound.is_empty() {
        candidates.iter().collect()
    } else {
        address_bound
    };
    let valid: Vec<String> = pool
        .iter()
        .filter(|c| c.valid)
        .map(|c| c.fingerprint_sha256.clone())
        .collect();
    if !valid.is_empty() {
        return (valid, None);
    }
    let reasons = pool
        .iter()
        .map(|c| c.reason.clone().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("; ");
    let which = if pool.iter().any(|c| c.binding == Some(Binding::Address)) {
        "address-bound certificates were found but none is valid (no fallback to domain-bound)"
    } else {
        "no valid certificate was found"
    };
    (Vec::new(), Some(format!("{which}: {reasons}")))
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // Weighted SRV choice only needs unpredictability, not secrecy; if the generator fails, the
    // lowest weight-sum entry is taken first, which is still a valid RFC 2782 order.
    let _ = openssl::rand::rand_bytes(&mut b);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests;
