//! Seal/open throughput and memory.
//!
//! - Criterion groups `seal_4k`, `open_4k` and `seal_open_4k` over a 4 KiB synthetic HL7 v2
//!   payload, signed by ehr@hisp-a.example and encrypted to iis@hisp-b.example.
//! - Then a plain comparison printed to stdout: seal+open messages/s on one core against
//!   RSA-2048 private-key operations/s (the floor: one signature plus one key-transport decrypt).
//! - Then the peak resident memory of seal+open of a 20 MiB payload, measured in a fresh child
//!   process (this executable with `DIRECT_AGENT_BENCH_MEM=1`) from `/proc/self/status` VmHWM.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use direct_agent::address::DirectAddress;
use direct_agent::clock::SystemClock;
use direct_agent::config::RevocationPolicy;
use direct_agent::credential::{Credential, load_certificates};
use direct_agent::message::{
    Envelope, OpenInputs, SealOptions, open, open_owned, seal, seal_owned,
};
use direct_agent::trust::{TrustInputs, ValidationCache};
use openssl::hash::{MessageDigest, hash};
use openssl::md::Md;
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::x509::{X509, X509Crl};

const MEM_ENV: &str = "DIRECT_AGENT_BENCH_MEM";
const BIG_PAYLOAD: usize = 20 * 1024 * 1024;

fn cert_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

/// Everything a seal and an open need, loaded once.
struct Fixture {
    from: DirectAddress,
    to: Vec<DirectAddress>,
    signer: Credential,
    recipient: Credential,
    recipient_certs: Vec<X509>,
    anchors: Vec<X509>,
    /// HISP A's CRLs: every open checks revocation of the signer and its intermediate.
    crls: Vec<X509Crl>,
    /// Validations remembered across messages, as a running agent keeps them.
    cache: ValidationCache,
    /// Whether `open` uses the cache (warm) or validates every time (cold).
    warm: std::cell::Cell<bool>,
}

impl Fixture {
    fn load() -> Fixture {
        let signer = Credential::load(
            &cert_path("ehr@hisp-a.example.key"),
            Some(&cert_path("ehr@hisp-a.example.fullchain.pem")),
            None,
        )
        .expect("load the signer credential");
        let recipient = Credential::load(
            &cert_path("iis@hisp-b.example.key"),
            Some(&cert_path("iis@hisp-b.example.pem")),
            None,
        )
        .expect("load the recipient credential");
        let anchors = load_certificates(&cert_path("root-a.pem")).expect("load anchor root-a");
        Fixture {
            from: DirectAddress::parse("ehr@hisp-a.example").expect("from address"),
            to: vec![DirectAddress::parse("iis@hisp-b.example").expect("to address")],
            recipient_certs: vec![recipient.cert.clone()],
            signer,
            recipient,
            anchors,
            cache: ValidationCache::new(),
            crls: ["intermediate-a.crl.pem", "root-a.crl.pem"]
                .iter()
                .map(|n| {
                    X509Crl::from_pem(&std::fs::read(cert_path(n)).expect("read CRL")).expect("CRL")
                })
                .collect(),
            warm: std::cell::Cell::new(true),
        }
    }

    fn seal(&self, payload: &[u8], opts: &SealOptions) -> Vec<u8> {
        seal(
            &self.from,
            &self.to,
            payload,
            &self.signer,
            &self.recipient_certs,
            opts,
            &SystemClock,
        )
        .expect("seal")
        .message
    }

    /// Seal as `message seal` does: the payload is handed over and freed once encoded.
    fn seal_owned(&self, payload: Vec<u8>, opts: &SealOptions) -> Vec<u8> {
        seal_owned(
            &self.from,
            &self.to,
            payload,
            &self.signer,
            &self.recipient_certs,
            opts,
            &SystemClock,
        )
        .expect("seal")
        .message
    }

    fn open(&self, message: &[u8]) -> direct_agent::message::OpenReport {
        self.open_with(|inputs| open(message, inputs))
    }

