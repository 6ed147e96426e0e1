//! The `mllp` sink against a real MLLP listener on loopback, written here: what it receives
//! (exact frames) and how each kind of answer maps to an outcome.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use direct_agent::config::{MllpSinkConfig, SinkConfig, SinkKind, SinkRoute};
use direct_agent::mime::payload::{Payload, PayloadKind};
use direct_agent::sink::{DeliveryMetadata, FrameReader, Sink, SinkDelivery, SinkOutcome, build};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples/vxu-v04.hl7");

/// How the peer answers one frame: the pieces of its reply (written with a pause between), or
/// nothing at all.
type Answer = Box<dyn Fn(&str) -> Vec<Vec<u8>> + Send>;

fn ack(code: &str, control_id: &str, extra: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|IIS|STATE-IIS|DEMO-EHR|DEMO-CLINIC|20261122093001||ACK^V04^ACK|ACK-{control_id}|P|2.5.1\rMSA|{code}|{control_id}\r{extra}"
    )
    .into_bytes()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = vec![0x0B];
    f.extend_from_slice(body);
    f.extend_from_slice(&[0x1C, 0x0D]);
    f
}

fn answer_with(code: &'static str, extra: &'static str) -> Answer {
    Box::new(move |id| vec![framed(&ack(code, id, extra))])
}

/// The control id (MSH-10) of a received frame.
fn control_id(frame: &[u8]) -> String {
    let text = String::from_utf8_lossy(frame);
    text.split('\r')
        .next()
        .and_then(|msh| msh.split('|').nth(9))
        .unwrap_or_default()
        .to_string()
}

/// A listener on 127.0.0.1 taking one connection and answering each frame in turn; joins to
/// the frames it received (with their start and end blocks).
fn peer(answers: Vec<Answer>) -> (u16, JoinHandle<Vec<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        for answer in answers {
            let mut reader = FrameReader::default();
            let body = loop {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "the sink closed the connection early");
                if let Some(body) = reader.push(&buf[..n]).unwrap() {
                    break body;
                }
            };
            let pieces = answer(&control_id(&body));
            received.push(framed(&body));
            if pieces.is_empty() {
                // Say nothing; wait for the sink to give up and close.
                while conn.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
                return received;
            }
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(150));
                }
                conn.write_all(piece).unwrap();
                conn.flush().unwrap();
            }
        }
        // The sink closes the connection after the delivery.
        assert_eq!(
            conn.read(&mut buf).unwrap_or(0),
            0,
            "no more frames expected"
        );
        received
    });
    (port, handle)
}

fn sink(port: u16, ack_timeout: &str) -> Box<dyn Sink> {
    build(&SinkConfig {
        name: None,
        route: SinkRoute::default(),
        kind: SinkKind::Mllp(MllpSinkConfig {
            host: "127.0.0.1".into(),
            port,
            connect_timeout: "2s".into(),
            ack_timeout: ack_timeout.into(),
        }),
    })
    .unwrap()
}

fn meta() -> DeliveryMetadata {
    DeliveryMetadata {
        message_id: Some("<m1@hisp-a.example>".into()),
        from: "ehr@hisp-a.example".into(),
        to: vec!["iis@hisp-b.example".into()],
        signer_subject: "CN=ehr@hisp-a.example".into(),
        signer_fingerprint_sha256: "00".into(),
        signer_binding: "address".into(),
        received_at: 1_790_000_000,
        accepted_at: 1_790_000_001,
        source: "test".into(),
        validation: None,
    }
}

fn hl7(data: Vec<u8>) -> Payload {
    Payload {
        kind: PayloadKind::Hl7v2,
        content_type: "application/x-direct-encapsulated+hl7v2".into(),
        filename: Some("vxu.hl7".into()),
        size: data.len(),
        data,
    }
}

fn sample() -> Vec<u8> {
    std::fs::read(SAMPLE).unwrap()
}

fn deliver(sink: &dyn Sink, payloads: &[Payload]) -> SinkOutcome {
    let m = meta();
    let to = m.to.clone();
    sink.deliver(&SinkDelivery {
        inbound_id: 1,
        message_id: m.message_id.as_deref(),
        from: &m.from,
        to: &to,
        metadata: &m,
        payloads,
    })
}

/// The sample as the one frame the peer must receive (it is already CR-terminated).
fn sample_frame() -> Vec<u8> {
    framed(&sample())
}

#[test]
fn aa_is_accepted_with_the_ack() {
    let (port, peer) = peer(vec![answer_with("AA", "")]);
    let outcome = deliver(&*sink(port, "5s"), &[hl7(sample())]);
    assert_eq!(peer.join().unwrap(), vec![sample_frame()]);
    assert_eq!(
        outcome,
        SinkOutcome::Accepted {
            location: format!("mllp:127.0.0.1:{port} MSA-2=DEMO-0001"),
            ack: Some(String::from_utf8(ack("AA", "DEMO-0001", "")).unwrap()),
        }
    );
}

