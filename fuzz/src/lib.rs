//! The bodies of the fuzz targets under `fuzz_targets/`, as plain functions so that
//! `cargo test --manifest-path fuzz/Cargo.toml` can replay seeds and saved crashers on the stable
//! toolchain without libFuzzer. Each takes the bytes a peer could send and must return without
//! panicking, whatever they are.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use direct_agent::clock::FixedClock;
use direct_agent::config::RevocationPolicy;
use direct_agent::credential::{Credential, load_certificates};
use direct_agent::discovery::{CERT_IPKIX, CERT_PKIX, cert_record_from_rdata};
use direct_agent::hl7::validate::{Environment, Options, Profile, validate_payload};
use direct_agent::message::{Envelope, OpenInputs, open};
use direct_agent::mime::entity::{Entity, canonical_crlf, multipart_parts};
use direct_agent::mime::payload;
use direct_agent::transport::smtp_in::{MemoryReception, SmtpServerSettings, session};
use direct_agent::trust::{TrustInputs, parse_certs};
use openssl::x509::{X509, X509Crl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The repository root (certs/, tests/fixtures/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ has a parent") // invariant: this crate lives in <repo>/fuzz
        .to_path_buf()
}

fn cert(name: &str) -> PathBuf {
    repo_root().join("certs").join(name)
}

/// What opening needs, loaded once: iis@hisp-b.example's key, both roots, the CRLs, and a fixed
/// clock inside the test PKI's validity so runs are reproducible.
struct OpenFixture {
    ours: Vec<Credential>,
    anchors: Vec<X509>,
    crls: Vec<X509Crl>,
    clock: FixedClock,
}

fn open_fixture() -> &'static OpenFixture {
    static FIXTURE: OnceLock<OpenFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ours = vec![
            Credential::load(
                &cert("iis@hisp-b.example.key"),
                Some(&cert("iis@hisp-b.example.pem")),
                None,
            )
            .expect("load certs/iis@hisp-b.example"),
        ];
        let mut anchors = Vec::new();
        for root in ["root-a.pem", "root-b.pem"] {
            anchors.extend(load_certificates(&cert(root)).expect("load a root"));
        }
        let crls = [
            "intermediate-a.crl.pem",
            "intermediate-b.crl.pem",
            "root-a.crl.pem",
        ]
        .iter()
        .map(|n| X509Crl::from_pem(&std::fs::read(cert(n)).expect("read a CRL")).expect("CRL"))
        .collect();
        OpenFixture {
            ours,
            anchors,
            crls,
            // 2026-06-01T00:00:00Z
            clock: FixedClock(UNIX_EPOCH + Duration::from_secs(1_780_272_000)),
        }
    })
}

/// libfuzzer-sys aborts in its panic hook, before unwinding, so a panic the library catches
/// still counts as a crash. `mime::payload::extract` catches mail-parser's debug assertion
/// (tests/fixtures/fuzz/mime_entity/): let panics raised inside mail-parser unwind to that
/// `catch_unwind`, and hand every other panic to libFuzzer's hook. A mail-parser panic the
/// library did not catch still aborts (libfuzzer-sys aborts when a panic leaves the target).
fn let_caught_mail_parser_panics_unwind() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_mail_parser = info
                .location()
                .is_some_and(|l| l.file().contains("mail-parser"));
            if !in_mail_parser {
                fuzzer_hook(info);
            }
        }));
    });
}

/// `message::open` of a received message, as iis@hisp-b.example.
pub fn open_message(data: &[u8]) {
    let_caught_mail_parser_panics_unwind();
    let f = open_fixture();
    let inputs = OpenInputs {
        ours: &f.ours,
        trust: TrustInputs {
            crls: &f.crls,
            revocation: RevocationPolicy::BestEffort,
            ..TrustInputs::offline(&f.anchors, &f.clock)
        },
        envelope: Envelope::default(),
        cache: None,
    };
    let _ = open(data, &inputs);
}

/// The cheap half of opening: MIME entity reading and payload extraction, no cryptography.
pub fn mime_entity(data: &[u8]) {
    let_caught_mail_parser_panics_unwind();
    let entity = Entity::parse(data);
    let _ = entity.headers().len();
    let ct = entity.content_type();
    let _ = ct.is("multipart/mixed");
    if let Some(boundary) = ct.param("boundary") {
        if let Some(parts) = multipart_parts(entity.body, boundary) {
            for part in parts {
                let _ = Entity::parse(part).content_type();
            }
        }
    }
    let _ = canonical_crlf(data);
    if let Some(payloads) = payload::extract(data) {
        for (i, p) in payloads.iter().enumerate() {
            let _ = p.safe_filename(i);
        }
    }
}

/// The MDN/DSN reader on a received notification.
pub fn mdn_report(data: &[u8]) {
    let _ = direct_agent::mdn::parse::notification_kind(data);
    let _ = direct_agent::mdn::parse::parse_report(data);
}

/// The HL7 v2 reader and the validator on a received payload.
pub fn hl7_message(data: &[u8]) {
    let _ = direct_agent::hl7::parse_messages_bytes(data);
    let options = Options {
        profile: Profile::Immunization,
        environment: Environment::Test,
        allow_v231: true,
        today: "20260601".into(),
    };
    let _ = validate_payload(data, &options);
}

/// A CERT record's RDATA as a name server could answer it, then what discovery does with it
/// (certificate DER for PKIX; for IPKIX the URL, and the same bytes read as a fetched body).
pub fn cert_rdata(data: &[u8]) {
    let Ok(rec) = cert_record_from_rdata(data) else {
        return;
    };
    match rec.cert_type {
        CERT_PKIX => {
            let _ = X509::from_der(&rec.data);
        }
        CERT_IPKIX => {
            let _ = std::str::from_utf8(&rec.data).map(|u| u.trim_end_matches('\0').to_string());
            let _ = parse_certs(&rec.data);
        }
        _ => {}
    }
}

fn smtp_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("start a tokio runtime")
    })
}

/// An inbound SMTP session fed `data` as everything the client sends, then end of stream; the
/// server's replies are read and dropped. The session must end by itself.
pub fn smtp_session(data: &[u8]) {
    let mut settings = SmtpServerSettings::new("hisp-b.example");
    settings.max_size = 64 * 1024;
    settings.max_recipients = 3;
    settings.command_timeout = Duration::from_secs(2);
    settings.data_timeout = Duration::from_secs(2);
    let settings = Arc::new(settings);
    let reception = Arc::new(MemoryReception::new(&["hisp-b.example"]));
    let peer: SocketAddr = ([127, 0, 0, 1], 2525).into();
    let started = SystemTime::now();
    smtp_runtime().block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let server = session(server, peer, settings, reception, shutdown);
        let client = async move {
            let (mut rx, mut tx) = tokio::io::split(&mut client);
            let send = async {
                let _ = tx.write_all(data).await;
                let _ = tx.shutdown().await;
            };
            let receive = async {
                let mut replies = Vec::new();
                let _ = rx.read_to_end(&mut replies).await;
            };
            tokio::join!(send, receive);
        };
        let done = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(server, client);
        })
        .await;
        assert!(
            done.is_ok(),
            "the SMTP session did not end within 10 s after the client's end of stream ({:?})",
            started.elapsed()
        );
    });
}
