//! Where mail for a domain goes: MX lookup with the implicit-MX fallback (RFC 5321 §5.1), the null
//! MX (RFC 7505), and the addresses of a mail host, through hickory-resolver with the configured
//! nameservers (`[discovery] nameservers`, the system's when empty). Ordering the MX records is a
//! pure function ([`order_mx`]) so the rules are tested without DNS.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::{RData, RecordType};
use hickory_resolver::Resolver;
use hickory_resolver::config::ResolverOpts;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// Why no mail host could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MxError {
    /// The domain does not exist (NXDOMAIN): mail to it cannot be delivered.
    #[error("domain {domain} does not exist (DNS NXDOMAIN for {rtype})")]
    NoSuchDomain { domain: String, rtype: String },
    /// The domain says it accepts no mail (RFC 7505 null MX, `MX 0 .`).
    #[error("domain {0} accepts no mail (null MX, RFC 7505)")]
    NullMx(String),
    /// The domain exists but has neither MX nor A/AAAA records.
    #[error("domain {0} has no MX and no A/AAAA record: no host to deliver to")]
    NoMailHost(String),
    /// A host named by an MX record has no address (NXDOMAIN or no A/AAAA).
    #[error("mail host {0} has no A/AAAA record")]
    NoAddress(String),
    /// A time-out, SERVFAIL or unreachable name server: try again later.
    #[error("DNS {what}: {reason}")]
    Temporary { what: String, reason: String },
}

impl MxError {
    /// Whether asking again later can give another answer.
    pub fn is_transient(&self) -> bool {
        // A mail host without an address is most likely a zone being fixed; the queue's lifetime
        // bounds the retries.
        matches!(self, MxError::Temporary { .. } | MxError::NoAddress(_))
    }
}

/// One MX record: preference and exchange (without the trailing dot; "" for the root, the null
/// MX).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    pub exchange: String,
}

