//! Discovery latency against a real loopback DNS server (dnsmasq serving a CERT record for
//! iis@hisp-b.example): cold lookups (DNS queries, candidate validation) and cached ones.
//!
//! `cargo bench --bench discovery`. Needs `dnsmasq` (apt-get install -y dnsmasq-base).

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use direct_agent::address::DirectAddress;
use direct_agent::clock::SystemClock;
use direct_agent::config::RevocationPolicy;
use direct_agent::credential::load_certificates;
use direct_agent::discovery::{Discoverer, DiscoveryCache, HickoryDns};
use direct_agent::trust::fetch::StaticFetcher;
use direct_agent::trust::{Purpose, TrustInputs, ValidationCache};
use openssl::x509::X509Crl;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn certs(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let leaf = load_certificates(&certs("iis@hisp-b.example.pem"))
        .expect("leaf")
        .remove(0);
    let rdata = format!("0001000000{}", hex::encode(leaf.to_der().expect("der")));
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("dnsmasq")
        .args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--conf-file=/dev/null",
            "--local-ttl=300",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--dns-rr=iis.hisp-b.example,37,{rdata}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        println!("discovery bench: dnsmasq not found (apt-get install -y dnsmasq-base)");
        return;
    };
    let _guard = Kill(child);
    std::thread::sleep(Duration::from_millis(300));

    let server: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let dns = HickoryDns::new(&[server], Duration::from_secs(2), 1).expect("resolver");
    let anchors = load_certificates(&certs("root-b.pem")).expect("anchor");
    let inter = load_certificates(&certs("intermediate-b.pem")).expect("intermediate");
    let crls: Vec<X509Crl> = ["intermediate-b.crl.pem", "root-b.crl.pem"]
        .iter()
        .map(|n| X509Crl::from_pem(&std::fs::read(certs(n)).expect("crl")).expect("crl"))
        .collect();
    let clock = SystemClock;
    let inputs = TrustInputs {
        intermediates: &inter,
        crls: &crls,
        revocation: RevocationPolicy::Require,
        ..TrustInputs::offline(&anchors, &clock)
    };
    let fetcher = StaticFetcher::default();
    let discoverer = Discoverer {
        dns: &dns,
        directory: None,
        fetcher: &fetcher,
        static_certs: vec![],
        default_ttl: Duration::from_secs(3600),
    };
    let who = DirectAddress::parse("iis@hisp-b.example").expect("address");
    let validations = ValidationCache::new();
    let validate =
        |c: &openssl::x509::X509| validations.validate(c, &inputs, Purpose::Encrypt, Some(&who));
    let first = discoverer.discover(&who, &validate);
    assert_eq!(
        first.chosen.len(),
        1,
        "the bench's discovery must find the certificate: {:?}",
        first.reason
    );

    let budget = Duration::from_secs(2);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        black_box(discoverer.discover(&who, &validate));
        n += 1;
    }
    let cold = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "discovery, DNS lookups every time (validation cached): {cold:.0}/s ({:.0} µs each, {n} runs)",
        1e6 / cold
    );

    let cache = DiscoveryCache::new(Duration::from_secs(3600), Duration::from_secs(300));
    cache.put(&who.canonical(), &first, Instant::now());
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        let _ = black_box(cache.get(&who.canonical(), Instant::now()).expect("cached"));
        n += 1;
    }
    let warm = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "discovery, cached: {warm:.0}/s ({:.2} µs each, {n} runs)",
        1e6 / warm
    );
}
