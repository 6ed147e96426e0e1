//! The DCDT rules, offline: fake DNS and LDAP, real certificates from the committed PKI, and a
//! validation closure that decides which certificates count as valid.

use crate::trust::test_cert as cert;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use openssl::x509::X509;

use super::*;
use crate::trust::fetch::StaticFetcher;

fn der(name: &str) -> Vec<u8> {
    cert(name).to_der().unwrap()
}

fn pkix(name: &str) -> CertRecord {
    CertRecord {
        cert_type: CERT_PKIX,
        data: der(name),
    }
}

#[derive(Default)]
struct FakeDns {
    cert: HashMap<String, Result<Vec<CertRecord>, String>>,
    srv: HashMap<String, Vec<SrvTarget>>,
    queries: Mutex<Vec<String>>,
}

impl Dns for FakeDns {
    fn cert(&self, name: &str) -> Result<Answer<CertRecord>, LookupError> {
        self.queries.lock().unwrap().push(format!("CERT {name}"));
        match self.cert.get(name) {
            Some(Ok(r)) => Ok(Answer {
                records: r.clone(),
                ttl: Duration::from_secs(300),
            }),
            Some(Err(e)) => Err(LookupError {
                what: format!("DNS CERT {name}"),
                reason: e.clone(),
            }),
            None => Ok(Answer {
                records: vec![],
                ttl: Duration::ZERO,
            }),
        }
    }
    fn srv(&self, name: &str) -> Result<Answer<SrvTarget>, LookupError> {
        self.queries.lock().unwrap().push(format!("SRV {name}"));
        Ok(Answer {
            records: self.srv.get(name).cloned().unwrap_or_default(),
            ttl: Duration::from_secs(60),
        })
    }
    fn ip(&self, _host: &str) -> Result<Vec<IpAddr>, LookupError> {
        Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
    }
}

/// Certificates (DER) by `mail` value.
type Entries = HashMap<String, Vec<Vec<u8>>>;

/// LDAP servers by port: `Err` = unreachable, else entries by mail.
#[derive(Default)]
struct FakeDirectory {
    servers: HashMap<u16, Result<Entries, String>>,
    asked: Mutex<Vec<u16>>,
}

impl Directory for FakeDirectory {
    fn certificates(&self, addr: SocketAddr, mail: &str) -> Result<Vec<Vec<u8>>, LookupError> {
        self.asked.lock().unwrap().push(addr.port());
        match self.servers.get(&addr.port()) {
            Some(Ok(entries)) => Ok(entries.get(mail).cloned().unwrap_or_default()),
            Some(Err(e)) => Err(LookupError {
                what: format!("LDAP {addr}"),
                reason: e.clone(),
            }),
            None => Err(LookupError {
                what: format!("LDAP {addr}"),
                reason: "connection refused".into(),
            }),
        }
    }
}

fn srv(port: u16, priority: u16, weight: u16) -> SrvTarget {
    SrvTarget {
        priority,
        weight,
        port,
        target: format!("ldap{port}.hisp-b.example"),
    }
}

/// Valid unless the subject names one of `invalid`.
fn judge(invalid: &'static [&'static str]) -> impl Fn(&X509) -> Result<ValidatedPath, TrustError> {
    move |c: &X509| {
        let s = describe(c);
        if invalid.iter().any(|i| s.contains(i)) {
            Err(TrustError::Expired {
                subject: s,
                not_after: "test".into(),
            })
        } else {
            Ok(ValidatedPath {
                chain_subjects: vec![crate::trust::describe(c)],
                chain: vec![c.clone()],
                binding: None,
                warnings: vec![],
                fresh_until: i64::MAX,
            })
        }
    }
}

fn run(
    dns: &FakeDns,
    dir: Option<&FakeDirectory>,
    fetcher: &StaticFetcher,
    invalid: &'static [&'static str],
) -> Discovery {
    let d = Discoverer {
        dns,
        directory: dir.map(|d| d as &dyn Directory),
        fetcher,
        static_certs: vec![],
        default_ttl: Duration::from_secs(3600),
    };
    let who = DirectAddress::parse("iis@hisp-b.example").unwrap();
    d.discover(&who, &judge(invalid))
}

