//! The `http` sink against a real HTTP peer on loopback (`tests/support/http_sink_peer.py`):
//! status mapping, headers (configured, from the environment, Basic auth, `X-Direct-*`), the body
//! sent byte for byte, and the credential guard: a refused credential is tried exactly once, and
//! an unset password variable sends nothing.
//!
//! Secrets come from `PATH`, a variable every test process has: setting variables is unsafe in a
//! multi-threaded test binary.

mod support;

use direct_agent::config::SinkConfig;
use direct_agent::mime::payload::{Payload, PayloadKind};
use direct_agent::sink::{DeliveryMetadata, Sink, SinkDelivery, SinkOutcome, build};
use serde::Deserialize;

use support::http_sink_peer::HttpSinkPeer;

const SAMPLE: &[u8] = include_bytes!("../config/samples/vxu-v04.hl7");
const HL7_TYPE: &str = "application/x-direct-encapsulated+hl7v2";
const UNSET: &str = "DIRECT_AGENT_TEST_VARIABLE_NOBODY_SETS";

#[derive(Deserialize)]
struct File {
    sink: Vec<SinkConfig>,
}

/// A sink from a `[[sink]]` table's body.
fn sink(toml_body: &str) -> Box<dyn Sink> {
    let file: File = toml::from_str(&format!("[[sink]]\n{toml_body}")).expect("sink TOML");
    build(&file.sink[0]).unwrap_or_else(|e| panic!("build: {e}"))
}

fn http_sink(url: &str, extra: &str) -> Box<dyn Sink> {
    sink(&format!(
        "name = \"vendor\"\nkind = \"http\"\nurl = \"{url}\"\ntimeout = \"5s\"\n{extra}"
    ))
}

fn password() -> String {
    std::env::var("PATH").expect("PATH is set")
}

fn metadata() -> DeliveryMetadata {
    DeliveryMetadata {
        message_id: Some("<vxu-1@hisp-a.example>".into()),
        from: "ehr@clinic.example".into(),
        to: vec!["iis@state.example".into(), "registry@state.example".into()],
        signer_subject: "CN=clinic.example".into(),
        signer_fingerprint_sha256: "00".into(),
        signer_binding: "domain".into(),
        received_at: 1,
        accepted_at: 2,
        source: "test".into(),
        validation: None,
    }
}

fn payloads(n: usize) -> Vec<Payload> {
    (0..n)
        .map(|_| Payload {
            kind: PayloadKind::Hl7v2,
            content_type: HL7_TYPE.into(),
            filename: Some("vxu.hl7".into()),
            data: SAMPLE.to_vec(),
            size: SAMPLE.len(),
        })
        .collect()
}

/// Deliver `n` copies of the sample through `sink`.
fn deliver(sink: &dyn Sink, n: usize) -> SinkOutcome {
    let m = metadata();
    let p = payloads(n);
    sink.deliver(&SinkDelivery {
        inbound_id: 7,
        message_id: m.message_id.as_deref(),
        from: &m.from,
        to: &m.to,
        metadata: &m,
        payloads: &p,
    })
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn accepted_post_carries_body_headers_auth_and_metadata() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("201/inbound");
    let s = http_sink(
        &url,
        "username = \"ehr\"\npassword_env = \"PATH\"\n\
         headers = { X-Partner = \"clinic-7\" }\nheader_env = { X-Api-Key = \"PATH\" }\n",
    );
    assert_eq!(s.credential().as_deref(), Some("sink:vendor"));
    let outcome = deliver(s.as_ref(), 1);
    assert_eq!(outcome, SinkOutcome::accepted(format!("http:{url} 201")));
    let reqs = peer.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/201/inbound");
    assert_eq!(r.body(), SAMPLE, "the body is the payload, byte for byte");
    assert_eq!(r.header("content-type"), Some(HL7_TYPE));
    assert_eq!(r.header("x-partner"), Some("clinic-7"));
    assert_eq!(r.header("x-api-key"), Some(password().as_str()));
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ehr:{}", password()));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(
        r.header("x-direct-message-id"),
        Some("<vxu-1@hisp-a.example>")
    );
    assert_eq!(r.header("x-direct-from"), Some("ehr@clinic.example"));
    assert_eq!(
        r.header("x-direct-to"),
        Some("iis@state.example, registry@state.example")
    );
    assert_eq!(r.header("x-direct-payload-index"), Some("1"));
}

#[test]
fn each_payload_is_one_post_with_its_index() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("in");
    let outcome = deliver(http_sink(&url, "").as_ref(), 2);
    assert_eq!(
        outcome,
        SinkOutcome::accepted(format!("http:{url} 200,200"))
    );
    let reqs = peer.requests();
    let idx: Vec<_> = reqs
        .iter()
        .map(|r| r.header("x-direct-payload-index").unwrap_or("").to_string())
        .collect();
    assert_eq!(idx, ["1", "2"]);
    assert!(reqs.iter().all(|r| r.header("authorization").is_none()));
}