/// The hosts to try for `domain` from its MX records, lowest preference first (records with the
/// same preference keep the DNS order; RFC 5321 §5.1 asks for them to be randomised, which the
/// resolver's answer order already is for most servers). A lone null MX (`MX 0 .`) means the
/// domain accepts no mail; a null MX mixed with real ones is a misconfiguration, and only the
/// real ones are used. Duplicates are tried once.
pub fn order_mx(domain: &str, mut records: Vec<MxRecord>) -> Result<Vec<String>, MxError> {
    let is_null = |r: &MxRecord| r.exchange.trim_end_matches('.').is_empty();
    if !records.is_empty() && records.iter().all(is_null) {
        return Err(MxError::NullMx(domain.to_string()));
    }
    records.retain(|r| !is_null(r));
    records.sort_by_key(|r| r.preference);
    let mut hosts: Vec<String> = Vec::with_capacity(records.len());
    for r in records {
        let host = r.exchange.trim_end_matches('.').to_ascii_lowercase();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

/// MX and address lookups.
pub struct MxResolver {
    resolver: Resolver<TokioRuntimeProvider>,
    /// Bound on one whole lookup (hickory's own timeout applies per name server and attempt).
    timeout: Duration,
}

impl std::fmt::Debug for MxResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MxResolver")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

enum Found {
    Records(Vec<RData>),
    /// The name exists but has no record of the type (NODATA).
    NoData,
    /// The name does not exist.
    NxDomain,
}

impl MxResolver {
    /// Resolve with `nameservers` (UDP and TCP on each), or the system's when empty. `timeout`
    /// and `attempts` apply to each query.
    pub fn new(
        nameservers: &[SocketAddr],
        timeout: Duration,
        attempts: usize,
    ) -> Result<MxResolver, String> {
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = attempts.max(1);
        let builder = crate::discovery::resolver_builder(nameservers)?;
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        // Every attempt on every server, plus a little slack.
        let per_server = timeout.saturating_mul(attempts.max(1) as u32);
        let servers = nameservers.len().max(1) as u32;
        Ok(MxResolver {
            resolver,
            timeout: per_server.saturating_mul(servers) + Duration::from_millis(500),
        })
    }

    /// The mail hosts for `domain`, in the order to try them: its MX hosts, or the domain
    /// itself when it has no MX but has an address (RFC 5321 §5.1).
    pub async fn mail_hosts(&self, domain: &str) -> Result<Vec<String>, MxError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        match self.lookup(&domain, RecordType::MX).await? {
            Found::Records(data) => {
                let records = data
                    .into_iter()
                    .filter_map(|d| match d {
                        RData::MX(mx) => Some(MxRecord {
                            preference: mx.preference,
                            exchange: mx.exchange.to_utf8(),
                        }),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                if records.is_empty() {
                    // Only a CNAME chain without MX at its end: treat as no MX.
                    return self.implicit_mx(&domain).await;
                }
                order_mx(&domain, records)
            }
            Found::NoData => self.implicit_mx(&domain).await,
            Found::NxDomain => Err(MxError::NoSuchDomain {
                domain,
                rtype: "MX".into(),
            }),
        }
    }

    /// No MX: the domain itself is the mail host if it has an address.
    async fn implicit_mx(&self, domain: &str) -> Result<Vec<String>, MxError> {
        match self.addresses(domain).await {
            Ok(_) => Ok(vec![domain.to_string()]),
            Err(MxError::NoAddress(_)) => Err(MxError::NoMailHost(domain.to_string())),
            Err(e) => Err(e),
        }
    }

    /// The addresses of `host`, IPv4 first (an IP literal is its own address).
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, MxError> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            return Ok(vec![ip]);
        }
        let host = host.trim_end_matches('.');
        // The hosts file is consulted first (hickory's default), so routes to "localhost" work.
        let fqdn = format!("{host}.");
        let what = format!("A/AAAA {host}");
        let result = tokio::time::timeout(self.timeout, self.resolver.lookup_ip(fqdn.as_str()))
            .await
            .map_err(|_| MxError::Temporary {
                what: what.clone(),
                reason: format!(
                    "timed out after {:?} (no answer from the name server)",
                    self.timeout
                ),
            })?;
        match result {
            Ok(lookup) => {
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.sort_by_key(|ip| ip.is_ipv6());
                ips.dedup();
                if ips.is_empty() {
                    Err(MxError::NoAddress(host.to_string()))
                } else {
                    Ok(ips)
                }
            }
            Err(e) if e.is_no_records_found() => Err(MxError::NoAddress(host.to_string())),
            Err(e) => Err(MxError::Temporary {
                what,
                reason: describe(&e),
            }),
        }
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Found, MxError> {
        let fqdn = format!("{name}.");
        let what = format!("{rtype} {name}");
        let result = tokio::time::timeout(self.timeout, self.resolver.lookup(fqdn.as_str(), rtype))
            .await
            .map_err(|_| MxError::Temporary {
                what: what.clone(),
                reason: format!(
                    "timed out after {:?} (no answer from the name server)",
                    self.timeout
                ),
            })?;
        match result {
            Ok(lookup) => Ok(Found::Records(
                lookup.answers().iter().map(|r| r.data.clone()).collect(),
            )),
            Err(e) if e.is_nx_domain() => Ok(Found::NxDomain),
            Err(e) if e.is_no_records_found() => Ok(Found::NoData),
            Err(e) => Err(MxError::Temporary {
                what,
                reason: describe(&e),
            }),
        }
    }
}

fn describe(e: &NetError) -> String {
    match e {
        NetError::Timeout => "timed out (no answer from the name server)".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(preference: u16, exchange: &str) -> MxRecord {
        MxRecord {
            preference,
            exchange: exchange.into(),
        }
    }

    #[test]
    fn lowest_preference_first_and_duplicates_once() {
        let hosts = order_mx(
            "hisp.test",
            vec![
                mx(20, "mx2.hisp.test."),
                mx(10, "MX1.hisp.test."),
                mx(30, "mx1.hisp.test"),
                mx(20, "mx3.hisp.test."),
            ],
        )
        .unwrap();
        assert_eq!(hosts, ["mx1.hisp.test", "mx2.hisp.test", "mx3.hisp.test"]);
    }

    #[test]
    fn a_lone_null_mx_refuses_mail() {
        let e = order_mx("nomail.test", vec![mx(0, ".")]).unwrap_err();
        assert_eq!(e, MxError::NullMx("nomail.test".into()));
        assert!(!e.is_transient());
        assert!(e.to_string().contains("RFC 7505"), "{e}");
        let e = order_mx("nomail.test", vec![mx(0, "")]).unwrap_err();
        assert!(matches!(e, MxError::NullMx(_)));
    }

    #[test]
    fn a_null_mx_beside_real_ones_is_ignored() {
        let hosts = order_mx("mixed.test", vec![mx(0, "."), mx(10, "mx.mixed.test.")]).unwrap();
        assert_eq!(hosts, ["mx.mixed.test"]);
    }

    #[test]
    fn classification() {
        assert!(
            !MxError::NoSuchDomain {
                domain: "x.test".into(),
                rtype: "MX".into()
            }
            .is_transient()
        );
        assert!(!MxError::NoMailHost("x.test".into()).is_transient());
        assert!(
            MxError::Temporary {
                what: "MX x.test".into(),
                reason: "SERVFAIL".into()
            }
            .is_transient()
        );
    }

    #[test]
    fn builds_without_a_runtime() {
        let r = MxResolver::new(
            &["127.0.0.1:53".parse().unwrap()],
            Duration::from_secs(1),
            1,
        );
        assert!(r.is_ok(), "{r:?}");
    }
}