fn chosen_subjects(d: &Discovery) -> Vec<String> {
    d.chosen_certs().iter().map(|c| describe(c)).collect()
}

#[test]
fn d1_address_bound_in_dns_wins_and_ldap_is_not_asked() {
    let mut dns = FakeDns::default();
    dns.cert.insert(
        "iis.hisp-b.example".into(),
        Ok(vec![pkix("iis@hisp-b.example.pem")]),
    );
    dns.cert.insert(
        "hisp-b.example".into(),
        Ok(vec![pkix("hisp-b.example.pem")]),
    );
    let dir = FakeDirectory::default();
    let d = run(&dns, Some(&dir), &StaticFetcher::default(), &[]);
    assert_eq!(
        chosen_subjects(&d),
        ["CN=iis@hisp-b.example, O=HISP B Test"]
    );
    assert_eq!(d.candidates[0].source, Source::DnsAddress);
    assert!(dir.asked.lock().unwrap().is_empty());
    assert_eq!(d.ttl, Duration::from_secs(300));
}

#[test]
fn d2_domain_bound_when_no_address_record() {
    let mut dns = FakeDns::default();
    dns.cert.insert(
        "hisp-b.example".into(),
        Ok(vec![pkix("hisp-b.example.pem")]),
    );
    let d = run(&dns, None, &StaticFetcher::default(), &[]);
    assert_eq!(chosen_subjects(&d), ["CN=hisp-b.example, O=HISP B Test"]);
}

#[test]
fn d5_invalid_address_bound_does_not_fall_back_to_domain_bound() {
    let mut dns = FakeDns::default();
    dns.cert.insert(
        "iis.hisp-b.example".into(),
        Ok(vec![pkix("iis@hisp-b.example.pem")]),
    );
    dns.cert.insert(
        "hisp-b.example".into(),
        Ok(vec![pkix("hisp-b.example.pem")]),
    );
    let d = run(&dns, None, &StaticFetcher::default(), &["iis@"]);
    assert!(d.chosen.is_empty());
    assert!(
        d.reason
            .as_deref()
            .unwrap()
            .contains("no fallback to domain-bound"),
        "{:?}",
        d.reason
    );
}

#[test]
fn d9_valid_among_invalid_address_bound() {
    let mut dns = FakeDns::default();
    // Two address-bound certificates for iis@: the committed one and the "expired" stand-in
    // (a second certificate bound to the same address is made valid/invalid by the judge).
    dns.cert.insert(
        "iis.hisp-b.example".into(),
        Ok(vec![
            pkix("iis@hisp-b.example.pem"),
            pkix("hisp-b.example.pem"),
        ]),
    );
    let d = run(
        &dns,
        None,
        &StaticFetcher::default(),
        &["CN=hisp-b.example"],
    );
    assert_eq!(
        chosen_subjects(&d),
        ["CN=iis@hisp-b.example, O=HISP B Test"]
    );
    assert_eq!(d.candidates.len(), 2);
}

#[test]
fn ipkix_url_and_malformed_records() {
    let mut dns = FakeDns::default();
    dns.cert.insert(
        "iis.hisp-b.example".into(),
        Ok(vec![
            CertRecord {
                cert_type: CERT_PKIX,
                data: b"not a certificate".to_vec(),
            },
            CertRecord {
                cert_type: 3,
                data: b"pgp".to_vec(),
            },
            CertRecord {
                cert_type: CERT_IPKIX,
                data: b"http://127.0.0.1:18080/iis.cer".to_vec(),
            },
        ]),
    );
    let f = StaticFetcher::default().with(
        "http://127.0.0.1:18080/iis.cer",
        der("iis@hisp-b.example.pem"),
    );
    let d = run(&dns, None, &f, &[]);
    assert_eq!(
        chosen_subjects(&d),
        ["CN=iis@hisp-b.example, O=HISP B Test"]
    );
    let warns: Vec<_> = d.steps.iter().filter(|s| s.verdict == "warn").collect();
    assert_eq!(warns.len(), 2, "{:?}", d.steps);
    assert!(warns[0].detail.contains("not a DER certificate"));
    assert!(warns[1].detail.contains("CERT type 3"));
}