    /// Open as `message open` does: the message is handed over and decoded in place.
    fn open_owned(&self, message: Vec<u8>) -> direct_agent::message::OpenReport {
        self.open_with(|inputs| open_owned(message, inputs))
    }

    fn open_with(
        &self,
        f: impl FnOnce(
            &OpenInputs<'_>,
        )
            -> Result<direct_agent::message::OpenReport, direct_agent::message::OpenError>,
    ) -> direct_agent::message::OpenReport {
        let ours = std::slice::from_ref(&self.recipient);
        let inputs = OpenInputs {
            ours,
            trust: TrustInputs {
                crls: &self.crls,
                revocation: RevocationPolicy::Require,
                ..TrustInputs::offline(&self.anchors, &SystemClock)
            },
            envelope: Envelope::default(),
            cache: self.warm.get().then_some(&self.cache),
        };
        f(&inputs).expect("open")
    }
}

/// A 4 KiB HL7 v2 VXU-like payload: MSH, PID and RXA segments repeated, cut to exactly 4096 bytes.
fn hl7_payload_4k() -> Vec<u8> {
    let segments: &[&str] = &[
        "MSH|^~\\&|EHR|HISPA|IIS|HISPB|20260101120000||VXU^V04^VXU_V04|MSG00001|P|2.5.1|||ER|AL|||||Z22^CDCPHINVS\r",
        "PID|1||123456^^^HISPA^MR||DOE^JANE^Q^^^^L||20200101|F||2106-3^White^CDCREC|123 MAIN ST^^SPRINGFIELD^IL^62701^USA^P||^PRN^PH^^^217^5551234\r",
        "RXA|0|1|20260101|20260101|08^HEPB-PEDIATRIC/ADOLESCENT^CVX|0.5|mL^MilliLiter^UCUM||00^New immunization record^NIP001||||||LOT123||MSD^Merck^MVX|||CP|A\r",
    ];
    let mut out = Vec::with_capacity(4096 + 256);
    while out.len() < 4096 {
        for s in segments {
            out.extend_from_slice(s.as_bytes());
        }
    }
    out.truncate(4096);
    out
}

fn criterion_groups(c: &mut Criterion, fx: &Fixture, payload: &[u8]) {
    let opts = SealOptions::default();
    let sealed = fx.seal(payload, &opts);
    // Sanity: the payload comes back intact.
    let report = fx.open(&sealed);
    assert!(
        report.payloads.iter().any(|p| p.data == payload),
        "the 4 KiB payload did not round-trip"
    );

    let mut g = c.benchmark_group("seal_4k");
    g.throughput(criterion::Throughput::Bytes(payload.len() as u64));
    g.bench_function("seal", |b| {
        b.iter(|| black_box(fx.seal(black_box(payload), &opts)))
    });
    g.finish();

    let mut g = c.benchmark_group("open_4k");
    g.throughput(criterion::Throughput::Bytes(payload.len() as u64));
    g.bench_function("open", |b| {
        b.iter(|| black_box(fx.open(black_box(&sealed))))
    });
    g.finish();

    let mut g = c.benchmark_group("seal_open_4k");
    g.throughput(criterion::Throughput::Bytes(payload.len() as u64));
    // About 1.2 ms per iteration: 100 samples need more than the default 5 s.
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("seal_open", |b| {
        b.iter(|| {
            let m = fx.seal(black_box(payload), &opts);
            black_box(fx.open(&m))
        })
    });
    g.finish();
}

