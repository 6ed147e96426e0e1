//! DNS for discovery through hickory-resolver: CERT, SRV and address lookups against the system's
//! resolvers or configured ones (`[discovery] nameservers`), over UDP with TCP when an answer is
//! truncated. The resolver is async; this edge owns a small runtime so the discovery core stays
//! synchronous.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::rr::rdata::CERT;
use hickory_proto::rr::{RData, RecordType};
use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::{Answer, CertRecord, Dns, LookupError, SrvTarget};

/// DNS lookups with hickory.
pub struct HickoryDns {
    resolver: Resolver<TokioRuntimeProvider>,
    /// Always `Some` until dropped (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
    /// Bound on one whole query (hickory's own timeout applies per transport and attempt).
    timeout: Duration,
}

impl HickoryDns {
    /// Resolve with `nameservers` (UDP and TCP on each), or the system's when empty.
    pub fn new(
        nameservers: &[SocketAddr],
        timeout: Duration,
        attempts: usize,
    ) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the DNS runtime: {e}"))?;
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = attempts.max(1);
        // Discovery keeps its own cache with the policy of the Applicability Statement.
        opts.cache_size = 0;
        let builder = resolver_builder(nameservers)?;
        let resolver = runtime
            .block_on(async { builder.with_options(opts).build() })
            .map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        Ok(HickoryDns {
            resolver,
            runtime: Some(runtime),
            timeout,
        })
    }

    fn lookup(&self, name: &str, rtype: RecordType) -> Result<(Vec<RData>, Duration), LookupError> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let what = format!("DNS {rtype} {name}");
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(LookupError {
                what,
                reason: "the DNS resolver has been shut down".into(),
            });
        };
        let result = runtime.block_on(async {
            tokio::time::timeout(self.timeout, self.resolver.lookup(fqdn.as_str(), rtype)).await
        });
        let Ok(result) = result else {
            return Err(LookupError {
                what,
                reason: format!(
                    "timed out after {:?} (no answer from the name server)",
                    self.timeout
                ),
            });
        };
        match result {
            Ok(lookup) => {
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                let data = lookup.answers().iter().map(|r| r.data.clone()).collect();
                Ok((data, ttl))
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                Ok((Vec::new(), Duration::ZERO))
            }
            Err(e) => Err(LookupError {
                what,
                reason: describe(&e),
            }),
        }
    }
}

fn cert_record(c: CERT) -> CertRecord {
    CertRecord {
        cert_type: u16::from(c.cert_type),
        data: c.cert_data,
    }
}

/// Read the RDATA of a CERT record (RFC 4398: type, key tag, algorithm, certificate or URL) as it
/// comes off the wire, the way the resolver reads an answer. For the fuzz target and tools; lookups
/// go through [`HickoryDns`].
pub fn cert_record_from_rdata(rdata: &[u8]) -> Result<CertRecord, String> {
    if rdata.len() > usize::from(u16::MAX) {
        return Err(format!(
            "CERT RDATA of {} bytes is longer than a DNS record can be",
            rdata.len()
        ));
    }
    CERT::try_from(rdata)
        .map(cert_record)
        .map_err(|e| format!("malformed CERT RDATA: {e}"))
}

fn describe(e: &NetError) -> String {
    match e {
        NetError::Timeout => "timed out (no answer from the name server)".into(),
        other => other.to_string(),
    }
}

/// The resolver is shared by the agent (one per context) and may be dropped with it from async
/// code at shutdown, where dropping a runtime normally panics: shut it down in the background.
impl Drop for HickoryDns {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Dns for HickoryDns {
    fn cert(&self, name: &str) -> Result<Answer<CertRecord>, LookupError> {
        let (data, ttl) = self.lookup(name, RecordType::CERT)?;
        let records = data
            .into_iter()
            .filter_map(|d| match d {
                RData::CERT(c) => Some(cert_record(c)),
                _ => None,
            })
            .collect();
        Ok(Answer { records, ttl })
    }

    fn srv(&self, name: &str) -> Result<Answer<SrvTarget>, LookupError> {
        let (data, ttl) = self.lookup(name, RecordType::SRV)?;
        let records = data
            .into_iter()
            .filter_map(|d| match d {
                RData::SRV(s) => Some(SrvTarget {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: s.target.to_utf8().trim_end_matches('.').to_string(),
                }),
                _ => None,
            })
            .collect();
        Ok(Answer { records, ttl })
    }

    fn ip(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let (mut v4, _) = self.lookup(host, RecordType::A)?;
        let (v6, _) = self.lookup(host, RecordType::AAAA)?;
        v4.extend(v6);
        Ok(v4
            .into_iter()
            .filter_map(|d| match d {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect())
    }
}

/// A tokio resolver builder for `nameservers` (UDP and TCP on each one's port), or for the
/// system's resolvers when the list is empty. Shared by discovery and MX lookup.
pub fn resolver_builder(
    nameservers: &[SocketAddr],
) -> Result<hickory_resolver::ResolverBuilder<TokioRuntimeProvider>, String> {
    Ok(if nameservers.is_empty() {
        Resolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
    } else {
        let servers = nameservers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_rdata_pkix_and_ipkix() {
        // type 1 (PKIX), key tag 0, algorithm 0, then the DER.
        let rec = cert_record_from_rdata(&[0, 1, 0, 0, 0, 0x30, 0x03, 0x02, 0x01, 0x01]).unwrap();
        assert_eq!(rec.cert_type, super::super::CERT_PKIX);
        assert_eq!(rec.data, vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let mut ipkix = vec![0, 4, 0, 0, 0];
        ipkix.extend_from_slice(b"http://ca.example/c.cer");
        let rec = cert_record_from_rdata(&ipkix).unwrap();
        assert_eq!(rec.cert_type, super::super::CERT_IPKIX);
        assert_eq!(rec.data, b"http://ca.example/c.cer");
    }

    #[test]
    fn cert_rdata_short_or_oversized_is_an_error() {
        for short in [&[][..], &[0], &[0, 1, 0, 0, 0]] {
            assert!(cert_record_from_rdata(short).is_err(), "{short:?}");
        }
        assert!(cert_record_from_rdata(&vec![0; 70_000]).is_err());
    }
}