#[test]
fn dns_timeout_stops_discovery_transiently_without_fallback() {
    let mut dns = FakeDns::default();
    dns.cert.insert(
        "iis.hisp-b.example".into(),
        Err("timed out (no answer from the name server)".into()),
    );
    dns.cert.insert(
        "hisp-b.example".into(),
        Ok(vec![pkix("hisp-b.example.pem")]),
    );
    let d = run(&dns, None, &StaticFetcher::default(), &[]);
    assert!(
        d.chosen.is_empty(),
        "an address-bound certificate may exist: no domain-bound fallback"
    );
    assert!(d.transient);
    assert!(
        d.reason.as_deref().unwrap().contains("try again later")
            && d.reason.as_deref().unwrap().contains("timed out"),
        "{:?}",
        d.reason
    );
    assert_eq!(
        dns.queries.lock().unwrap().len(),
        1,
        "nothing asked after the failure"
    );
    let cache = DiscoveryCache::new(Duration::from_secs(60), Duration::from_secs(60));
    cache.put("iis@hisp-b.example", &d, std::time::Instant::now());
    assert!(
        cache
            .get("iis@hisp-b.example", std::time::Instant::now())
            .is_none(),
        "failures are not cached"
    );
}

#[test]
fn d12_every_ldap_server_down_is_a_transient_failure() {
    let dns = FakeDns {
        srv: HashMap::from([("_ldap._tcp.hisp-b.example".into(), vec![srv(4001, 0, 0)])]),
        ..FakeDns::default()
    };
    let mut dir = FakeDirectory::default();
    dir.servers.insert(4001, Err("connection refused".into()));
    let d = run(&dns, Some(&dir), &StaticFetcher::default(), &[]);
    assert!(d.chosen.is_empty() && d.transient);
    assert!(
        d.reason
            .as_deref()
            .unwrap()
            .contains("no LDAP server could be reached (LDAP 127.0.0.1:4001: connection refused)"),
        "{:?}",
        d.reason
    );
}

#[test]
fn d10_ldap_skips_a_dead_server_and_d3_finds_the_address_entry() {
    let dns = FakeDns {
        srv: HashMap::from([(
            "_ldap._tcp.hisp-b.example".into(),
            vec![srv(1001, 0, 0), srv(1002, 10, 0)],
        )]),
        ..FakeDns::default()
    };
    let mut dir = FakeDirectory::default();
    dir.servers.insert(1001, Err("connection refused".into()));
    dir.servers.insert(
        1002,
        Ok(HashMap::from([(
            "iis@hisp-b.example".into(),
            vec![der("iis@hisp-b.example.pem")],
        )])),
    );
    let d = run(&dns, Some(&dir), &StaticFetcher::default(), &[]);
    assert_eq!(
        chosen_subjects(&d),
        ["CN=iis@hisp-b.example, O=HISP B Test"]
    );
    assert_eq!(d.candidates[0].source, Source::LdapAddress);
    assert_eq!(
        *dir.asked.lock().unwrap(),
        [1001, 1002],
        "priority order, dead one first then skipped"
    );
}

