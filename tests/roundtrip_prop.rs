//! Property: any payload bytes sealed through the library API open to exactly the same bytes, both
//! as Direct Context HL7 v2 (the default) and as a plain `application/octet-stream` attachment.

use std::path::PathBuf;
use std::sync::OnceLock;

use direct_agent::address::DirectAddress;
use direct_agent::clock::SystemClock;
use direct_agent::credential::{Credential, load_certificates};
use direct_agent::message::{Envelope, OpenInputs, SealOptions, open, seal};
use direct_agent::mime::payload::PayloadKind;
use direct_agent::trust::TrustInputs;
use openssl::x509::X509;
use proptest::prelude::*;

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

struct Fixture {
    sender: Credential,
    recipient: Vec<Credential>,
    recipient_certs: Vec<X509>,
    anchors: Vec<X509>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        sender: Credential::load(
            &cert("ehr@hisp-a.example.key"),
            Some(&cert("ehr@hisp-a.example.fullchain.pem")),
            None,
        )
        .expect("load ehr@hisp-a.example"),
        recipient: vec![
            Credential::load(
                &cert("iis@hisp-b.example.key"),
                Some(&cert("iis@hisp-b.example.pem")),
                None,
            )
            .expect("load iis@hisp-b.example"),
        ],
        recipient_certs: load_certificates(&cert("iis@hisp-b.example.pem")).unwrap(),
        anchors: load_certificates(&cert("root-a.pem")).unwrap(),
    })
}

/// Seal `payload` and open it again; return the bytes of the payload of `kind`.
fn round_trip(payload: &[u8], content_type: Option<&str>, kind: PayloadKind) -> Vec<u8> {
    let f = fixture();
    let from = DirectAddress::parse("ehr@hisp-a.example").unwrap();
    let to = [DirectAddress::parse("iis@hisp-b.example").unwrap()];
    let opts = SealOptions {
        content_type: content_type.map(str::to_string),
        filename: if content_type.is_some() {
            "payload.bin".into()
        } else {
            "message.hl7".into()
        },
        ..SealOptions::default()
    };
    let sealed = seal(
        &from,
        &to,
        payload,
        &f.sender,
        &f.recipient_certs,
        &opts,
        &SystemClock,
    )
    .expect("seal");
    let inputs = OpenInputs {
        ours: &f.recipient,
        trust: TrustInputs {
            intermediates: &[],
            crls: &[],
            ..TrustInputs::offline(&f.anchors, &SystemClock)
        },
        envelope: Envelope::default(),
        cache: None,
    };
    let report = open(&sealed.message, &inputs).expect("open");
    assert_eq!(report.from, "ehr@hisp-a.example");
    assert_eq!(
        report.message_id.as_deref(),
        Some(sealed.message_id.as_str())
    );
    let found: Vec<_> = report.payloads.iter().filter(|p| p.kind == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {kind:?} payload expected, got {:?}",
        report
            .payloads
            .iter()
            .map(|p| (p.kind, p.content_type.clone(), p.size))
            .collect::<Vec<_>>()
    );
    assert_eq!(found[0].size, found[0].data.len());
    found[0].data.clone()
}

/// Payload bytes: arbitrary, or built from CR/LF/HL7-ish pieces so line-ending handling is
/// exercised much more often than uniform bytes would.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\r".to_vec()),
        Just(b"MSH|^~\\&|".to_vec()),
        Just(b"--".to_vec()),
        Just(b".\r\n".to_vec()),
        Just(b" \t".to_vec()),
        Just(vec![0xff, 0xfe, 0x00, 0x80]),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        prop::collection::vec(piece, 0..128).prop_map(|ps| ps
            .concat()
            .into_iter()
            .take(4096)
            .collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    })]

    #[test]
    fn attachment_round_trip_is_byte_exact(data in payload()) {
        let got = round_trip(&data, Some("application/octet-stream"), PayloadKind::Attachment);
        prop_assert_eq!(got, data);
    }

    #[test]
    fn hl7_round_trip_is_byte_exact(data in payload()) {
        let got = round_trip(&data, None, PayloadKind::Hl7v2);
        prop_assert_eq!(got, data);
    }
}

/// Edge cases proptest may not hit in 32 cases.
#[test]
fn fixed_edge_cases_round_trip() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"\r".to_vec(),
        b"\n".to_vec(),
        b"\r\n\r\n".to_vec(),
        b"MSH|^~\\&|A|B|C|D|20250101||VXU^V04|1|P|2.5.1\rPID|1\r".to_vec(),
        b"MSH|^~\\&|A\nPID|1\n".to_vec(),
        (0u8..=255).collect(),
        vec![0u8; 4096],
    ];
    for data in cases {
        for (ct, kind) in [
            (Some("application/octet-stream"), PayloadKind::Attachment),
            (None, PayloadKind::Hl7v2),
        ] {
            let got = round_trip(&data, ct, kind);
            assert!(got == data, "{kind:?}: {data:?} came back as {got:?}");
        }
    }
}
