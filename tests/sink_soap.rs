//! The `soap` sink (CDC IIS 2011 `submitSingleMessage`) against a real peer on loopback
//! (`tests/support/http_sink_peer.py`, whose SOAP modes parse the envelope with Python's XML
//! parser and answer an ACK AA/AE or a fault): the envelope and its escaping, MSA-1 mapping, the
//! faults, and the credential guard (a SecurityFault is tried exactly once; an unset password
//! variable sends nothing).
//!
//! The password comes from `PATH`, a variable every test process has: setting variables is unsafe
//! in a multi-threaded test binary.

mod support;

use direct_agent::config::SinkConfig;
use direct_agent::hl7::parse_messages_bytes;
use direct_agent::mime::payload::{Payload, PayloadKind};
use direct_agent::sink::{DeliveryMetadata, Sink, SinkDelivery, SinkOutcome, build};
use serde::Deserialize;

use support::http_sink_peer::HttpSinkPeer;

const SAMPLE: &[u8] = include_bytes!("../config/samples/vxu-v04.hl7");
const UNSET: &str = "DIRECT_AGENT_TEST_VARIABLE_NOBODY_SETS";

#[derive(Deserialize)]
struct File {
    sink: Vec<SinkConfig>,
}

fn soap_sink(url: &str, password_env: &str, timeout: &str) -> Box<dyn Sink> {
    let text = format!(
        "[[sink]]\nname = \"state-iis\"\nkind = \"soap\"\nurl = \"{url}\"\n\
         username = \"clinic&user\"\npassword_env = \"{password_env}\"\nfacility_id = \"DEMO-CLINIC\"\n\
         timeout = \"{timeout}\"\n"
    );
    let file: File = toml::from_str(&text).expect("sink TOML");
    build(&file.sink[0]).unwrap_or_else(|e| panic!("build: {e}"))
}

fn password() -> String {
    std::env::var("PATH").expect("PATH is set")
}

/// The sample: one HL7 message, each segment ending with CR.
fn sample_message() -> String {
    let text = String::from_utf8(SAMPLE.to_vec()).expect("UTF-8 sample");
    assert_eq!(
        parse_messages_bytes(SAMPLE).expect("sample parses").len(),
        1
    );
    assert!(text.ends_with('\r'));
    text
}

fn deliver(sink: &dyn Sink, payloads: Vec<Payload>) -> SinkOutcome {
    let m = DeliveryMetadata {
        message_id: Some("<vxu-1@hisp-a.example>".into()),
        from: "ehr@clinic.example".into(),
        to: vec!["iis@state.example".into()],
        signer_subject: "CN=clinic.example".into(),
        signer_fingerprint_sha256: "00".into(),
        signer_binding: "domain".into(),
        received_at: 1,
        accepted_at: 2,
        source: "test".into(),
        validation: None,
    };
    sink.deliver(&SinkDelivery {
        inbound_id: 7,
        message_id: m.message_id.as_deref(),
        from: &m.from,
        to: &m.to,
        metadata: &m,
        payloads: &payloads,
    })
}

fn payload(kind: PayloadKind, data: &[u8]) -> Payload {
    Payload {
        kind,
        content_type: "application/x-direct-encapsulated+hl7v2".into(),
        filename: None,
        data: data.to_vec(),
        size: data.len(),
    }
}

fn sample() -> Vec<Payload> {
    vec![payload(PayloadKind::Hl7v2, SAMPLE)]
}

#[test]
fn aa_is_accepted_and_the_envelope_carries_the_escaped_message() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("soap-aa/iis");
    let s = soap_sink(&url, "PATH", "5s");
    assert_eq!(s.credential().as_deref(), Some("sink:state-iis"));
    // A Direct Context part beside the HL7 one is not submitted.
    let mut payloads = sample();
    payloads.push(payload(PayloadKind::DirectContext, b"version: 1.1\n"));
    match deliver(s.as_ref(), payloads) {
        SinkOutcome::Accepted { location, ack } => {
            assert_eq!(location, format!("soap:{url} ACK ACK-DEMO-0001"));
            let ack = ack.expect("the ACK is kept");
            assert!(ack.contains("MSA|AA|DEMO-0001"), "{ack:?}");
        }
        other => panic!("expected Accepted, got {other:?}"),
    }
    let reqs = peer.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        r.header("content-type"),
        Some(
            "application/soap+xml; charset=utf-8; action=\"urn:cdc:iisb:2011:submitSingleMessage\""
        )
    );
    let body = String::from_utf8(r.body()).expect("UTF-8 envelope");
    assert!(body.contains("xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\""));
    assert!(
        body.contains("<urn:username>clinic&amp;user</urn:username>"),
        "{body}"
    );
    assert!(body.contains("<urn:facilityID>DEMO-CLINIC</urn:facilityID>"));
    // MSH-2 `^~\&` arrives escaped, and the segment ends as character references.
    assert!(
        body.contains("<urn:hl7Message>MSH|^~\\&amp;|DEMO-EHR|"),
        "{body}"
    );
    assert!(!body.contains("^~\\&|"), "an unescaped & was sent");
    // What the server's XML parser reads back is the message itself.
    let parsed = r.soap.as_ref().expect("SOAP fields recorded");
    assert!(!parsed.contains_key("parse_error"), "{parsed:?}");
    assert_eq!(r.soap_field("username").as_deref(), Some("clinic&user"));
    assert_eq!(r.soap_field("password"), Some(password()));
    assert_eq!(r.soap_field("facilityID").as_deref(), Some("DEMO-CLINIC"));
    assert_eq!(r.soap_field("hl7Message"), Some(sample_message()));
}

