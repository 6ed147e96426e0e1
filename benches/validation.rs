//! Certificate validation throughput: cold (every path built and every CRL checked) and warm (the
//! `ValidationCache` answers), for a signer with one intermediate, offline CRLs.
//!
//! `cargo bench --bench validation` prints validations per second for both.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use direct_agent::address::DirectAddress;
use direct_agent::clock::SystemClock;
use direct_agent::config::RevocationPolicy;
use direct_agent::credential::load_certificates;
use direct_agent::trust::{Purpose, TrustInputs, ValidationCache, validate};
use openssl::x509::X509Crl;

fn certs(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

fn rate(budget: Duration, mut f: impl FnMut()) -> (f64, u64) {
    for _ in 0..20 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let mut chain = load_certificates(&certs("ehr@hisp-a.example.fullchain.pem")).expect("chain");
    let leaf = chain.remove(0);
    let anchors = load_certificates(&certs("root-a.pem")).expect("anchor");
    let crls: Vec<X509Crl> = ["intermediate-a.crl.pem", "root-a.crl.pem"]
        .iter()
        .map(|n| X509Crl::from_pem(&std::fs::read(certs(n)).expect("crl")).expect("crl"))
        .collect();
    let who = DirectAddress::parse("ehr@hisp-a.example").expect("address");
    let clock = SystemClock;
    let inputs = TrustInputs {
        intermediates: &chain,
        crls: &crls,
        revocation: RevocationPolicy::Require,
        ..TrustInputs::offline(&anchors, &clock)
    };
    let (cold, n) = rate(Duration::from_secs(2), || {
        black_box(validate(&leaf, &inputs, Purpose::Sign, Some(&who)).expect("valid"));
    });
    println!(
        "validation, cold: {cold:.0}/s ({:.1} µs each, {n} runs)",
        1e6 / cold
    );
    let cache = ValidationCache::new();
    let (warm, n) = rate(Duration::from_secs(2), || {
        black_box(
            cache
                .validate(&leaf, &inputs, Purpose::Sign, Some(&who))
                .expect("valid"),
        );
    });
    println!(
        "validation, warm (cached): {warm:.0}/s ({:.1} µs each, {n} runs)",
        1e6 / warm
    );
}