/// seal+open messages per second on this thread, over about `budget`.
fn seal_open_rate(fx: &Fixture, payload: &[u8], budget: Duration) -> (f64, u64) {
    let opts = SealOptions::default();
    // Warm up.
    for _ in 0..10 {
        black_box(fx.open(&fx.seal(payload, &opts)));
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        black_box(fx.open(&fx.seal(black_box(payload), &opts)));
        n += 1;
    }
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

/// Exactly `n` RSA-2048 private-key operations, as [`rsa_private_rate`] makes them.
fn rsa_private_ops(fx: &Fixture, n: u64) {
    let (mut ctx, digest) = rsa_signer(fx);
    let mut sig = vec![0u8; 256];
    for _ in 0..n {
        let len = ctx.sign(black_box(&digest), Some(&mut sig)).expect("sign");
        black_box(&sig[..len]);
    }
}

/// A PKCS#1 v1.5 SHA-256 signing context on the recipient's RSA-2048 key, and a digest to sign.
fn rsa_signer(fx: &Fixture) -> (PkeyCtx<openssl::pkey::Private>, Vec<u8>) {
    let key = &fx.recipient.key;
    assert_eq!(
        key.bits(),
        2048,
        "the recipient key is expected to be RSA-2048"
    );
    let digest = hash(MessageDigest::sha256(), b"direct-agent benchmark").expect("sha256");
    let mut ctx = PkeyCtx::new(key).expect("pkey ctx");
    ctx.sign_init().expect("sign init");
    ctx.set_rsa_padding(Padding::PKCS1).expect("padding");
    ctx.set_signature_md(Md::sha256()).expect("md");
    (ctx, digest.to_vec())
}

/// RSA-2048 PKCS#1 v1.5 signatures over a precomputed SHA-256 digest per second, over `budget`.
fn rsa_private_rate(fx: &Fixture, budget: Duration) -> (f64, u64) {
    let (mut ctx, digest) = rsa_signer(fx);
    let mut sig = vec![0u8; 256];
    for _ in 0..20 {
        ctx.sign(&digest, Some(&mut sig)).expect("sign");
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        let len = ctx.sign(black_box(&digest), Some(&mut sig)).expect("sign");
        black_box(&sig[..len]);
        n += 1;
    }
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

fn openssl_speed() {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "2", "rsa2048"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let header = text.lines().find(|l| l.contains("sign/s"));
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with("rsa") && l.contains("2048"));
            match line {
                Some(l) => {
                    if let Some(h) = header {
                        println!("openssl speed: {}", h.trim());
                    }
                    println!("openssl speed: {}", l.trim());
                }
                None => println!(
                    "openssl speed -seconds 2 rsa2048: ran but printed no rsa 2048 line:\n{text}"
                ),
            }
        }
        Ok(o) => println!(
            "openssl speed -seconds 2 rsa2048 failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => println!("openssl speed -seconds 2 rsa2048 could not be run: {e}"),
    }
}

/// VmHWM (peak resident set) of this process in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// A deterministic 20 MiB payload (xorshift), so the open child can check it without a copy.
fn big_payload() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..BIG_PAYLOAD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Child mode `seal:FILE` or `open:FILE`: one 20 MiB operation, printing `baseline_kib peak_kib`.
/// Each figure counts the operation's own input and output buffers: for seal the 20 MiB payload
/// and the ~37 MiB message; for open the message and the report holding the payload.
fn memory_child(mode: &str) {
    let fx = Fixture::load();
    let opts = SealOptions {
        content_type: Some("application/octet-stream".into()),
        filename: "payload.bin".into(),
        ..SealOptions::default()
    };
    let baseline = vm_hwm_kib();
    if let Some(path) = mode.strip_prefix("seal:") {
        let payload = big_payload();
        let sealed = fx.seal_owned(payload, &opts);
        let peak = vm_hwm_kib();
        std::fs::write(path, &sealed).expect("write the sealed message");
        println!("{baseline} {peak}");
    } else if let Some(path) = mode.strip_prefix("open:") {
        let message = std::fs::read(path).expect("read the sealed message");
        let report = fx.open_owned(message);
        let peak = vm_hwm_kib();
        let expected = big_payload();
        assert!(
            report.payloads.iter().any(|p| p.data == expected),
            "the 20 MiB payload did not round-trip"
        );
        println!("{baseline} {peak}");
    }
}