#[test]
fn each_hl7_message_is_one_call() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("soap-aa/iis");
    let mut two = SAMPLE.to_vec();
    two.extend_from_slice(
        &String::from_utf8_lossy(SAMPLE)
            .replace("DEMO-0001", "DEMO-0002")
            .into_bytes(),
    );
    match deliver(
        soap_sink(&url, "PATH", "5s").as_ref(),
        vec![payload(PayloadKind::Hl7v2, &two)],
    ) {
        SinkOutcome::Accepted { location, ack } => {
            assert!(
                location.ends_with("ACK ACK-DEMO-0001,ACK-DEMO-0002"),
                "{location}"
            );
            let ack = ack.expect("ACKs kept");
            assert_eq!(
                parse_messages_bytes(ack.as_bytes())
                    .expect("ACKs parse")
                    .len(),
                2
            );
        }
        other => panic!("expected Accepted, got {other:?}"),
    }
    assert_eq!(peer.requests().len(), 2);
}

#[test]
fn ae_is_permanent_with_the_ack_and_no_err_text() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("soap-ae/iis");
    match deliver(soap_sink(&url, "PATH", "5s").as_ref(), sample()) {
        SinkOutcome::Permanent { reason, ack } => {
            assert!(reason.contains("MSA-1 AE"), "{reason}");
            assert!(reason.contains("ERR-3 103"), "{reason}");
            assert!(
                !reason.contains("TESTPATIENT"),
                "ERR-8 text copied: {reason}"
            );
            let ack = ack.expect("the ACK is kept");
            assert!(ack.contains("MSA|AE|DEMO-0001"), "{ack:?}");
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert_eq!(peer.requests().len(), 1);
}

#[test]
fn security_fault_refuses_the_credential_after_one_call() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("soap-security/iis");
    // Two messages: the refusal stops the delivery before the second.
    let mut two = SAMPLE.to_vec();
    two.extend_from_slice(SAMPLE);
    match deliver(
        soap_sink(&url, "PATH", "5s").as_ref(),
        vec![payload(PayloadKind::Hl7v2, &two)],
    ) {
        SinkOutcome::CredentialRejected(reason) => {
            assert!(reason.contains("SecurityFault"), "{reason}");
            assert!(reason.contains(&url), "{reason}");
            assert!(
                reason.contains("credentials reset sink:state-iis"),
                "{reason}"
            );
            assert!(!reason.contains(&password()), "{reason}");
            assert!(
                !reason.contains("Invalid Username"),
                "fault text copied: {reason}"
            );
        }
        other => panic!("expected CredentialRejected, got {other:?}"),
    }
    assert_eq!(peer.requests().len(), 1);
}

#[test]
fn http_401_refuses_the_credential_after_one_call() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("401/iis");
    assert!(matches!(
        deliver(soap_sink(&url, "PATH", "5s").as_ref(), sample()),
        SinkOutcome::CredentialRejected(_)
    ));
    assert_eq!(peer.requests().len(), 1);
}

#[test]
fn unset_password_sends_nothing() {
    let peer = HttpSinkPeer::start("200");
    let url = peer.url("soap-aa/iis");
    match deliver(soap_sink(&url, UNSET, "5s").as_ref(), sample()) {
        SinkOutcome::CredentialRejected(reason) => assert!(reason.contains(UNSET), "{reason}"),
        other => panic!("expected CredentialRejected, got {other:?}"),
    }
    assert_eq!(peer.requests().len(), 0, "nothing may be sent");
}

#[test]
fn other_faults_and_failures() {
    let peer = HttpSinkPeer::start("200");
    let generic = peer.url("soap-fault/iis");
    match deliver(soap_sink(&generic, "PATH", "5s").as_ref(), sample()) {
        SinkOutcome::Transient(reason) => {
            assert!(reason.contains("soap:Receiver"), "{reason}");
            assert!(!reason.contains("must not be copied"), "{reason}");
        }
        other => panic!("generic fault: expected Transient, got {other:?}"),
    }
    let large = peer.url("soap-toolarge/iis");
    match deliver(soap_sink(&large, "PATH", "5s").as_ref(), sample()) {
        SinkOutcome::Permanent { reason, .. } => {
            assert!(reason.contains("MessageTooLargeFault"), "{reason}")
        }
        other => panic!("MessageTooLargeFault: expected Permanent, got {other:?}"),
    }
    let slow = peer.url("slow/iis");
    match deliver(soap_sink(&slow, "PATH", "1s").as_ref(), sample()) {
        SinkOutcome::Transient(reason) => assert!(reason.contains(&slow), "{reason}"),
        other => panic!("timeout: expected Transient, got {other:?}"),
    }
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!(
            "http://127.0.0.1:{}/iis",
            l.local_addr().expect("addr").port()
        )
    };
    match deliver(soap_sink(&closed, "PATH", "5s").as_ref(), sample()) {
        SinkOutcome::Transient(reason) => assert!(reason.contains(&closed), "{reason}"),
        other => panic!("connection refused: expected Transient, got {other:?}"),
    }
    let no_hl7 = peer.url("soap-aa/iis");
    assert!(matches!(
        deliver(
            soap_sink(&no_hl7, "PATH", "5s").as_ref(),
            vec![payload(PayloadKind::Attachment, b"%PDF")]
        ),
        SinkOutcome::Permanent { .. }
    ));
}
