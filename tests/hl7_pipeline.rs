//! HL7 validation, ACK replies and sink routing through two running agents on loopback: a valid
//! VXU is delivered and answered with AA; an invalid one is quarantined (or handed to a reject
//! sink) and answered with AE/AR and a failed MDN; sinks take only the message types they list.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::agents::{AgentSetup, Extra, cli, sidecars, start, two_agents, wait_until};

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("config/samples")
        .join(name)
}

/// The sample VXU with `edit` applied, written to `dir/name`.
fn variant(dir: &Path, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let text = std::fs::read_to_string(sample("vxu-v04.hl7")).unwrap();
    let out = dir.join(name);
    std::fs::write(&out, edit(&text)).unwrap();
    out
}

fn send(a: &AgentSetup, payload: &Path, extra: &[&str]) -> String {
    let out = cli(
        a,
        &[
            "send",
            "--from",
            "ehr@hisp-a.example",
            "--to",
            "iis@hisp-b.example",
        ],
    )
    .args(extra)
    .arg("--in")
    .arg(payload)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "send: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The HL7 payload files in a directory sink.
fn hl7_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "hl7"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn quarantine(s: &AgentSetup) -> serde_json::Value {
    let out = cli(s, &["quarantine", "list", "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

const HL7_ACKS: &str = "[hl7]\nprofile = \"immunization\"\nreply_with_ack = true\n";

#[test]
fn a_valid_vxu_is_delivered_and_answered_with_aa() {
    let dir = tempfile::tempdir().unwrap();
    let b_extra = Extra {
        tail: Some(HL7_ACKS.into()),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    let ra = start(&a);
    let rb = start(&b);
    send(&a, &sample("vxu-v04.hl7"), &[]);
    let acked = wait_until(Duration::from_secs(30), || {
        hl7_files(&a.inbox)
            .iter()
            .any(|t| t.contains("MSA|AA|DEMO-0001"))
    });
    assert!(
        acked,
        "no AA ACK reached A\nA:\n{}\nB:\n{}",
        ra.log_text(),
        rb.log_text()
    );
    // B handed the VXU to its sink, with the validation verdict (no field values) beside it.
    let cars = sidecars(&b.inbox);
    assert_eq!(cars.len(), 1);
    let car: serde_json::Value = serde_json::from_slice(&std::fs::read(&cars[0]).unwrap()).unwrap();
    assert_eq!(
        car["metadata"]["validation"]["profile"], "immunization",
        "{car}"
    );
    assert_eq!(car["metadata"]["validation"]["passed"], true, "{car}");
    assert!(!car.to_string().contains("TESTPATIENT"), "{car}");
    // The ACK is an ACK^V04 from the IIS side back to the clinic.
    let ack = hl7_files(&a.inbox)
        .into_iter()
        .find(|t| t.contains("MSA|AA|DEMO-0001"))
        .unwrap();
    assert!(
        ack.starts_with("MSH|^~\\&|IIS|STATE-IIS|DEMO-EHR|DEMO-CLINIC|"),
        "{ack}"
    );
    assert!(ack.contains("|ACK^V04^ACK|"), "{ack}");
    // The ACK itself was not acknowledged back, and B's log holds no HL7 content.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(hl7_files(&b.inbox).len(), 1);
    assert!(!rb.log_text().contains("TESTPATIENT"));
}

#[test]
fn an_invalid_vxu_is_quarantined_and_answered_with_ar_and_a_failed_mdn() {
    let dir = tempfile::tempdir().unwrap();
    let b_extra = Extra {
        tail: Some(HL7_ACKS.into()),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    // B expects test traffic (MSH-11 T); this message says production.
    let live = variant(dir.path(), "live.hl7", |t| {
        t.replace("|T|2.5.1|", "|P|2.5.1|")
    });
    let ra = start(&a);
    let rb = start(&b);
    let id = send(&a, &live, &["--request-mdn"]);
    let acked = wait_until(Duration::from_secs(30), || {
        hl7_files(&a.inbox)
            .iter()
            .any(|t| t.contains("MSA|AR|DEMO-0001"))
    });
    assert!(
        acked,
        "no AR ACK reached A\nA:\n{}\nB:\n{}",
        ra.log_text(),
        rb.log_text()
    );
    let ack = hl7_files(&a.inbox)
        .into_iter()
        .find(|t| t.contains("MSA|AR|"))
        .unwrap();
    // ERR names MSH-11 with code 202 (unsupported processing ID).
    assert!(ack.contains("ERR||MSH^1^11"), "{ack}");
    assert!(
        ack.contains("202^Unsupported processing id^HL70357"),
        "{ack}"
    );
    // B kept the message in quarantine with the rule, and gave it to no sink.
    let q = quarantine(&b);
    let entry = &q.as_array().unwrap()[0];
    assert_eq!(entry["reason_kind"], "hl7", "{q}");
    assert!(entry["reason"].as_str().unwrap().contains("MSH-11"), "{q}");
    assert!(sidecars(&b.inbox).is_empty());
    // The sender's tracking shows the failed MDN.
    let failed = wait_until(Duration::from_secs(30), || {
        let out = cli(&a, &["status", &id, "--json"]).output().unwrap();
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        s[0]["state"] == "failed"
    });
    assert!(failed, "A:\n{}", ra.log_text());
    assert!(!rb.log_text().contains("TESTPATIENT"));
}

#[test]
fn a_reject_sink_takes_what_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let rejected = dir.path().join("b-rejected");
    let b_extra = Extra {
        tail: Some(format!(
            "[[sink]]\nkind = \"directory\"\npath = \"{}\"\nrole = \"reject\"\n\n[hl7]\nprofile = \"immunization\"\n",
            rejected.display()
        )),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    let no_nk1 = variant(dir.path(), "no-nk1.hl7", |t| {
        t.split('\r')
            .filter(|s| !s.starts_with("NK1|"))
            .collect::<Vec<_>>()
            .join("\r")
    });
    let ra = start(&a);
    let rb = start(&b);
    send(&a, &no_nk1, &[]);
    let landed = wait_until(Duration::from_secs(30), || sidecars(&rejected).len() == 1);
    assert!(landed, "A:\n{}\nB:\n{}", ra.log_text(), rb.log_text());
    let car: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecars(&rejected)[0]).unwrap()).unwrap();
    assert_eq!(car["metadata"]["validation"]["passed"], false, "{car}");
    assert!(car.to_string().contains("NK1"), "{car}");
    assert!(sidecars(&b.inbox).is_empty(), "the delivering sink got it");
    assert!(quarantine(&b).as_array().unwrap().is_empty());
    // No [hl7] reply_with_ack: nothing went back to A but the processed MDN.
    std::thread::sleep(Duration::from_secs(1));
    assert!(hl7_files(&a.inbox).is_empty());
}

#[test]
fn sinks_take_only_the_message_types_they_list() {
    let dir = tempfile::tempdir().unwrap();
    let (vxu, qbp) = (dir.path().join("b-vxu"), dir.path().join("b-qbp"));
    // A fallback sink takes only what no deliver sink takes (here: never a VXU, and not the
    // attachment either, because it lists message types).
    let other = dir.path().join("b-other");
    let b_extra = Extra {
        sinks: Some(format!(
            "[[sink]]\nname = \"vxu\"\nkind = \"directory\"\npath = \"{}\"\nmessage_types = [\"VXU^V04\"]\n\n[[sink]]\nname = \"queries\"\nkind = \"directory\"\npath = \"{}\"\nmessage_types = [\"QBP\"]\nsenders = [\"hisp-a.example\"]\n\n[[sink]]\nname = \"other\"\nkind = \"directory\"\npath = \"{}\"\nrole = \"fallback\"\nmessage_types = [\"VXU^V04\"]\n",
            vxu.display(),
            qbp.display(),
            other.display()
        )),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    let ra = start(&a);
    let rb = start(&b);
    send(&a, &sample("vxu-v04.hl7"), &[]);
    send(&a, &sample("qbp-q11.hl7"), &[]);
    // A payload that is not HL7 has no sink here: quarantined as a routing problem.
    let note = dir.path().join("note.txt");
    std::fs::write(&note, "not HL7").unwrap();
    send(
        &a,
        &note,
        &["--content-type", "text/plain", "--filename", "note.txt"],
    );
    let done = wait_until(Duration::from_secs(30), || {
        sidecars(&vxu).len() == 1
            && sidecars(&qbp).len() == 1
            && quarantine(&b).as_array().is_some_and(|q| q.len() == 1)
    });
    assert!(done, "A:\n{}\nB:\n{}", ra.log_text(), rb.log_text());
    assert!(hl7_files(&vxu)[0].contains("VXU^V04"));
    assert!(
        sidecars(&other).is_empty(),
        "the fallback took a message a deliver sink took"
    );
    assert!(hl7_files(&qbp)[0].contains("QBP^Q11"));
    let q = quarantine(&b);
    assert_eq!(q[0]["reason_kind"], "route", "{q}");
    assert!(
        q[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no [[sink]] takes"),
        "{q}"
    );
    // The HL7 override is refused for any other refusal: the message stays in quarantine.
    let id = q[0]["id"].as_i64().unwrap().to_string();
    let out = cli(&b, &["quarantine", "release", &id, "--accept-invalid-hl7"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a route quarantine was overridden");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not quarantined for HL7 validation"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(quarantine(&b).as_array().unwrap().len(), 1);
}

/// An MLLP interface engine on loopback that answers every message with `msa1` (and an ERR for
/// AE), echoing MSH-10 in MSA-2. Returns its port; the thread ends with the test process.
fn mllp_engine(msa1: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
                    let frame = String::from_utf8_lossy(&buf[1..end]).into_owned();
                    buf.drain(..end + 2);
                    let control = frame
                        .split('\r')
                        .next()
                        .and_then(|msh| msh.split('|').nth(9))
                        .unwrap_or("")
                        .to_string();
                    let mut ack = format!(
                        "MSH|^~\\&|ENGINE|STATE-IIS|IIS|STATE-IIS|20261206120000+0000||ACK^V04^ACK|E{control}|T|2.5.1\rMSA|{msa1}|{control}\r"
                    );
                    if msa1 != "AA" {
                        ack.push_str("ERR||RXA^1^5^1^1|103^Table value not found^HL70357|E\r");
                    }
                    let mut out = vec![0x0b];
                    out.extend_from_slice(ack.as_bytes());
                    out.extend_from_slice(&[0x1c, 0x0d]);
                    let _ = s.write_all(&out);
                }
            }
        }
    });
    port
}

#[test]
fn an_engine_refusal_over_mllp_is_quarantined_and_its_ack_sent_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = mllp_engine("AE");
    let b_extra = Extra {
        sinks: Some(format!(
            "[[sink]]\nname = \"engine\"\nkind = \"mllp\"\nhost = \"127.0.0.1\"\nport = {port}\nack_timeout = \"5s\"\nmessage_types = [\"VXU^V04\"]\n"
        )),
        tail: Some(HL7_ACKS.into()),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    let ra = start(&a);
    let rb = start(&b);
    let id = send(&a, &sample("vxu-v04.hl7"), &["--request-mdn"]);
    // The engine's own ACK (AE, from ENGINE) reaches the sender, not one of ours.
    let acked = wait_until(Duration::from_secs(30), || {
        hl7_files(&a.inbox)
            .iter()
            .any(|t| t.contains("MSA|AE|DEMO-0001") && t.contains("|ENGINE|"))
    });
    assert!(acked, "A:\n{}\nB:\n{}", ra.log_text(), rb.log_text());
    let q = quarantine(&b);
    assert_eq!(q[0]["reason_kind"], "sink", "{q}");
    assert!(q[0]["reason"].as_str().unwrap().contains("AE"), "{q}");
    let failed = wait_until(Duration::from_secs(30), || {
        let out = cli(&a, &["status", &id, "--json"]).output().unwrap();
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        s[0]["state"] == "failed"
    });
    assert!(failed, "A:\n{}", ra.log_text());
}

#[test]
fn an_engine_acceptance_over_mllp_completes_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = mllp_engine("AA");
    let b_extra = Extra {
        sinks: Some(format!(
            "[[sink]]\nname = \"engine\"\nkind = \"mllp\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        )),
        tail: Some(HL7_ACKS.into()),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    let ra = start(&a);
    let rb = start(&b);
    let out = cli(
        &a,
        &[
            "send",
            "--from",
            "ehr@hisp-a.example",
            "--to",
            "iis@hisp-b.example",
            "--request-mdn",
            "--wait",
            "--timeout",
            "60s",
            "--in",
        ],
    )
    .arg(sample("vxu-v04.hl7"))
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}\nA:\n{}\nB:\n{}",
        String::from_utf8_lossy(&out.stderr),
        ra.log_text(),
        rb.log_text()
    );
    let acked = wait_until(Duration::from_secs(30), || {
        hl7_files(&a.inbox)
            .iter()
            .any(|t| t.contains("MSA|AA|DEMO-0001") && t.contains("|ENGINE|"))
    });
    assert!(acked, "A:\n{}", ra.log_text());
}

#[test]
fn a_fallback_sink_takes_what_no_deliver_sink_takes() {
    let dir = tempfile::tempdir().unwrap();
    let (vxu, other) = (dir.path().join("b-vxu"), dir.path().join("b-other"));
    let b_extra = Extra {
        sinks: Some(format!(
            "[[sink]]\nkind = \"directory\"\npath = \"{}\"\nmessage_types = [\"VXU^V04\"]\n\n[[sink]]\nkind = \"directory\"\npath = \"{}\"\nrole = \"fallback\"\n",
            vxu.display(),
            other.display()
        )),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    let ra = start(&a);
    let rb = start(&b);
    send(&a, &sample("vxu-v04.hl7"), &[]);
    let note = dir.path().join("note.txt");
    std::fs::write(&note, "not HL7").unwrap();
    send(
        &a,
        &note,
        &["--content-type", "text/plain", "--filename", "note.txt"],
    );
    let done = wait_until(Duration::from_secs(30), || {
        sidecars(&vxu).len() == 1 && sidecars(&other).len() == 1
    });
    assert!(done, "A:\n{}\nB:\n{}", ra.log_text(), rb.log_text());
    assert!(
        hl7_files(&other).is_empty(),
        "the VXU went to the fallback too"
    );
    assert!(quarantine(&b).as_array().unwrap().is_empty());
}

#[test]
fn an_iis_refusing_the_sink_credential_gets_one_request_until_an_operator_resets_it() {
    use support::http_sink_peer::HttpSinkPeer;
    let peer = HttpSinkPeer::start("200");
    let dir = tempfile::tempdir().unwrap();
    let sink = |path: &str| {
        format!(
            "[[sink]]\nname = \"iis\"\nkind = \"http\"\nurl = \"{}\"\nusername = \"clinic\"\npassword_env = \"PATH\"\n",
            peer.url(path)
        )
    };
    let b_extra = Extra {
        sinks: Some(sink("401/in")),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    let ra = start(&a);
    let mut rb = start(&b);
    send(&a, &sample("vxu-v04.hl7"), &[]);
    let disabled = wait_until(Duration::from_secs(30), || {
        let out = cli(&b, &["credentials", "list", "--json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("sink:iis")
    });
    assert!(disabled, "A:\n{}\nB:\n{}", ra.log_text(), rb.log_text());
    // Exactly one request with the refused credential, and none while it stays disabled.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(peer.requests().len(), 1);
    assert!(rb.log_text().contains("ALERT"), "{}", rb.log_text());
    // The operator fixes the configuration (here: the endpoint), restarts, resets the credential.
    rb.terminate(Duration::from_secs(30));
    let cfg = std::fs::read_to_string(&b.config).unwrap();
    std::fs::write(&b.config, cfg.replace("/401/in", "/200/in")).unwrap();
    let rb = start(&b);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(peer.requests().len(), 1, "retried before the reset");
    let out = cli(&b, &["credentials", "reset", "sink:iis"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delivered = wait_until(Duration::from_secs(30), || peer.requests().len() == 2);
    assert!(delivered, "B:\n{}", rb.log_text());
    let last = &peer.requests()[1];
    assert_eq!(last.header("X-Direct-From"), Some("ehr@hisp-a.example"));
}

#[test]
fn an_operator_can_deliver_a_message_that_failed_validation() {
    let dir = tempfile::tempdir().unwrap();
    let b_extra = Extra {
        tail: Some("[hl7]\nprofile = \"immunization\"\n".into()),
        ..Extra::default()
    };
    let (a, b) = two_agents(dir.path(), &Extra::default(), &b_extra);
    let no_nk1 = variant(dir.path(), "no-nk1.hl7", |t| {
        t.split('\r')
            .filter(|s| !s.starts_with("NK1|"))
            .collect::<Vec<_>>()
            .join("\r")
    });
    let ra = start(&a);
    let rb = start(&b);
    send(&a, &no_nk1, &[]);
    let held = wait_until(Duration::from_secs(30), || {
        quarantine(&b).as_array().is_some_and(|q| q.len() == 1)
    });
    assert!(held, "A:\n{}\nB:\n{}", ra.log_text(), rb.log_text());
    let id = quarantine(&b)[0]["id"].as_i64().unwrap().to_string();
    // Only an hl7 quarantine can be overridden; a plain release would fail validation again.
    let out = cli(&b, &["quarantine", "release", &id, "--accept-invalid-hl7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delivered = wait_until(Duration::from_secs(30), || sidecars(&b.inbox).len() == 1);
    assert!(delivered, "B:\n{}", rb.log_text());
    let car: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecars(&b.inbox)[0]).unwrap()).unwrap();
    let v = &car["metadata"]["validation"];
    assert_eq!(v["passed"], false, "{car}");
    assert_eq!(v["overridden_by_operator"], true, "{car}");
    assert!(v.to_string().contains("NK1-MISSING"), "{car}");
    assert!(quarantine(&b).as_array().unwrap().is_empty());
    assert!(rb.log_text().contains("an operator overrode it"));
}