/// Run one memory child and return its (baseline, peak) in KiB.
fn run_memory_child(mode: &str) -> Result<(u64, u64), String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("could not find this executable: {e}"))?;
    let o = Command::new(exe)
        .env(MEM_ENV, mode)
        .output()
        .map_err(|e| format!("could not start the child: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "child failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let nums: Vec<u64> = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    match nums[..] {
        [baseline, peak] => Ok((baseline, peak)),
        _ => Err(format!("unexpected child output: {text}")),
    }
}

fn memory_parent() {
    let dir = std::env::temp_dir().join(format!("direct-agent-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        println!(
            "peak memory for 20 MiB payload: cannot create {}: {e}",
            dir.display()
        );
        return;
    }
    let file = dir.join("sealed.eml");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let payload_mib = BIG_PAYLOAD as f64 / (1024.0 * 1024.0);
    for op in ["seal", "open"] {
        match run_memory_child(&format!("{op}:{}", file.display())) {
            Ok((baseline, peak)) => {
                let delta = mib(peak.saturating_sub(baseline));
                println!(
                    "peak memory, {op} of a 20 MiB payload: {delta:.1} MiB (= {:.1} x payload; target < 4x) \
                     [VmHWM {:.1} MiB, {:.1} MiB before; includes the operation's input and output buffers]",
                    delta / payload_mib,
                    mib(peak),
                    mib(baseline),
                );
            }
            Err(e) => println!("peak memory, {op} of a 20 MiB payload: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sort `v` and return its median.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `DIRECT_AGENT_BENCH_ROUNDTRIPS=N`: only N warm seal+open round trips, then N RSA private
/// operations, for an instruction profile (`valgrind --tool=callgrind`), whose counts do not
/// depend on the machine's load.
const ROUNDTRIPS_ENV: &str = "DIRECT_AGENT_BENCH_ROUNDTRIPS";

fn main() {
    if let Ok(mode) = std::env::var(MEM_ENV) {
        memory_child(&mode);
        return;
    }

    let fx = Fixture::load();
    let payload = hl7_payload_4k();

    if let Some(n) = std::env::var(ROUNDTRIPS_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let opts = SealOptions::default();
        for _ in 0..n {
            black_box(fx.open(&fx.seal(black_box(&payload), &opts)));
        }
        rsa_private_ops(&fx, n);
        return;
    }

    let mut c = Criterion::default().configure_from_args();
    criterion_groups(&mut c, &fx, &payload);
    c.final_summary();

    // `cargo test --benches` and `--list` only check that the benchmarks run.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }

    println!();
    println!("== plain comparison (one core) ==");
    // Interleaved short rounds, so that load from other processes on the machine weighs on both
    // sides of the ratio alike; the median round is reported with the spread.
    let slice = Duration::from_millis(250);
    let mut all_rsa = Vec::new();
    for (label, warm) in [
        ("warm (signer validation cached, steady traffic)", true),
        ("cold (every signer validated from scratch)", false),
    ] {
        fx.warm.set(warm);
        let mut ratios = Vec::new();
        let mut msg_rates = Vec::new();
        let mut msgs = 0;
        for _ in 0..12 {
            let (rsa_rate, _) = rsa_private_rate(&fx, slice);
            let (msg_rate, n) = seal_open_rate(&fx, &payload, slice);
            all_rsa.push(rsa_rate);
            ratios.push(rsa_rate / msg_rate);
            msg_rates.push(msg_rate);
            msgs += n;
        }
        let cost = median(&mut ratios);
        let msg_rate = median(&mut msg_rates);
        println!(
            "seal+open, {label}: {msg_rate:.1} msg/s ({:.3} ms per message); \
             cost = {cost:.2} RSA-2048 private-key operations per message (target <= 3.0 = 1.5x two); \
             12 interleaved rounds ranged {:.2}-{:.2}",
            1000.0 / msg_rate,
            ratios[0],
            ratios[ratios.len() - 1],
        );
        println!("  ({msgs} seal+open round trips)");
    }
    fx.warm.set(true);
    let rsa_rate = median(&mut all_rsa);
    println!("RSA-2048 private ops in this process: {rsa_rate:.1}/s (median of the rounds' rates)");
    openssl_speed();

    println!();
    memory_parent();
}