#[test]
fn d4_domain_entry_and_d13_first_answering_server_decides() {
    let dns = FakeDns {
        srv: HashMap::from([(
            "_ldap._tcp.hisp-b.example".into(),
            vec![srv(2001, 0, 0), srv(2002, 5, 0)],
        )]),
        ..FakeDns::default()
    };
    let mut dir = FakeDirectory::default();
    dir.servers.insert(
        2001,
        Ok(HashMap::from([(
            "hisp-b.example".into(),
            vec![der("hisp-b.example.pem")],
        )])),
    );
    let d = run(&dns, Some(&dir), &StaticFetcher::default(), &[]);
    assert_eq!(chosen_subjects(&d), ["CN=hisp-b.example, O=HISP B Test"]);
    assert_eq!(d.candidates[0].source, Source::LdapDomain);

    // D13: the first server answers but has nothing: the second is not asked, nothing chosen.
    let mut empty = FakeDirectory::default();
    empty.servers.insert(2001, Ok(HashMap::new()));
    empty.servers.insert(
        2002,
        Ok(HashMap::from([(
            "iis@hisp-b.example".into(),
            vec![der("iis@hisp-b.example.pem")],
        )])),
    );
    let d = run(&dns, Some(&empty), &StaticFetcher::default(), &[]);
    assert!(d.chosen.is_empty());
    assert_eq!(*empty.asked.lock().unwrap(), [2001, 2001]);
}

#[test]
fn d11_nothing_anywhere_and_garbage_ldap_values() {
    let d = run(
        &FakeDns::default(),
        Some(&FakeDirectory::default()),
        &StaticFetcher::default(),
        &[],
    );
    assert!(d.chosen.is_empty());
    assert_eq!(d.reason.as_deref(), Some("no certificate found"));

    let dns = FakeDns {
        srv: HashMap::from([("_ldap._tcp.hisp-b.example".into(), vec![srv(3001, 0, 0)])]),
        ..FakeDns::default()
    };
    let mut dir = FakeDirectory::default();
    dir.servers.insert(
        3001,
        Ok(HashMap::from([(
            "iis@hisp-b.example".into(),
            vec![b"garbage".to_vec()],
        )])),
    );
    let d = run(&dns, Some(&dir), &StaticFetcher::default(), &[]);
    assert!(d.chosen.is_empty());
    assert!(
        d.steps
            .iter()
            .any(|s| s.verdict == "warn" && s.detail.contains("not a DER certificate"))
    );
}

#[test]
fn static_certificates_come_first() {
    let mut dns = FakeDns::default();
    dns.cert.insert(
        "iis.hisp-b.example".into(),
        Ok(vec![pkix("iis@hisp-b.example.pem")]),
    );
    let f = StaticFetcher::default();
    let d = Discoverer {
        dns: &dns,
        directory: None,
        fetcher: &f,
        static_certs: vec![(cert("hisp-b.example.pem"), "configuration x.pem".into())],
        default_ttl: Duration::from_secs(3600),
    };
    let who = DirectAddress::parse("iis@hisp-b.example").unwrap();
    let found = d.discover(&who, &judge(&[]));
    assert_eq!(found.candidates.len(), 1);
    assert_eq!(found.candidates[0].source, Source::Static);
    assert!(dns.queries.lock().unwrap().is_empty());
}

#[test]
fn cache_keeps_positive_for_the_ttl_and_negative_briefly() {
    let mut dns = FakeDns::default();
    dns.cert.insert(
        "iis.hisp-b.example".into(),
        Ok(vec![pkix("iis@hisp-b.example.pem")]),
    );
    let found = run(&dns, None, &StaticFetcher::default(), &[]);
    let cache = DiscoveryCache::new(Duration::from_secs(60), Duration::from_secs(5));
    let t0 = std::time::Instant::now();
    cache.put("IIS@hisp-b.example", &found, t0);
    assert_eq!(
        cache
            .get("iis@hisp-b.example", t0 + Duration::from_secs(59))
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    assert!(
        cache
            .get("iis@hisp-b.example", t0 + Duration::from_secs(61))
            .is_none(),
        "capped at 60 s"
    );
    let nothing = run(&FakeDns::default(), None, &StaticFetcher::default(), &[]);
    cache.put("x@hisp-b.example", &nothing, t0);
    assert!(
        cache
            .get("x@hisp-b.example", t0 + Duration::from_secs(4))
            .unwrap()
            .is_err()
    );
    assert!(
        cache
            .get("x@hisp-b.example", t0 + Duration::from_secs(6))
            .is_none()
    );
}