#[test]
fn statuses_map_to_outcomes_without_copying_bodies() {
    let peer = HttpSinkPeer::start("200");
    for (mode, want) in [
        ("200", "accepted"),
        ("400", "permanent"),
        ("302", "permanent"),
        ("500", "transient"),
        ("403", "credential"),
    ] {
        let url = peer.url(&format!("{mode}/x"));
        let outcome = deliver(http_sink(&url, "").as_ref(), 1);
        let (got, reason) = match &outcome {
            SinkOutcome::Accepted { location, .. } => ("accepted", location.clone()),
            SinkOutcome::Permanent { reason, ack } => {
                assert!(ack.is_none());
                ("permanent", reason.clone())
            }
            SinkOutcome::Transient(r) => ("transient", r.clone()),
            SinkOutcome::CredentialRejected(r) => ("credential", r.clone()),
            other => panic!("{mode}: unexpected {other:?}"),
        };
        assert_eq!(got, want, "{mode}: {outcome:?}");
        assert!(reason.contains(mode), "{mode}: {reason}");
        assert!(reason.contains(&url), "{mode}: {reason}");
        assert!(
            !reason.contains("TESTPATIENT"),
            "{mode}: body copied: {reason}"
        );
        if mode == "302" {
            assert!(reason.contains("not followed"), "{reason}");
            assert!(reason.contains("http://127.0.0.1:1/moved"), "{reason}");
        }
    }
    // One request each: nothing retried, no redirect followed.
    assert_eq!(peer.requests().len(), 5);
}

#[test]
fn refused_credential_is_tried_exactly_once() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("401/in");
    let s = http_sink(&url, "username = \"ehr\"\npassword_env = \"PATH\"\n");
    // Three payloads: the first refusal stops the delivery.
    match deliver(s.as_ref(), 3) {
        SinkOutcome::CredentialRejected(reason) => {
            assert!(reason.contains("401"), "{reason}");
            assert!(reason.contains(&url), "{reason}");
            assert!(reason.contains("credentials reset sink:vendor"), "{reason}");
            assert!(!reason.contains(&password()), "{reason}");
        }
        other => panic!("expected CredentialRejected, got {other:?}"),
    }
    assert_eq!(peer.requests().len(), 1);
}

#[test]
fn unset_secret_variables_send_nothing() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("in");
    for extra in [
        format!("username = \"ehr\"\npassword_env = \"{UNSET}\"\n"),
        format!("header_env = {{ Authorization = \"{UNSET}\" }}\n"),
    ] {
        match deliver(http_sink(&url, &extra).as_ref(), 1) {
            SinkOutcome::CredentialRejected(reason) => {
                assert!(reason.contains(UNSET), "{reason}")
            }
            other => panic!("expected CredentialRejected, got {other:?}"),
        }
    }
    assert_eq!(peer.requests().len(), 0, "nothing may be sent");
}

#[test]
fn timeout_is_transient() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("slow/in");
    let s = sink(&format!(
        "kind = \"http\"\nurl = \"{url}\"\ntimeout = \"1s\"\n"
    ));
    let start = std::time::Instant::now();
    match deliver(s.as_ref(), 1) {
        SinkOutcome::Transient(reason) => {
            assert!(reason.contains(&url), "{reason}");
            assert!(reason.contains("timed out"), "{reason}");
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(8));
}

#[test]
fn connection_refused_is_transient() {
    let url = format!("http://127.0.0.1:{}/in", closed_port());
    match deliver(http_sink(&url, "").as_ref(), 1) {
        SinkOutcome::Transient(reason) => {
            assert!(reason.contains(&url), "{reason}");
            assert!(reason.contains("connection refused"), "{reason}");
        }
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[test]
fn https_with_tls_ca_is_accepted_and_an_untrusted_server_is_transient() {
    let peer = HttpSinkPeer::start_tls("200");
    let url = peer.https_url("in");
    let ca = peer.ca_pem();
    let trusting = http_sink(&url, &format!("tls_ca = \"{}\"\n", ca.display()));
    assert_eq!(
        deliver(trusting.as_ref(), 1),
        SinkOutcome::accepted(format!("http:{url} 200"))
    );
    assert_eq!(peer.requests().len(), 1);
    // With the system roots the self-signed server is not trusted: nothing is sent.
    match deliver(http_sink(&url, "").as_ref(), 1) {
        SinkOutcome::Transient(reason) => {
            assert!(reason.contains(&url), "{reason}");
            assert!(reason.contains("TLS failed"), "{reason}");
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    assert_eq!(peer.requests().len(), 1);
}

#[test]
fn bad_settings_are_refused_by_key() {
    for (body, key) in [
        ("kind = \"http\"\nurl = \"ftp://x/\"\n", "url"),
        (
            "kind = \"http\"\nurl = \"http://x/\"\ntimeout = \"later\"\n",
            "timeout",
        ),
        (
            "kind = \"http\"\nurl = \"http://x/\"\ntls_ca = \"/nonexistent/ca.pem\"\n",
            "tls_ca",
        ),
    ] {
        let file: File = toml::from_str(&format!("[[sink]]\n{body}")).expect("TOML");
        let err = build(&file.sink[0]).err().expect("refused").to_string();
        assert!(err.contains(key), "{err}");
    }
}

/// Regression: the trust fetcher (CRL, AIA, bundles) on an https:// URL answers with an error
/// naming the URL (the server's certificate is not in the system roots); it used to panic in
/// ureq because the native-tls build had no root store configured.
#[test]
fn the_trust_fetcher_handles_https_urls_without_panicking() {
    use direct_agent::trust::fetch::{Fetcher, HttpFetcher};
    let peer = HttpSinkPeer::start_tls("200");
    let url = peer.https_url("crl/x.crl");
    let fetcher = HttpFetcher::new(std::time::Duration::from_secs(5));
    let err = fetcher
        .fetch(&url)
        .expect_err("a self-signed server is not trusted");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(peer.requests().is_empty());
}