#[test]
fn ae_with_err_is_permanent_naming_codes_not_text() {
    let err =
        "ERR||PID^1^7|102^Data type error^HL70357|E||||Birth date of TESTPATIENT ALEX invalid\r";
    let (port, peer) = peer(vec![answer_with("AE", err)]);
    let outcome = deliver(&*sink(port, "5s"), &[hl7(sample())]);
    assert_eq!(peer.join().unwrap(), vec![sample_frame()]);
    let SinkOutcome::Permanent { reason, ack: kept } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        reason,
        format!("mllp peer 127.0.0.1:{port} refused message DEMO-0001 with MSA-1 AE (ERR-3: 102)")
    );
    assert!(!reason.contains("TESTPATIENT"));
    assert_eq!(
        kept,
        Some(String::from_utf8(ack("AE", "DEMO-0001", err)).unwrap())
    );
}

#[test]
fn ar_is_permanent() {
    let (port, peer) = peer(vec![answer_with("AR", "")]);
    let outcome = deliver(&*sink(port, "5s"), &[hl7(sample())]);
    peer.join().unwrap();
    assert!(
        matches!(&outcome, SinkOutcome::Permanent { reason, ack: Some(a) }
            if reason.ends_with("MSA-1 AR") && a.contains("MSA|AR|DEMO-0001")),
        "{outcome:?}"
    );
}

#[test]
fn garbage_reply_is_transient() {
    let (port, peer) = peer(vec![Box::new(|_| vec![framed(b"HELLO THERE")])]);
    let outcome = deliver(&*sink(port, "5s"), &[hl7(sample())]);
    peer.join().unwrap();
    assert!(
        matches!(&outcome, SinkOutcome::Transient(r)
            if r.contains(&format!("127.0.0.1:{port}")) && r.contains("not an HL7 ACK")),
        "{outcome:?}"
    );
}

#[test]
fn ack_for_another_control_id_is_transient() {
    let (port, peer) = peer(vec![Box::new(|_| {
        vec![framed(&ack("AA", "SOMETHING-ELSE", ""))]
    })]);
    let outcome = deliver(&*sink(port, "5s"), &[hl7(sample())]);
    peer.join().unwrap();
    assert!(
        matches!(&outcome, SinkOutcome::Transient(r)
            if r.contains("DEMO-0001") && r.contains("SOMETHING-ELSE")),
        "{outcome:?}"
    );
}

#[test]
fn a_reply_in_pieces_is_put_together() {
    let (port, peer) = peer(vec![Box::new(|id| {
        let whole = framed(&ack("AA", id, ""));
        let mut pieces = vec![b"junk before the frame ".to_vec()];
        pieces[0].extend_from_slice(&whole[..20]);
        pieces.push(whole[20..whole.len() - 1].to_vec());
        pieces.push(whole[whole.len() - 1..].to_vec());
        pieces
    })]);
    let outcome = deliver(&*sink(port, "5s"), &[hl7(sample())]);
    assert_eq!(peer.join().unwrap(), vec![sample_frame()]);
    assert_eq!(
        outcome,
        SinkOutcome::Accepted {
            location: format!("mllp:127.0.0.1:{port} MSA-2=DEMO-0001"),
            ack: Some(String::from_utf8(ack("AA", "DEMO-0001", "")).unwrap()),
        }
    );
}

#[test]
fn no_reply_times_out_transiently() {
    let (port, peer) = peer(vec![Box::new(|_| Vec::new())]);
    let started = std::time::Instant::now();
    let outcome = deliver(&*sink(port, "1s"), &[hl7(sample())]);
    let elapsed = started.elapsed();
    assert_eq!(peer.join().unwrap(), vec![sample_frame()]);
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5));
    assert_eq!(
        outcome,
        SinkOutcome::Transient(format!(
            "no ACK from mllp peer 127.0.0.1:{port} within 1s for message DEMO-0001"
        ))
    );
}

#[test]
fn connection_refused_is_transient() {
    // A port that was just free: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let outcome = deliver(&*sink(port, "1s"), &[hl7(sample())]);
    assert!(
        matches!(&outcome, SinkOutcome::Transient(r)
            if r.starts_with(&format!("cannot connect to mllp peer 127.0.0.1:{port}"))),
        "{outcome:?}"
    );
}

#[test]
fn a_reset_connection_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut conn, _): (TcpStream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 16];
        let _ = conn.read(&mut buf);
        // Dropped without answering.
    });
    let outcome = deliver(&*sink(port, "5s"), &[hl7(sample())]);
    handle.join().unwrap();
    assert!(
        matches!(&outcome, SinkOutcome::Transient(r) if r.contains(&format!("127.0.0.1:{port}"))),
        "{outcome:?}"
    );
}

/// The sample three times in an FHS/BHS batch, control ids DEMO-0001..3.
fn batch() -> (Vec<u8>, Vec<Vec<u8>>) {
    let text = String::from_utf8(sample()).unwrap();
    let mut out = String::from("FHS|^~\\&|DEMO-EHR|DEMO-CLINIC\rBHS|^~\\&|DEMO-EHR|DEMO-CLINIC\r");
    let mut frames = Vec::new();
    for n in 1..=3 {
        let message = text.replace("DEMO-0001", &format!("DEMO-000{n}"));
        frames.push(framed(message.as_bytes()));
        out.push_str(&message);
    }
    out.push_str("BTS|3\rFTS|1\r");
    (out.into_bytes(), frames)
}

#[test]
fn a_batch_is_sent_message_by_message_in_order() {
    let (payload, frames) = batch();
    let (port, peer) = peer(vec![
        answer_with("AA", ""),
        answer_with("AA", ""),
        answer_with("CA", ""),
    ]);
    let outcome = deliver(&*sink(port, "5s"), &[hl7(payload)]);
    assert_eq!(peer.join().unwrap(), frames);
    let expected_ack: String = ["AA", "AA", "CA"]
        .iter()
        .zip(1..=3)
        .map(|(code, n)| String::from_utf8(ack(code, &format!("DEMO-000{n}"), "")).unwrap())
        .collect();
    assert_eq!(
        outcome,
        SinkOutcome::Accepted {
            location: format!("mllp:127.0.0.1:{port} MSA-2=DEMO-0001,DEMO-0002,DEMO-0003"),
            ack: Some(expected_ack),
        }
    );
}

#[test]
fn a_later_refusal_fails_the_delivery() {
    let (payload, frames) = batch();
    let (port, peer) = peer(vec![answer_with("AA", ""), answer_with("AR", "")]);
    let outcome = deliver(&*sink(port, "5s"), &[hl7(payload)]);
    assert_eq!(peer.join().unwrap(), frames[..2]);
    assert!(
        matches!(&outcome, SinkOutcome::Permanent { reason, ack: Some(a) }
            if reason.contains("DEMO-0002") && reason.contains("1 of 3") && a.contains("MSA|AR|DEMO-0002")),
        "{outcome:?}"
    );
}

#[test]
fn lf_terminated_payload_is_sent_with_cr() {
    let text = String::from_utf8(sample()).unwrap().replace('\r', "\n");
    let (port, peer) = peer(vec![answer_with("AA", "")]);
    let outcome = deliver(&*sink(port, "5s"), &[hl7(text.into_bytes())]);
    assert_eq!(peer.join().unwrap(), vec![sample_frame()]);
    assert!(matches!(outcome, SinkOutcome::Accepted { .. }));
}

#[test]
fn a_message_without_hl7_is_permanent() {
    let pdf = Payload {
        kind: PayloadKind::Attachment,
        content_type: "application/pdf".into(),
        filename: None,
        data: b"%PDF".to_vec(),
        size: 4,
    };
    // Nothing listens: the sink must refuse before connecting.
    let outcome = deliver(&*sink(9, "1s"), &[pdf]);
    assert_eq!(
        outcome,
        SinkOutcome::permanent(
            "the mllp sink takes HL7 v2 payloads; this message has none (content types: application/pdf)"
        )
    );
}

#[test]
fn bad_durations_are_config_errors() {
    let err = build(&SinkConfig {
        name: Some("iis".into()),
        route: SinkRoute::default(),
        kind: SinkKind::Mllp(MllpSinkConfig {
            host: "127.0.0.1".into(),
            port: 2575,
            connect_timeout: "10s".into(),
            ack_timeout: "soon".into(),
        }),
    })
    .err()
    .expect("a bad duration is refused");
    assert!(err.to_string().contains("ack_timeout"), "{err}");
}

#[test]
fn a_reply_over_one_mib_is_refused_transiently() {
    let (port, peer) = peer(vec![Box::new(|_| {
        let mut endless = vec![0x0B];
        endless.extend(std::iter::repeat_n(b'A', 1024 * 1024 + 10));
        vec![endless]
    })]);
    let outcome = deliver(&*sink(port, "5s"), &[hl7(sample())]);
    // The peer may see a reset once the sink closes with its reply unread.
    let _ = peer.join();
    assert!(
        matches!(&outcome, SinkOutcome::Transient(r)
            if r.contains(&format!("127.0.0.1:{port}")) && r.contains("larger than 1048576 bytes")),
        "{outcome:?}"
    );
}
